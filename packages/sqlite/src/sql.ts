/** Running SQL against a database file: for the CLI's demo, `exec` and tools that must not import better-sqlite3. */
import Database from "better-sqlite3";

/** Runs `sql` (one or more statements) on the database at `path`, creating it if needed. */
export function execSql(path: string, sql: string): void {
  const db = new Database(path);
  try {
    db.pragma("busy_timeout = 10000");
    db.exec(sql);
  } finally {
    db.close();
  }
}

/** Rows of one query, read-only. */
export function queryRows(path: string, sql: string, ...params: unknown[]): Record<string, unknown>[] {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    db.pragma("busy_timeout = 10000");
    return db.prepare(sql).all(...params) as Record<string, unknown>[];
  } finally {
    db.close();
  }
}
