/** What an export needs to know about a database's schema, read from an open connection. */
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import type Database from "better-sqlite3";
import { affinityOf } from "./value-codec.js";

/**
 * How a relation's rows are treated:
 * - `table`: an ordinary or WITHOUT ROWID table; rows exported and imported.
 * - `shadow`: a table that holds a virtual table's content (FTS5 and friends); its rows are
 *   exported and, on import, replace what creating the virtual table put there.
 * - `internal`: SQLite's own `sqlite_sequence` (AUTOINCREMENT counters) and `sqlite_stat*`
 *   (ANALYZE results); rows exported and restored after every other table.
 * - `view`: rows exported only when asked (`views`), never imported (the view is recreated from
 *   its SQL instead).
 */
export type RelationKind = "table" | "shadow" | "internal" | "view";

export interface ColumnDescription {
  readonly name: string;
  /** The type as declared in CREATE TABLE ('' when none). */
  readonly declaredType: string;
  /** SQLite's affinity for the declared type. */
  readonly affinity: "INTEGER" | "TEXT" | "BLOB" | "REAL" | "NUMERIC";
  readonly notNull: boolean;
  /** Position in the primary key (1-based), 0 when not part of it. */
  readonly primaryKey: number;
  /** `virtual` / `stored` for a generated column: exported, never inserted on import. */
  readonly generated: "virtual" | "stored" | null;
}

export interface RelationDescription {
  readonly name: string;
  readonly kind: RelationKind;
  readonly withoutRowid: boolean;
  readonly strict: boolean;
  /**
   * For a rowid table whose rowid is not an INTEGER PRIMARY KEY column: the name (`rowid`,
   * `_rowid_` or `oid`, whichever no column shadows) under which the rowid is the CSV's first
   * column, so that rowids survive an import. Null when a column already is the rowid, for
   * WITHOUT ROWID tables and views, and when every name for the rowid is taken by a column.
   */
  readonly rowidColumn: string | null;
  readonly columns: readonly ColumnDescription[];
}

export interface SchemaEntry {
  readonly type: "table" | "index" | "view" | "trigger";
  readonly name: string;
  readonly tableName: string;
  readonly sql: string;
}

/** Internal tables whose rows are part of a database's content and can be written back. */
const INTERNAL_TABLES = new Set(["sqlite_sequence", "sqlite_stat1", "sqlite_stat4"]);

export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

interface ListedRelation {
  readonly name: string;
  readonly type: "table" | "view" | "shadow" | "virtual";
  readonly wr: number;
  readonly strict: number;
}

export interface DatabaseSchema {
  /** Every relation with rows that can be exported, in sqlite_schema order. */
  readonly relations: readonly RelationDescription[];
  /** Virtual tables (no rows of their own; their shadow tables hold them). */
  readonly virtualTables: readonly string[];
  /** CREATE statements (`sql` not null) in sqlite_schema order within each type. */
  readonly entries: readonly SchemaEntry[];
}

/** Reads the schema of the main database of `db` (call inside the export's read transaction). */
export function readSchema(db: Database.Database): DatabaseSchema {
  const order = new Map<string, number>();
  const entries: SchemaEntry[] = [];
  const rows = db
    .prepare("SELECT type, name, tbl_name AS tableName, sql FROM main.sqlite_schema ORDER BY rowid")
    .safeIntegers(false)
    .all() as Array<{ type: SchemaEntry["type"]; name: string; tableName: string; sql: string | null }>;
  for (const [i, row] of rows.entries()) {
    order.set(row.name, i);
    if (row.sql !== null) entries.push({ type: row.type, name: row.name, tableName: row.tableName, sql: row.sql });
  }
  const typeRank = { table: 0, index: 1, view: 2, trigger: 3 } as const;
  entries.sort((a, b) => typeRank[a.type] - typeRank[b.type] || order.get(a.name)! - order.get(b.name)!);

  const listed = (
    db
      .prepare("SELECT name, type, wr, strict FROM pragma_table_list WHERE schema = 'main'")
      .safeIntegers(false)
      .all() as ListedRelation[]
  ).filter((r) => r.name !== "sqlite_schema" && r.name !== "sqlite_master");
  listed.sort(
    (a, b) => (order.get(a.name) ?? Number.MAX_SAFE_INTEGER) - (order.get(b.name) ?? Number.MAX_SAFE_INTEGER),
  );
  const relations: RelationDescription[] = [];
  const virtualTables: string[] = [];
  for (const r of listed) {
    if (r.type === "virtual") {
      virtualTables.push(r.name);
      continue;
    }
    const internal = r.name.toLowerCase().startsWith("sqlite_");
    if (internal && !INTERNAL_TABLES.has(r.name.toLowerCase())) {
      throw new LifeboatError(
        ErrorCodes.UNSUPPORTED_FORMAT,
        `The database has SQLite's internal table ${r.name}, which an export cannot carry.`,
        {
          plugin: "export",
          operation: "export",
          hint: "Drop it (it is an obsolete statistics table) or export the other tables with --tables.",
        },
      );
    }
    const kind: RelationKind = internal ? "internal" : r.type === "view" ? "view" : r.type;
    relations.push(describeRelation(db, r.name, kind, r.wr === 1, r.strict === 1));
  }
  // Internal tables go last: on import they are restored after the tables that fill them.
  relations.sort((a, b) => Number(a.kind === "internal") - Number(b.kind === "internal"));
  return { relations, virtualTables, entries };
}

function describeRelation(
  db: Database.Database,
  name: string,
  kind: RelationKind,
  withoutRowid: boolean,
  strict: boolean,
): RelationDescription {
  const info = db
    .prepare("SELECT name, type, \"notnull\", pk, hidden FROM pragma_table_xinfo(?, 'main')")
    .safeIntegers(false)
    .all(name) as Array<{
    name: string;
    type: string;
    notnull: number;
    pk: number;
    hidden: number;
  }>;
  const columns = info
    .filter((c) => c.hidden !== 1)
    .map(
      (c): ColumnDescription => ({
        name: c.name,
        declaredType: c.type,
        affinity: affinityOf(c.type),
        notNull: c.notnull === 1,
        primaryKey: c.pk,
        generated: c.hidden === 2 ? "virtual" : c.hidden === 3 ? "stored" : null,
      }),
    );
  let rowidColumn: string | null = null;
  if (kind !== "view" && !withoutRowid) {
    const taken = new Set(columns.map((c) => c.name.toLowerCase()));
    const free = ["rowid", "_rowid_", "oid"].find((n) => !taken.has(n));
    if (free) {
      // The column metadata of `SELECT rowid` names the INTEGER PRIMARY KEY column when there is
      // one (the rowid is then exported as that column); otherwise the rowid is hidden.
      const origin = db.prepare(`SELECT ${free} FROM main.${quoteIdentifier(name)}`).columns()[0]?.column ?? "";
      const alias = columns.some((c) => c.primaryKey > 0 && c.name.toLowerCase() === origin.toLowerCase());
      if (!alias) rowidColumn = free;
    }
  }
  return { name, kind, withoutRowid, strict, rowidColumn, columns };
}

/** The SELECT that reads a relation's rows for its CSV, in a stable order (rowid or primary key). */
export function selectRowsSql(relation: RelationDescription, where = ""): string {
  const names = relation.columns.map((c) => quoteIdentifier(c.name));
  const from = `main.${quoteIdentifier(relation.name)}`;
  if (relation.rowidColumn) {
    return `SELECT ${relation.rowidColumn}, ${names.join(", ")} FROM ${from}${where} ORDER BY ${relation.rowidColumn}`;
  }
  const key = relation.columns
    .filter((c) => c.primaryKey > 0)
    .sort((a, b) => a.primaryKey - b.primaryKey)
    .map((c) => quoteIdentifier(c.name));
  const orderBy = relation.kind === "view" || key.length === 0 ? "" : ` ORDER BY ${key.join(", ")}`;
  return `SELECT ${names.join(", ")} FROM ${from}${where}${orderBy}`;
}
