/** `manifest.json` of an export: what it holds, how values are written, and the schema to rebuild. */
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { SAFE_CSV_NAME } from "./file-names.js";
import type { ColumnDescription, RelationKind, SchemaEntry } from "./schema-reader.js";
import { type StorageClass, VALUE_ENCODING } from "./value-codec.js";

export const EXPORT_FORMAT = "lifeboat.export";
/** Bumped when a reader of an older version could not read the new files correctly. */
export const EXPORT_FORMAT_VERSION = 1;
export const MANIFEST_FILE = "manifest.json";
export const README_FILE = "README.txt";

/** Where the exported database came from. */
export type ExportSource =
  | { readonly kind: "database"; readonly path: string }
  | {
      readonly kind: "backup";
      readonly database: string;
      readonly backupId: string;
      readonly backupCreatedAt: string;
      readonly target: string;
    }
  | {
      readonly kind: "point-in-time";
      readonly database: string;
      /** The moment asked for (ISO 8601). */
      readonly requestedTime: string;
      /** Observed time of the last transaction included. */
      readonly restoredTo: string;
      readonly generation: string;
      readonly transaction: number;
      readonly target: string;
    };

export interface ManifestColumn extends ColumnDescription {
  /** False for generated columns: their values are in the CSV but SQLite computes them on import. */
  readonly imported: boolean;
  /** How many values of each storage class the column holds (see `valueEncoding`). */
  readonly storageClasses: Readonly<Record<StorageClass, number>>;
}

export interface ManifestTable {
  readonly name: string;
  readonly kind: RelationKind;
  /** The CSV file, relative to the export's root. */
  readonly file: string;
  readonly withoutRowid: boolean;
  readonly strict: boolean;
  /** When set, the CSV's first column (headed by this name) is the table's rowid. */
  readonly rowidColumn: string | null;
  readonly columns: readonly ManifestColumn[];
  readonly rows: number;
  /** Size of the CSV file in bytes, BOM included. */
  readonly bytes: number;
  /** SHA-256 (hex) of the CSV file's bytes. */
  readonly sha256: string;
}

export interface ExportManifest {
  readonly format: typeof EXPORT_FORMAT;
  readonly formatVersion: number;
  readonly tool: { readonly name: string; readonly version: string };
  /** Identity of this export (for a backup: `<backup id>`; for a point in time: `<generation>@<txn>`). */
  readonly snapshotId: string;
  readonly createdAt: string;
  readonly source: ExportSource;
  readonly database: {
    /** `PRAGMA user_version`: the application's schema version. */
    readonly userVersion: number;
    readonly applicationId: number;
    readonly pageSize: number;
    readonly textEncoding: string;
    readonly autoVacuum: number;
    readonly journalMode: string;
    readonly sqliteVersion: string;
  };
  readonly csv: {
    readonly dialect: "RFC 4180";
    readonly charset: "UTF-8";
    readonly byteOrderMark: true;
    readonly recordSeparator: "CRLF";
    readonly header: true;
  };
  readonly valueEncoding: { readonly id: typeof VALUE_ENCODING; readonly rules: Readonly<Record<string, string>> };
  /** When only some tables were exported (`--tables`), their names; else null. */
  readonly selection: readonly string[] | null;
  readonly tables: readonly ManifestTable[];
  readonly totals: { readonly files: number; readonly rows: number; readonly bytes: number };
  /** CREATE statements: tables, then indexes, views and triggers (each in creation order). */
  readonly schema: readonly SchemaEntry[];
}

export const VALUE_RULES: Readonly<Record<string, string>> = {
  null: "an empty unquoted field",
  text: 'always a quoted field; "" is the empty string; a " inside is doubled',
  integer: "unquoted decimal digits with an optional leading -, exact 64-bit",
  real: "unquoted shortest round-trip decimal, always with a . or an exponent (1.0, -0.0, 1e+308), or Infinity/-Infinity",
  blob: "unquoted base64: followed by standard padded base64 of the bytes (base64: alone is the empty BLOB)",
  rowid: "when rowidColumn is set, the first CSV column is the table's rowid (an integer)",
};

function corrupt(message: string, where: string): LifeboatError {
  return new LifeboatError(ErrorCodes.CORRUPT_BACKUP, `${where}: ${message}`, {
    plugin: "export",
    operation: "import",
    hint: "The export's manifest.json is damaged or was edited; use an untouched copy of the export.",
  });
}

/**
 * Parses and checks a manifest read from `where`. Throws UNSUPPORTED_FORMAT for a manifest of
 * another format or a newer version, CORRUPT_BACKUP for one that is malformed (including file
 * names that are not ours, such as paths leaving the export).
 */
export function parseManifest(text: string, where: string): ExportManifest {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw corrupt(`not valid JSON (${(error as Error).message})`, where);
  }
  if (!isObject(value)) throw corrupt("not a JSON object", where);
  if (value.format !== EXPORT_FORMAT) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `${where} is not a Lifeboat export manifest (format ${JSON.stringify(value.format)}).`,
      { plugin: "export", operation: "import", hint: "Point at a directory or ZIP written by `lifeboat export`." },
    );
  }
  const version = value.formatVersion;
  if (typeof version !== "number" || !Number.isInteger(version) || version < 1) {
    throw corrupt(`formatVersion ${JSON.stringify(version)} is not a version number`, where);
  }
  if (version > EXPORT_FORMAT_VERSION) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `${where} was written by a newer Lifeboat (export format ${version}; this one reads up to ${EXPORT_FORMAT_VERSION}).`,
      { plugin: "export", operation: "import", hint: "Upgrade lifeboat and run the import again." },
    );
  }
  const encoding = isObject(value.valueEncoding) ? value.valueEncoding.id : undefined;
  if (encoding !== VALUE_ENCODING) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `${where} uses value encoding ${JSON.stringify(encoding)}; this Lifeboat reads ${VALUE_ENCODING}.`,
      { plugin: "export", operation: "import", hint: "Upgrade lifeboat and run the import again." },
    );
  }
  const db = value.database;
  if (!isObject(db) || !isInt(db.userVersion) || !isInt(db.applicationId) || !isInt(db.pageSize)) {
    throw corrupt("database must give userVersion, applicationId and pageSize", where);
  }
  if (typeof db.textEncoding !== "string" || !isInt(db.autoVacuum) || typeof db.journalMode !== "string") {
    throw corrupt("database must give textEncoding, autoVacuum and journalMode", where);
  }
  if (!Array.isArray(value.tables)) throw corrupt("tables must be a list", where);
  const files = new Set<string>();
  for (const [i, t] of value.tables.entries()) {
    const at = `tables[${i}]`;
    if (!isObject(t) || typeof t.name !== "string") throw corrupt(`${at} must be an object with a name`, where);
    if (!["table", "shadow", "internal", "view"].includes(t.kind as string))
      throw corrupt(`${at}.kind is ${JSON.stringify(t.kind)}`, where);
    if (typeof t.file !== "string" || !SAFE_CSV_NAME.test(t.file) || files.has(t.file.toLowerCase())) {
      throw corrupt(`${at}.file ${JSON.stringify(t.file)} is not a file name an export writes`, where);
    }
    files.add(t.file.toLowerCase());
    if (!isInt(t.rows) || !isInt(t.bytes) || typeof t.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(t.sha256)) {
      throw corrupt(`${at} must give rows, bytes and a sha256`, where);
    }
    if (t.rowidColumn !== null && !["rowid", "_rowid_", "oid"].includes(t.rowidColumn as string)) {
      throw corrupt(`${at}.rowidColumn is ${JSON.stringify(t.rowidColumn)}`, where);
    }
    if (!Array.isArray(t.columns) || t.columns.length === 0) throw corrupt(`${at}.columns must be a list`, where);
    for (const [j, c] of t.columns.entries()) {
      if (!isObject(c) || typeof c.name !== "string" || typeof c.imported !== "boolean") {
        throw corrupt(`${at}.columns[${j}] must give a name and imported`, where);
      }
    }
  }
  if (!Array.isArray(value.schema)) throw corrupt("schema must be a list", where);
  for (const [i, e] of value.schema.entries()) {
    if (
      !isObject(e) ||
      !["table", "index", "view", "trigger"].includes(e.type as string) ||
      typeof e.name !== "string" ||
      typeof e.tableName !== "string" ||
      typeof e.sql !== "string"
    ) {
      throw corrupt(`schema[${i}] must give type, name, tableName and sql`, where);
    }
  }
  return value as unknown as ExportManifest;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isInt(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value);
}

/** The README.txt placed next to the CSV files. */
export function readmeText(manifest: ExportManifest): string {
  const source =
    manifest.source.kind === "database"
      ? `the database ${manifest.source.path}`
      : manifest.source.kind === "backup"
        ? `backup ${manifest.source.backupId} of ${manifest.source.database} (taken ${manifest.source.backupCreatedAt}, read from ${manifest.source.target})`
        : `${manifest.source.database} as of ${manifest.source.requestedTime} (transaction ${manifest.source.transaction} of generation ${manifest.source.generation}, observed ${manifest.source.restoredTo})`;
  const lines = manifest.tables.map(
    (t) =>
      `  ${t.file.padEnd(32)} ${String(t.rows).padStart(10)} rows  ${t.kind === "table" ? "" : `(${t.kind}) `}${t.name}`,
  );
  return `LIFEBOAT EXPORT
===============

This is a readable copy of ${source},
written ${manifest.createdAt} by ${manifest.tool.name} ${manifest.tool.version}.
Schema version (PRAGMA user_version): ${manifest.database.userVersion}.

FILES

  README.txt        this file
  manifest.json     what is here: every table's file, row count, size and SHA-256, its columns
                    with their declared types, the value encoding, and the SQL that creates the schema
${lines.join("\n")}

One CSV file per table${manifest.tables.some((t) => t.kind === "view") ? " (and per exported view)" : ""}, one line per row, a header line with the column names.
Tables with an INTEGER PRIMARY KEY carry their row ids in that column; for other tables
(rowidColumn in manifest.json) the first column, "rowid", holds them.

OPENING THE FILES

The CSV files are UTF-8 with a byte order mark, comma-separated, with CRLF line ends (RFC 4180).
Excel, LibreOffice Calc, Numbers and Google Sheets open them directly and show every script
correctly. Spreadsheets show at most 15 significant digits of a number and may reformat
dates or long numbers: look at the file in a text editor when an exact value matters, and do
not save the CSV from a spreadsheet if you want to import it back.

HOW VALUES ARE WRITTEN (${manifest.valueEncoding.id})

Every value keeps its SQLite type, so a NULL and an empty text stay different:
  NULL      an empty field:                      a,,b
  text      always in double quotes:             "hello"   "" (empty text)   "say ""hi"""
  integer   digits, no quotes, exact to 64 bits: 42   -9223372036854775808
  real      shortest exact decimal, no quotes,   0.1   1.0   -0.0   1e+308   Infinity
            always with a dot or an exponent
  BLOB      base64:<standard base64>, no quotes: base64:iVBORw0KGgo=   base64: (empty)
Text may contain commas, quotes and line breaks (inside the quotes). Generated columns are
exported with their values; on import SQLite computes them again.

IMPORTING BACK

  lifeboat import <this directory or .zip> --output restored.db

rebuilds a SQLite database: the tables from the schema in manifest.json, then the rows, then
indexes, views and triggers. Every file is checked against the row count and SHA-256 in
manifest.json first; a changed or damaged file stops the import, and nothing is written.
`;
}
