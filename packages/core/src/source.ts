/**
 * The database side of the contracts. A `SourceDriver` knows one database engine (SQLite in
 * `@lifeboat/sqlite`); core asks it for consistent snapshots, inspections and integrity checks
 * and never touches a database file's contents itself.
 */
import type { CallOptions } from "./storage.js";

export interface TableInfo {
  readonly name: string;
  readonly rows: number;
}

export interface IntegrityResult {
  /** Which check ran: the full `integrity_check`, the cheaper `quick_check`, or none. */
  readonly check: "integrity_check" | "quick_check" | "none";
  readonly ok: boolean;
  /** The problems reported (empty when ok). At most the first 100. */
  readonly messages: readonly string[];
}

export type IntegrityMode = "full" | "quick" | "off";

/** What a database looks like right now (or at a snapshot). */
export interface DatabaseDescription {
  readonly path: string;
  /** Bytes of the logical database image (page size x page count). */
  readonly sizeBytes: number;
  readonly pageSize: number;
  readonly pageCount: number;
  /** `wal`, `delete`, `truncate`, `persist`, `memory` or `off`. */
  readonly journalMode: string;
  /** `PRAGMA user_version`: the schema version most migration tools keep. */
  readonly userVersion: number;
  readonly tables: readonly TableInfo[];
  /** The environment marker stored in the database, if any (`production`, ...). */
  readonly environment: string | null;
  /** Version of the engine library that read it. */
  readonly engineVersion: string;
}

export interface SnapshotOptions extends CallOptions {
  /** Integrity check run inside the snapshot's read transaction. Default `"quick"`. */
  readonly integrity?: IntegrityMode;
  /**
   * Run the integrity check and the row counts after the body has been read, on the same read
   * transaction, instead of before it: reading the body sequentially brings every page into the
   * cache, so the checks then cost CPU only instead of a cold walk of every B-tree. A driver that
   * honours this returns a snapshot with `completeChecks`; one that does not simply checks first.
   */
  readonly deferChecks?: boolean;
}

/** The checks of a snapshot taken with `deferChecks`, run on the same read transaction as its body. */
export interface SnapshotChecks {
  readonly description: DatabaseDescription;
  readonly integrity: IntegrityResult;
}

/** A consistent image of the database, streamed. */
export interface Snapshot {
  /** The database as it was at the snapshot, including the integrity result. */
  readonly description: DatabaseDescription;
  readonly integrity: IntegrityResult;
  /** Exactly `description.sizeBytes` bytes: a plain database file (rollback-journal mode). */
  readonly body: AsyncIterable<Uint8Array>;
  /**
   * Present when the checks were deferred (`deferChecks`). Then `integrity` above is provisional
   * (`check: "none"`) and the tables' `rows` are -1; the body, fully read, does not end the read
   * transaction. Call this after reading the body: it runs the integrity check and counts the
   * rows on the same snapshot, then releases it.
   */
  completeChecks?(): Promise<SnapshotChecks>;
  /** Ends the read transaction early (also happens when `body` is fully consumed or fails). */
  release(): void;
}

export interface SourceDriver {
  /** Engine name recorded in manifests (`sqlite`). */
  readonly type: string;
  /**
   * Opens `path` for reading. Throws `DATABASE_NOT_FOUND`, `NOT_A_DATABASE` (directories,
   * other files) or `PERMISSION_DENIED` with a hint.
   */
  describe(path: string, options?: CallOptions): Promise<DatabaseDescription>;
  /**
   * A consistent snapshot while other processes go on writing. Holds a read transaction (so
   * it is consistent) until `body` is consumed or `release()` is called.
   */
  snapshot(path: string, options?: SnapshotOptions): Promise<Snapshot>;
  /** Checks a database file that nobody else uses (a restored temp file). */
  checkIntegrity(path: string, mode: IntegrityMode): Promise<IntegrityResult>;
  /**
   * Throws `DATABASE_LOCKED` (naming the holders when known) if another process has the
   * database open or locked, so replacing or deleting it now would be unsafe.
   */
  assertNotInUse(path: string): Promise<void>;
}
