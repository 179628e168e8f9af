/**
 * The SQLite `SourceDriver`: inspection, consistent snapshots, integrity checks and the
 * "is anybody using it" check, for database files on the local file system.
 */

import { existsSync, rmSync, statSync } from "node:fs";
import {
  type CallOptions,
  type DatabaseDescription,
  ErrorCodes,
  type IntegrityMode,
  type IntegrityResult,
  LifeboatError,
  type SourceDriver,
  type SourcePlugin,
} from "@lifeboat/core";
import { checkDatabaseFile, closeQuietly, openReadOnly, PLUGIN, sqliteError, throwIfAborted } from "./database-file.js";
import { assertNotInUse } from "./in-use.js";
import { describeConnection, runIntegrityCheck } from "./inspect.js";
import { type SqliteSnapshot, type SqliteSnapshotOptions, takeSnapshot } from "./snapshot.js";

/** The SQLite driver, with the SQLite-specific return type of `snapshot`. */
export interface SqliteSource extends SourceDriver {
  readonly type: "sqlite";
  snapshot(path: string, options?: SqliteSnapshotOptions): Promise<SqliteSnapshot>;
}

/** Creates the SQLite source driver. Stateless: every call opens and closes its own connections. */
export function sqliteSource(): SqliteSource {
  return {
    type: "sqlite",
    describe: describeDatabase,
    snapshot: takeSnapshot,
    checkIntegrity,
    assertNotInUse,
  };
}

/** The plugin the CLI registers under `source: sqlite`. */
export const sqliteSourcePlugin = {
  kind: "source",
  name: "sqlite",
  create: sqliteSource,
} as const satisfies SourcePlugin;

/**
 * Describes the database at `path` from one read transaction on a read-only connection. Throws
 * DATABASE_NOT_FOUND, NOT_A_DATABASE (directory, empty or other file) or PERMISSION_DENIED.
 */
export async function describeDatabase(path: string, options: CallOptions = {}): Promise<DatabaseDescription> {
  const operation = "describe";
  throwIfAborted(options.signal, operation, path);
  await checkDatabaseFile(path, operation);
  const db = openReadOnly(path, operation);
  try {
    db.exec("BEGIN");
    return describeConnection(db, path);
  } catch (error) {
    throw sqliteError(error, path, operation);
  } finally {
    closeQuietly(db);
  }
}

/**
 * Runs the integrity check `mode` on a database file nobody else uses (a restored temp file),
 * read-only. If opening a WAL database created its -wal and -shm files, they are removed again
 * (they hold nothing), so the file can be renamed into place alone.
 */
export async function checkIntegrity(path: string, mode: IntegrityMode): Promise<IntegrityResult> {
  const operation = "check-integrity";
  if (mode !== "full" && mode !== "quick" && mode !== "off") {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `Unknown integrity mode ${JSON.stringify(mode)}.`, {
      plugin: PLUGIN,
      operation,
      hint: 'Use "full", "quick" or "off".',
    });
  }
  await checkDatabaseFile(path, operation);
  const hadWal = existsSync(`${path}-wal`);
  const hadShm = existsSync(`${path}-shm`);
  const db = openReadOnly(path, operation);
  try {
    return runIntegrityCheck(db, mode);
  } catch (error) {
    // A file too damaged to run the check on is a failed check, not a crash.
    const wrapped = sqliteError(error, path, operation);
    if (wrapped.code === ErrorCodes.INTEGRITY_FAILED) {
      return {
        check: mode === "full" ? "integrity_check" : "quick_check",
        ok: false,
        messages: [wrapped.message],
      };
    }
    throw wrapped;
  } finally {
    closeQuietly(db);
    if (!hadWal && !hadShm && existsSync(`${path}-wal`) && statSync(`${path}-wal`).size === 0) {
      rmSync(`${path}-wal`, { force: true });
      rmSync(`${path}-shm`, { force: true });
    }
  }
}
