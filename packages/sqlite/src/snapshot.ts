/**
 * Consistent snapshots of a live SQLite database, streamed as a plain rollback-journal database
 * image while other processes go on writing.
 *
 * WAL mode. Connection B (read-only) opens a read transaction: its snapshot is the latest commit,
 * frame `mxFrame` of the WAL. To learn exactly which frame that is, connection A briefly takes the
 * write lock (`BEGIN IMMEDIATE`) around B's first read and a read of the WAL index (`-shm`)
 * header, then lets go: no commit can happen in between, so the index header read then is B's.
 * (Without write access to the file, the index header is read before and after B's first read
 * and the attempt repeated until both agree.) The WAL is scanned up to `mxFrame` afterwards,
 * without the lock, because B's read transaction pins it:
 * - if checkpoints had not yet copied every frame up to `mxFrame` back (nBackfill < mxFrame), B
 *   holds a read mark > 0, so SQLite can neither reset the WAL nor copy frames past B's snapshot
 *   into the database file: the frames we read stay put, and the database file pages we read
 *   (those without a frame) do not change;
 * - otherwise the database file already holds everything up to `mxFrame`, and no checkpoint can
 *   write to it while B reads, so the file alone is the image.
 * The image is pages 1..page_count, each from its latest frame at or before `mxFrame` or else
 * from the database file, with header bytes 18-19 set to 1 (rollback journal).
 *
 * Rollback-journal mode: B's read transaction holds a SHARED lock, so nobody commits while the
 * file is read. Writers wait (up to their busy timeout) for as long as the snapshot is held.
 */
import { accessSync, closeSync, constants, fstatSync, openSync, statSync } from "node:fs";
import { performance } from "node:perf_hooks";
import {
  ErrorCodes,
  type IntegrityResult,
  LifeboatError,
  type Snapshot,
  type SnapshotChecks,
  type SnapshotOptions,
} from "@lifeboat/core";
import Database from "better-sqlite3";
import {
  checkDatabaseFile,
  closeQuietly,
  fileError,
  openReadOnly,
  PLUGIN,
  sqliteError,
  throwIfAborted,
} from "./database-file.js";
import { describeConnection, runIntegrityCheck } from "./inspect.js";
import { keptDescriptor, readAt, readAtSync } from "./kept-descriptors.js";
import { PARALLEL_CHECK_MIN_BYTES, ParallelCheck } from "./parallel-check.js";
import { readWalIndexHeader, type WalIndexHeader } from "./wal-index.js";
import { buildWalPageIndex, parseWalHeader, WAL_HEADER_SIZE, type WalHeader, type WalPosition } from "./wal-reader.js";

const OPERATION = "snapshot";
/** Bytes per read of the database file (and per yielded chunk). */
export const SNAPSHOT_CHUNK_SIZE = 4 * 1024 * 1024;
const BUSY_TIMEOUT_MS = 10_000;
const MAX_PIN_ATTEMPTS = 1000;
/** How long a snapshot waits for the write lock before pinning without it. */
const WRITE_LOCK_WAIT_MS = 2000;

/** A `Snapshot` with what the SQLite driver knows beyond the contract. */
export interface SqliteSnapshot extends Snapshot {
  /**
   * The WAL position the image corresponds to: the commit frame of the snapshot in the WAL with
   * these salts (frame 0: nothing in the current WAL). Null for rollback-journal databases. A
   * replicator continues from here.
   */
  readonly walPosition: WalPosition | null;
  /** How long the snapshot held the write lock, in milliseconds (0 when it did not take it). */
  readonly writeLockMs: number;
  /** The deferred integrity check runs on another thread while the body is read. */
  readonly checkedInParallel: boolean;
}

export interface SqliteSnapshotOptions extends SnapshotOptions {
  /** How long to wait for locks held by others. Default 10 s. */
  readonly busyTimeoutMs?: number;
  /** Bytes per yielded chunk, rounded down to whole pages. Default 4 MiB. */
  readonly chunkSize?: number;
  /** Deferred checks of files at least this big run on another thread. Default 64 MiB. */
  readonly parallelCheckMinBytes?: number;
}

/** Takes a consistent snapshot of the database at `path` (see the module comment). */
export async function takeSnapshot(path: string, options: SqliteSnapshotOptions = {}): Promise<SqliteSnapshot> {
  throwIfAborted(options.signal, OPERATION, path);
  await checkDatabaseFile(path, OPERATION);
  const busyTimeoutMs = options.busyTimeoutMs ?? BUSY_TIMEOUT_MS;
  const reader = openReadOnly(path, OPERATION, busyTimeoutMs);
  let released = false;
  let checker: ParallelCheck | null = null;
  const release = (): void => {
    if (released) return;
    released = true;
    options.signal?.removeEventListener("abort", release);
    checker?.cancel();
    closeQuietly(reader);
  };
  try {
    const journalMode = String(reader.pragma("journal_mode", { simple: true })).toLowerCase();
    const defer = options.deferChecks === true;
    const mode = options.integrity ?? "quick";
    // Deferred checks of a large database run on another thread while the body streams.
    if (defer && mode !== "off" && statSync(path).size >= (options.parallelCheckMinBytes ?? PARALLEL_CHECK_MIN_BYTES)) {
      checker = await ParallelCheck.open(path, mode, busyTimeoutMs);
    }
    const pinChecker = async () => (checker ? checker.pin() : false);
    let pinned: PinnedWal | null = null;
    let checkerPinned = false;
    if (journalMode === "wal") {
      pinned = await pinWalSnapshot(path, reader, busyTimeoutMs, pinChecker);
      checkerPinned = pinned.whileFixedDone;
    } else {
      reader.exec("BEGIN");
      reader.prepare("SELECT count(*) FROM sqlite_schema").get();
      checkerPinned = await pinChecker(); // B's SHARED lock keeps every writer out meanwhile
    }
    if (!checkerPinned) {
      checker?.cancel();
      checker = null;
    }
    // Deferred: only what streaming needs now; the B-tree walks run after the body warmed the cache.
    const integrity: IntegrityResult = defer
      ? { check: "none", ok: true, messages: [] }
      : runIntegrityCheck(reader, mode);
    const description = describeConnection(reader, path, !defer && integrity.ok);

    let pages: ReadonlyMap<number, number> | null = null;
    let walHeader: WalHeader | null = null;
    if (pinned && pinned.index.mxFrame > 0) {
      if (pinned.index.nPage !== description.pageCount) {
        throw inconsistent(path, `page_count ${description.pageCount} but the WAL index says ${pinned.index.nPage}`);
      }
      if (pinned.index.nBackfill < pinned.index.mxFrame) {
        const built = await buildWalPageIndex(`${path}-wal`, {
          maxFrame: pinned.index.mxFrame,
          signal: options.signal,
        });
        const end = built.end;
        if (
          !built.header ||
          built.lastCommitFrame !== pinned.index.mxFrame ||
          built.commitSize !== pinned.index.nPage ||
          built.header.pageSize !== description.pageSize ||
          end?.salt1 !== pinned.index.salt1 ||
          end.salt2 !== pinned.index.salt2 ||
          end.checksum1 !== pinned.index.frameChecksum1 ||
          end.checksum2 !== pinned.index.frameChecksum2
        ) {
          throw inconsistent(
            path,
            `the WAL (${describePosition(end, built.commitSize)}, scan stopped: ${built.scan.stop}) does not match its index (${describePosition({ ...pinned.index, frame: pinned.index.mxFrame, checksum1: pinned.index.frameChecksum1, checksum2: pinned.index.frameChecksum2 }, pinned.index.nPage)})`,
          );
        }
        pages = built.pages;
        walHeader = built.header;
      }
    }

    const walPosition: WalPosition | null = pinned
      ? {
          salt1: pinned.index.salt1,
          salt2: pinned.index.salt2,
          frame: pinned.index.mxFrame,
          checksum1: pinned.index.frameChecksum1,
          checksum2: pinned.index.frameChecksum2,
        }
      : null;

    let iterated = false;
    const body: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]() {
        if (iterated) throw usage(path, "The snapshot body can be read only once.");
        iterated = true;
        return streamImage({
          path,
          pageSize: description.pageSize,
          pageCount: description.pageCount,
          pages,
          walHeader,
          chunkSize: options.chunkSize ?? SNAPSHOT_CHUNK_SIZE,
          isReleased: () => released,
          signal: options.signal,
          release,
          keepAfterEnd: defer,
        });
      },
    };
    options.signal?.addEventListener("abort", release, { once: true });
    const completeChecks = async (): Promise<SnapshotChecks> => {
      if (released) throw usage(path, "The snapshot was released before its deferred checks ran.");
      try {
        // The thread's result, or (if it failed) the check on B itself. The check comes before
        // the row counts: counting a damaged table fails with a less useful message.
        const integrity = checker
          ? await checker.result().catch(() => runIntegrityCheck(reader, mode))
          : runIntegrityCheck(reader, mode);
        const checked = describeConnection(reader, path, integrity.ok);
        if (checked.pageCount !== description.pageCount || checked.pageSize !== description.pageSize) {
          throw inconsistent(path, "the page count changed inside the read transaction");
        }
        return { description: checked, integrity };
      } catch (error) {
        throw sqliteError(error, path, OPERATION);
      } finally {
        release();
      }
    };
    return {
      description,
      integrity,
      body,
      ...(defer ? { completeChecks } : {}),
      release,
      walPosition,
      writeLockMs: pinned?.writeLockMs ?? 0,
      checkedInParallel: checker !== null,
    };
  } catch (error) {
    release();
    throwIfAborted(options.signal, OPERATION, path);
    throw sqliteError(error, path, OPERATION);
  }
}

interface PinnedWal {
  /** The WAL index header as of B's snapshot. */
  readonly index: WalIndexHeader;
  readonly writeLockMs: number;
  /** `whileFixed` ran under the write lock and said it succeeded. */
  readonly whileFixedDone: boolean;
}

/**
 * Starts B's read transaction and learns which WAL frame it sees. Returns with B inside its read
 * transaction and the write lock released. `whileFixed` runs while the write lock is still held
 * (only when it was obtained): another connection pinned then sees B's snapshot.
 */
async function pinWalSnapshot(
  path: string,
  reader: Database.Database,
  busyTimeoutMs: number,
  whileFixed: () => Promise<boolean>,
): Promise<PinnedWal> {
  const shmPath = `${path}-shm`;
  let writer: Database.Database | undefined;
  // SQLite silently opens files it may not write read-only (and better-sqlite3 does not say so);
  // without write access, take no lock and retry instead.
  if (mayWrite(path) && mayWrite(`${path}-wal`) && mayWrite(shmPath)) {
    try {
      // A busy database may keep the write lock from us (SQLite has no fair queue): wait a little,
      // then pin without it (below) instead of failing.
      writer = new Database(path, { fileMustExist: true, timeout: Math.min(busyTimeoutMs, WRITE_LOCK_WAIT_MS) });
    } catch {
      writer = undefined;
    }
  }
  try {
    let writeLockMs = 0;
    let unexpected = 0;
    for (let attempt = 1; attempt <= MAX_PIN_ATTEMPTS; attempt++) {
      let lockedAt = 0;
      if (writer) {
        try {
          writer.exec("BEGIN IMMEDIATE");
          lockedAt = performance.now();
        } catch {
          // Not allowed to lock (read-only -wal, ...), or writers keep it busy: go on without the
          // write lock; the index header read before and after the pin proves which commit we have.
          closeQuietly(writer);
          writer = undefined;
        }
      }
      let before: WalIndexHeader | null;
      let after: WalIndexHeader | null;
      let whileFixedDone = false;
      try {
        before = readWalIndexHeader(shmPath);
        reader.exec("BEGIN");
        reader.prepare("SELECT count(*) FROM sqlite_schema").get();
        after = readWalIndexHeader(shmPath);
        if (writer?.inTransaction && before && after && before.raw.equals(after.raw))
          whileFixedDone = await whileFixed();
      } finally {
        if (writer?.inTransaction) {
          writer.exec("ROLLBACK");
          writeLockMs = performance.now() - lockedAt;
        }
      }
      if (before && after && before.raw.equals(after.raw)) {
        return { index: after, writeLockMs, whileFixedDone };
      }
      reader.exec("ROLLBACK");
      if (!before && !after) {
        throw new LifeboatError(
          ErrorCodes.INTERNAL,
          `Cannot read the WAL index ${shmPath} of the WAL database ${path}.`,
          {
            plugin: PLUGIN,
            operation: OPERATION,
            details: { path },
            hint: "The -shm file is missing or unreadable although the database is in WAL mode (an application using locking_mode=EXCLUSIVE?). Check its permissions.",
          },
        );
      }
      // With the write lock held the index can differ only if this read had to recover it
      // (after a crash): retry a few times, then give up.
      if (writer && ++unexpected >= 3) throw inconsistent(path, "the WAL index changed while the write lock was held");
    }
    throw new LifeboatError(
      ErrorCodes.DATABASE_LOCKED,
      `Cannot take a consistent snapshot of ${path}: commits kept arriving and the write lock is not available to this user.`,
      {
        plugin: PLUGIN,
        operation: OPERATION,
        details: { path },
        hint: "Run Lifeboat as a user that may write the database file (it takes the write lock only for an instant), or retry when the database is quieter.",
      },
    );
  } finally {
    // Close A before B: A is then never the last connection, so its close cannot checkpoint.
    closeQuietly(writer);
  }
}

/** True if `path` is missing or writable by this process. */
function mayWrite(path: string): boolean {
  try {
    accessSync(path, constants.W_OK);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ENOENT";
  }
}

interface StreamParams {
  readonly path: string;
  readonly pageSize: number;
  readonly pageCount: number;
  readonly pages: ReadonlyMap<number, number> | null;
  readonly walHeader: WalHeader | null;
  readonly chunkSize: number;
  readonly isReleased: () => boolean;
  readonly signal: AbortSignal | undefined;
  readonly release: () => void;
  /** Keep the read transaction when the body ends (deferred checks run on it); released on errors. */
  readonly keepAfterEnd: boolean;
}

/** Streams pages 1..pageCount in chunks, overlaying WAL pages; releases the snapshot at the end. */
async function* streamImage(p: StreamParams): AsyncGenerator<Uint8Array, void, undefined> {
  const walPath = `${p.path}-wal`;
  let wal: number | undefined;
  let ended = false;
  try {
    let db: number;
    try {
      // The database file through a kept descriptor (closing one would drop B's locks); the
      // -wal, which SQLite does not lock, through a descriptor of our own.
      db = keptDescriptor(p.path);
      if (p.pages) wal = openSync(walPath, "r");
    } catch (error) {
      throw fileError(error, p.path, OPERATION);
    }
    const fileSize = fstatSync(db).size;
    const pagesPerChunk = Math.max(1, Math.floor(p.chunkSize / p.pageSize));
    for (let first = 1; first <= p.pageCount; first += pagesPerChunk) {
      if (p.isReleased()) {
        throw new LifeboatError(
          ErrorCodes.ABORTED,
          `The snapshot of ${p.path} was released (or aborted) before its body was read.`,
          { plugin: PLUGIN, operation: OPERATION, cause: p.signal?.reason, details: { path: p.path } },
        );
      }
      const count = Math.min(pagesPerChunk, p.pageCount - first + 1);
      const buf = Buffer.allocUnsafe(count * p.pageSize);
      const start = (first - 1) * p.pageSize;
      const fromFile = Math.max(0, Math.min(buf.byteLength, fileSize - start));
      const got = fromFile > 0 ? await readAt(db, buf, 0, fromFile, start) : 0;
      buf.fill(0, got);
      for (let i = 0; i < count; i++) {
        const pgno = first + i;
        const walOffset = p.pages?.get(pgno);
        if (walOffset !== undefined && wal !== undefined) {
          // Synchronous: a page-cache read of one page costs far less than a thread-pool round trip.
          const n = readAtSync(wal, buf, i * p.pageSize, p.pageSize, walOffset);
          if (n !== p.pageSize) throw inconsistent(p.path, `the WAL ends inside page ${pgno}'s frame`);
        } else if ((i + 1) * p.pageSize > got) {
          throw inconsistent(p.path, `page ${pgno} is neither in the database file nor in the WAL`);
        }
      }
      if (first === 1) {
        // File format write/read versions: 1 = rollback journal, so the image needs no -wal.
        buf[18] = 1;
        buf[19] = 1;
      }
      yield buf;
    }
    if (wal !== undefined && p.walHeader) {
      // Cheap guard: the WAL must be the one indexed (the read transaction guarantees it).
      const header = Buffer.alloc(WAL_HEADER_SIZE);
      readAtSync(wal, header, 0, WAL_HEADER_SIZE, 0);
      const now = parseWalHeader(header);
      if (now?.salt1 !== p.walHeader.salt1 || now.salt2 !== p.walHeader.salt2) {
        throw inconsistent(p.path, "the WAL was reset while the snapshot was read");
      }
    }
    ended = true;
  } finally {
    if (wal !== undefined) closeSync(wal);
    if (!ended || !p.keepAfterEnd) p.release();
  }
}

function describePosition(p: WalPosition | null, pages: number): string {
  return p
    ? `frame ${p.frame}, ${pages} pages, salts ${p.salt1}/${p.salt2}, checksum ${p.checksum1}/${p.checksum2}`
    : "no valid header";
}

function inconsistent(path: string, what: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INTERNAL, `Snapshot of ${path} is inconsistent: ${what}.`, {
    plugin: PLUGIN,
    operation: OPERATION,
    details: { path },
    hint: "Nothing was written. Retry the backup; if it happens again, please report it with the SQLite version of the application.",
  });
}

function usage(path: string, message: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INVALID_ARGUMENT, message, {
    plugin: PLUGIN,
    operation: OPERATION,
    details: { path },
    hint: "Take a new snapshot to read the database again.",
  });
}
