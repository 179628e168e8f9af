import { Repository } from "@lifeboat/core";
import { type GenerationInfo, isGenerationSnapshot, listGenerations } from "@lifeboat/wal";
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
          const context = await lb.database(name);
          const windows = new Map<string, GenerationInfo[]>();
          for (const entry of entries) {
            if (entry.error) continue;
            const named = context.targets.find((t) => t.name === entry.target)!;
            const generations = await listGenerations(new Repository(named, context.name)).catch(() => []);
            windows.set(
              entry.target,
              // A replicator's generations, even before their first segment; not the one-off
              // generations of `lifeboat backup` snapshots.
              generations.filter(
                (g) => g.segments.length > 0 || g.snapshots.some((s) => isGenerationSnapshot(s.reason)),
              ),
            );
          }
          report.push({ database: name, targets: entries, windows });
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
            const gens = windows.get(entry.target) ?? [];
            if (gens.length > 0) {
              out.line("  point-in-time recovery windows (restore --to-time / --to-txn):");
              const rows = gens.map((g) => [
                g.generation,
                (g.from ?? "-").replace("T", " ").replace(/\.\d+Z$/, "Z"),
                (g.to ?? "-").replace("T", " ").replace(/\.\d+Z$/, "Z"),
                g.windows.length > 0 ? g.windows.map((w) => `${w.fromTxn}-${w.toTxn}`).join(", ") : "-",
                g.snapshots.length,
                g.segments.length,
              ]);
              out.line(
                table(["GENERATION", "FROM", "TO", "TRANSACTIONS", "SNAPSHOTS", "SEGMENTS"], rows)
                  .split("\n")
                  .map((l) => `  ${l}`)
                  .join("\n"),
              );
            }
            for (const g of gens) {
              if (g.windows.length === 0 && g.segments.length > 0) {
                out.line(
                  `  warning: generation ${g.generation} holds transactions ${g.segments[0]!.firstTxn}-${g.lastTxn}, but no snapshot of it a restore can start from (its manifest is missing or failed its integrity check)`,
                );
              }
              const stranded = g.stranded;
              if (stranded) {
                out.line(
                  `  warning: generation ${g.generation} holds transactions ${stranded.fromTxn}-${stranded.toTxn} that no restore from this target can reach: transactions ${stranded.missingFrom}-${stranded.fromTxn - 1} are missing here (a restore stops at ${g.restorableTo})`,
                );
              }
              for (let i = 1; i < g.windows.length; i++) {
                const [a, b] = [g.windows[i - 1]!, g.windows[i]!];
                if (b.fromTxn <= a.toTxn + 1) continue; // touching windows: every state is restorable
                out.line(
                  `  warning: generation ${g.generation} cannot be restored to transactions ${a.toTxn + 1}-${b.fromTxn - 1} from this target (committed between ${a.to} and ${b.from}; missing here)`,
                );
              }
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
              generations: (r.windows.get(t.target) ?? []).map((g) => ({
                generation: g.generation,
                from: g.from,
                to: g.to,
                firstTxn: g.snapshots[0]?.position ?? 0,
                lastTxn: g.restorableTo,
                windows: g.windows,
                stranded: g.stranded,
                snapshots: g.snapshots.length,
                segments: g.segments.length,
              })),
            })),
          })),
        });
        if (failed) process.exitCode = 1;
      } finally {
        await lb.close();
      }
    });
}
