/**
 * What a database looks like, read through an open connection (inside the caller's read
 * transaction, so every number comes from the same moment).
 */
import type { DatabaseDescription, IntegrityMode, IntegrityResult, TableInfo } from "@lifeboat/core";
import type Database from "better-sqlite3";
import { quoteIdentifier } from "./database-file.js";

/** Tables that may hold the environment marker, in the order they are tried. */
export const ENVIRONMENT_TABLES = ["_lifeboat_environment", "_environment", "ar_internal_metadata"] as const;
const ENVIRONMENT_KEYS = ["environment", "env"];
export const MAX_INTEGRITY_MESSAGES = 100;

/**
 * Describes the database `db` is connected to. Call inside a read transaction for a consistent
 * result. Tables are the user tables of `sqlite_schema` (not `sqlite_%` internals, not virtual
 * tables, whose rows live in their shadow tables, which are listed), sorted by name.
 */
export function describeConnection(db: Database.Database, path: string, countRows = true): DatabaseDescription {
  const pageSize = db.pragma("page_size", { simple: true }) as number;
  const pageCount = db.pragma("page_count", { simple: true }) as number;
  return {
    path,
    sizeBytes: pageSize * pageCount,
    pageSize,
    pageCount,
    journalMode: String(db.pragma("journal_mode", { simple: true })).toLowerCase(),
    userVersion: db.pragma("user_version", { simple: true }) as number,
    tables: listTables(db, countRows),
    environment: readEnvironment(db),
    engineVersion: (db.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v,
  };
}

/** Without `countRows`, every table's `rows` is -1 (not counted). */
function listTables(db: Database.Database, countRows: boolean): TableInfo[] {
  const names = db
    .prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )
    .pluck()
    .all() as string[];
  return names.map((name) => ({
    name,
    rows: !countRows
      ? -1
      : (db
          .prepare(`SELECT count(*) FROM ${quoteIdentifier(name)}`)
          .pluck()
          .get() as number),
  }));
}

/**
 * The environment marker: the first of `_lifeboat_environment`, `_environment`,
 * `ar_internal_metadata` (Rails) that exists and holds one. A table with a `key` (or `name`)
 * column and a `value` column gives the value of the row whose key is `environment` (or `env`);
 * any other table with exactly one row gives its `environment` or `value` column, or its only
 * column. Empty values count as absent. Null when no table holds a marker.
 */
export function readEnvironment(db: Database.Database): string | null {
  for (const table of ENVIRONMENT_TABLES) {
    const exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?").get(table);
    if (!exists) continue;
    const columns = (db.prepare(`PRAGMA table_info(${quoteIdentifier(table)})`).all() as { name: string }[]).map(
      (c) => c.name,
    );
    const lower = columns.map((c) => c.toLowerCase());
    const column = (wanted: string) => columns[lower.indexOf(wanted)];
    const keyColumn = column("key") ?? column("name");
    const valueColumn = column("value");
    let value: unknown;
    if (keyColumn && valueColumn) {
      value = db
        .prepare(
          `SELECT ${quoteIdentifier(valueColumn)} FROM ${quoteIdentifier(table)} WHERE lower(${quoteIdentifier(keyColumn)}) IN (${ENVIRONMENT_KEYS.map(() => "?").join(", ")}) LIMIT 1`,
        )
        .pluck()
        .get(...ENVIRONMENT_KEYS);
    } else {
      const single = column("environment") ?? valueColumn ?? (columns.length === 1 ? columns[0] : undefined);
      if (!single) continue;
      const rows = db
        .prepare(`SELECT ${quoteIdentifier(single)} FROM ${quoteIdentifier(table)} LIMIT 2`)
        .pluck()
        .all();
      if (rows.length === 1) value = rows[0];
    }
    if (value === null || value === undefined) continue;
    const text = (Buffer.isBuffer(value) ? value.toString("utf8") : String(value)).trim();
    if (text !== "") return text;
  }
  return null;
}

/**
 * Runs `integrity_check` (full), `quick_check` (quick) or nothing (off) on `db`. A file so
 * damaged that SQLite stops the check with SQLITE_CORRUPT is a failed check (with SQLite's
 * message), not an exception: the caller reports every kind of corruption the same way.
 */
export function runIntegrityCheck(db: Database.Database, mode: IntegrityMode): IntegrityResult {
  if (mode === "off") return { check: "none", ok: true, messages: [] };
  const check = mode === "full" ? "integrity_check" : "quick_check";
  try {
    const messages = db.prepare(`PRAGMA ${check}(${MAX_INTEGRITY_MESSAGES})`).pluck().all() as string[];
    return integrityResultFrom(check, messages);
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("SQLITE_CORRUPT")) {
      return { check, ok: false, messages: [`${(error as Error).message} (${code})`] };
    }
    throw error;
  }
}

/** The result of an integrity check from the rows it returned (a single "ok" row means intact). */
export function integrityResultFrom(
  check: "integrity_check" | "quick_check",
  messages: readonly string[],
): IntegrityResult {
  const ok = messages.length === 1 && messages[0] === "ok";
  return { check, ok, messages: ok ? [] : messages.slice(0, MAX_INTEGRITY_MESSAGES) };
}
