/** Export of a SQLite database to CSV files (a directory or a ZIP) with a manifest and a README. */
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import {
  type DatabaseContext,
  download,
  ErrorCodes,
  fsError,
  LifeboatError,
  type Progress,
  removeQuietly,
  selectSnapshot,
  tempPathFor,
} from "@lifeboat/core";
import Database from "better-sqlite3";
import { CsvWriter } from "./csv-writer.js";
import { checkOutput, directorySink, type ExportFormat, type ExportSink, zipSink } from "./export-sink.js";
import { csvFileNames } from "./file-names.js";
import {
  EXPORT_FORMAT,
  EXPORT_FORMAT_VERSION,
  type ExportManifest,
  type ExportSource,
  MANIFEST_FILE,
  type ManifestTable,
  README_FILE,
  readmeText,
  VALUE_RULES,
} from "./manifest.js";
import {
  type DatabaseSchema,
  quoteIdentifier,
  type RelationDescription,
  readSchema,
  type SchemaEntry,
  selectRowsSql,
} from "./schema-reader.js";
import { type SqliteValue, type StorageClass, VALUE_ENCODING } from "./value-codec.js";

const TOOL = {
  name: "@lifeboat/export",
  version: (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string })
    .version,
};
const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

export interface ExportProgress {
  /** `download`: fetching a backup first; `export`: writing CSV files. */
  readonly phase: "download" | "export";
  /** Bytes done: downloaded, or the share of the database's size whose rows are written. */
  readonly bytes: number;
  readonly total: number | undefined;
  /** The table being written (phase `export`). */
  readonly table?: string;
  readonly rows?: number;
  readonly totalRows?: number;
}

export interface ExportOptions {
  /** Where to write: a directory (`dir`) or a `.zip` file. Must not exist unless `force`. */
  readonly output: string;
  /** Default: `zip` when `output` ends in `.zip`, else `dir`. */
  readonly format?: ExportFormat;
  /** Only these tables (and views), by name (case-insensitive). Default: every table. */
  readonly tables?: readonly string[];
  /** Also write the rows of views (never imported; views are recreated from their SQL). */
  readonly views?: boolean;
  /** Replace an existing output (a file, an earlier export directory, or an empty directory). */
  readonly force?: boolean;
  /** Deflate level of the ZIP, 0-9 (default 6). */
  readonly zipLevel?: number;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: ExportProgress) => void;
}

export interface ExportDatabaseOptions extends ExportOptions {
  /** Path of the SQLite database file to export. */
  readonly database: string;
  /** What to record as the origin in the manifest (default: the database path). */
  readonly source?: ExportSource;
  /** Identity recorded in the manifest (default: a new id from the time and random bits). */
  readonly snapshotId?: string;
}

export interface ExportResult {
  readonly output: string;
  readonly format: ExportFormat;
  readonly manifest: ExportManifest;
  readonly durationMs: number;
}

function invalid(message: string, hint: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INVALID_ARGUMENT, message, { plugin: "export", operation: "export", hint });
}

function formatOf(options: ExportOptions, output: string): ExportFormat {
  const format = options.format ?? (output.toLowerCase().endsWith(".zip") ? "zip" : "dir");
  if (format !== "dir" && format !== "zip") {
    throw invalid(`Unknown export format "${String(format)}".`, "Use --format dir or --format zip.");
  }
  if (
    options.zipLevel !== undefined &&
    !(Number.isInteger(options.zipLevel) && options.zipLevel >= 0 && options.zipLevel <= 9)
  ) {
    throw invalid(`The ZIP level must be 0 to 9, got ${options.zipLevel}.`, "Use 6 (the default) or leave it out.");
  }
  return format;
}

function newSnapshotId(now: Date): string {
  return `${now
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d+Z$/, "Z")}-${randomBytes(4).toString("hex")}`;
}

/** Maps better-sqlite3 failures to actionable LifeboatErrors. */
function databaseError(error: unknown, path: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  const base = { plugin: "export", operation: "export", cause: error, details: { path, sqlite: code } };
  if (code === "SQLITE_NOTADB") {
    return new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is not a SQLite database.`, {
      ...base,
      hint: "Point at the database file itself (not a backup archive, a -wal file or an export).",
    });
  }
  if (code === "SQLITE_BUSY" || code === "SQLITE_LOCKED") {
    return new LifeboatError(ErrorCodes.DATABASE_LOCKED, `${path} is locked by another connection.`, {
      ...base,
      hint: "Try again when the writer has finished; WAL mode (PRAGMA journal_mode=WAL) lets exports read while others write.",
    });
  }
  return new LifeboatError(
    ErrorCodes.INTERNAL,
    `Cannot read ${path}: ${error instanceof Error ? error.message : String(error)}`,
    {
      ...base,
      hint: "Run `PRAGMA integrity_check` on the database; if it is fine, please report this.",
    },
  );
}

interface Plan {
  readonly relations: readonly RelationDescription[];
  /** Rows each relation will yield (0 for views, which are not counted ahead). */
  readonly counts: readonly number[];
  readonly schema: readonly SchemaEntry[];
  readonly selection: readonly string[] | null;
  /** The WHERE clause (or '') of each relation's SELECT. */
  readonly where: readonly string[];
}

/**
 * Which relations and schema entries the export holds, given `--tables` and `--views`. With a
 * selection, SQLite's internal tables (AUTOINCREMENT counters, ANALYZE statistics) keep only the
 * rows about selected tables, and are left out when none are left.
 */
function plan(
  db: Database.Database,
  schema: DatabaseSchema,
  tables: readonly string[] | undefined,
  views: boolean,
): Plan {
  const count = (r: RelationDescription, where: string): number =>
    r.kind === "view"
      ? 0
      : Number(
          db
            .prepare(`SELECT count(*) FROM main.${quoteIdentifier(r.name)}${where}`)
            .pluck()
            .get(),
        );
  if (!tables || tables.length === 0) {
    const relations = schema.relations.filter((r) => views || r.kind !== "view");
    return {
      relations,
      counts: relations.map((r) => count(r, "")),
      schema: schema.entries,
      selection: null,
      where: relations.map(() => ""),
    };
  }
  const known = new Map<string, string>();
  for (const r of schema.relations) known.set(r.name.toLowerCase(), r.name);
  for (const v of schema.virtualTables) known.set(v.toLowerCase(), v);
  const chosen = new Set<string>();
  for (const requested of tables) {
    const name = known.get(requested.toLowerCase());
    if (name === undefined) {
      const list = [...known.values()]
        .filter((n) => !n.startsWith("sqlite_"))
        .map((n) => (/^\w+$/.test(n) ? n : JSON.stringify(n)));
      throw invalid(
        `No table or view "${requested}" in the database.`,
        `Tables and views: ${list.join(", ") || "(none)"}. Names are matched without regard to case.`,
      );
    }
    chosen.add(name);
    // A virtual table's rows live in its shadow tables (named <vtab>_<suffix>).
    if (schema.virtualTables.includes(name)) {
      for (const r of schema.relations) {
        if (r.kind === "shadow" && r.name.toLowerCase().startsWith(`${name.toLowerCase()}_`)) chosen.add(r.name);
      }
    }
  }
  if (views) for (const r of schema.relations) if (r.kind === "view") chosen.add(r.name);
  const names = [...chosen].map((n) => `'${n.replaceAll("'", "''")}'`).join(", ");
  const relations: RelationDescription[] = [];
  const counts: number[] = [];
  const where: string[] = [];
  for (const r of schema.relations) {
    const cut = r.kind === "internal" && !chosen.has(r.name);
    if (!cut && !chosen.has(r.name)) continue;
    const condition = cut ? ` WHERE ${r.name === "sqlite_sequence" ? "name" : "tbl"} IN (${names})` : "";
    const rows = count(r, condition);
    if (cut && rows === 0) continue;
    relations.push(r);
    counts.push(rows);
    where.push(condition);
  }
  const kept = new Set([...chosen, ...relations.map((r) => r.name)]);
  return {
    relations,
    counts,
    schema: schema.entries.filter((e) =>
      e.type === "table" || e.type === "view" ? kept.has(e.name) : chosen.has(e.tableName),
    ),
    selection: [...chosen],
    where,
  };
}

/**
 * Exports the database at `database` to CSV files with a manifest and a README, as a directory or
 * a ZIP at `output`. All tables are read in ONE read transaction on a read-only connection (held
 * for the whole export), so they are consistent with each other while the application keeps
 * writing (in WAL mode; in rollback mode writers wait). Rows are streamed a batch at a time, so
 * memory stays flat whatever the size. The files are written to a temp path next to `output`,
 * fsynced, and renamed into place only when complete.
 *
 * Throws INVALID_ARGUMENT (unknown table, output exists without `force`, bad format), DATABASE_NOT_FOUND,
 * NOT_A_DATABASE, DATABASE_LOCKED, DISK_FULL / PERMISSION_DENIED (writing), ABORTED.
 */
export async function exportDatabase(options: ExportDatabaseOptions): Promise<ExportResult> {
  const started = Date.now();
  const path = resolve(options.database);
  const output = resolve(options.output);
  const format = formatOf(options, output);
  const info = await stat(path).catch((error: unknown) => {
    throw (error as { code?: string }).code === "ENOENT"
      ? new LifeboatError(ErrorCodes.DATABASE_NOT_FOUND, `Database ${path} does not exist.`, {
          plugin: "export",
          operation: "export",
          hint: "Check the path, or give the database's name from the config.",
        })
      : fsError(error, "read", path, "export");
  });
  if (!info.isFile()) {
    throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is not a file.`, {
      plugin: "export",
      operation: "export",
      hint: "Point at the SQLite database file.",
    });
  }
  if (output === path) throw invalid(`The output ${output} is the database itself.`, "Choose another --output.");
  const replace = await checkOutput(output, format, options.force ?? false);

  let db: Database.Database | undefined;
  let sink: ExportSink | undefined;
  try {
    try {
      db = new Database(path, { readonly: true, fileMustExist: true, timeout: 5000 });
      db.defaultSafeIntegers(true);
      // One sequential pass over each table: a small page cache is enough and keeps memory flat.
      db.pragma("cache_size = -2048");
      db.exec("BEGIN");
      // BEGIN is deferred: this read starts the transaction and pins the snapshot every table is read from.
      db.prepare("SELECT count(*) FROM main.sqlite_schema").get();
    } catch (error) {
      throw databaseError(error, path);
    }
    const pragma = (name: string): unknown => db!.prepare(`PRAGMA main.${name}`).pluck().safeIntegers(false).get();
    const database: ExportManifest["database"] = {
      userVersion: Number(pragma("user_version")),
      applicationId: Number(pragma("application_id")),
      pageSize: Number(pragma("page_size")),
      textEncoding: String(pragma("encoding")),
      autoVacuum: Number(pragma("auto_vacuum")),
      journalMode: String(pragma("journal_mode")).toLowerCase(),
      sqliteVersion: String(db.prepare("SELECT sqlite_version()").pluck().get()),
    };
    const databaseBytes = database.pageSize * Number(pragma("page_count"));
    const chosen = plan(db, readSchema(db), options.tables, options.views ?? false);
    const files = csvFileNames(chosen.relations.map((r) => r.name));
    const counts = chosen.counts;
    const totalRows = counts.reduce((a, b) => a + b, 0);

    sink = format === "zip" ? await zipSink(output, replace, options.zipLevel) : await directorySink(output, replace);
    const tables: ManifestTable[] = [];
    let rowsDone = 0;
    for (const [i, relation] of chosen.relations.entries()) {
      const file = files[i]!;
      const statement = db.prepare(selectRowsSql(relation, chosen.where[i])).raw(true);
      const out = await sink.file(file);
      await out.write(BOM);
      const header = [...(relation.rowidColumn ? [relation.rowidColumn] : []), ...relation.columns.map((c) => c.name)];
      // Rows are encoded as they are read and written in chunks of 256 KiB (constant memory).
      const csv = new CsvWriter();
      csv.add(header);
      const offset = relation.rowidColumn ? 1 : 0;
      const classes = relation.columns.map(() => ({ null: 0, integer: 0, real: 0, text: 0, blob: 0 }));
      let rows = 0;
      const flush = async (all: boolean): Promise<void> => {
        for (const chunk of csv.take(all)) await out.write(chunk);
        if (options.signal?.aborted) {
          throw new LifeboatError(ErrorCodes.ABORTED, `The export of ${path} was aborted.`, {
            plugin: "export",
            operation: "export",
            hint: "Nothing was written at the output path.",
          });
        }
        options.onProgress?.({
          phase: "export",
          bytes: totalRows > 0 ? Math.round((databaseBytes * Math.min(rowsDone, totalRows)) / totalRows) : 0,
          total: databaseBytes,
          table: relation.name,
          rows: rowsDone,
          totalRows,
        });
      };
      try {
        for (const row of statement.iterate() as Iterable<SqliteValue[]>) {
          for (let c = offset; c < row.length; c++) {
            const value = row[c]!;
            const tally = classes[c - offset]!;
            if (value === null) tally.null++;
            else if (typeof value === "bigint") tally.integer++;
            else if (typeof value === "number") tally.real++;
            else if (typeof value === "string") tally.text++;
            else tally.blob++;
          }
          rows++;
          if (relation.kind !== "view") rowsDone++;
          if (csv.add(row)) await flush(false);
        }
        await flush(true);
      } catch (error) {
        throw databaseError(error, path);
      }
      const { bytes, sha256 } = await out.end();
      if (relation.kind !== "view" && rows !== counts[i]) {
        throw new LifeboatError(
          ErrorCodes.INTERNAL,
          `${relation.name}: read ${rows} rows, counted ${counts[i]} in the same transaction.`,
          {
            plugin: "export",
            operation: "export",
            hint: "This is a bug in Lifeboat; please report it.",
          },
        );
      }
      tables.push({
        name: relation.name,
        kind: relation.kind,
        file,
        withoutRowid: relation.withoutRowid,
        strict: relation.strict,
        rowidColumn: relation.rowidColumn,
        columns: relation.columns.map((c, j) => ({
          ...c,
          imported: c.generated === null,
          storageClasses: classes[j]! as Record<StorageClass, number>,
        })),
        rows,
        bytes,
        sha256,
      });
    }
    db.exec("COMMIT");
    db.close();
    db = undefined;

    const createdAt = new Date();
    const manifest: ExportManifest = {
      format: EXPORT_FORMAT,
      formatVersion: EXPORT_FORMAT_VERSION,
      tool: TOOL,
      snapshotId: options.snapshotId ?? newSnapshotId(createdAt),
      createdAt: createdAt.toISOString(),
      source: options.source ?? { kind: "database", path },
      database,
      csv: { dialect: "RFC 4180", charset: "UTF-8", byteOrderMark: true, recordSeparator: "CRLF", header: true },
      valueEncoding: { id: VALUE_ENCODING, rules: VALUE_RULES },
      selection: chosen.selection,
      tables,
      totals: {
        files: tables.length,
        rows: tables.reduce((n, t) => n + t.rows, 0),
        bytes: tables.reduce((n, t) => n + t.bytes, 0),
      },
      schema: chosen.schema,
    };
    const readme = await sink.file(README_FILE);
    await readme.write(Buffer.from(readmeText(manifest).replaceAll("\n", "\r\n"), "utf8"));
    await readme.end();
    const manifestFile = await sink.file(MANIFEST_FILE);
    await manifestFile.write(Buffer.from(`${JSON.stringify(manifest, null, 2)}\n`, "utf8"));
    await manifestFile.end();
    await sink.commit();
    return { output, format, manifest, durationMs: Date.now() - started };
  } catch (error) {
    if (db?.open) db.close();
    await sink?.abort();
    throw error;
  }
}

/**
 * Exports a copy of a database that `materialize` first writes to a file (a downloaded backup, a
 * point-in-time restore): the file lives in a temp directory next to `output` (same file system,
 * so space for the export is space for the copy) and is removed afterwards, whatever happens.
 * `materialize` returns what the manifest records as the source.
 */
export async function exportFromCopy(
  options: ExportOptions,
  materialize: (file: string) => Promise<{ source: ExportSource; snapshotId: string }>,
): Promise<ExportResult> {
  const output = resolve(options.output);
  await checkOutput(output, formatOf(options, output), options.force ?? false);
  const dir = tempPathFor(output, "export-source");
  try {
    await mkdir(dir, { mode: 0o700 });
  } catch (error) {
    throw fsError(error, "create", dir, "export");
  }
  try {
    const file = join(dir, "database.db");
    const { source, snapshotId } = await materialize(file);
    return await exportDatabase({ ...options, database: file, source, snapshotId });
  } finally {
    await removeQuietly(dir);
  }
}

/**
 * Exports a stored backup of `db`: the backup (by id or unique prefix; default the newest good
 * one) is chosen as `lifeboat restore` chooses it, downloaded and checked against its manifest's
 * SHA-256 into a temp file, and exported from there. The manifest records the backup's id and time.
 */
export async function exportBackup(
  db: DatabaseContext,
  options: ExportOptions & { readonly backupId?: string; readonly from?: string },
): Promise<ExportResult> {
  return exportFromCopy(options, async (file) => {
    const { repo, snapshot } = await selectSnapshot(db, {
      ...(options.backupId ? { backupId: options.backupId } : {}),
      ...(options.from ? { from: options.from } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const m = snapshot.manifest;
    await download(db, repo, m, file, {
      ...(options.signal ? { signal: options.signal } : {}),
      onProgress: (p: Progress) => options.onProgress?.({ phase: "download", bytes: p.bytes, total: p.total }),
    });
    return {
      source: {
        kind: "backup",
        database: db.name,
        backupId: m.id,
        backupCreatedAt: m.createdAt,
        target: repo.named.name,
      },
      snapshotId: m.id,
    };
  });
}
