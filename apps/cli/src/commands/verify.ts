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
    .description("re-read every stored backup, check checksums, and test-restore the newest one")
    .argument("[db]", "database name or path; default: every database")
    .option("--from <target>", "only this target")
    .option("--to <location...>", "check this location instead of the config's targets")
    .option("--checksums-only", "skip the trial restore")
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
          results.push({ database: name, ...result });
          ok &&= result.ok;
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
        }
        out.line(ok ? "All backups verified." : "Verification found problems (see FAILED lines).");
        out.result({ ok, databases: results });
        if (!ok) process.exitCode = 1;
      } finally {
        await lb.close();
      }
    });
}
