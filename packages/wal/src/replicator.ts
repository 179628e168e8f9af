/**
 * Continuous archiving of one database: ships every committed transaction from its `-wal` file,
 * in order, as segments, to every target. The rules it follows (ARCHITECTURE.md):
 *
 * - It always holds a read transaction ("pin") so SQLite cannot reset the WAL over frames it has
 *   not copied yet. Pins rotate between two connections: the new pin starts, everything up to
 *   the WAL's end is shipped to the local queue, then the old pin ends. So there is never a moment
 *   without a pin, and whatever a new pin no longer protects has already been copied.
 * - It checkpoints when the WAL passes a page threshold: PASSIVE first, without any lock (it copies
 *   the bulk of the pages); if the app kept committing meanwhile, it takes the write lock for the
 *   few milliseconds it takes to read the last transactions, checkpoint them and re-pin. A
 *   complete checkpoint lets the next writer restart the WAL, which the replicator recognises as
 *   continuing the same history. The WAL so stays near the threshold: a WAL that only grows
 *   makes every commit's fsync slower (the file's size changes each time), which under
 *   `synchronous=FULL` more than halved a busy writer's throughput.
 * - Anything it cannot prove continuous (a reset it did not cause, a replaced database file, a
 *   restart after the WAL went away) starts a new generation with a fresh snapshot.
 * - Segments become durable in a local queue first; each target ships from the queue on its own,
 *   so an outage of one target delays only that target, and nothing is lost while it lasts.
 */
import { constants, createReadStream } from "node:fs";
import { access, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import {
  type DatabaseContext,
  ErrorCodes,
  encodeChain,
  isLifeboatError,
  LifeboatError,
  newGenerationId,
  parseDuration,
  parseSize,
  Repository,
  snapshotId,
  storeSnapshot,
} from "@lifeboat/core";
import {
  readWalFrames,
  readWalIndexHeader,
  readWalTransactions,
  type SqliteSnapshot,
  scanWal,
  WAL_FRAME_HEADER_SIZE,
  type WalHeader,
  type WalIndexHeader,
  type WalPosition,
  type WalTransaction,
  walStartPosition,
} from "@lifeboat/sqlite";
import Database from "better-sqlite3";
import { CheckpointThread } from "./checkpoint-thread.js";
import { Lease } from "./lease.js";
import { encodeSegment, type SegmentHeader, type SegmentPage, type SegmentTransaction } from "./segment-format.js";
import { parseSegmentKey, segmentKey } from "./segment-keys.js";
import { announce, answer, takeRequests, withdraw } from "./snapshot-requests.js";
import { Spool, type SpooledSegment } from "./spool.js";

/** A file's identity: a path that shows another one was replaced. */
interface FileId {
  readonly dev: number;
  readonly ino: number;
}

/** The identity of the file at `path`, or null when there is none. */
async function fileId(path: string): Promise<FileId | null> {
  const info = await stat(path).catch(() => undefined);
  return info ? { dev: info.dev, ino: info.ino } : null;
}

function sameFile(a: FileId | null, b: FileId | null): boolean {
  return a !== null && b !== null && a.dev === b.dev && a.ino === b.ino;
}

export interface ReplicatorOptions {
  /** Poll at least this often (ms); changes to the -wal file wake it sooner. Default 1000. */
  readonly syncIntervalMs?: number;
  /**
   * Cut a segment at most this often (ms) when woken by changes or the poll: commits in between
   * go into one segment. 0 (default): a segment as soon as a commit is seen, for the lowest lag.
   * Raising it trades lag for fewer storage requests (at 1000, at most 3,600 segments an hour).
   * Explicit `sync()` calls are never delayed.
   */
  readonly segmentIntervalMs?: number;
  /** PASSIVE checkpoint when the WAL has more frames than this. Default 1000. */
  readonly checkpointPages?: number;
  /**
   * Past this many frames, a checkpoint that could not take the write lock (the app held it) is
   * tried again at the next pass instead of after a pause. Default 20000.
   */
  readonly emergencyCheckpointPages?: number;
  /** Take a new snapshot of the generation this often (ms). Default: never (only at generation start). */
  readonly snapshotIntervalMs?: number;
  /** The local queue directory. Default: `.<db file>.lifeboat/` next to the database. */
  readonly queueDir?: string;
  /** Bound of the local queue; past it the oldest segments are dropped and lagging targets re-snapshot. Default 1 GiB. */
  readonly queueMaxBytes?: number;
  /** Lease time to live (ms). Default 30 s; renewed every third of it. */
  readonly leaseTtlMs?: number;
  /** Switch a rollback-journal database to WAL mode (else refuse). Default true. */
  readonly changeJournalMode?: boolean;
  /** Shorten each transaction's observed time with this clock (tests). */
  readonly now?: () => number;
  readonly onEvent?: (event: ReplicatorEvent) => void;
}

export type ReplicatorEvent =
  | { readonly type: "generation"; readonly database: string; readonly generation: string; readonly reason: string }
  | {
      readonly type: "snapshot";
      readonly database: string;
      readonly generation: string;
      readonly position: number;
      readonly targets: readonly string[];
      readonly bytes: number;
    }
  | {
      readonly type: "spooled";
      readonly database: string;
      readonly generation: string;
      readonly firstTxn: number;
      readonly lastTxn: number;
      readonly bytes: number;
    }
  | {
      readonly type: "shipped";
      readonly database: string;
      readonly target: string;
      readonly generation: string;
      readonly firstTxn: number;
      readonly lastTxn: number;
      readonly lagMs: number;
    }
  | {
      readonly type: "checkpoint";
      readonly database: string;
      /** PASSIVE: no lock; LOCKED: under the write lock, held for `writeLockMs`. */
      readonly mode: "PASSIVE" | "LOCKED";
      /** Frames in the WAL, and how many of them are in the database file now (-1: unknown). */
      readonly frames: number;
      readonly checkpointed: number;
      readonly complete: boolean;
      readonly writeLockMs: number;
    }
  | {
      readonly type: "target-error";
      readonly database: string;
      readonly target: string;
      readonly error: LifeboatError;
      readonly retryInMs: number;
    }
  | { readonly type: "target-recovered"; readonly database: string; readonly target: string }
  | { readonly type: "error"; readonly database: string; readonly error: LifeboatError };

interface TargetState {
  readonly repo: Repository;
  readonly lease: Lease;
  /** Generation this target holds a snapshot of (null: needs one). */
  generation: string | null;
  /** Last transaction shipped to it in `generation`. */
  shipped: number;
  /** `shipped` as in the state last saved (0 if it saved another generation). */
  saved: number;
  pumping: boolean;
  again: boolean;
  failing: LifeboatError | null;
  backoffMs: number;
  retryTimer: NodeJS.Timeout | null;
  leaseHeld: boolean;
  /** Key of the first segment shipped after this target's newest snapshot (see #checkSentinel). */
  sentinel: string | null;
  renewals: number;
  /** Our lease was found gone: whether the generation's snapshot went with it is still to check. */
  checkKept: boolean;
}

interface PersistedState {
  readonly format: "lifeboat.replicator-state";
  readonly formatVersion: 1;
  readonly database: string;
  readonly dbIdentity: { dev: number; ino: number };
  readonly generation: string;
  readonly txn: number;
  readonly position: WalPosition;
  /**
   * Every transaction after `position` was committed after this time (ms): a scan that began then
   * reached the WAL's end at `position`. A restart stamps the transactions it finds waiting with
   * it (`committedAfter`). Absent in states written before 0.2.0: those transactions get none.
   */
  readonly watchedAt?: number;
  readonly targets: Record<string, { generation: string | null; shipped: number }>;
}

/** After a PASSIVE checkpoint that could not finish, the next one waits this long (ms; at most the sync interval). */
const CHECKPOINT_RETRY_MS = 1000;

/** How long the checkpoint thread tries for the write lock at a time (ms). */
const LOCK_SPIN_MS = 50;
/** After it could not (below the emergency threshold), the next try waits this long (ms). */
const LOCK_RETRY_MS = 250;
/** A locked checkpoint that another reader kept from completing is tried again after this (ms; doubling to 30 s). */
const LOCKED_BACKOFF_MS = 1000;
/** Before taking the lock, ship again while more than this many frames wait (at most 3 times). */
const LOCKED_SHIP_FIRST_FRAMES = 256;
/** Under the lock, how long a checkpoint waits for the app's own checkpoint to finish (ms). */
const LOCKED_BUSY_WAIT_MS = 100;
/** Under the lock, transactions up to this size are read into memory and queued after the lock is released. */
const LOCKED_READ_MAX_BYTES = 16 * 1024 * 1024;
/**
 * A pass takes the page records its scan collected (not reading the WAL twice) up to this many
 * bytes. 16 MiB was too few for a busy writer: after a slow pass (a checkpoint's fsyncs), 4,000 to
 * 9,000 frames waited, a few times in 10 s, and each such pass read them again page by page.
 */
const RECORDS_BYTES = 64 * 1024 * 1024;
/** The records' memory is kept for the next pass only up to this size. */
const SPARE_RECORDS_BYTES = 16 * 1024 * 1024;

/**
 * After a pass that took d ms, the next one (unless someone waits for it) starts no sooner than
 * d × this later, at most MAX_PASS_GAP_MS: under a steady stream of commits the replicator then
 * spends at most a third of its time in passes, and each pass ships more transactions at once
 * instead of the same fixed cost being paid per commit. Idle or light load: passes are short,
 * so is the gap.
 */
const PASS_GAP_FACTOR = 2;
/**
 * The gap is capped here. 100 ms instead of 50 was tried: no gain for a saturating writer in the
 * full bench (87.0% vs 87.6% of unreplicated), and the lag tail at 100 and 1,000 tx/s was longer
 * in that build (p99 99-139 vs 75-87 ms; the build also changed how segments are queued).
 */
const MAX_PASS_GAP_MS = 50;

/**
 * How long the TRUNCATE that clears an unreadable WAL waits for the app's writers and readers
 * (ms). App commits wait as long, at most, once per try; tries back off from 2 s to 60 s.
 */
const TRUNCATE_WAIT_MS = 1000;

/** Unless a checkpoint of ours is due, the pin moves forward at most this often (ms). */
const PIN_ROTATE_MS = 1000;

/** After this long without a commit (ms), with everything shipped, the pin moves to the WAL's end (#moveIdlePin). */
const IDLE_PIN_MS = 20;

/**
 * After this long without a commit (ms), with everything shipped and the pin at the WAL's end,
 * the frames not yet in the database file are checkpointed (#checkpointIdle).
 */
const IDLE_CHECKPOINT_MS = 1000;

/** Every this many lease renewals, each target's sentinel segment is checked (#checkSentinel). */
const SENTINEL_EVERY = 6;

/** How often the WAL index is probed for new commits (ms). */
const WAL_PROBE_MS = 5;

/** Progress is saved at most this often (ms) while segments ship. */
const PERSIST_INTERVAL_MS = 1000;

const posKey = (p: WalPosition) => `${p.salt1}:${p.salt2}:${p.frame}`;

/** The `reason` of the snapshot a replicator starts a generation with ("first run", or why a new one). */
export function generationSnapshotReason(why: string): string {
  return why === "first run" ? "generation start" : `new generation: ${why}`;
}

/** True for the snapshot that started a replicator's generation (not a one-off `lifeboat backup`). */
export function isGenerationSnapshot(reason: string): boolean {
  return reason === "generation start" || reason.startsWith("new generation: ");
}

/**
 * The last frame a scan from `position` proved, when SQLite's WAL index (read before that scan)
 * counts committed frames of the same WAL past it; else null. SQLite writes a transaction's
 * frames before it publishes them in the index, so a scan of an intact WAL always reaches the
 * index's mxFrame (see Replicator#walUnreadable).
 */
function unprovenAfter(
  index: WalIndexHeader | null,
  position: WalPosition,
  scan: { transactions: readonly WalTransaction[]; result: { reset: unknown } },
): number | null {
  if (scan.result.reset || !index || index.salt1 !== position.salt1 || index.salt2 !== position.salt2) return null;
  const reached = scan.transactions.at(-1)?.end.frame ?? position.frame;
  return index.mxFrame > reached ? reached : null;
}

/**
 * The transaction that ends at each commit frame of the current WAL, so a snapshot (taken at a
 * WAL position) lines up with a transaction number. Two number arrays in frame order: an entry
 * per transaction, at tens of thousands a second, as a Map with string keys kept the garbage
 * collector busy.
 */
class PositionIndex {
  #salt1 = 0;
  #salt2 = 0;
  #frames: number[] = [];
  #txns: number[] = [];

  /** Forgets everything: `position` (in a new WAL, or after a restart) is transaction `txn`. */
  reset(position: WalPosition, txn: number): void {
    this.#salt1 = position.salt1;
    this.#salt2 = position.salt2;
    this.#frames = [position.frame];
    this.#txns = [txn];
  }

  /** Transaction `txn` ends at `position`, after every position added since the last reset. */
  add(position: WalPosition, txn: number): void {
    if (position.salt1 !== this.#salt1 || position.salt2 !== this.#salt2) {
      this.reset(position, txn);
      return;
    }
    const frames = this.#frames;
    if (frames.length > 0 && frames.at(-1)! >= position.frame) {
      const keep = this.#search(position.frame);
      frames.length = keep;
      this.#txns.length = keep;
    }
    frames.push(position.frame);
    this.#txns.push(txn);
  }

  get(position: WalPosition): number | undefined {
    if (position.salt1 !== this.#salt1 || position.salt2 !== this.#salt2) return undefined;
    const i = this.#search(position.frame);
    return this.#frames[i] === position.frame ? this.#txns[i] : undefined;
  }

  /** Index of the first entry at or after `frame`. */
  #search(frame: number): number {
    let lo = 0;
    let hi = this.#frames.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#frames[mid]! < frame) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

export class Replicator {
  readonly db: DatabaseContext;
  readonly walPath: string;
  readonly spool: Spool;
  readonly #o: Required<Omit<ReplicatorOptions, "snapshotIntervalMs" | "queueDir" | "onEvent" | "now">> &
    ReplicatorOptions;
  readonly #targets: TargetState[];
  #pins: [Database.Database, Database.Database] | null = null;
  #pinIndex = 0;
  /** Time the current pass spent taking and holding the write lock (see #requestPass). */
  #lockingMs = 0;
  /** The current pin may hold SQLite's read lock 0 (see #pin). */
  #pinAtZero = false;
  /** The WAL index's mxFrame right after the current pin began (-1: unknown). */
  #pinnedFrame = -1;
  /** When the probe last saw the WAL index change (ms). */
  #indexChangedAt = 0;
  #writer: Database.Database | null = null;
  #dbIdentity: FileId | null = null;
  /**
   * The -wal and -shm files our connections opened. While any connection of ours is open, SQLite
   * never deletes or recreates them (only the last connection to close does, and switching the
   * journal mode needs every other connection gone): a different file at either path means
   * someone removed them by hand (`rm app.db-wal app.db-shm; cp other.db app.db`, which keeps
   * the database's inode). Our connections then see a WAL and index the app no longer uses.
   */
  #sideFiles: { wal: FileId | null; shm: FileId | null } = { wal: null, shm: null };

  #generation: string | null = null;
  #txn = 0;
  #position: WalPosition | null = null;
  #header: WalHeader | null = null;
  #positions = new PositionIndex();
  /** The memory of the last pass's page records, for the next scan (not in use between passes). */
  #spareRecords: ArrayBuffer | undefined;
  /** Set after a complete checkpoint at this position: a WAL restart from here continues the history. */
  #restartExpected: WalPosition | null = null;
  /** When a scan began that reached the WAL's end at `#position` (see PersistedState.watchedAt). */
  #watchedAt = 0;
  /**
   * After a restart that continues the saved generation, until the first scan: since when nobody
   * watched the WAL. The transactions that scan finds carry it as their `committedAfter`.
   */
  #unwatchedSince: number | null = null;

  #syncing: Promise<void> | null = null;
  #dirty = false;
  /** Passes nobody waits for start no earlier than this (see PASS_GAP_FACTOR). */
  #nextPassAt = 0;
  /** Ends the wait before the next pass early (an explicit `sync()`). */
  #endGap: (() => void) | null = null;
  #passesStarted = 0;
  #waiters: { pass: number; resolve: () => void; reject: (error: unknown) => void }[] = [];
  /**
   * True once a pin rotation has shipped everything up to the WAL's end, and as long as pins stay
   * continuous. Then any WAL restart continues our history: a restart needs every frame
   * checkpointed, and no checkpoint goes past our pin's read mark, which is at or before what we
   * shipped (a pin with no mark blocks checkpoints altogether). Lost on (re)opening connections.
   */
  #continuity = false;
  #rotatedAt = 0;
  #deletedReported = false;
  #stopped = false;
  /** Aborts uploads still running when stop()'s time is up (a target that does not answer). */
  readonly #stopAbort = new AbortController();
  #probeTimer: NodeJS.Timeout | null = null;
  #timer: NodeJS.Timeout | null = null;
  #checkpointer: CheckpointThread | null = null;
  #checkpointing: Promise<void> | null = null;
  #trimming: Promise<void> | null = null;
  #trimAgain = false;
  #lockedCheckpointDue = false;
  #lockedBackoffMs = LOCKED_BACKOFF_MS;
  #nextLockedAt = 0;
  /**
   * Set when SQLite's WAL index counts committed frames that the WAL file cannot prove (their
   * headers fail the checksum chain): the WAL of these salts is given up on, truncated, and a new
   * generation starts from a snapshot (#recoverUnreadableWal). `#continuity` stays false while set.
   */
  #unreadableWal: { salt1: number; salt2: number; reason: string; retryAt: number; backoffMs: number } | null = null;
  /** Set when transactions were checkpointed but could not be queued: the history has a hole. */
  #historyBroken: string | null = null;
  #nextCheckpointAt = 0;
  /** Pending wake-up while `segmentIntervalMs` holds changes back. */
  #batchTimer: NodeJS.Timeout | null = null;
  #lastSegmentAt = 0;
  #leaseTimer: NodeJS.Timeout | null = null;
  #persistTimer: NodeJS.Timeout | null = null;
  #persistChain: Promise<void> = Promise.resolve();
  #lastPersistAt = 0;
  #snapshotTimer: NodeJS.Timeout | null = null;
  #lastError: string | null = null;

  /** Longest time the replicator held the write lock (ms): the worst stall it caused writers (locked checkpoints only). */
  maxWriteLockMs = 0;

  constructor(db: DatabaseContext, options: ReplicatorOptions = {}) {
    this.db = db;
    this.walPath = `${db.path}-wal`;
    this.#o = {
      syncIntervalMs: 1000,
      segmentIntervalMs: 0,
      checkpointPages: 1000,
      emergencyCheckpointPages: 20_000,
      queueMaxBytes: 1024 ** 3,
      leaseTtlMs: 30_000,
      changeJournalMode: true,
      ...options,
    };
    this.spool = new Spool(options.queueDir ?? join(dirname(db.path), `.${basename(db.path)}.lifeboat`));
    this.#targets = db.targets.map((named) => ({
      repo: new Repository(named, db.name, db),
      lease: new Lease(named.target, named.name, db.name, this.#o.leaseTtlMs),
      generation: null,
      shipped: 0,
      saved: 0,
      pumping: false,
      again: false,
      failing: null,
      backoffMs: 1000,
      retryTimer: null,
      leaseHeld: false,
      sentinel: null,
      renewals: 0,
      checkKept: false,
    }));
  }

  get generation(): string | null {
    return this.#generation;
  }

  /** Last transaction number assigned in the current generation. */
  get txn(): number {
    return this.#txn;
  }

  /** Per target: generation and last transaction shipped. */
  get progress(): { target: string; generation: string | null; shipped: number; error: string | null }[] {
    return this.#targets.map((t) => ({
      target: t.repo.named.name,
      generation: t.generation,
      shipped: t.shipped,
      error: t.failing?.message ?? null,
    }));
  }

  #emit(event: ReplicatorEvent): void {
    this.#o.onEvent?.(event);
  }

  #now(): number {
    return this.#o.now?.() ?? Date.now();
  }

  /** Opens the database, takes the leases, resumes or starts a generation, and starts watching. */
  async start(): Promise<void> {
    await this.#openConnections();
    for (const t of this.#targets) {
      try {
        await t.repo.open();
        await t.lease.acquire();
        t.leaseHeld = true;
      } catch (error) {
        if (isLifeboatError(error, ErrorCodes.LEASE_HELD) || isLifeboatError(error, ErrorCodes.ARCHIVE_MISMATCH)) {
          await this.#releaseLeases();
          this.#closeConnections();
          throw error;
        }
        this.#targetFailed(t, error);
      }
    }
    this.#pin();
    const resumed = await this.#resume();
    if (resumed !== true) await this.#startGeneration(resumed);
    await announce(this.spool.dir, this.db);
    this.#watch();
    this.#leaseTimer = setInterval(() => void this.#renewLeases(), Math.max(1000, Math.floor(this.#o.leaseTtlMs / 3)));
    if (this.#o.snapshotIntervalMs) {
      this.#snapshotTimer = setInterval(
        () => void this.snapshot("scheduled").catch((e) => this.#report(e)),
        this.#o.snapshotIntervalMs,
      );
    }
    await this.sync();
    for (const t of this.#targets) this.#kick(t);
  }

  async #openConnections(): Promise<void> {
    const info = await stat(this.db.path).catch((error: unknown) => {
      throw new LifeboatError(
        ErrorCodes.DATABASE_NOT_FOUND,
        `Cannot replicate ${this.db.path}: ${(error as Error).message}`,
        {
          plugin: "wal",
          hint: "Check the database path in the config; the replicator needs the file to exist.",
        },
      );
    });
    if (!info.isFile()) {
      throw new LifeboatError(ErrorCodes.NOT_A_DATABASE, `${this.db.path} is not a file.`, {
        plugin: "wal",
        hint: "Point the config at the SQLite database file.",
      });
    }
    try {
      await access(dirname(this.db.path), constants.W_OK);
    } catch (error) {
      throw this.#openError(error);
    }
    await this.db.driver.describe(this.db.path); // clear errors for "not a database" and friends
    this.#dbIdentity = { dev: info.dev, ino: info.ino };
    let writer: Database.Database;
    try {
      writer = new Database(this.db.path, { fileMustExist: true, timeout: 100 });
    } catch (error) {
      throw this.#openError(error);
    }
    try {
      const mode = String(writer.pragma("journal_mode", { simple: true })).toLowerCase();
      if (mode !== "wal") {
        if (!this.#o.changeJournalMode) {
          throw new LifeboatError(
            ErrorCodes.INVALID_ARGUMENT,
            `${this.db.path} is in ${mode} journal mode; continuous archiving needs WAL mode, and the config says not to change the database.`,
            {
              plugin: "wal",
              hint: "Run `PRAGMA journal_mode=WAL` on it once (or allow Lifeboat to: replication.changeJournalMode: true), or use scheduled snapshot backups instead.",
            },
          );
        }
        writer.pragma("busy_timeout = 5000");
        const now = String(writer.pragma("journal_mode = WAL", { simple: true })).toLowerCase();
        if (now !== "wal") {
          throw new LifeboatError(
            ErrorCodes.DATABASE_LOCKED,
            `Could not switch ${this.db.path} to WAL mode (it stayed ${now}).`,
            {
              plugin: "wal",
              hint: "Another connection keeps it in use; stop the application once to let Lifeboat switch it, or switch it yourself.",
            },
          );
        }
        writer.pragma("busy_timeout = 100");
      }
      writer.pragma("wal_autocheckpoint = 0"); // this connection never writes; checkpoints are ours to time
      this.#writer = writer;
      this.#pins = [this.#openReadOnly(), this.#openReadOnly()];
      this.#continuity = false;
    } catch (error) {
      writer.close();
      throw error instanceof LifeboatError ? error : this.#openError(error);
    }
    this.#sideFiles = await this.#sideFileIds();
  }

  async #sideFileIds(): Promise<{ wal: FileId | null; shm: FileId | null }> {
    const [wal, shm] = await Promise.all([fileId(this.walPath), fileId(`${this.db.path}-shm`)]);
    return { wal, shm };
  }

  /** Why our connections no longer see the app's -wal or -shm (see #sideFiles), or null. */
  async #sideFilesReplaced(): Promise<string | null> {
    const now = await this.#sideFileIds();
    const moved = (was: FileId | null, is: FileId | null) => was !== null && !sameFile(was, is);
    for (const [name, was, is] of [
      ["-wal", this.#sideFiles.wal, now.wal],
      ["-shm", this.#sideFiles.shm, now.shm],
    ] as const) {
      if (moved(was, is)) {
        return `the database's ${name} file was ${is === null ? "deleted" : "replaced"} while the replicator had it open (not something SQLite does)`;
      }
    }
    // Not there when we opened (or not yet created): from now on this is the one.
    this.#sideFiles = { wal: this.#sideFiles.wal ?? now.wal, shm: this.#sideFiles.shm ?? now.shm };
    return null;
  }

  #openReadOnly(): Database.Database {
    const conn = new Database(this.db.path, { fileMustExist: true, readonly: true, timeout: 5000 });
    return conn;
  }

  #openError(error: unknown): LifeboatError {
    const message = error instanceof Error ? error.message : String(error);
    const errno = (error as { code?: string }).code;
    const readOnly =
      errno === "EROFS" || errno === "EACCES" || errno === "EPERM" || /readonly|read-only|EROFS/i.test(message);
    return new LifeboatError(
      readOnly ? ErrorCodes.PERMISSION_DENIED : ErrorCodes.STORAGE_ERROR,
      `Cannot open ${this.db.path} for replication: ${message}`,
      {
        plugin: "wal",
        cause: error,
        hint: readOnly
          ? "The replicator must take locks and checkpoint, which needs write access to the database's directory. Run it where the database is writable, or use `lifeboat backup` for read-only copies."
          : "Check the path and its permissions.",
      },
    );
  }

  /**
   * The writer first, while the read-only pins still hold their shared lock on the database file:
   * then no connection of ours is ever the last one to close, which would checkpoint its WAL into
   * the database file and delete the -wal path (read-only connections do neither). After the
   * files were replaced by hand, that WAL is a stale one and that path the app's new WAL.
   */
  #closeConnections(): void {
    for (const conn of [this.#writer, ...(this.#pins ?? [])]) {
      try {
        if (conn?.inTransaction) conn.exec("ROLLBACK");
        conn?.close();
      } catch {
        // closing is best effort
      }
    }
    this.#pins = null;
    this.#writer = null;
  }

  /** Starts a read transaction on the idle pin connection; returns the one to release later. */
  #pin(): Database.Database | null {
    if (!this.#pins) return null;
    const previous = this.#pins[this.#pinIndex]!;
    this.#pinIndex = 1 - this.#pinIndex;
    const next = this.#pins[this.#pinIndex]!;
    if (next.inTransaction) next.exec("ROLLBACK");
    const before = this.#walIndex();
    next.exec("BEGIN");
    next.prepare("SELECT count(*) FROM sqlite_schema").get();
    // A read transaction begun while every WAL frame is in the database file reads the file only
    // (SQLite's read lock 0). Such a pin stops every checkpoint from copying, and SQLite's own
    // auto-checkpoint, which the app runs after each commit past 1000 frames, then sorts the
    // whole WAL at every commit for nothing: measured, 64% of a busy writer's time. The probe
    // moves such a pin as soon as the WAL has frames again (#pinAtZero).
    const after = this.#walIndex();
    this.#pinAtZero = [before, after].some((h) => !h || h.nBackfill === h.mxFrame);
    this.#pinnedFrame = after?.mxFrame ?? -1;
    return previous.inTransaction ? previous : null;
  }

  /** Ends a pin that #pin() replaced; never the current one (the probe may have rotated since). */
  #release(pin: Database.Database | null): void {
    if (pin?.inTransaction && pin !== this.#pins?.[this.#pinIndex]) pin.exec("ROLLBACK");
  }

  #walIndex(): WalIndexHeader | null {
    try {
      return readWalIndexHeader(`${this.db.path}-shm`);
    } catch {
      return null;
    }
  }

  #unpinAll(): void {
    this.#pinAtZero = false;
    for (const conn of this.#pins ?? []) if (conn.inTransaction) conn.exec("ROLLBACK");
  }

  /** Continues the saved generation if the WAL still continues its position; else says why not. */
  async #resume(): Promise<true | string> {
    const state = await this.spool.readState<PersistedState>();
    if (state?.format !== "lifeboat.replicator-state" || state.database !== this.db.name) return "first run";
    if (state.dbIdentity.dev !== this.#dbIdentity?.dev || state.dbIdentity.ino !== this.#dbIdentity?.ino) {
      return "restart: the database file was replaced since the last run";
    }
    let txn = state.txn;
    let position = state.position;
    // Segments made durable after the state was last written (a crash between the two).
    const spooled = await this.spool.list(state.generation);
    const newest = spooled.at(-1);
    if (newest && newest.lastTxn > txn) {
      const header = await this.spool.header(newest).catch(() => undefined);
      if (!header?.walEnd) return "restart: the newest queued segment is unreadable";
      txn = header.lastTxn;
      position = header.walEnd;
    }
    const scan = scanWal(this.walPath, { after: position, maxFrame: position.frame });
    for await (const _ of scan) {
      // only checking that the WAL still continues the position
    }
    if (scan.result.reset)
      return `restart: the WAL no longer continues the last archived position (${scan.result.reset})`;
    // At frame 0 the scan accepts a WAL without a header (missing, empty, or one SQLite has only
    // announced): while our pin holds, nothing can have been committed unseen. Across a restart it
    // can: the app may have written, checkpointed and removed or truncated the WAL meanwhile. Only
    // the same header proves nothing happened.
    const header = scan.result.header;
    if (position.frame === 0 && (header?.salt1 !== position.salt1 || header?.salt2 !== position.salt2)) {
      return `restart: the WAL no longer continues the last archived position (${header ? "salt-changed" : "missing"})`;
    }
    this.#generation = state.generation;
    this.#txn = txn;
    this.#position = position;
    // Whatever the WAL holds past the position was committed while no replicator watched it.
    this.#unwatchedSince = state.watchedAt ?? null;
    this.#watchedAt = state.watchedAt ?? 0;
    this.#header = header;
    this.#positions.reset(position, txn);
    for (const t of this.#targets) {
      const saved = state.targets[t.repo.named.name];
      if (saved?.generation === state.generation) {
        t.generation = saved.generation;
        t.shipped = saved.shipped;
        t.saved = saved.shipped;
      }
    }
    return true;
  }

  /**
   * Saves the state (serialized: the newest state is always the one left on disk). Each target's
   * saved progress is what the queue keeps segments for (#boundQueue), so a restart after a
   * crash finds every segment its saved state needs.
   */
  #persist(): Promise<void> {
    const run = this.#persistChain.then(() => this.#writeState());
    this.#persistChain = run.catch(() => {});
    return run;
  }

  /** Saves the state within PERSIST_INTERVAL_MS (progress only: an older state costs re-uploads, never data). */
  #persistSoon(): void {
    if (this.#persistTimer || this.#stopped) return;
    const wait = Math.max(0, this.#lastPersistAt + PERSIST_INTERVAL_MS - Date.now());
    this.#persistTimer = setTimeout(() => {
      this.#persistTimer = null;
      void this.#persist().catch((e) => this.#report(e));
    }, wait);
  }

  async #writeState(): Promise<void> {
    if (!this.#generation || !this.#position || !this.#dbIdentity) return;
    this.#lastPersistAt = Date.now();
    const state: PersistedState = {
      format: "lifeboat.replicator-state",
      formatVersion: 1,
      database: this.db.name,
      dbIdentity: this.#dbIdentity,
      generation: this.#generation,
      txn: this.#txn,
      position: this.#position,
      watchedAt: this.#watchedAt,
      targets: Object.fromEntries(
        this.#targets.map((t) => [t.repo.named.name, { generation: t.generation, shipped: t.shipped }]),
      ),
    };
    await this.spool.writeState(state);
    for (const t of this.#targets) {
      const saved = state.targets[t.repo.named.name]!;
      t.saved = saved.generation === state.generation ? saved.shipped : 0;
    }
    if (!this.#stopped) void this.#trimQueue().catch((e) => this.#report(e));
  }

  /** Starts a new generation: a snapshot at the current WAL position, shipped to every target. */
  async #startGeneration(reason: string): Promise<void> {
    const generation = newGenerationId();
    const startedAt = this.#now(); // the snapshot holds every commit before it
    const snapshot = (await this.db.driver.snapshot(this.db.path, {
      integrity: this.db.integrity,
      deferChecks: true,
    })) as SqliteSnapshot;
    if (!snapshot.walPosition) {
      snapshot.release();
      throw new LifeboatError(ErrorCodes.INTERNAL, `${this.db.path} is not in WAL mode after it was switched.`, {
        plugin: "wal",
      });
    }
    this.#generation = generation;
    this.#txn = 0;
    this.#position = snapshot.walPosition;
    this.#header = null;
    this.#positions.reset(snapshot.walPosition, 0);
    this.#restartExpected = null;
    this.#watched(startedAt);
    this.#continuity = true; // the pin was taken before the snapshot: its mark is at or before the snapshot's position
    this.#unreadableWal = null;
    this.#historyBroken = null;
    for (const t of this.#targets) {
      t.generation = null;
      t.shipped = 0;
    }
    await this.spool.removeGenerationsExcept(generation);
    this.#emit({ type: "generation", database: this.db.name, generation, reason });
    await this.#persist();
    await this.#shipSnapshot(snapshot, 0, this.#targets, generationSnapshotReason(reason));
  }

  /**
   * Takes a snapshot of the current generation (scheduled, on demand, or for a target that lost
   * its place) and ships it to `targets` (default: all).
   */
  async snapshot(reason: string, targets: readonly TargetState[] = this.#targets): Promise<number> {
    if (!this.#generation) throw new LifeboatError(ErrorCodes.INTERNAL, "No generation yet.", { plugin: "wal" });
    const generation = this.#generation;
    const snapshot = (await this.db.driver.snapshot(this.db.path, {
      integrity: this.db.integrity,
      deferChecks: true,
    })) as SqliteSnapshot;
    try {
      await this.sync();
    } catch (error) {
      snapshot.release();
      throw error;
    }
    const position = snapshot.walPosition ? this.#positions.get(snapshot.walPosition) : undefined;
    if (position === undefined || this.#generation !== generation) {
      snapshot.release();
      throw new LifeboatError(
        ErrorCodes.INTERNAL,
        `The snapshot of ${this.db.name} does not line up with a shipped transaction; it will be retried.`,
        {
          plugin: "wal",
        },
      );
    }
    await this.#shipSnapshot(snapshot, position, targets, reason);
    return position;
  }

  async #shipSnapshot(
    snapshot: SqliteSnapshot,
    position: number,
    targets: readonly TargetState[],
    reason: string,
  ): Promise<void> {
    const generation = this.#generation!;
    await Promise.all(targets.map((t) => t.repo.open().catch(() => {})));
    const { outcomes, contentBytes } = await storeSnapshot(
      this.db,
      snapshot,
      targets.map((t) => t.repo),
      { generation, position, reason },
    );
    const shippedTo: string[] = [];
    outcomes.forEach((outcome, i) => {
      const t = targets[i]!;
      if (!outcome.manifest) {
        this.#targetFailed(t, outcome.error);
        return;
      }
      if (this.#generation === generation && (t.generation !== generation || t.shipped < position)) {
        t.generation = generation;
        t.shipped = position;
      }
      // The sentinel is the first segment after the newest snapshot: older ones may be pruned.
      if (this.#generation === generation) t.sentinel = null;
      shippedTo.push(t.repo.named.name);
      this.#kick(t);
    });
    await this.#persist();
    this.#emit({
      type: "snapshot",
      database: this.db.name,
      generation,
      position,
      targets: shippedTo,
      bytes: contentBytes,
    });
  }

  #watch(): void {
    const wake = () => {
      if (this.#stopped || this.#batchTimer) return;
      const wait = this.#lastSegmentAt + this.#o.segmentIntervalMs - Date.now();
      if (wait > 0) {
        this.#batchTimer = setTimeout(() => {
          this.#batchTimer = null;
          wake();
        }, wait);
        return;
      }
      this.#requestPass();
    };
    // Commits are noticed by probing the WAL index header (in the -shm file) for a change: a
    // read of 136 bytes every WAL_PROBE_MS. A file watcher on the -wal file (inotify) noticed them
    // as fast, but made every write of the app's slower (the kernel queues an event per write):
    // 14% fewer commits a second (6,899 vs 7,992) for a writer with synchronous=FULL.
    const shm = `${this.db.path}-shm`;
    let seen = "";
    this.#probeTimer = setInterval(() => {
      let index: WalIndexHeader | null = null;
      try {
        index = readWalIndexHeader(shm);
      } catch {
        return; // no -shm (yet): the poll below still runs
      }
      // Any pin keeps the WAL from restarting, so a pin on read lock 0 is swapped at once.
      try {
        if (this.#pinAtZero && index && index.mxFrame > index.nBackfill && this.#pins) this.#release(this.#pin());
      } catch (error) {
        this.#report(error); // e.g. SQLITE_BUSY past the busy timeout: the next pass pins again
      }
      const now = index ? `${index.change}:${index.mxFrame}:${index.salt1}:${index.salt2}` : "unstable";
      if (now !== seen) {
        seen = now;
        this.#indexChangedAt = Date.now();
        wake();
      }
      try {
        if (index) this.#moveIdlePin(index);
        if (index) this.#checkpointIdle(index);
      } catch (error) {
        this.#report(error);
      }
    }, WAL_PROBE_MS);
    this.#timer = setInterval(
      () => {
        wake();
        void this.#serveRequests();
      },
      Math.min(this.#o.syncIntervalMs, 250),
    );
  }

  /**
   * No commit for IDLE_PIN_MS and everything shipped: the app is idle, or it waits inside a
   * checkpoint of its own. `wal_checkpoint(RESTART)` or `(TRUNCATE)` holds the write lock and
   * waits (busy handler) first for our pin's read mark, then for every reader off read locks
   * 1-4, and meanwhile every other writer of the app waits too. So the pin moves to the WAL's end
   * (nothing is left to protect), and to read lock 0 once every frame is checkpointed: such a
   * checkpoint then waits milliseconds instead of up to two once-a-second pin moves. Under a
   * steady stream of commits this never fires, so the pin still moves only as #syncOnce says.
   */
  #moveIdlePin(index: WalIndexHeader): void {
    if (this.#pinAtZero || !this.#idleAtEnd(index, IDLE_PIN_MS)) return;
    if (this.#pinnedFrame === index.mxFrame && index.nBackfill !== index.mxFrame) return;
    this.#release(this.#pin());
  }

  /**
   * The app has been idle for IDLE_CHECKPOINT_MS and everything is shipped: the frames still only
   * in the WAL are copied into the database file (PASSIVE, on the thread). Without this a quiet
   * app's last commits stay in the -wal for as long as the replicator runs: the app closing is
   * not the last connection, so SQLite does not checkpoint then, and an operator who stops the app
   * and removes the -wal and -shm (safe without a replicator) would lose them from the database.
   */
  #checkpointIdle(index: WalIndexHeader): void {
    if (this.#checkpointing || !this.#idleAtEnd(index, IDLE_CHECKPOINT_MS)) return;
    if (index.nBackfill >= index.mxFrame || this.#pinnedFrame !== index.mxFrame) return;
    if (Date.now() < this.#nextCheckpointAt) return;
    this.#checkpointing = this.#checkpoint(false)
      .catch((e) => this.#report(e))
      .finally(() => {
        this.#checkpointing = null;
      });
  }

  /**
   * No commit for `ms`, everything up to the WAL's end shipped, and continuity proven (nothing is
   * proven yet after opening, nor while an unreadable WAL waits for its repair).
   */
  #idleAtEnd(index: WalIndexHeader, ms: number): boolean {
    const position = this.#position;
    return (
      position !== null &&
      this.#pins !== null &&
      !this.#stopped &&
      this.#continuity &&
      index.salt1 === position.salt1 &&
      index.salt2 === position.salt2 &&
      index.mxFrame === position.frame &&
      Date.now() - this.#indexChangedAt >= ms
    );
  }

  #serving = false;

  /** Snapshot requests from `lifeboat backup` (see snapshot-requests.ts). */
  async #serveRequests(): Promise<void> {
    if (this.#serving || this.#stopped) return;
    this.#serving = true;
    try {
      for (const request of await takeRequests(this.spool.dir)) {
        try {
          const position = await this.snapshot(request.reason);
          await answer(this.spool.dir, request.id, {
            ok: true,
            generation: this.#generation!,
            position,
            id: snapshotId(this.#generation!, position),
          });
        } catch (error) {
          const e = error instanceof LifeboatError ? error : new LifeboatError(ErrorCodes.INTERNAL, String(error));
          await answer(this.spool.dir, request.id, {
            ok: false,
            error: { code: e.code, message: e.message, ...(e.hint ? { hint: e.hint } : {}) },
          });
        }
      }
    } finally {
      this.#serving = false;
    }
  }

  /**
   * Ships everything committed before the call to the local queue (and wakes the uploaders).
   * Resolves after a pass that started after the call; passes repeat while changes keep coming,
   * but a caller never waits for more than that one pass.
   */
  sync(): Promise<void> {
    const pass = this.#passesStarted + 1 + (this.#syncing ? 1 : 0);
    const done = new Promise<void>((resolve, reject) => this.#waiters.push({ pass, resolve, reject }));
    this.#endGap?.();
    this.#requestPass();
    return done;
  }

  /**
   * Asks for a pass without waiting for it (the watcher, timers): no promise per file-change
   * event, of which a busy WAL raises thousands a second. Errors of passes nobody waits for are
   * reported as events.
   */
  #requestPass(): void {
    this.#dirty = true;
    if (this.#syncing) return;
    this.#syncing = (async () => {
      try {
        while (this.#dirty && !this.#stopped) {
          const gap = this.#nextPassAt - Date.now();
          if (gap > 0 && this.#waiters.length === 0) {
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, gap);
              this.#endGap = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            this.#endGap = null;
            if (this.#stopped) break;
          }
          this.#dirty = false;
          const pass = ++this.#passesStarted;
          const started = Date.now();
          this.#lockingMs = 0;
          try {
            await this.#syncOnce(true);
            // Time spent taking and holding the write lock is mostly waiting, and is not repeated
            // per commit: it does not lengthen the gap (the commits after a locked checkpoint would
            // be noticed up to a whole gap later).
            const busy = Date.now() - started - this.#lockingMs;
            this.#nextPassAt = Date.now() + Math.min(MAX_PASS_GAP_MS, busy * PASS_GAP_FACTOR);
            this.#lastError = null;
            this.#settle(
              (w) => w.pass <= pass,
              (w) => w.resolve(),
            );
          } catch (error) {
            const waiting = this.#waiters.some((w) => w.pass <= pass);
            this.#settle(
              (w) => w.pass <= pass,
              (w) => w.reject(error),
            );
            if (!waiting) this.#report(error);
          }
        }
      } finally {
        this.#syncing = null;
        // Stopped with callers still waiting: they get what was shipped.
        this.#settle(
          () => true,
          (w) => w.resolve(),
        );
      }
    })();
  }

  #settle(
    match: (w: { pass: number }) => boolean,
    action: (w: { resolve: () => void; reject: (e: unknown) => void }) => void,
  ): void {
    const ready = this.#waiters.filter(match);
    this.#waiters = this.#waiters.filter((w) => !match(w));
    for (const w of ready) action(w);
  }

  async #syncOnce(mayCheckpoint: boolean): Promise<void> {
    if (!this.#generation) return;
    if (await this.#databaseReplaced()) return;
    if (!this.#pins || !this.#position) return;
    // The pin moves forward only right before a checkpoint of ours (or once a second): any pin,
    // however old, keeps unshipped frames safe, and each move lets the app's own auto-checkpoint
    // (which runs after every commit while the WAL has more than 1000 frames) copy pages and
    // fsync again at its next commit, inside that commit. Moving it at every pass past the
    // threshold, as before, cost a writer with synchronous=FULL about 7 points of throughput
    // (bracketed A/B, 5 rounds: 80.4% vs 87.1% of unreplicated; NORMAL 85.1% vs 87.2%).
    const checkpointDue =
      this.#position.frame > this.#o.checkpointPages &&
      !this.#checkpointing &&
      (this.#lockedCheckpointDue ||
        Date.now() >= this.#nextCheckpointAt ||
        this.#position.frame > this.#o.emergencyCheckpointPages);
    const rotate =
      !this.#continuity ||
      !this.#pins.some((p) => p.inTransaction) ||
      checkpointDue ||
      Date.now() - this.#rotatedAt >= PIN_ROTATE_MS;
    const previousPin = rotate ? this.#pin() : null;
    if (rotate) this.#rotatedAt = Date.now();
    try {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.#shipNewTransactions();
          break;
        } catch (error) {
          // The WAL restarted between the scan and reading its pages: scan again, which sees the
          // restart and decides whether it continues the history.
          const restarted = error instanceof LifeboatError && /was reset while/.test(error.message);
          if (!restarted || attempt >= 3) throw error;
        }
      }
      if (!this.#unreadableWal) this.#continuity = true; // an unreadable WAL continues nothing
    } finally {
      this.#release(previousPin);
    }
    if (this.#unreadableWal) return; // the next pass truncates the WAL instead
    const waitingForRestart =
      this.#restartExpected !== null && posKey(this.#restartExpected) === posKey(this.#position);
    if (mayCheckpoint && this.#lockedCheckpointDue) {
      this.#lockedCheckpointDue = false;
      await this.#lockedCheckpoint();
    } else if (
      mayCheckpoint &&
      !waitingForRestart &&
      !this.#checkpointing &&
      this.#position.frame > this.#o.checkpointPages &&
      (Date.now() >= this.#nextCheckpointAt || this.#position.frame > this.#o.emergencyCheckpointPages)
    ) {
      if (!rotate && this.#pinnedFrame < this.#position.frame) {
        // A large commit landed after this pass began: it shipped past the pin, which a PASSIVE
        // cannot copy past, so a locked checkpoint would copy it all with the write lock held
        // (measured: 340 ms for 100 MB). The next pass moves the pin first.
        this.#requestPass();
        return;
      }
      // On its own thread: shipping and uploads go on while it copies pages and fsyncs.
      this.#checkpointing = this.#checkpoint()
        .catch((e) => this.#report(e))
        .finally(() => {
          this.#checkpointing = null;
        });
    }
  }

  /**
   * True (and handled) when the database file, or its -wal or -shm, was deleted or replaced under
   * the replicator: its connections are closed (the checkpoint thread's first, see
   * #closeConnections) and reopened, and a new generation starts from a snapshot.
   */
  async #databaseReplaced(): Promise<boolean> {
    const info = await fileId(this.db.path);
    let reason: string | null = null;
    if (sameFile(info, this.#dbIdentity)) {
      reason = await this.#sideFilesReplaced();
      if (reason === null) return false;
      const generation = this.#generation;
      if (generation) {
        // What every target holds; transactions only queued here go with the old generation's queue.
        const held = Math.min(...this.#targets.map((t) => (t.generation === generation ? t.shipped : 0)));
        this.#report(
          new LifeboatError(ErrorCodes.STORAGE_ERROR, `${this.db.path}: ${reason}.`, {
            plugin: "wal",
            hint: `Commits that were only in the removed WAL are not in the database file now. ${held > 0 ? `Every target holds transactions up to ${held} of generation ${generation}: \`lifeboat restore --generation ${generation} --to-txn ${held} --output recovered.db\` gives that state back (a target may hold more; see \`lifeboat list\`).` : "See `lifeboat list` for what the targets hold of the previous generation."} Never delete a -wal or -shm while any connection has the database open.`,
          }),
        );
      }
    }
    await this.#checkpointing;
    await this.#checkpointer?.close();
    this.#checkpointer = null;
    this.#closeConnections();
    if (!info) {
      const message = `${this.db.path} was deleted; archiving is paused until it exists again (a new generation will start).`;
      if (!this.#deletedReported) {
        this.#deletedReported = true;
        this.#emit({
          type: "error",
          database: this.db.name,
          error: new LifeboatError(ErrorCodes.DATABASE_NOT_FOUND, message, { plugin: "wal" }),
        });
      }
      this.#dbIdentity = null;
      return true;
    }
    try {
      await this.#openConnections();
    } catch (error) {
      this.#report(error); // e.g. recreated but not a database yet: try again at the next poll
      this.#closeConnections();
      return true;
    }
    this.#deletedReported = false;
    this.#pin();
    await this.#startGeneration(
      reason ?? (this.#dbIdentity && info ? "the database file was replaced" : "the database file was recreated"),
    );
    return true;
  }

  async #shipNewTransactions(): Promise<void> {
    const found = await this.#scanNew();
    if (!found) return;
    const { transactions, header, records, scannedAt } = found;
    try {
      await this.#spool(transactions, header, records ?? framesOf(this.walPath, header, transactions));
      this.#watched(scannedAt);
    } finally {
      if (records && records.buffer.byteLength <= SPARE_RECORDS_BYTES)
        this.#spareRecords = records.buffer as ArrayBuffer;
    }
  }

  /**
   * The committed transactions past our position, or null: none, or a WAL reset, handled here
   * (continued when it continues our history, else a new generation).
   */
  async #scanNew(): Promise<{
    transactions: WalTransaction[];
    header: WalHeader;
    records: Buffer | null;
    /** When the scan began: nothing committed before it is left unread. */
    scannedAt: number;
  } | null> {
    const scannedAt = this.#now();
    if (this.#unreadableWal) {
      // First whatever is still readable before the break (a locked checkpoint that found the
      // break read it but did not queue it), then the repair.
      const before = await readWalTransactions(this.walPath, { after: this.#position!, pageRecords: RECORDS_BYTES });
      if (!before.result.reset && before.transactions.length > 0) {
        return {
          transactions: before.transactions,
          header: before.result.header!,
          records: before.result.pageRecords,
          scannedAt: this.#watchedAt, // the scan stopped at the break: it proves nothing newer
        };
      }
      await this.#recoverUnreadableWal();
      return null;
    }
    if (this.#historyBroken) {
      const reason = this.#historyBroken;
      this.#historyBroken = null;
      await this.#startGeneration(reason);
      return null;
    }
    const position = this.#position!;
    const spare = this.#spareRecords;
    this.#spareRecords = undefined;
    // Before the scan: every frame up to the index's mxFrame was in the file before SQLite
    // published it, so a scan of the same WAL must reach it.
    const index = this.#walIndex();
    const { transactions, result } = await readWalTransactions(this.walPath, {
      after: position,
      pageRecords: RECORDS_BYTES,
      ...(spare ? { pageRecordsBuffer: spare } : {}),
    });
    if (result.reset || transactions.length === 0) this.#spareRecords = spare;
    const reached = unprovenAfter(index, position, { transactions, result });
    if (reached !== null && (await this.#stillUnreadable(position))) this.#walUnreadable(index!, reached, result.stop);
    if (result.reset) {
      // Our own complete checkpoint, or any restart while our pins prove continuity (#continuity).
      const expected =
        (this.#restartExpected && posKey(this.#restartExpected) === posKey(position)) || this.#continuity;
      if (
        expected &&
        (result.reset === "missing" || result.reset === "truncated" || result.reset === "header-invalid")
      ) {
        return null; // checkpointed and truncated by us; the next writer writes a new header
      }
      if (expected && result.reset === "salt-changed" && result.header) {
        // The WAL restarted after a complete checkpoint (ours or the app's): the same history goes on.
        const start = walStartPosition(result.header);
        this.#position = start;
        this.#positions.reset(start, this.#txn);
        this.#restartExpected = null;
        return this.#scanNew();
      }
      await this.#startGeneration(`the WAL was reset by someone else (${result.reset})`);
      return null;
    }
    if (transactions.length === 0) {
      if (!this.#unreadableWal) this.#watched(scannedAt);
      return null;
    }
    return {
      transactions,
      header: result.header!,
      records: result.pageRecords,
      scannedAt: this.#unreadableWal ? this.#watchedAt : scannedAt,
    };
  }

  /** A scan that began at `at` reached the WAL's end, and everything it found is queued. */
  #watched(at: number): void {
    this.#watchedAt = Math.max(this.#watchedAt, at);
    this.#unwatchedSince = null;
  }

  /**
   * SQLite's index says frames up to `index.mxFrame` are committed, but the WAL file's checksum
   * chain breaks after `reached`. Seen with SQLite 3.40 (Debian 12's, Python's): after a
   * transaction spilled pages to the WAL, `ROLLBACK TO` a savepoint and `COMMIT` leave frames
   * whose headers were never written. SQLite's readers go by the index and see the data, but
   * those frames cannot be archived, and SQLite's own recovery after a crash would drop them too.
   * The transactions before the break still ship; after it, no position in this WAL can be
   * proved, so the history stops here and a new generation starts from a snapshot, once the
   * WAL is checkpointed and truncated (#recoverUnreadableWal).
   */
  #walUnreadable(index: WalIndexHeader, reached: number, stop: string): void {
    const reason = `SQLite's WAL index counts committed frames up to ${index.mxFrame}, but the WAL's frames cannot be validated after frame ${reached} (the scan stopped: ${stop})`;
    this.#unreadableWal = { salt1: index.salt1, salt2: index.salt2, reason, retryAt: 0, backoffMs: 2000 };
    this.#continuity = false; // no restart of this WAL continues our history
    this.#report(
      new LifeboatError(
        ErrorCodes.INTEGRITY_FAILED,
        `${this.walPath}: ${reason}. The app's SQLite wrote committed frames without valid headers (known with SQLite 3.40 after ROLLBACK TO a savepoint in a transaction that spilled to the WAL). Transactions up to the break are archived; the moments from there to the new generation's snapshot cannot be restored. The replicator checkpoints and truncates the WAL and starts a new generation from a snapshot.`,
        {
          plugin: "wal",
          hint: "Upgrade the application's SQLite library: until then, a crash of the app at such a moment could lose those transactions from the database itself.",
        },
      ),
    );
  }

  /** A second look (index first, then the file) before giving up on the WAL. */
  async #stillUnreadable(position: WalPosition): Promise<boolean> {
    const index = this.#walIndex();
    return (
      unprovenAfter(index, position, await readWalTransactions(this.walPath, { after: position, sync: true })) !== null
    );
  }

  /**
   * After #walUnreadable: checkpoints and truncates the WAL (TRUNCATE waits for the app's writers
   * and readers, up to the thread's busy timeout; tried again at the next pass if they kept it
   * busy), then starts a new generation. A WAL the app restarted meanwhile needs no truncation.
   */
  async #recoverUnreadableWal(): Promise<void> {
    const broken = this.#unreadableWal!;
    const index = this.#walIndex();
    if (!index) return; // a torn read of the index (the app is committing): next pass
    if (index.salt1 === broken.salt1 && index.salt2 === broken.salt2 && index.mxFrame > 0) {
      // The thread is busy, or the app kept the last try from completing: later (each try may
      // hold the write lock while it waits for the app's readers).
      if (this.#checkpointing || Date.now() < broken.retryAt) return;
      this.#unpinAll(); // our pins would keep the checkpoint from copying the frames we could not read
      const thread = this.#thread();
      await thread.passive().catch(() => undefined); // the bulk of the copying, without the lock
      const row = await thread.truncate(TRUNCATE_WAIT_MS).catch(() => undefined);
      if (row?.busy !== 0) {
        this.#pin();
        broken.retryAt = Date.now() + broken.backoffMs;
        this.#report(
          new LifeboatError(
            ErrorCodes.DATABASE_LOCKED,
            `Archiving of ${this.db.name} is paused: the WAL it cannot read must be checkpointed and truncated first, and the app's readers or writers kept that from completing (tried again in ${Math.round(broken.backoffMs / 1000)} s).`,
            { plugin: "wal", hint: "Let long read transactions of the app end; archiving resumes by itself." },
          ),
        );
        broken.backoffMs = Math.min(broken.backoffMs * 2, 60_000);
        return;
      }
    }
    this.#pin();
    await this.#startGeneration(broken.reason); // clears #unreadableWal once it succeeded
  }

  /** Makes `transactions` (with their `pages`, in frame order) the next segment in the local queue. */
  async #spool(
    transactions: readonly WalTransaction[],
    header: WalHeader,
    pages: AsyncIterable<SegmentPage> | Buffer,
  ): Promise<void> {
    this.#header = header;
    const observedAt = this.#now();
    const generation = this.#generation!;
    const unwatched = this.#unwatchedSince;
    const segmentTxns: SegmentTransaction[] = transactions.map((t, i) => ({
      txn: this.#txn + 1 + i,
      observedAt,
      commitSize: t.commitSize,
      pages: t.pgnos.length,
      ...(unwatched !== null && unwatched < observedAt ? { committedAfter: unwatched } : {}),
    }));
    const last = transactions.at(-1)!;
    const segmentHeader: SegmentHeader = {
      generation,
      firstTxn: this.#txn + 1,
      lastTxn: this.#txn + transactions.length,
      pageSize: header.pageSize,
      compression: "zstd",
      createdAt: new Date(observedAt).toISOString(),
      transactions: segmentTxns,
      walEnd: { ...last.end },
    };
    this.#lastSegmentAt = Date.now();
    const spooled = await this.spool.write(segmentHeader, encodeSegment(segmentHeader, pages));
    for (let i = 0; i < transactions.length; i++) this.#positions.add(transactions[i]!.end, this.#txn + 1 + i);
    this.#txn = segmentHeader.lastTxn;
    this.#position = last.end;
    this.#restartExpected = null;
    // No state write here: a restart reads the newest queued segment's header (#resume).
    this.#emit({
      type: "spooled",
      database: this.db.name,
      generation,
      firstTxn: spooled.firstTxn,
      lastTxn: spooled.lastTxn,
      bytes: spooled.size,
    });
    for (const t of this.#targets) this.#kick(t);
    await this.#boundQueue();
  }

  /**
   * PASSIVE checkpoint with our pin held and no write lock: writers never wait for it. It copies
   * frames up to our pin's read mark, which is at or before what we shipped, so nothing unshipped
   * can be checkpointed away; when writes pause it completes, and the next writer restarts the WAL,
   * which #continuity recognises as the same history. When the app went on committing, a locked
   * checkpoint follows at the next pass (#lockedCheckpoint), unless one is backing off; not
   * with `thenLocked` false (the idle checkpoint, #checkpointIdle).
   */
  async #checkpoint(thenLocked = true): Promise<void> {
    const at = this.#position;
    // Undefined when the thread is busy or failed; busy = 1 (and -1 frames) when another
    // checkpoint held SQLite's checkpoint lock, often the app's own: try at a later sync.
    const row = await this.#thread().passive();
    const complete = Boolean(row && row.busy === 0 && row.log >= 0 && row.log === row.checkpointed);
    // One that could not finish is not retried at every pass: each copies pages and fsyncs.
    this.#nextCheckpointAt = complete ? 0 : Date.now() + Math.min(CHECKPOINT_RETRY_MS, this.#o.syncIntervalMs);
    if (this.#stopped) return;
    this.#emit({
      type: "checkpoint",
      database: this.db.name,
      mode: "PASSIVE",
      frames: row?.log ?? -1,
      checkpointed: row?.checkpointed ?? -1,
      complete,
      writeLockMs: 0,
    });
    // Complete at our position (nothing shipped since): nothing to do until the next writer
    // restarts the WAL.
    if (complete && at && row!.log === at.frame && this.#position === at) this.#restartExpected = at;
    // Incomplete, or complete while our pin still holds a read mark in the WAL (taken before the
    // app's latest commits): either way the WAL cannot restart, and goes on growing while the app
    // writes. Under the lock the pin moves to read mark 0, which lets the next commit restart it.
    if (thenLocked && row && Date.now() >= this.#nextLockedAt) {
      // It ships transactions, so it runs inside a sync pass, never beside one.
      this.#lockedCheckpointDue = true;
      this.#requestPass();
    }
  }

  /**
   * PASSIVE checkpoint while the thread holds the write lock. The app's own auto-checkpoint may
   * be running (it runs after a commit, outside the write lock) and hold the checkpointer lock;
   * it ends soon, and PASSIVE never waits, so try again for up to LOCKED_BUSY_WAIT_MS.
   */
  #checkpointLocked(conn: Database.Database): { busy: number; log: number; checkpointed: number } | undefined {
    const deadline = Date.now() + LOCKED_BUSY_WAIT_MS;
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (;;) {
      let row: { busy: number; log: number; checkpointed: number } | undefined;
      try {
        row = (conn.pragma("wal_checkpoint(PASSIVE)") as (typeof row)[])[0];
      } catch (error) {
        if (!String((error as { code?: unknown }).code).startsWith("SQLITE_BUSY")) return undefined;
      }
      if (row && row.busy === 0) return row;
      if (Date.now() >= deadline) return row;
      Atomics.wait(pause, 0, 0, 1);
    }
  }

  /** Committed frames past our position, from the WAL index (-shm) header. */
  #unshippedFrames(): number {
    const index = readWalIndexHeader(`${this.db.path}-shm`);
    const position = this.#position;
    if (!index || !position) return 0;
    const sameWal = index.salt1 === position.salt1 && index.salt2 === position.salt2;
    return sameWal ? Math.max(0, index.mxFrame - position.frame) : index.mxFrame;
  }

  #thread(): CheckpointThread {
    if (!this.#checkpointer || this.#checkpointer.exited) this.#checkpointer = new CheckpointThread(this.db.path);
    return this.#checkpointer;
  }

  /**
   * A checkpoint that completes although the app commits without pause (our pin then always
   * trails the WAL's end, so PASSIVE never finishes and the WAL only grows). Runs inside a sync
   * pass, right after it shipped. The checkpoint thread takes the write lock (a bounded busy loop;
   * the main thread stays free). Under the lock: read the few transactions committed since the
   * pass shipped (into memory when small), end our pins, checkpoint everything, pin again (at
   * read mark 0: everything is in the database file, so the pin no longer keeps the WAL from
   * restarting), release. Then queue what was read. The next commit restarts the WAL from its
   * start, which #restartExpected recognises as the same history. Nothing unshipped is
   * checkpointed without having been read first; if queueing it fails after the lock, the
   * history has a hole and the next pass starts a new generation. The stall writers see is the
   * time the lock was held (measured on the thread).
   */
  async #lockedCheckpoint(): Promise<void> {
    if (!this.#position || !this.#writer) return;
    // What is read under the lock is what arrived since the last ship: keep it small. Each
    // catch-up ship is shorter than the one before.
    for (let i = 0; i < 3 && this.#unshippedFrames() > LOCKED_SHIP_FIRST_FRAMES; i++) {
      const pin = this.#pin();
      try {
        await this.#shipNewTransactions();
      } finally {
        this.#release(pin);
      }
    }
    if (!this.#position || !this.#writer) return;
    const thread = this.#thread();
    const urgent = this.#position.frame > this.#o.emergencyCheckpointPages;
    const lockStarted = Date.now();
    const attempt = await thread.lock(LOCK_SPIN_MS).catch((error: unknown) => {
      this.#report(error);
      return { locked: false };
    });
    this.#lockingMs += Date.now() - lockStarted;
    if (!attempt.locked) {
      this.#nextLockedAt = Date.now() + (urgent ? 0 : LOCK_RETRY_MS);
      this.#nextCheckpointAt = this.#nextLockedAt;
      return;
    }
    let heldMs = 0;
    const lockedAt = Date.now();
    let row: { busy: number; log: number; checkpointed: number } | undefined;
    let pending: { transactions: WalTransaction[]; header: WalHeader; records: Buffer } | null = null;
    let aborted = false;
    const readAt = this.#now(); // under the lock: nothing commits until it is released
    try {
      // A large transaction committed since the last ship (a bulk import): reading it here would
      // stall the app for as long. Let go; the next pass ships it without the lock.
      const frameBytes = (this.#header?.pageSize ?? 4096) + WAL_FRAME_HEADER_SIZE;
      if (!urgent && this.#unshippedFrames() * frameBytes > LOCKED_READ_MAX_BYTES) {
        this.#lockedCheckpointDue = true;
        this.#requestPass();
        return;
      }
      const { transactions, result } = await readWalTransactions(this.walPath, {
        after: this.#position,
        pageRecords: LOCKED_READ_MAX_BYTES,
        sync: true, // under the lock: no other work of ours may run before the checkpoint
      });
      // Under the lock the index cannot move: frames it counts that the scan could not validate
      // must not be checkpointed away unread (see #walUnreadable).
      const index = this.#walIndex();
      const reached = unprovenAfter(index, this.#position, { transactions, result });
      if (result.reset) {
        aborted = true; // the next pass sorts the reset out, without the lock
      } else if (reached !== null) {
        aborted = true; // the next pass ships what is readable, then truncates the WAL
        this.#walUnreadable(index!, reached, result.stop);
      } else {
        if (transactions.length > 0) {
          const header = result.header!;
          // Kept by the scan (within LOCKED_READ_MAX_BYTES): queued after the lock; else now.
          if (result.pageRecords) pending = { transactions, header, records: result.pageRecords };
          else await this.#spool(transactions, header, framesOf(this.walPath, header, transactions));
        }
        this.#unpinAll();
        row = this.#checkpointLocked(this.#writer);
        this.#pin();
      }
    } finally {
      try {
        heldMs = await thread.unlock();
      } catch (error) {
        this.#report(error);
        await thread.close(); // closing its connection releases the lock
      }
      this.#lockingMs += Date.now() - lockedAt;
    }
    if (aborted) return;
    const end = pending ? pending.transactions.at(-1)!.end : this.#position;
    const complete = Boolean(row && row.log === row.checkpointed && row.log === end.frame);
    if (pending) {
      try {
        await this.#spool(pending.transactions, pending.header, pending.records);
      } catch (error) {
        if (complete || (row && row.checkpointed > 0)) {
          this.#historyBroken = `transactions ${this.#txn + 1}-${this.#txn + pending.transactions.length} were checkpointed but could not be queued (${(error as Error).message})`;
          this.#continuity = false;
        }
        throw error;
      }
    }
    this.#watched(readAt); // all it read is queued
    if (complete) {
      this.#restartExpected = this.#position;
      this.#lockedBackoffMs = LOCKED_BACKOFF_MS;
      this.#nextLockedAt = 0;
      this.#nextCheckpointAt = 0;
    } else {
      // Another reader kept it from completing: locking again soon would stall writers for nothing.
      this.#nextLockedAt = Date.now() + this.#lockedBackoffMs;
      this.#lockedBackoffMs = Math.min(this.#lockedBackoffMs * 2, 30_000);
    }
    this.maxWriteLockMs = Math.max(this.maxWriteLockMs, heldMs);
    this.#emit({
      type: "checkpoint",
      database: this.db.name,
      mode: "LOCKED",
      frames: row?.log ?? -1,
      checkpointed: row?.checkpointed ?? -1,
      complete,
      writeLockMs: heldMs,
    });
  }

  /**
   * Removes queued segments every target has shipped and saved (the newest stays, for #resume),
   * and past `queueMaxBytes` the oldest ones, whatever their state. One run at a time; a call
   * during a run gets a second run. Passes do not wait for it unless the queue is over its bound:
   * after each state save, a second's worth of segments goes (75 at 100 tx/s), and their unlinks
   * one after another held up the pass that waited for them by 20-40 ms once a second, which was
   * the tail of the replication lag.
   */
  #trimQueue(): Promise<void> {
    if (this.#trimming) {
      this.#trimAgain = true;
      return this.#trimming;
    }
    this.#trimming = (async () => {
      try {
        do {
          this.#trimAgain = false;
          await this.#trimOnce();
        } while (this.#trimAgain);
      } finally {
        this.#trimming = null;
      }
    })();
    return this.#trimming;
  }

  async #trimOnce(): Promise<void> {
    const generation = this.#generation;
    if (!generation) return;
    const segments = await this.spool.list(generation);
    const needed = Math.min(...this.#targets.map((t) => (t.generation === generation ? t.saved : 0)));
    let total = segments.reduce((n, s) => n + s.size, 0);
    const remove: SpooledSegment[] = [];
    for (const s of segments.slice(0, -1)) {
      if (s.lastTxn > needed && total <= this.#o.queueMaxBytes) break;
      remove.push(s);
      total -= s.size;
    }
    if (remove.length === 0) return;
    await this.spool.remove(remove);
    // Who lost its place is decided after the unlinks: a snapshot or a new generation may have
    // moved a target past the dropped range meanwhile.
    if (this.#generation !== generation) return;
    const lastDropped = remove.at(-1)!.lastTxn;
    const behind = this.#targets.filter((t) => t.generation === generation && t.shipped < lastDropped);
    if (behind.length === 0) return;
    for (const t of behind) t.generation = null; // lost its place: needs a new snapshot
    const lacks = behind
      .map((t) => `on ${t.repo.named.name}, points after transaction ${t.shipped} cannot be restored`)
      .join("; ");
    const names = behind.map((t) => t.repo.named.name).join(", ");
    this.#emit({
      type: "error",
      database: this.db.name,
      error: new LifeboatError(
        ErrorCodes.STORAGE_ERROR,
        `The local queue of ${this.db.name} passed its bound of ${this.#o.queueMaxBytes} bytes and dropped segments not yet shipped (up to transaction ${lastDropped}): ${lacks}, up to the new snapshot each gets when it is reachable again. Nothing is lost from the database itself.`,
        {
          plugin: "wal",
          hint: `Bring ${names} back, or raise replication.queueMaxSize (the queue is in ${this.spool.dir}).`,
        },
      ),
    });
  }

  /** Waits for trimming only when the queue is over its bound; otherwise leaves it to the background. */
  async #boundQueue(): Promise<void> {
    const generation = this.#generation;
    if (generation && this.spool.queuedBytes(generation) > this.#o.queueMaxBytes) await this.#trimQueue();
  }

  #kick(t: TargetState): void {
    if (t.pumping) {
      t.again = true;
      return;
    }
    if (t.retryTimer || this.#stopped) return;
    t.pumping = true;
    void this.#pump(t).finally(() => {
      t.pumping = false;
      if (t.again && !t.failing) {
        t.again = false;
        this.#kick(t);
      }
    });
  }

  /** Ships what `t` still lacks, in order: a snapshot if it has none in this generation, then segments. */
  async #pump(t: TargetState): Promise<void> {
    try {
      if (!t.leaseHeld) {
        await t.repo.open();
        await t.lease.acquire();
        t.leaseHeld = true;
      }
      const generation = this.#generation;
      if (!generation) return;
      if (t.generation !== generation) {
        await this.snapshot("target catching up", [t]);
        if (t.generation !== generation) return;
      }
      for (;;) {
        t.again = false;
        const pending = (await this.spool.list(generation)).filter((s) => s.lastTxn > t.shipped);
        if (pending.length === 0) break;
        for (const segment of pending) {
          if (segment.lastTxn <= t.shipped) continue; // a snapshot shipped meanwhile covers it
          if (segment.firstTxn > t.shipped + 1) {
            t.generation = null; // a gap: the queue dropped what this target needed
            this.#kick(t);
            return;
          }
          await this.#upload(t, segment);
          if (this.#generation !== generation) return;
          if (t.generation !== generation) {
            t.again = true; // lost its place meanwhile (#targetLost): the next pump takes a snapshot
            return;
          }
        }
      }
      if (t.failing) {
        t.failing = null;
        t.backoffMs = 1000;
        this.#emit({ type: "target-recovered", database: this.db.name, target: t.repo.named.name });
      }
      this.#persistSoon();
      await this.#boundQueue();
    } catch (error) {
      if (isLifeboatError(error, ErrorCodes.LEASE_HELD)) t.leaseHeld = false;
      this.#targetFailed(t, error);
    }
  }

  async #upload(t: TargetState, segment: SpooledSegment): Promise<void> {
    const extensions = this.db.codecs.map((c) => c.extension).join("");
    const key = segmentKey(
      this.db.name,
      segment.generation,
      segment.firstTxn,
      segment.lastTxn,
      segment.lastObservedAt,
      extensions,
    );
    const bytes = segment.bytes;
    const body = bytes ? Readable.from([bytes]) : createReadStream(segment.file);
    await t.repo.target.put(key, encodeChain(this.db.codecs, body), {
      signal: this.#stopAbort.signal,
      ...(this.db.codecs.length === 0 ? { contentLength: segment.size } : {}),
    });
    if (t.generation === segment.generation) t.shipped = Math.max(t.shipped, segment.lastTxn); // a snapshot may have moved it further meanwhile
    if (t.sentinel === null && t.generation === segment.generation) t.sentinel = key;
    this.#emit({
      type: "shipped",
      database: this.db.name,
      target: t.repo.named.name,
      generation: segment.generation,
      firstTxn: segment.firstTxn,
      lastTxn: segment.lastTxn,
      lagMs: this.#now() - segment.lastObservedAt,
    });
    await this.db.hooks.run("onSegment", {
      database: { name: this.db.name, path: this.db.path },
      target: t.repo.named.name,
      generation: segment.generation,
      firstTxn: segment.firstTxn,
      lastTxn: segment.lastTxn,
    });
  }

  #targetFailed(t: TargetState, error: unknown): void {
    const wrapped =
      error instanceof LifeboatError
        ? error
        : new LifeboatError(ErrorCodes.STORAGE_ERROR, `Target ${t.repo.named.name}: ${String(error)}`, {
            cause: error,
            plugin: t.repo.target.type,
          });
    // Reported when the target starts failing, and again when the kind of failure changes (not
    // at every retry: messages name keys and attempt counts).
    const kind = (e: LifeboatError) => `${e.code}:${e.operation ?? ""}:${e.plugin ?? ""}`;
    const first = !t.failing || kind(t.failing) !== kind(wrapped);
    t.failing = wrapped;
    const retryInMs = t.backoffMs;
    t.backoffMs = Math.min(t.backoffMs * 2, 30_000);
    if (first)
      this.#emit({
        type: "target-error",
        database: this.db.name,
        target: t.repo.named.name,
        error: wrapped,
        retryInMs,
      });
    if (this.#stopped || t.retryTimer) return;
    t.retryTimer = setTimeout(() => {
      t.retryTimer = null;
      this.#kick(t);
    }, retryInMs);
  }

  async #renewLeases(): Promise<void> {
    for (const t of this.#targets) {
      if (!t.leaseHeld) continue;
      try {
        if (!(await t.lease.renew())) t.checkKept = true;
        if (t.checkKept) {
          await this.#checkTargetKept(t); // until it completes: a failure leaves it pending
          t.checkKept = false;
        } else if (++t.renewals % SENTINEL_EVERY === 0) await this.#checkSentinel(t);
      } catch (error) {
        if (isLifeboatError(error, ErrorCodes.LEASE_HELD)) t.leaseHeld = false;
        this.#targetFailed(t, error);
      }
    }
  }

  /**
   * Our lease object was gone from `t`: someone deleted objects there, perhaps the whole folder.
   * Without the generation's snapshot nothing shipped since is restorable from `t`, however many
   * segments follow; so `t` gets a new snapshot (and its marker again), as a target that fell
   * behind does.
   */
  async #checkTargetKept(t: TargetState): Promise<void> {
    const generation = this.#generation;
    if (!generation || t.generation !== generation) return; // it is getting a snapshot anyway
    if (await this.#hasSnapshot(t, generation, 0)) return;
    await this.#targetLost(t, "its lease and snapshots were deleted");
  }

  /** `t` holds a snapshot of `generation` at `position` or later. */
  async #hasSnapshot(t: TargetState, generation: string, position: number): Promise<boolean> {
    const { snapshots } = await t.repo.listSnapshots();
    return snapshots.some((s) => s.manifest.generation === generation && s.manifest.position >= position);
  }

  /**
   * Every SENTINEL_EVERY lease renewals (a minute by default: one HEAD), the first segment shipped
   * after the target's newest snapshot must still be there. Deleted (a cleanup job, an expiry
   * rule on the WAL objects), no segment after it can be applied from `t` any more.
   */
  async #checkSentinel(t: TargetState): Promise<void> {
    const key = t.sentinel;
    const generation = this.#generation;
    if (!key || !generation || t.generation !== generation) return;
    try {
      await t.repo.target.head(key);
    } catch (error) {
      if (!isLifeboatError(error, ErrorCodes.NOT_FOUND)) throw error;
      if (t.sentinel !== key) return;
      // Pruned after a newer snapshot (one stored while its segments were already shipped): fine.
      if (await this.#hasSnapshot(t, generation, parseSegmentKey(key)?.firstTxn ?? 0)) {
        if (t.sentinel === key) t.sentinel = null;
        return;
      }
      if (t.sentinel === key)
        await this.#targetLost(t, `segment ${key}, the first after its newest snapshot, was deleted`);
    }
  }

  async #targetLost(t: TargetState, what: string): Promise<void> {
    t.generation = null; // the catch-up snapshot (#shipSnapshot) opens the folder again, marker first
    t.shipped = 0;
    t.sentinel = null;
    t.repo.forgetOpened();
    this.#report(
      new LifeboatError(
        ErrorCodes.STORAGE_ERROR,
        `${t.repo.where} lost archived data of generation ${this.#generation}: ${what} while the replicator ran. A new snapshot is being taken for it; moments before that snapshot cannot be restored from this target.`,
        {
          plugin: "wal",
          hint: "Check who or what deletes files on the target (cleanup jobs, lifecycle rules, a wrong path).",
        },
      ),
    );
    this.#kick(t);
  }

  async #releaseLeases(): Promise<void> {
    await Promise.all(this.#targets.map((t) => t.lease.release().catch(() => {})));
  }

  #report(error: unknown): void {
    const wrapped =
      error instanceof LifeboatError
        ? error
        : new LifeboatError(ErrorCodes.INTERNAL, String(error), { cause: error, plugin: "wal" });
    if (this.#lastError === wrapped.message) return;
    this.#lastError = wrapped.message;
    this.#emit({ type: "error", database: this.db.name, error: wrapped });
    void this.db.hooks.run("onError", {
      database: { name: this.db.name, path: this.db.path },
      operation: "replicate",
      error: wrapped,
    });
  }

  /**
   * Stops: ships what is committed, waits (up to `timeoutMs`) for every reachable target to take
   * the queue, releases the leases and closes. Segments a target could not take stay queued for
   * the next run.
   */
  async stop(timeoutMs = 30_000): Promise<{ pending: { target: string; shipped: number; txn: number }[] }> {
    if (this.#probeTimer) clearInterval(this.#probeTimer);
    if (this.#timer) clearInterval(this.#timer);
    if (this.#batchTimer) clearTimeout(this.#batchTimer);
    if (this.#leaseTimer) clearInterval(this.#leaseTimer);
    if (this.#snapshotTimer) clearInterval(this.#snapshotTimer);
    if (this.#persistTimer) clearTimeout(this.#persistTimer);
    await this.sync().catch((e) => this.#report(e));
    this.#stopped = true;
    await this.#checkpointing;
    await this.#checkpointer?.close();
    this.#checkpointer = null;
    const deadline = Date.now() + timeoutMs;
    // An upload to a target that does not answer waits out the storage client's timeouts and
    // retries (minutes): at the deadline it is aborted, and what it held stays queued.
    const abortAt = setTimeout(() => this.#stopAbort.abort(), timeoutMs);
    for (const t of this.#targets) {
      if (t.retryTimer) {
        clearTimeout(t.retryTimer);
        t.retryTimer = null;
      }
    }
    const behind = () => this.#targets.filter((t) => t.generation !== this.#generation || t.shipped < this.#txn);
    while (behind().length > 0 && Date.now() < deadline) {
      for (const t of behind()) {
        if (!t.pumping) {
          t.pumping = true;
          const pumped = this.#pump(t).finally(() => {
            t.pumping = false;
          });
          // Opening the folder, the lease and a snapshot upload have no abort: not past the deadline.
          await Promise.race([pumped, new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref())]);
        }
      }
      if (behind().some((t) => t.failing)) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    clearTimeout(abortAt);
    for (const t of this.#targets) {
      if (t.retryTimer) clearTimeout(t.retryTimer);
    }
    await this.#persist().catch(() => {});
    await this.#trimQueue().catch(() => {}); // what every target has saved leaves the queue now
    await withdraw(this.spool.dir).catch(() => {});
    // A lease left behind expires on its own (leaseTtlMs); an unresponsive target must not hold the exit.
    await Promise.race([this.#releaseLeases(), new Promise((r) => setTimeout(r, 5000).unref())]);
    this.#closeConnections();
    return { pending: behind().map((t) => ({ target: t.repo.named.name, shipped: t.shipped, txn: this.#txn })) };
  }
}

/** Replicator options from a database's `replication` and `snapshot` config. */
export function replicatorOptionsFrom(db: DatabaseContext): ReplicatorOptions {
  const r = db.replication;
  return {
    ...(r
      ? {
          syncIntervalMs: parseDuration(r.syncInterval),
          segmentIntervalMs: parseDuration(r.segmentInterval),
          checkpointPages: r.checkpointPages,
          emergencyCheckpointPages: r.emergencyCheckpointPages,
          ...(r.queueDir ? { queueDir: resolve(db.pluginContext.baseDir, r.queueDir) } : {}),
          queueMaxBytes: parseSize(r.queueMaxSize),
          changeJournalMode: r.changeJournalMode,
          leaseTtlMs: parseDuration(r.leaseTtl),
        }
      : {}),
    ...(db.snapshotIntervalMs ? { snapshotIntervalMs: db.snapshotIntervalMs } : {}),
  };
}

/** The pages of `transactions` (consecutive, from one scan) read from the WAL again, in frame order. */
function framesOf(
  walPath: string,
  header: WalHeader,
  transactions: readonly WalTransaction[],
): AsyncIterable<SegmentPage> {
  return readWalFrames(walPath, header, transactions[0]!.firstFrame, transactions.at(-1)!.lastFrame);
}
