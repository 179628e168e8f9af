import { runRestoreDrill } from "@lifeboat/daemon";
import { verifyArchive } from "@lifeboat/wal";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, type KeyStdinFlags, withCommon, withKeyStdin } from "../main.js";
import { createOutput } from "../output.js";

interface Flags extends CommonFlags, KeyStdinFlags {
  readonly from?: string;
  readonly to?: string[];
  readonly checksumsOnly?: boolean;
}

export function registerVerify(program: Command): void {
  withKeyStdin(withCommon(program.command("verify")))
    .description(
      "re-read every stored backup and archived WAL segment, check checksums, and test-restore the newest backup and the archive",
    )
    .argument("[db]", "database name or path; default: every database")
    .option("--from <target>", "only this target")
    .option("--to <location...>", "check this location instead of the config's targets")
    .option("--checksums-only", "skip the trial restores")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await loadLifeboat(db, flags);
      try {
        const names = flags.to ? [lb.databases[0]!] : db === undefined ? lb.databases : [db];
        let ok = true;
        const results = [];
        for (const name of names) {
          const result = await lb
            .verify(name, {
              ...(flags.from ? { from: flags.from } : {}),
              checksumsOnly: Boolean(flags.checksumsOnly),
              onProgress: out.progress,
            })
            .finally(out.endProgress);
          const context = await lb.database(name);
          const archive = await verifyArchive(context, {
            ...(flags.from ? { from: flags.from } : {}),
            onProgress: out.progress,
          }).finally(out.endProgress);
          // The archive's trial restores: the latest state and a random moment, on each target that has one.
          const archived = [...new Set(archive.generations.map((g) => g.target))];
          const drill =
            flags.checksumsOnly || archived.length === 0 ? null : await runRestoreDrill(context, { targets: archived });
          results.push({ database: name, ...result, archive, drill });
          ok &&= result.ok && archive.ok && (drill?.ok ?? true);
          for (const o of result.objects)
            out.line(
              `${o.ok ? "ok    " : "FAILED"} ${name} ${o.target} ${o.id} ${o.key}${o.problem ? `: ${o.problem}` : ""}`,
            );
          for (const r of result.restores) {
            out.line(
              `${r.ok ? "ok    " : "FAILED"} ${name} ${r.target} trial restore of ${r.id}: ${r.integrity ? `${r.integrity.check} ${r.integrity.ok ? "ok" : "failed"}` : "not run"}${r.problems.length ? `; ${r.problems.join("; ")}` : ""}`,
            );
          }
          for (const p of result.problems) out.line(`FAILED ${name}: ${p}`);
          for (const g of archive.generations) {
            const windows = g.windows.map((w) => `${w.fromTxn}-${w.toTxn}`).join(", ") || "none";
            out.line(
              `${g.problems.length === 0 ? "ok    " : "FAILED"} ${name} ${g.target} generation ${g.generation}: ${g.segmentsOk} of ${g.segments} WAL segments read back, restorable transactions ${windows}`,
            );
            for (const p of g.problems) out.line(`FAILED ${name} ${g.target} generation ${g.generation}: ${p}`);
          }
          for (const p of archive.problems) out.line(`FAILED ${name}: ${p}`);
          for (const c of drill?.checks ?? []) {
            const what = c.kind === "latest" ? "latest state" : `point in time ${c.pointInTime}`;
            out.line(
              `${c.ok ? "ok    " : "FAILED"} ${name} ${c.target} trial restore of the ${what}${c.generation ? `: generation ${c.generation}` : ""}${c.txn !== null ? `, transaction ${c.txn}` : ""}${c.integrity ? `, ${c.integrity.check} ${c.integrity.ok ? "ok" : "failed"}` : ""}${c.problems.length ? `; ${c.problems.join("; ")}` : ""}`,
            );
          }
        }
        out.line(ok ? "All backups verified." : "Verification found problems (see FAILED lines).");
        out.result({ ok, databases: results });
        if (!ok) process.exitCode = 1;
      } finally {
        await lb.close();
      }
    });
}
