import { ErrorCodes, LifeboatError, parseDuration, type RetentionPolicy } from "@lifeboat/core";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput, formatBytes, table } from "../output.js";
import { ask, canAsk } from "../prompt.js";

interface Flags extends CommonFlags {
  readonly keepLast?: string;
  readonly keepWithin?: string;
  readonly keepDaily?: string;
  readonly keepWeekly?: string;
  readonly keepMonthly?: string;
  readonly keepPointInTime?: string;
  readonly dryRun?: boolean;
  readonly yes?: boolean;
  readonly to?: string[];
}

function count(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `${flag} must be a whole number of at least 1, not "${value}".`,
      {
        hint: `Example: ${flag} 7`,
      },
    );
  }
  return n;
}

export function registerPrune(program: Command): void {
  withCommon(program.command("prune"))
    .description("delete old backups by retention rules (never the newest good one); asks first")
    .argument("[db]", "database name or path; default: every database")
    .option("--keep-last <n>", "keep the newest N backups")
    .option("--keep-within <duration>", "keep every backup younger than this (e.g. 7d, 12h)")
    .option("--keep-daily <n>", "keep the newest backup of each of the last N days")
    .option("--keep-weekly <n>", "keep the newest backup of each of the last N weeks")
    .option("--keep-monthly <n>", "keep the newest backup of each of the last N months")
    .option(
      "--keep-point-in-time <duration>",
      "keep every moment of this last duration restorable: the snapshots it restores from and their WAL segments (e.g. 7d)",
    )
    .option("-n, --dry-run", "list what would be deleted; delete nothing")
    .option("-y, --yes", "delete without asking")
    .option("--to <location...>", "prune this location instead of the config's targets")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const policy: RetentionPolicy = {
        ...(flags.keepLast ? { keepLast: count(flags.keepLast, "--keep-last") } : {}),
        ...(flags.keepWithin ? { keepWithinMs: parseDuration(flags.keepWithin, "--keep-within") } : {}),
        ...(flags.keepDaily ? { keepDaily: count(flags.keepDaily, "--keep-daily") } : {}),
        ...(flags.keepWeekly ? { keepWeekly: count(flags.keepWeekly, "--keep-weekly") } : {}),
        ...(flags.keepMonthly ? { keepMonthly: count(flags.keepMonthly, "--keep-monthly") } : {}),
        ...(flags.keepPointInTime
          ? { keepPointInTimeMs: parseDuration(flags.keepPointInTime, "--keep-point-in-time") }
          : {}),
      };
      const lb = await loadLifeboat(db, flags);
      try {
        const names = flags.to ? [lb.databases[0]!] : db === undefined ? lb.databases : [db];
        const results = [];
        for (const name of names) {
          const plan = await lb.prune(name, { policy, apply: false });
          const removals = plan.targets.reduce((n, t) => n + t.remove.length + t.segments.remove, 0);
          for (const t of plan.targets) {
            const segments = t.segments.remove
              ? `, and ${t.segments.remove} WAL segments no kept snapshot needs (${formatBytes(t.segments.bytes)})`
              : "";
            out.line(`${name} on ${t.target}: keep ${t.keep.length}, delete ${t.remove.length}${segments}`);
            const rows = [
              ...t.keep.map((k) => ["keep", k.id, k.createdAt, k.reasons.join(", ")]),
              ...t.remove.map((r) => ["DELETE", r.id, r.createdAt, formatBytes(r.sizeBytes)]),
            ];
            if (rows.length > 0) out.line(table(["ACTION", "ID", "TIME", "WHY / SIZE"], rows));
          }
          let apply = false;
          if (!flags.dryRun && removals > 0) {
            if (flags.yes) apply = true;
            else if (canAsk())
              apply = /^y(es)?$/i.test((await ask(`Delete ${removals} backups and segments of ${name}? [y/N]`)).trim());
            else out.line("Dry run (no terminal to ask on): pass --yes to delete.");
          }
          const result = apply ? await lb.prune(name, { policy, apply: true }) : plan;
          if (apply) out.line(`Deleted ${result.targets.reduce((n, t) => n + t.deletedObjects, 0)} objects.`);
          else if (removals > 0) out.line("Nothing was deleted.");
          results.push({ database: name, ...result });
        }
        out.result({ ok: true, databases: results });
      } finally {
        await lb.close();
      }
    });
}
