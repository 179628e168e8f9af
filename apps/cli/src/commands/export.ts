import { existsSync, statSync } from "node:fs";
import { basename, extname, resolve } from "node:path";
import { ErrorCodes, type Lifeboat, LifeboatError, parseTime } from "@lifeboat/core";
import {
  type ExportOptions,
  type ExportProgress,
  type ExportResult,
  exportBackup,
  exportDatabase,
  exportFromCopy,
} from "@lifeboat/export";
import { restoreToPoint } from "@lifeboat/wal";
import { type Command, Option } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, type KeyStdinFlags, withCommon, withKeyStdin } from "../main.js";
import { createOutput, formatBytes, type Output, table } from "../output.js";

interface Flags extends CommonFlags, KeyStdinFlags {
  readonly fromBackup?: string;
  readonly at?: string;
  readonly format?: "dir" | "zip";
  readonly output?: string;
  readonly tables?: string;
  readonly views?: boolean;
  readonly force?: boolean;
  readonly from?: string;
  readonly to?: string[];
}

export function registerExport(program: Command): void {
  withKeyStdin(withCommon(program.command("export")))
    .description(
      "write a readable CSV copy of a database (a directory or a ZIP), to open in a spreadsheet or import back",
    )
    .argument("[db]", "database name from the config, or a database path (default: the only database in the config)")
    .option("-b, --from-backup <id>", "export a stored backup instead of the live database (an id or a unique prefix)")
    .option("--at <time>", 'export the archived state as of this moment: ISO 8601 or relative ("10 minutes ago")')
    .addOption(
      new Option("-f, --format <format>", "dir or zip (default: zip, or what --output's extension says)").choices([
        "dir",
        "zip",
      ]),
    )
    .option("-o, --output <path>", "where to write (default: <db>-export-<time>[.zip] here)")
    .option("--tables <names>", "only these tables (and views), comma-separated")
    .option("--views", "also write the rows of views (as CSV; views are never imported)")
    .option("--force", "replace an existing output (a file, or an earlier export directory)")
    .option("--from <target>", "with --from-backup/--at: read from this target (its name in the config)")
    .option("--to <location...>", "with --from-backup/--at: read backups from this location instead of the config's")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      if (flags.fromBackup && flags.at) {
        throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "--from-backup and --at each pick what to export.", {
          hint: "Give one of them (or neither, to export the live database).",
        });
      }
      const tables = flags.tables
        ?.split(",")
        .map((t) => t.trim())
        .filter((t) => t !== "");
      if (flags.tables !== undefined && (!tables || tables.length === 0)) {
        throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "--tables needs at least one table name.", {
          hint: "Example: --tables users,orders",
        });
      }
      const archived = Boolean(flags.fromBackup || flags.at);
      const toTime = flags.at === undefined ? undefined : parseTime(flags.at);
      // A path to an existing file is exported without a config; a name needs the config.
      const direct = !archived && db !== undefined && !flags.config && isFile(db);
      const lb: Lifeboat | undefined = direct ? undefined : await loadLifeboat(db, flags);
      try {
        const context = lb ? await lb.database(flags.to ? lb.databases[0] : db) : undefined;
        const name = context?.name ?? basename(db!, extname(db!));
        const format = flags.format ?? (flags.output && !flags.output.toLowerCase().endsWith(".zip") ? "dir" : "zip");
        const output = resolve(flags.output ?? defaultOutput(name, format));
        const options: ExportOptions = {
          output,
          format,
          force: Boolean(flags.force),
          views: Boolean(flags.views),
          ...(tables ? { tables } : {}),
          onProgress: (p) => showProgress(out, p),
        };
        let result: ExportResult;
        if (flags.fromBackup) {
          result = await exportBackup(context!, {
            ...options,
            backupId: flags.fromBackup,
            ...(flags.from ? { from: flags.from } : {}),
          }).finally(out.endProgress);
        } else if (toTime !== undefined) {
          result = await exportFromCopy(options, async (file) => {
            const pit = await restoreToPoint(context!, {
              toTime,
              output: file,
              integrity: "quick",
              yes: true,
              ...(flags.from ? { from: flags.from } : {}),
              onProgress: out.progress,
            });
            return {
              source: {
                kind: "point-in-time",
                database: context!.name,
                requestedTime: new Date(toTime).toISOString(),
                restoredTo: pit.restoredTo,
                generation: pit.generation,
                transaction: pit.txn,
                target: pit.target,
              },
              snapshotId: `${pit.generation}@${pit.txn}`,
            };
          }).finally(out.endProgress);
        } else {
          const database = context?.path ?? resolve(db!);
          result = await exportDatabase({ ...options, database }).finally(out.endProgress);
        }
        const m = result.manifest;
        const from =
          m.source.kind === "database"
            ? m.source.path
            : m.source.kind === "backup"
              ? `backup ${m.source.backupId} of ${m.source.database} (${m.source.backupCreatedAt}, from ${m.source.target})`
              : `${m.source.database} as of ${m.source.restoredTo} (transaction ${m.source.transaction} of generation ${m.source.generation}, from ${m.source.target})`;
        out.line(`Exported ${from} to ${result.output}${result.format === "zip" ? " (ZIP)" : ""}`);
        out.line(
          table(
            ["TABLE", "FILE", "ROWS", "SIZE"],
            m.tables.map((t) => [
              t.kind === "table" ? t.name : `${t.name} (${t.kind})`,
              t.file,
              t.rows,
              formatBytes(t.bytes),
            ]),
          ),
        );
        out.line(
          `${m.totals.files} files, ${m.totals.rows} rows, ${formatBytes(m.totals.bytes)} of CSV, user_version ${m.database.userVersion}, ${(result.durationMs / 1000).toFixed(1)} s`,
        );
        out.line(`Import it back with: lifeboat import ${quoteArg(result.output)} --output restored.db`);
        out.result({
          ok: true,
          export: {
            output: result.output,
            format: result.format,
            snapshotId: m.snapshotId,
            source: m.source,
            tables: m.tables.map((t) => ({
              name: t.name,
              kind: t.kind,
              file: t.file,
              rows: t.rows,
              bytes: t.bytes,
              sha256: t.sha256,
            })),
            totals: m.totals,
            durationMs: result.durationMs,
          },
        });
      } finally {
        await lb?.close();
      }
    });
}

function isFile(path: string): boolean {
  return existsSync(path) && statSync(path).isFile();
}

function defaultOutput(name: string, format: "dir" | "zip"): string {
  const stamp = new Date()
    .toISOString()
    .replace(/[-:]/g, "")
    .replace("T", "-")
    .replace(/\.\d+Z$/, "");
  return `${name.replace(/[^\p{L}\p{N}_.-]/gu, "_")}-export-${stamp}${format === "zip" ? ".zip" : ""}`;
}

function showProgress(out: Output, p: ExportProgress): void {
  out.progress({
    phase: p.phase === "download" ? "download" : "export",
    bytes: p.bytes,
    total: p.total,
    ...(p.table ? { label: p.table } : {}),
  });
}

function quoteArg(path: string): string {
  return /^[\w./-]+$/.test(path) ? path : `'${path.replaceAll("'", "'\\''")}'`;
}
