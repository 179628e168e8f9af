import { ErrorCodes, LifeboatError, parseTime, type RestoreResult } from "@lifeboat/core";
import { type PointInTimeResult, restoreToPoint } from "@lifeboat/wal";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, type KeyStdinFlags, withCommon, withKeyStdin } from "../main.js";
import { createOutput, formatBytes, table } from "../output.js";
import { ask, canAsk } from "../prompt.js";

interface Flags extends CommonFlags, KeyStdinFlags {
  readonly backup?: string;
  readonly latest?: boolean;
  readonly output?: string;
  readonly dryRun?: boolean;
  readonly yes?: boolean;
  readonly confirm?: string[];
  readonly from?: string;
  readonly to?: string[];
  readonly integrity: "full" | "quick" | "off";
  readonly toTime?: string;
  readonly toTxn?: string;
  readonly generation?: string;
}

export function registerRestore(program: Command): void {
  withKeyStdin(withCommon(program.command("restore")))
    .description("restore a backup over the database (or to --output), safely")
    .argument("[db]", "database name or path (default: the only database in the config)")
    .option("-b, --backup <id>", "the backup to restore (an id or a unique prefix; see lifeboat list)")
    .option("--latest", "the newest good backup (the default)")
    .option("-o, --output <path>", "write here instead of over the database")
    .option("-n, --dry-run", "show what would change; change nothing")
    .option("-y, --yes", "do not ask before replacing an existing database")
    .option("--confirm <phrase...>", "typed confirmation phrases a guard asks for")
    .option("--from <target>", "read from this target (its name in the config)")
    .option("--to <location...>", "read from this location instead of the config's targets")
    .option(
      "-t, --to-time <time>",
      'the state as of this moment: ISO 8601 (without an offset: local time), relative ("10 minutes ago") or Unix seconds',
    )
    .option("--to-txn <n>", "the state right after transaction N of the generation (see lifeboat list)")
    .option("-g, --generation <id>", "restore from this generation (default: the newest that covers the point)")
    .option("--integrity <mode>", "check of the restored file before it is put in place: full, quick, off", "quick")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await loadLifeboat(db, flags);
      try {
        const name = flags.to ? lb.databases[0] : db;
        if (flags.backup && (flags.toTime || flags.toTxn)) {
          throw new LifeboatError(
            ErrorCodes.INVALID_ARGUMENT,
            "--backup restores one snapshot; --to-time and --to-txn pick a point in a generation.",
            {
              hint: "Give one of them.",
            },
          );
        }
        if (flags.toTime && flags.toTxn !== undefined) {
          throw new LifeboatError(
            ErrorCodes.INVALID_ARGUMENT,
            "--to-time and --to-txn each pick the point to restore.",
            {
              hint: "Give one of them.",
            },
          );
        }
        const toTxn = flags.toTxn === undefined ? undefined : Number(flags.toTxn);
        if (toTxn !== undefined && (!/^\d+$/.test(String(flags.toTxn).trim()) || !Number.isSafeInteger(toTxn))) {
          throw new LifeboatError(
            ErrorCodes.INVALID_ARGUMENT,
            `--to-txn must be a transaction number, not "${flags.toTxn}".`,
            {
              hint: "lifeboat list shows each generation's transactions.",
            },
          );
        }
        const common = {
          ...(flags.output ? { output: flags.output } : {}),
          ...(flags.from ? { from: flags.from } : {}),
          dryRun: Boolean(flags.dryRun),
          yes: Boolean(flags.yes),
          phrases: flags.confirm ?? [],
          integrity: flags.integrity,
          ...(canAsk() && !flags.yes ? { ask } : {}),
          onProgress: out.progress,
        };
        const pit: PointInTimeResult | undefined = flags.backup
          ? undefined
          : await restoreToPoint(await lb.database(name), {
              ...common,
              ...(flags.toTime ? { toTime: parseTime(flags.toTime) } : {}),
              ...(toTxn !== undefined ? { toTxn } : {}),
              ...(flags.generation ? { generation: flags.generation } : {}),
            }).finally(out.endProgress);
        const result: RestoreResult | PointInTimeResult =
          pit ?? (await lb.restore(name, { ...common, backupId: flags.backup! }).finally(out.endProgress));
        if (pit && (pit.segmentsApplied > 0 || flags.toTime || toTxn !== undefined)) {
          out.line(
            `${pit.dryRun ? "Would restore" : "Restored"} ${pit.output} to transaction ${pit.txn} of generation ${pit.generation} (as of ${pit.restoredTo}): snapshot at transaction ${pit.snapshotPosition} + ${pit.segmentsApplied} segments, from ${pit.target}`,
          );
          for (const warning of pit.warnings) out.line(`warning: ${warning}`);
        } else {
          out.line(
            `${result.dryRun ? "Would restore" : "Restored"} backup ${result.backupId} (${result.createdAt}, ${formatBytes(result.sizeBytes)}) from ${result.target} ${result.dryRun ? "to" : "into"} ${result.output}`,
          );
          for (const warning of pit?.warnings ?? []) out.line(`warning: ${warning}`);
        }
        out.line(
          table(
            ["TABLE", "CURRENT ROWS", "BACKUP ROWS", "DIFFERENCE"],
            result.tables.map((t) => [
              t.name,
              t.currentRows ?? "-",
              t.backupRows ?? "-",
              t.difference > 0 ? `+${t.difference}` : String(t.difference),
            ]),
          ),
        );
        out.line(`user_version: ${result.userVersion.current ?? "-"} -> ${result.userVersion.backup}`);
        if (result.dryRun) out.line("Dry run: nothing was changed.");
        else {
          if (result.integrity) out.line(`${result.integrity.check}: ${result.integrity.ok ? "ok" : "FAILED"}`);
          if (result.safetyCopy) out.line(`The replaced database was kept at ${result.safetyCopy}`);
        }
        out.result({ ok: true, restore: result });
      } finally {
        await lb.close();
      }
    });
}
