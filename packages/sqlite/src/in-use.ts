/**
 * Is anybody using this database? Asked before a database file is replaced or deleted (restore),
 * where doing it under a running application would corrupt it or lose its writes.
 */
import { readdir, readFile, readlink, realpath } from "node:fs/promises";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { closeQuietly, PLUGIN, sqliteCode } from "./database-file.js";

const OPERATION = "check-in-use";
/** The files SQLite keeps next to a database. */
const COMPANIONS = ["", "-wal", "-shm", "-journal"];

export interface DatabaseHolder {
  readonly pid: number;
  /** The command line, when readable. */
  readonly command: string | null;
  /** Which of the database's files it has open. */
  readonly files: readonly string[];
}

/**
 * Processes other than this one with the database or its -wal/-shm/-journal open, found through
 * `/proc/<pid>/fd` (Linux; elsewhere, and for processes this user may not inspect, nobody is
 * found). `path` must exist.
 */
export async function findHolders(path: string): Promise<DatabaseHolder[]> {
  const real = await realpath(path);
  const wanted = new Set(COMPANIONS.map((suffix) => real + suffix));
  let pids: string[];
  try {
    pids = (await readdir("/proc")).filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid);
  } catch {
    return [];
  }
  const holders: DatabaseHolder[] = [];
  await Promise.all(
    pids.map(async (pid) => {
      let fds: string[];
      try {
        fds = await readdir(`/proc/${pid}/fd`);
      } catch {
        return; // gone, or not ours to look at
      }
      const files = new Set<string>();
      for (const fd of fds) {
        try {
          const target = await readlink(`/proc/${pid}/fd/${fd}`);
          if (wanted.has(target)) files.add(target);
        } catch {
          // The descriptor closed meanwhile.
        }
      }
      if (files.size === 0) return;
      let command: string | null = null;
      try {
        command = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0").filter(Boolean).join(" ") || null;
      } catch {
        command = null;
      }
      holders.push({ pid: Number(pid), command, files: [...files].sort() });
    }),
  );
  return holders.sort((a, b) => a.pid - b.pid);
}

/**
 * Throws DATABASE_LOCKED if another process has the database at `path` (or its -wal, -shm or
 * -journal) open, or holds a lock on it (tried with `BEGIN EXCLUSIVE` and no busy timeout, which
 * also catches connections in this process). Resolves when the file does not exist: nobody can
 * be using it. If no process holds it, the probe connection is the last one to close, and SQLite
 * then checkpoints a WAL database and removes its -wal and -shm, as any application would.
 */
export async function assertNotInUse(path: string): Promise<void> {
  let holders: DatabaseHolder[];
  try {
    holders = await findHolders(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return;
    throw error;
  }
  if (holders.length > 0) {
    const who = holders.map((h) => `pid ${h.pid}${h.command ? ` (${h.command})` : ""}`).join(", ");
    throw new LifeboatError(ErrorCodes.DATABASE_LOCKED, `Database ${path} is in use by ${who}.`, {
      plugin: PLUGIN,
      operation: OPERATION,
      details: { path, holders },
      hint: "Stop the application using the database (or wait for it to finish), then try again.",
    });
  }
  const busy = probeLock(path);
  if (busy) {
    throw new LifeboatError(ErrorCodes.DATABASE_LOCKED, `Database ${path} is locked by another connection.`, {
      plugin: PLUGIN,
      operation: OPERATION,
      cause: busy,
      details: { path, holders: [] },
      hint: "Stop the application using the database (it may run in another container or in this process), then try again.",
    });
  }
}

/** Returns the SQLITE_BUSY error if an exclusive lock cannot be taken right now, else undefined. */
function probeLock(path: string): unknown {
  let db: Database.Database | undefined;
  try {
    db = new Database(path, { fileMustExist: true, timeout: 0 });
    db.exec("BEGIN EXCLUSIVE");
    db.exec("ROLLBACK");
    return undefined;
  } catch (error) {
    const code = sqliteCode(error);
    // Not a database, or not ours to lock: the process scan is all we can say.
    return code?.startsWith("SQLITE_BUSY") || code?.startsWith("SQLITE_LOCKED") ? error : undefined;
  } finally {
    closeQuietly(db);
  }
}
