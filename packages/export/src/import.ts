/** Import of an export (directory or ZIP) back into a new SQLite database. */
import { createHash } from "node:crypto";
import { open, rename, rm, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { ErrorCodes, fsError, fsyncDir, LifeboatError, removeQuietly, tempPathFor } from "@lifeboat/core";
import { findHolders } from "@lifeboat/sqlite";
import Database from "better-sqlite3";
import { CsvReader } from "./csv-reader.js";
import { type ExportArchive, openExport, readSmallFile } from "./export-reader.js";
import { type ExportManifest, MANIFEST_FILE, type ManifestTable, parseManifest } from "./manifest.js";
import { quoteIdentifier } from "./schema-reader.js";
import type { SqliteValue } from "./value-codec.js";

const MANIFEST_LIMIT = 64 * 1024 * 1024;
const TEXT_ENCODINGS = new Set(["UTF-8", "UTF-16le", "UTF-16be"]);

export interface ImportProgress {
  readonly phase: "import";
  /** CSV bytes read and checked so far, of `total`. */
  readonly bytes: number;
  readonly total: number;
  readonly table: string;
}

export interface ImportOptions {
  /** The export: a directory or a ZIP written by `exportDatabase`. */
  readonly input: string;
  /** The database file to create. Must not exist unless `force`. */
  readonly output: string;
  /** Replace an existing database file at `output` (refused while a process has it open). */
  readonly force?: boolean;
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: ImportProgress) => void;
}

export interface ImportResult {
  readonly output: string;
  readonly manifest: ExportManifest;
  /** Rows loaded per table (views are checked, not loaded). */
  readonly tables: ReadonlyArray<{ readonly name: string; readonly rows: number }>;
  readonly durationMs: number;
}

function corrupt(message: string, cause?: unknown): LifeboatError {
  return new LifeboatError(ErrorCodes.CORRUPT_BACKUP, message, {
    plugin: "export",
    operation: "import",
    ...(cause === undefined ? {} : { cause }),
    hint: "Nothing was written. Use an untouched copy of the export, or export the database again.",
  });
}

function invalid(message: string, hint: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INVALID_ARGUMENT, message, { plugin: "export", operation: "import", hint });
}

/** Reads and checks the manifest of the export at `input` (a directory or a ZIP). */
export async function readExportManifest(input: string): Promise<ExportManifest> {
  const archive = await openExport(resolve(input));
  try {
    return await manifestOf(archive);
  } finally {
    await archive.close();
  }
}

async function manifestOf(archive: ExportArchive): Promise<ExportManifest> {
  if (!(await archive.has(MANIFEST_FILE))) {
    throw corrupt(`${archive.where} has no ${MANIFEST_FILE}: it is not a Lifeboat export, or an incomplete one.`);
  }
  return parseManifest(
    await readSmallFile(archive, MANIFEST_FILE, MANIFEST_LIMIT),
    `${archive.where}/${MANIFEST_FILE}`,
  );
}

async function checkImportOutput(output: string, input: string, force: boolean): Promise<boolean> {
  if (output === input) throw invalid(`The output ${output} is the export itself.`, "Choose another --output.");
  const parent = await stat(dirname(output)).catch(() => null);
  if (!parent?.isDirectory()) {
    throw invalid(`Cannot create ${output}: ${dirname(output)} is not a directory.`, "Create the directory first.");
  }
  const existing = await stat(output).catch(() => null);
  if (!existing) return false;
  if (!force) {
    throw invalid(`${output} already exists.`, "Choose another --output, or pass --force to replace it.");
  }
  if (!existing.isFile()) throw invalid(`${output} exists and is not a file.`, "Choose another --output.");
  const holders = await findHolders(output);
  if (holders.length > 0) {
    throw new LifeboatError(
      ErrorCodes.DATABASE_LOCKED,
      `${output} is open in another process (pid ${holders.map((h) => h.pid).join(", ")}).`,
      { plugin: "export", operation: "import", hint: "Stop the application using it, or import to another path." },
    );
  }
  return true;
}

/**
 * Rebuilds a SQLite database from an export: page size, text encoding, auto_vacuum,
 * application_id and user_version from the manifest; then the tables (CREATE TABLE statements
 * from the manifest), then every table's rows from its CSV (generated columns left to SQLite),
 * AUTOINCREMENT counters and ANALYZE statistics, then indexes, views and triggers. Each CSV is
 * checked against the manifest's size, SHA-256 and row count as it is read, and each table's
 * count again in the database. The database is built in a temp file next to `output` and renamed
 * into place (after an integrity check and fsync) only when everything checks out.
 *
 * Throws UNSUPPORTED_FORMAT (a newer export format, a virtual table module this SQLite lacks),
 * CORRUPT_BACKUP (missing, truncated or altered files), INVALID_ARGUMENT (output exists without
 * `force`), DATABASE_LOCKED (replacing a database in use), DISK_FULL, PERMISSION_DENIED, ABORTED.
 */
export async function importExport(options: ImportOptions): Promise<ImportResult> {
  const started = Date.now();
  const input = resolve(options.input);
  const output = resolve(options.output);
  const archive = await openExport(input);
  let temp: string | undefined;
  let db: Database.Database | undefined;
  try {
    const manifest = await manifestOf(archive);
    const replace = await checkImportOutput(output, input, options.force ?? false);
    for (const t of manifest.tables) {
      if (!(await archive.has(t.file))) throw corrupt(`${archive.where} is missing ${t.file} (table ${t.name}).`);
    }
    temp = tempPathFor(output, "import");
    try {
      db = new Database(temp);
    } catch (error) {
      throw fsError(error, "create", temp, "export");
    }
    // Shadow tables of virtual tables (FTS5 and friends) are written directly, as SQLite wrote them.
    db.unsafeMode(true);
    configure(db, manifest);
    db.exec("BEGIN");
    const kinds = new Map(manifest.tables.map((t) => [t.name, t.kind]));
    for (const entry of manifest.schema) {
      if (
        entry.type !== "table" ||
        kinds.get(entry.name) === "shadow" ||
        entry.name.toLowerCase().startsWith("sqlite_")
      ) {
        continue;
      }
      runSchema(db, entry.sql, entry.name);
    }
    const loaded: Array<{ name: string; rows: number }> = [];
    const total = manifest.tables.reduce((n, t) => n + t.bytes, 0);
    let done = 0;
    const order = (t: ManifestTable) => ({ table: 0, shadow: 1, internal: 2, view: 3 })[t.kind];
    for (const table of [...manifest.tables].sort((a, b) => order(a) - order(b))) {
      if (table.kind === "internal") prepareInternal(db, table, manifest);
      if (table.kind === "shadow") db.exec(`DELETE FROM main.${quoteIdentifier(table.name)}`);
      const rows = await loadTable(db, archive, table, {
        ...options,
        onBytes: (n) => {
          done += n;
          options.onProgress?.({ phase: "import", bytes: done, total, table: table.name });
        },
      });
      if (table.kind !== "view") loaded.push({ name: table.name, rows });
    }
    for (const entry of manifest.schema) {
      if (entry.type !== "table") runSchema(db, entry.sql, entry.name);
    }
    db.exec("COMMIT");
    for (const table of manifest.tables) {
      if (table.kind === "view") continue;
      const rows = Number(
        db
          .prepare(`SELECT count(*) FROM main.${quoteIdentifier(table.name)}`)
          .pluck()
          .get(),
      );
      if (rows !== table.rows) {
        throw corrupt(`${table.name} has ${rows} rows after the import; the manifest says ${table.rows}.`);
      }
    }
    if (manifest.database.journalMode === "wal") db.pragma("journal_mode = WAL");
    const problems = (db.pragma("quick_check(5)") as Array<{ quick_check: string }>).map((r) => r.quick_check);
    if (problems.length !== 1 || problems[0] !== "ok") {
      throw new LifeboatError(
        ErrorCodes.INTEGRITY_FAILED,
        `The imported database fails quick_check: ${problems.join("; ")}`,
        {
          plugin: "export",
          operation: "import",
          hint: "Nothing was written. Please report this with the export.",
        },
      );
    }
    db.close();
    db = undefined;
    await syncFile(temp);
    if (replace) {
      // A stale -wal or -journal of the replaced database must not be applied to the new one.
      for (const suffix of ["-wal", "-shm", "-journal"]) await rm(output + suffix, { force: true });
    }
    try {
      await rename(temp, output);
    } catch (error) {
      throw fsError(error, "rename", temp, "export");
    }
    temp = undefined;
    await fsyncDir(dirname(output));
    return { output, manifest, tables: loaded, durationMs: Date.now() - started };
  } catch (error) {
    if (db?.open) db.close();
    if (temp) for (const suffix of ["", "-wal", "-shm", "-journal"]) await removeQuietly(temp + suffix);
    throw error;
  } finally {
    await archive.close();
  }
}

/** File-level settings, which must be made before the first table exists. */
function configure(db: Database.Database, manifest: ExportManifest): void {
  const d = manifest.database;
  if (!(d.pageSize >= 512 && d.pageSize <= 65536 && (d.pageSize & (d.pageSize - 1)) === 0)) {
    throw corrupt(`The manifest's page size ${d.pageSize} is not a SQLite page size.`);
  }
  if (!TEXT_ENCODINGS.has(d.textEncoding)) throw corrupt(`The manifest's text encoding ${d.textEncoding} is unknown.`);
  if (!(d.autoVacuum >= 0 && d.autoVacuum <= 2))
    throw corrupt(`The manifest's auto_vacuum ${d.autoVacuum} is unknown.`);
  db.pragma(`page_size = ${d.pageSize}`);
  db.pragma(`encoding = '${d.textEncoding}'`);
  db.pragma(`auto_vacuum = ${d.autoVacuum}`);
  // A temp file that is deleted on any failure needs no journal; it is fsynced once at the end.
  db.pragma("journal_mode = OFF");
  db.pragma("synchronous = OFF");
  db.pragma("cache_size = -32768"); // 32 MiB: room for index builds, bounded whatever the size
  // The rows are put back as they were, even where the original broke a rule it had then.
  db.pragma("foreign_keys = OFF");
  db.pragma("ignore_check_constraints = ON");
  db.pragma(`application_id = ${d.applicationId | 0}`);
  db.pragma(`user_version = ${d.userVersion | 0}`);
}

function runSchema(db: Database.Database, sql: string, name: string): void {
  try {
    db.exec(sql);
  } catch (error) {
    const message = (error as Error).message;
    if (/no such module/i.test(message)) {
      throw new LifeboatError(ErrorCodes.UNSUPPORTED_FORMAT, `Cannot recreate ${name}: ${message}.`, {
        plugin: "export",
        operation: "import",
        cause: error,
        hint: "The export has a virtual table whose module this SQLite build does not have; import where it is available.",
      });
    }
    throw corrupt(`Cannot recreate ${name} from the manifest's SQL (${message}).`, error);
  }
}

/** Makes sure SQLite's own table exists (as SQLite would create it) and is empty before it is filled. */
function prepareInternal(db: Database.Database, table: ManifestTable, manifest: ExportManifest): void {
  const exists = (name: string) =>
    db.prepare("SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = ?").pluck().get(name) !== undefined;
  const name = table.name.toLowerCase();
  if (!exists(table.name)) {
    if (name === "sqlite_sequence") {
      // Only AUTOINCREMENT creates it; its tables may all have been dropped since.
      db.exec('CREATE TABLE "lifeboat import autoincrement" (id INTEGER PRIMARY KEY AUTOINCREMENT)');
      db.exec('DROP TABLE "lifeboat import autoincrement"');
    } else if (name === "sqlite_stat1" || name === "sqlite_stat4") {
      const before = new Set(["sqlite_stat1", "sqlite_stat4"].filter(exists));
      db.exec("ANALYZE main.sqlite_schema");
      const wanted = new Set(manifest.tables.map((t) => t.name.toLowerCase()));
      for (const stat of ["sqlite_stat1", "sqlite_stat4"]) {
        if (!before.has(stat) && !wanted.has(stat) && exists(stat)) db.exec(`DROP TABLE main.${stat}`);
      }
    }
    if (!exists(table.name)) {
      throw new LifeboatError(
        ErrorCodes.UNSUPPORTED_FORMAT,
        `This SQLite cannot recreate its internal table ${table.name}.`,
        {
          plugin: "export",
          operation: "import",
          hint: "Import with a SQLite build that has it (sqlite_stat4 needs SQLITE_ENABLE_STAT4).",
        },
      );
    }
  }
  db.exec(`DELETE FROM main.${quoteIdentifier(table.name)}`);
}

interface LoadOptions {
  readonly signal?: AbortSignal;
  readonly onBytes: (bytes: number) => void;
}

/**
 * Streams one CSV of the export into its table (views: only read), checking the header, every
 * field, the row count, the size and the SHA-256. Returns the row count.
 */
async function loadTable(
  db: Database.Database,
  archive: ExportArchive,
  table: ManifestTable,
  options: LoadOptions,
): Promise<number> {
  const where = `${archive.where}: ${table.file}`;
  const header = [...(table.rowidColumn ? [table.rowidColumn] : []), ...table.columns.map((c) => c.name)];
  // CSV positions of the values to insert: the rowid (if any) and every non-generated column.
  const offset = table.rowidColumn ? 1 : 0;
  const positions = [
    ...(table.rowidColumn ? [0] : []),
    ...table.columns.flatMap((c, i) => (c.imported ? [i + offset] : [])),
  ];
  const insert =
    table.kind === "view"
      ? undefined
      : db.prepare(
          `INSERT INTO main.${quoteIdentifier(table.name)} (${positions.map((p) => (p === 0 && table.rowidColumn ? table.rowidColumn : quoteIdentifier(table.columns[p - offset]!.name))).join(", ")}) VALUES (${positions.map(() => "?").join(", ")})`,
        );
  const hash = createHash("sha256");
  let bytes = 0;
  let rows = 0;
  let headerSeen = false;
  const reader = new CsvReader(where, (record) => {
    if (!headerSeen) {
      headerSeen = true;
      if (record.length !== header.length || record.some((name, i) => name !== header[i])) {
        throw corrupt(
          `${where}: the header ${JSON.stringify(record)} does not match the manifest's columns ${JSON.stringify(header)}.`,
        );
      }
      return;
    }
    rows++;
    if (record.length !== header.length) {
      throw corrupt(`${where}, row ${rows}: ${record.length} fields where the header has ${header.length}.`);
    }
    if (insert) {
      const values = new Array<SqliteValue>(positions.length);
      for (let i = 0; i < positions.length; i++) values[i] = record[positions[i]!]!;
      try {
        insert.run(values);
      } catch (error) {
        throw corrupt(`${where}, row ${rows}: ${(error as Error).message}.`, error);
      }
    }
  });
  const source = await archive.open(table.file);
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
      reader.write(chunk);
      options.onBytes(chunk.length);
      if (options.signal?.aborted) {
        throw new LifeboatError(ErrorCodes.ABORTED, "The import was aborted.", {
          plugin: "export",
          operation: "import",
          hint: "Nothing was written.",
        });
      }
    }
    reader.end();
  } catch (error) {
    source.destroy();
    if (error instanceof LifeboatError) throw error;
    throw corrupt(`${where}: ${(error as Error).message}.`, error);
  }
  const sha256 = hash.digest("hex");
  if (bytes !== table.bytes || sha256 !== table.sha256 || rows !== table.rows) {
    const problems = [
      bytes !== table.bytes ? `${bytes} bytes (manifest: ${table.bytes})` : "",
      sha256 !== table.sha256 ? `sha256 ${sha256} (manifest: ${table.sha256})` : "",
      rows !== table.rows ? `${rows} rows (manifest: ${table.rows})` : "",
    ].filter(Boolean);
    throw corrupt(`${where} does not match the manifest: ${problems.join(", ")}.`);
  }
  return rows;
}

async function syncFile(path: string): Promise<void> {
  const handle = await open(path, "r+");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
