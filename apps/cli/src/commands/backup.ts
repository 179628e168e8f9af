import type { BackupResult, LifeboatError } from "@lifeboat/core";
import { parseDuration } from "@lifeboat/core";
import { backupIfOlderThan } from "@lifeboat/daemon";
import { requestSnapshot } from "@lifeboat/wal";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput, formatBytes } from "../output.js";

interface Flags extends CommonFlags {
  readonly reason: string;
  readonly to?: string[];
  readonly ifOlderThan?: string;
}

export function registerBackup(program: Command): void {
  withCommon(program.command("backup"))
    .description("take a verified snapshot of a database and store it on every target")
    .argument("[db]", "database name from the config, or a database path (with --to); default: every database")
    .option("-r, --reason <text>", "why (recorded in the manifest)", "manual")
    .option("--to <location...>", "store here instead of the config's targets (a directory or a URL)")
    .option(
      "--if-older-than <duration>",
      "only if the newest backup is older than this (e.g. 1h): for start-up scripts",
    )
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await loadLifeboat(db, { ...flags, writesOnly: true });
      try {
        const names = db === undefined ? lb.databases : [flags.to ? lb.databases[0]! : db];
        const results: BackupResult[] = [];
        const cooperative = [];
        for (const name of names) {
          if (flags.ifOlderThan) {
            const maxAge = parseDuration(flags.ifOlderThan, "--if-older-than");
            const fresh = await backupIfOlderThan(lb, name, maxAge, flags.reason);
            if (!fresh.taken) {
              out.line(
                `${name}: backup ${fresh.newest?.id ?? "?"} is ${Math.round((fresh.ageMs ?? 0) / 1000)} s old; no backup needed`,
              );
              cooperative.push({ database: name, skipped: true, newest: fresh.newest?.id ?? null });
              continue;
            }
            out.line(
              `Backed up ${name} as ${fresh.id} (${fresh.via === "replicator" ? "by the running replicator" : "new backup"})`,
            );
            cooperative.push({ database: name, id: fresh.id, via: fresh.via });
            continue;
          }
          // A replicator archiving this database to the same targets (with a config, or `--to`) takes it.
          const response = await requestSnapshot(await lb.database(name), flags.reason);
          if (response) {
            out.line(
              `Snapshot ${response.id} of ${name} taken by the running replicator (generation ${response.generation}, transaction ${response.position})`,
            );
            cooperative.push({ database: name, ...response });
            continue;
          }
          const result = await lb
            .backup(name, { reason: flags.reason, onProgress: out.progress })
            .finally(out.endProgress);
          results.push(result);
          const m = result.manifest;
          out.line(`Backed up ${m.database.name} (${m.database.path}) as ${result.id}`);
          out.line(
            `  ${formatBytes(m.content.size)}, ${m.source.tables.length} tables, ${m.source.tables.reduce((n, t) => n + t.rows, 0)} rows, user_version ${m.source.userVersion}, ${m.integrity.check}: ${m.integrity.ok ? "ok" : "FAILED"}, ${(result.durationMs / 1000).toFixed(1)} s`,
          );
          for (const t of result.targets) out.line(`  -> ${t.target}: ${t.location}/${t.key}`);
        }
        out.result({ ok: true, backups: results, ...(cooperative.length ? { replicatorSnapshots: cooperative } : {}) });
      } catch (error) {
        const partial = (error as LifeboatError).details?.result as BackupResult | undefined;
        if (partial && !flags.json) {
          for (const t of partial.targets)
            out.line(
              `  ${t.ok ? "ok    " : "FAILED"} ${t.target} (${t.location})${t.error ? `: ${t.error.message}` : ""}`,
            );
        }
        throw error;
      } finally {
        await lb.close();
      }
    });
}
