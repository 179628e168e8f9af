/**
 * How one SQLite value is written as one CSV field, and read back. Every value keeps its storage
 * class, so NULL, '', 0, 0.0, -0.0, '0' and x'' all stay different. The rules (`VALUE_ENCODING`):
 *
 * - NULL: an empty, unquoted field.
 * - TEXT: always a quoted field (`"..."`, a `"` inside doubled); the empty string is `""`.
 * - INTEGER: unquoted decimal digits with an optional `-`, exact over the whole 64-bit range.
 * - REAL: unquoted, the shortest decimal that reads back as the same double, always with a `.`
 *   or an exponent (`1.0`, `-0.0`, `0.1`, `1e+308`, `5e-324`), or `Infinity` / `-Infinity`.
 * - BLOB: unquoted `base64:` followed by the bytes in standard padded base64 (`base64:` alone is
 *   the empty BLOB).
 *
 * So quoting tells text from everything else, and the shape of an unquoted field tells the rest.
 */
import { ErrorCodes, LifeboatError } from "@lifeboat/core";

/** Identifier of the rules above, recorded in every manifest. */
export const VALUE_ENCODING = "lifeboat-sqlite-value/1";

/** A SQLite value as better-sqlite3 returns it with `safeIntegers(true)`. */
export type SqliteValue = null | bigint | number | string | Buffer;

export type StorageClass = "null" | "integer" | "real" | "text" | "blob";

export const BLOB_PREFIX = "base64:";

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;
const INTEGER_TOKEN = /^-?[0-9]+$/;
const REAL_TOKEN = /^-?(?:[0-9]+\.[0-9]+(?:e[+-]?[0-9]+)?|[0-9]+e[+-]?[0-9]+|Infinity)$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The storage class of a value read from SQLite. */
export function storageClassOf(value: SqliteValue): StorageClass {
  if (value === null) return "null";
  switch (typeof value) {
    case "bigint":
      return "integer";
    case "number":
      return "real";
    case "string":
      return "text";
    default:
      return "blob";
  }
}

/**
 * The unquoted token of a REAL: JavaScript's shortest round-trip form, with `.0` added where that
 * form would read as an integer, and the sign of -0.0 kept.
 */
export function formatReal(value: number): string {
  if (Object.is(value, -0)) return "-0.0";
  const text = String(value);
  return /[.eI]/.test(text) ? text : `${text}.0`;
}

/** The unquoted token of a BLOB. */
export function formatBlob(value: Uint8Array): string {
  return BLOB_PREFIX + Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64");
}

/**
 * Reads one CSV field back into a SQLite value. `quoted` says whether the field was quoted in the
 * file (csv-parse reports it as `context.quoting`). Throws CORRUPT_BACKUP for a field no export
 * writes, naming `where` (file, line and column).
 */
export function decodeField(field: string, quoted: boolean, where: () => string): SqliteValue {
  if (quoted) return field;
  if (field === "") return null;
  if (INTEGER_TOKEN.test(field)) {
    const value = BigInt(field);
    if (value < INT64_MIN || value > INT64_MAX) throw badField(`integer ${field} is outside 64 bits`, where);
    return value;
  }
  if (REAL_TOKEN.test(field)) return Number(field);
  if (field.startsWith(BLOB_PREFIX)) {
    const body = field.slice(BLOB_PREFIX.length);
    if (!BASE64.test(body)) throw badField("a base64: field holds characters that are not base64", where);
    return Buffer.from(body, "base64");
  }
  throw badField(
    `unquoted field "${field.length > 40 ? `${field.slice(0, 40)}...` : field}" is neither NULL, an integer, a real nor base64: bytes`,
    where,
  );
}

function badField(what: string, where: () => string): LifeboatError {
  return new LifeboatError(ErrorCodes.CORRUPT_BACKUP, `${where()}: ${what}.`, {
    plugin: "export",
    operation: "import",
    hint: "The export was changed or damaged after it was written; use an untouched copy (lifeboat export again).",
  });
}

/** SQLite's column affinity for a declared type (sqlite.org/datatype3.html, section 3.1). */
export function affinityOf(declaredType: string): "INTEGER" | "TEXT" | "BLOB" | "REAL" | "NUMERIC" {
  const t = declaredType.toUpperCase();
  if (t.includes("INT")) return "INTEGER";
  if (t.includes("CHAR") || t.includes("CLOB") || t.includes("TEXT")) return "TEXT";
  if (t.includes("BLOB") || t.trim() === "") return "BLOB";
  if (t.includes("REAL") || t.includes("FLOA") || t.includes("DOUB")) return "REAL";
  return "NUMERIC";
}
