/**
 * Opening database files for Lifeboat: checks a path before SQLite sees it (SQLite would
 * silently create or accept an empty file), opens connections that never change the database,
 * and turns SQLite's and the file system's errors into LifeboatErrors a person can act on.
 */
import { stat } from "node:fs/promises";
import { ErrorCodes, errnoCode, LifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { keptDescriptor, readAt } from "./kept-descriptors.js";

export const PLUGIN = "sqlite";

/** The first 16 bytes of every SQLite database file. */
const SQLITE_MAGIC = Buffer.from("SQLite format 3\0", "latin1");
const NOT_A_DATABASE_HINT =
  "Check that the path names the database file itself (not its -wal, -shm or -journal file, a backup archive or a dump). An encrypted database (SQLCipher, SEE) cannot be read without its key.";

export interface DatabaseFileInfo {
  readonly size: number;
  /** From the header: the page size in bytes. */
  readonly pageSize: number;
  /** Header bytes 18/19 equal 2: the database is in WAL mode. */
  readonly walMode: boolean;
}

/**
 * Checks that `path` is a readable, non-empty SQLite database file by reading its 100-byte header.
 * Throws DATABASE_NOT_FOUND, NOT_A_DATABASE (directory, other file, empty file) or
 * PERMISSION_DENIED.
 */
export async function checkDatabaseFile(path: string, operation: string): Promise<DatabaseFileInfo> {
  let size: number;
  try {
    const info = await stat(path);
    if (info.isDirectory()) {
      throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is a directory, not a SQLite database file.`, {
        plugin: PLUGIN,
        operation,
        details: { path },
        hint: "Give the path of the database file inside it (for example data/app.db).",
      });
    }
    if (!info.isFile()) {
      throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is not a regular file, so not a SQLite database.`, {
        plugin: PLUGIN,
        operation,
        details: { path },
        hint: NOT_A_DATABASE_HINT,
      });
    }
    size = info.size;
  } catch (error) {
    throw fileError(error, path, operation);
  }
  if (size === 0) {
    throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is empty (0 bytes), not a SQLite database.`, {
      plugin: PLUGIN,
      operation,
      details: { path },
      hint: "SQLite would treat it as a new, empty database. If it should hold data, check the path or restore it from a backup.",
    });
  }
  const header = Buffer.alloc(100);
  let bytesRead: number;
  try {
    // A kept descriptor: closing one would drop this process's SQLite locks on the file.
    bytesRead = await readAt(keptDescriptor(path), header, 0, 100, 0);
  } catch (error) {
    throw fileError(error, path, operation);
  }
  if (bytesRead < 100 || !header.subarray(0, 16).equals(SQLITE_MAGIC)) {
    throw new LifeboatError(
      ErrorCodes.NOT_A_DATABASE,
      `${path} is not a SQLite database: it does not start with the "SQLite format 3" header.`,
      { plugin: PLUGIN, operation, details: { path }, hint: NOT_A_DATABASE_HINT },
    );
  }
  const rawPageSize = header.readUInt16BE(16);
  return {
    size,
    pageSize: rawPageSize === 1 ? 65536 : rawPageSize,
    walMode: header[18] === 2 || header[19] === 2,
  };
}

/** Wraps a file-system error about `path` (stat, open, read). */
export function fileError(error: unknown, path: string, operation: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const errno = errnoCode(error);
  const base = { plugin: PLUGIN, operation, cause: error, details: { path, errno } };
  switch (errno) {
    case "ENOENT":
    case "ENOTDIR":
      return new LifeboatError(ErrorCodes.DATABASE_NOT_FOUND, `Database ${path} does not exist.`, {
        ...base,
        hint: "Check the path (relative paths start from the working directory, or the config file's directory).",
      });
    case "EACCES":
    case "EPERM":
      return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Permission denied reading database ${path}.`, {
        ...base,
        hint: "Run Lifeboat as a user that may read the database file and its directory (often the application's user).",
      });
    case "EISDIR":
      return new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is a directory, not a SQLite database file.`, {
        ...base,
        hint: "Give the path of the database file inside it.",
      });
    default:
      return new LifeboatError(
        ErrorCodes.INTERNAL,
        `Cannot read database ${path}: ${error instanceof Error ? error.message : String(error)}`,
        { ...base, hint: "Check the disk and the file system (dmesg may say more), then try again." },
      );
  }
}

/** The extended result code better-sqlite3 puts on its errors (`SQLITE_BUSY`, `SQLITE_NOTADB`, ...). */
export function sqliteCode(error: unknown): string | undefined {
  const code = errnoCode(error);
  return code?.startsWith("SQLITE_") ? code : undefined;
}

/** Turns an error from better-sqlite3 about the database at `path` into a LifeboatError. */
export function sqliteError(error: unknown, path: string, operation: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const code = sqliteCode(error);
  if (code === undefined) return fileError(error, path, operation);
  const message = error instanceof Error ? error.message : String(error);
  const base = { plugin: PLUGIN, operation, cause: error, details: { path, sqliteCode: code } };
  if (code === "SQLITE_NOTADB") {
    return new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${path} is not a SQLite database (${message}).`, {
      ...base,
      hint: NOT_A_DATABASE_HINT,
    });
  }
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return new LifeboatError(
      ErrorCodes.DATABASE_LOCKED,
      `Database ${path} is locked by another connection (${message}).`,
      {
        ...base,
        hint: "Another process held a lock for longer than the busy timeout (an exclusive locking mode or a long write). Try again, or stop that process.",
      },
    );
  }
  if (code === "SQLITE_READONLY_ROLLBACK" || code === "SQLITE_READONLY_RECOVERY") {
    return new LifeboatError(
      ErrorCodes.DATABASE_LOCKED,
      `Database ${path} needs recovery after a writer crashed (a hot journal or an unrecovered WAL), which a read-only connection cannot do (${message}).`,
      {
        ...base,
        hint: `Let the application open it once, or run \`sqlite3 ${path} "PRAGMA quick_check"\` as the database's owner, then try again.`,
      },
    );
  }
  if (
    code === "SQLITE_READONLY_DIRECTORY" ||
    code === "SQLITE_READONLY_CANTINIT" ||
    code === "SQLITE_READONLY_CANTLOCK"
  ) {
    return new LifeboatError(
      ErrorCodes.PERMISSION_DENIED,
      `Cannot read WAL database ${path}: its -wal/-shm files are missing and cannot be created, or the -shm file cannot be used (${message}).`,
      {
        ...base,
        hint: "A WAL database needs its -wal and -shm files next to it. Run Lifeboat as the database's owner, or let it write to the database's directory.",
      },
    );
  }
  if (code.startsWith("SQLITE_PERM") || code.startsWith("SQLITE_AUTH") || code.startsWith("SQLITE_READONLY")) {
    return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Permission denied on database ${path} (${message}).`, {
      ...base,
      hint: "Run Lifeboat as a user that may read and lock the database and its directory.",
    });
  }
  if (code.startsWith("SQLITE_CANTOPEN")) {
    return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Cannot open database ${path} (${message}).`, {
      ...base,
      hint: "Check that the file and its directory are readable, and that its -wal/-shm files (if any) are readable too.",
    });
  }
  if (code.startsWith("SQLITE_CORRUPT")) {
    return new LifeboatError(ErrorCodes.INTEGRITY_FAILED, `Database ${path} is corrupt (${message}).`, {
      ...base,
      hint: "Restore it from a backup; `lifeboat verify` on the latest backup tells you which one is good.",
    });
  }
  return new LifeboatError(ErrorCodes.INTERNAL, `SQLite failed on ${path} during ${operation}: ${message} (${code}).`, {
    ...base,
    hint: "Check the disk and the file system; if the database itself is fine, please report this.",
  });
}

/**
 * Opens `path` read-only (no journal-mode change, never a checkpoint: a read-only connection
 * cannot write). `timeoutMs` is the busy timeout.
 */
export function openReadOnly(path: string, operation: string, timeoutMs = 10_000): Database.Database {
  try {
    return new Database(path, { readonly: true, fileMustExist: true, timeout: timeoutMs });
  } catch (error) {
    throw sqliteError(error, path, operation);
  }
}

/** Closes a connection, ignoring errors (used in cleanup paths that already report another error). */
export function closeQuietly(db: Database.Database | undefined): void {
  try {
    if (db?.open) db.close();
  } catch {
    // Closing cannot make things worse than the error already being reported.
  }
}

/** Quotes an SQL identifier ("my ""odd"" table"). */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/** Rejects with ABORTED when `signal` has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, operation: string, path: string): void {
  if (signal?.aborted) {
    throw new LifeboatError(ErrorCodes.ABORTED, `${operation} of ${path} was aborted.`, {
      plugin: PLUGIN,
      operation,
      cause: signal.reason,
    });
  }
}
