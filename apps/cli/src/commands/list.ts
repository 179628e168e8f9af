import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { ago, createOutput, formatBytes, table } from "../output.js";

interface Flags extends CommonFlags {
  readonly from?: string;
  readonly to?: string[];
}

export function registerList(program: Command): void {
  withCommon(program.command("list"))
    .description("list the backups of a database on each target")
    .argument("[db]", "database name or path; default: every database")
    .option("--from <target>", "only this target (its name in the config)")
    .option("--to <location...>", "read this location instead of the config's targets")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await loadLifeboat(db, flags);
      try {
        const names = db === undefined || flags.to ? (flags.to ? [lb.databases[0]!] : lb.databases) : [db];
        const report = [];
        let failed = false;
        for (const name of names) {
          const entries = await lb.list(name, flags.from ? { from: flags.from } : {});
          report.push({ database: name, targets: entries });
          for (const entry of entries) {
            out.line(`${name} on ${entry.target} (${entry.location}):`);
            if (entry.error) {
              failed = true;
              out.line(`  unreachable: ${entry.error.message}`);
              continue;
            }
            if (entry.snapshots.length === 0) out.line("  no backups yet");
            else {
              const rows = [...entry.snapshots].reverse().map((s) => {
                const m = s.manifest;
                const verified = s.verification
                  ? `${s.verification.ok ? "ok" : "FAILED"} ${ago(s.verification.verifiedAt)}`
                  : m.integrity.ok
                    ? `${m.integrity.check === "none" ? "checksum" : m.integrity.check} ok`
                    : "FAILED";
                return [
                  m.id,
                  m.createdAt.replace("T", " ").replace(/\.\d+Z$/, "Z"),
                  m.reason,
                  formatBytes(m.object.size),
                  m.source.tables.length,
                  verified,
                ];
              });
              out.line(
                table(["ID", "TIME", "REASON", "SIZE", "TABLES", "VERIFIED"], rows)
                  .split("\n")
                  .map((l) => `  ${l}`)
                  .join("\n"),
              );
            }
            for (const problem of entry.problems) out.line(`  warning: ${problem}`);
          }
        }
        out.result({
          ok: !failed,
          databases: report.map((r) => ({
            database: r.database,
            targets: r.targets.map((t) => ({
              target: t.target,
              location: t.location,
              error: t.error,
              problems: t.problems,
              backups: t.snapshots.map((s) => ({ ...s.manifest, verification: s.verification ?? null })),
            })),
          })),
        });
        if (failed) process.exitCode = 1;
      } finally {
        await lb.close();
      }
    });
}
