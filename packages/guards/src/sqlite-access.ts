/**
 * Opening database files for the layers: a check before SQLite sees the path (SQLite would
 * silently create a missing file or accept an empty one), read and write connections, and
 * SQLite's errors turned into LifeboatErrors a person can act on.
 */
import { stat } from "node:fs/promises";
import { ErrorCodes, errnoCode, LifeboatError } from "@lifeboat/core";
import { closeQuietly, quoteIdentifier } from "@lifeboat/sqlite";
import Database from "better-sqlite3";

export { closeQuietly, quoteIdentifier } from "@lifeboat/sqlite";

const PLUGIN = "guards";
/** The files SQLite keeps next to a database. */
export const COMPANION_SUFFIXES = ["-wal", "-shm", "-journal"] as const;
export const BUSY_TIMEOUT_MS = 10_000;

/**
 * Throws DATABASE_NOT_FOUND, NOT_A_DATABASE (directory, empty file, other file) or
 * PERMISSION_DENIED unless `path` is a readable SQLite database file.
 *
 * The file is never opened directly: closing a descriptor of a database file drops every POSIX
 * lock this process holds on it, including those of SQLite connections (a replicator's read
 * mark, say) running in the same process. SQLite itself reads the header here.
 */
export async function assertDatabaseFile(path: string, operation: string): Promise<void> {
  let size: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) {
      throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is not a regular file, so not a SQLite database.`, {
        plugin: PLUGIN,
        operation,
        details: { path },
        hint: "Give the path of the database file itself.",
      });
    }
    size = info.size;
  } catch (error) {
    throw databaseError(error, path, operation);
  }
  if (size === 0) {
    throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is empty (0 bytes), not a SQLite database.`, {
      plugin: PLUGIN,
      operation,
      details: { path },
      hint: "SQLite would treat it as a new, empty database. If it should hold data, check the path or restore it from a backup.",
    });
  }
  withReadConnection(path, operation, (db) => db.prepare("SELECT count(*) FROM sqlite_schema").get());
}

/**
 * Runs `fn` on a read-only connection to `path` (which must exist). Reading a WAL database at rest
 * leaves its (empty) -wal and -shm behind, as any reader does; removing them could pull them from
 * under a process that opened the database meanwhile.
 */
export function withReadConnection<T>(path: string, operation: string, fn: (db: Database.Database) => T): T {
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    return fn(db);
  } catch (error) {
    throw databaseError(error, path, operation);
  } finally {
    closeQuietly(db);
  }
}

/** Opens `path` read-write (it must exist), with the busy timeout. */
export function openForWriting(path: string, operation: string): Database.Database {
  try {
    return new Database(path, { fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  } catch (error) {
    throw databaseError(error, path, operation);
  }
}

/** User tables (as `@lifeboat/sqlite` lists them), sorted by name. */
export function listTables(db: Database.Database): string[] {
  return db
    .prepare(
      "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name",
    )
    .pluck()
    .all() as string[];
}

/** Row count of every user table. */
export function countRows(db: Database.Database): Map<string, number> {
  return new Map(
    listTables(db).map((name) => [
      name,
      db
        .prepare(`SELECT count(*) FROM ${quoteIdentifier(name)}`)
        .pluck()
        .get() as number,
    ]),
  );
}

/** The extended result code better-sqlite3 puts on its errors. */
export function sqliteCode(error: unknown): string | undefined {
  const code = errnoCode(error);
  return code?.startsWith("SQLITE_") ? code : undefined;
}

/** A file-system or SQLite error about the database at `path`, as a LifeboatError. */
export function databaseError(error: unknown, path: string, operation: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const code = sqliteCode(error) ?? errnoCode(error) ?? "";
  const message = error instanceof Error ? error.message : String(error);
  const base = { plugin: PLUGIN, operation, cause: error, details: { path, code } };
  if (code === "ENOENT" || code === "ENOTDIR") {
    return new LifeboatError(ErrorCodes.DATABASE_NOT_FOUND, `Database ${path} does not exist.`, {
      ...base,
      hint: "Check the path (relative paths start from the working directory, or the config file's directory).",
    });
  }
  if (code === "SQLITE_NOTADB") {
    return new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is not a SQLite database (${message}).`, {
      ...base,
      hint: "Check that the path names the database file itself.",
    });
  }
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return new LifeboatError(ErrorCodes.DATABASE_LOCKED, `Database ${path} is locked by another connection.`, {
      ...base,
      hint: "Another process held a lock for longer than the busy timeout. Try again, or stop that process.",
    });
  }
  if (code === "SQLITE_READONLY_ROLLBACK" || code === "SQLITE_READONLY_RECOVERY") {
    return new LifeboatError(
      ErrorCodes.DATABASE_LOCKED,
      `Database ${path} needs recovery after a writer crashed (a hot journal or an unrecovered WAL), which a read-only connection cannot do.`,
      {
        ...base,
        hint: `Let its application open it once, or run \`sqlite3 ${path} "PRAGMA quick_check"\` as its owner, then try again.`,
      },
    );
  }
  if (
    code === "EACCES" ||
    code === "EPERM" ||
    code === "EROFS" ||
    code.startsWith("SQLITE_READONLY") ||
    code.startsWith("SQLITE_PERM") ||
    code.startsWith("SQLITE_AUTH") ||
    code.startsWith("SQLITE_CANTOPEN")
  ) {
    return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Cannot ${operation} ${path}: ${message}.`, {
      ...base,
      hint: "Check the file's owner, mode and attributes (ls -l, lsattr; `lifeboat status` shows Lifeboat's protection), and run as a user that may use it.",
    });
  }
  if (code.startsWith("SQLITE_CORRUPT")) {
    return new LifeboatError(ErrorCodes.INTEGRITY_FAILED, `Database ${path} is corrupt (${message}).`, {
      ...base,
      hint: "Restore it from a backup (lifeboat list, lifeboat restore).",
    });
  }
  return new LifeboatError(ErrorCodes.INTERNAL, `SQLite failed on ${path} during ${operation}: ${message}`, {
    ...base,
    hint: "Check the disk and the file system; if the database itself is fine, please report this.",
  });
}

/** True if `path` exists (following symbolic links). */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw error;
  }
}
