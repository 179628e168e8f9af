/**
 * Reads SQLite `-wal` files (sqlite.org/fileformat2.html §4): the header, the frames, the
 * cumulative checksum chain, and the grouping of frames into committed transactions.
 *
 * Pure file parsing: no SQLite library. A frame is valid only if its salts equal the header's,
 * its page number is non-zero and its checksum equals the running checksum; a scan stops at the
 * first invalid frame. Only frames up to the last valid commit frame are committed, and nothing
 * after it is ever reported as committed.
 *
 * Frames a scan reported stay valid only while the WAL is not reset. Whoever reads page images
 * later (the replicator, snapshots) holds a read transaction on the database, which stops SQLite
 * from resetting the WAL under it.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { open } from "node:fs/promises";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { checksumFrame, needsSwap, walChecksum } from "./wal-checksum.js";

export { walChecksum } from "./wal-checksum.js";

export const WAL_HEADER_SIZE = 32;
export const WAL_FRAME_HEADER_SIZE = 24;
/** Magic for checksums computed on little-endian words. */
export const WAL_MAGIC_LITTLE_ENDIAN = 0x377f0682;
/** Magic for checksums computed on big-endian words. */
export const WAL_MAGIC_BIG_ENDIAN = 0x377f0683;
export const WAL_FORMAT_VERSION = 3007000;

const DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024;
/** With `pageRecords`, the buffer first allocated holds at most this much (bytes); it grows when needed. */
const RECORDS_FIRST_BYTES = 16 * 1024 * 1024;
/** A scan's first read (bytes); each next one doubles, up to the chunk size. */
const SMALL_FIRST_READ = 64 * 1024;

/** The 32-byte WAL header. All fields are unsigned 32-bit integers. */
export interface WalHeader {
  readonly magic: number;
  /** Checksums are over big-endian words (magic 0x377f0683). */
  readonly bigEndianChecksum: boolean;
  /** File format version, 3007000. */
  readonly version: number;
  readonly pageSize: number;
  readonly checkpointSeq: number;
  readonly salt1: number;
  readonly salt2: number;
  /** Checksum of header bytes 0-23; the chain of frame checksums starts from it. */
  readonly checksum1: number;
  readonly checksum2: number;
}

/** The 24-byte header in front of every frame's page image. */
export interface WalFrameHeader {
  readonly pgno: number;
  /** Database size in pages after this commit; 0 unless this is a commit frame. */
  readonly commitSize: number;
  readonly salt1: number;
  readonly salt2: number;
  readonly checksum1: number;
  readonly checksum2: number;
}

/**
 * A point in a WAL: "everything up to and including `frame` of the WAL whose salts are
 * `salt1`/`salt2`, whose running checksum after that frame was `checksum1`/`checksum2`".
 * `frame` is 0 before the first frame; the checksum is then ignored (the header's is used).
 */
export interface WalPosition {
  readonly salt1: number;
  readonly salt2: number;
  readonly frame: number;
  readonly checksum1: number;
  readonly checksum2: number;
}

/** One committed transaction: the consecutive frames `firstFrame..lastFrame` (1-based). */
export interface WalTransaction {
  readonly firstFrame: number;
  /** The commit frame. */
  readonly lastFrame: number;
  /** Database size in pages after this transaction. */
  readonly commitSize: number;
  /** Page number of each frame, in frame order (`pgnos[i]` is frame `firstFrame + i`). */
  readonly pgnos: Uint32Array;
  /** The position right after the commit frame; resume a later scan from here. */
  readonly end: WalPosition;
}

/** Why a scan stopped reading frames. */
export type WalStopReason =
  /** No further bytes: every frame read was valid. */
  | "end-of-file"
  /** The file ends inside a frame (a torn write or a writer in progress). */
  | "partial-frame"
  /** A frame carries other salts: left over from before a WAL reset. */
  | "salt-mismatch"
  /** A frame's checksum does not continue the chain (corruption, torn write, stale frame). */
  | "checksum-mismatch"
  /** A frame has page number 0. */
  | "invalid-page-number"
  /** `maxFrame` was reached. */
  | "max-frame"
  /** The file is missing, shorter than a header, or its header is invalid. */
  | "no-header"
  /** The WAL no longer continues `after` (see `WalScanResult.reset`). */
  | "reset";

/** Why a WAL does not continue the position a scan was asked to resume from. */
export type WalResetReason =
  /** The file is gone or shorter than a header, though frames had been seen. */
  | "missing"
  /** The header is not a valid WAL header. */
  | "header-invalid"
  /** The header has other salts: SQLite restarted the WAL (or it is another file). */
  | "salt-changed"
  /** The file is shorter than the position. */
  | "truncated"
  /** The frame at the position is not the commit frame that was seen there. */
  | "position-mismatch";

export interface WalScanResult {
  /** The header in the file now, or null when there is no valid one. */
  readonly header: WalHeader | null;
  /** Set when `after` was given and the WAL no longer continues it; no transactions were yielded. */
  readonly reset: WalResetReason | null;
  /**
   * The position after the last committed frame: the last yielded transaction's `end`, else
   * `after` (nothing new), else frame 0 of the current header. Null when there is no usable
   * header or on reset.
   */
  readonly end: WalPosition | null;
  /** Index of the last committed frame (0 when none). */
  readonly lastCommitFrame: number;
  /** Database size in pages after that commit (0 when unknown: no commit seen). */
  readonly commitSize: number;
  /** Index of the last frame that validated, committed or not. */
  readonly lastValidFrame: number;
  /** Valid frames after the last commit: a transaction in progress or rolled back. Never yielded. */
  readonly uncommittedFrames: number;
  readonly stop: WalStopReason;
  /** Size of the file when the scan started (0 when missing). */
  readonly fileSize: number;
  /**
   * With `pageRecords`: every yielded transaction's frames, in frame order, each as its page
   * number (u32 big-endian) followed by its page image, exactly as the scan read and checksummed
   * them. Null when not asked for, or when they did not fit in `pageRecords` bytes.
   */
  readonly pageRecords: Buffer | null;
}

export interface WalScanOptions {
  /** Resume after this position (from an earlier scan's `end` or a transaction's `end`). */
  readonly after?: WalPosition;
  /** Read no frame past this index (inclusive). */
  readonly maxFrame?: number;
  /** Bytes per read; rounded to whole frames. Default 4 MiB. */
  readonly chunkSize?: number;
  /**
   * Also copy the yielded transactions' frames into `result.pageRecords` (page number, then page
   * image) while they fit in this many bytes; past it, `pageRecords` is null. Saves reading the
   * frames a second time. Default 0: none.
   */
  readonly pageRecords?: number;
  /**
   * With `pageRecords`: collect them in this buffer (from its start) if it is big enough for a
   * first read; a caller that scans again and again passes the previous result's
   * `pageRecords.buffer`, once done with it, so the memory is reused. A bigger one is allocated
   * when needed.
   */
  readonly pageRecordsBuffer?: ArrayBuffer;
  readonly signal?: AbortSignal;
  /**
   * Read with synchronous calls: the scan then never lets the event loop run other work before it
   * ends. For a caller holding the database's write lock (every millisecond of it stalls the
   * app's writers) reading the few frames committed since its last scan.
   */
  readonly sync?: boolean;
}

/** A scan in progress: iterate it for the committed transactions, then read `result`. */
export interface WalScan extends AsyncIterable<WalTransaction> {
  /** What the scan saw. Throws if read before the iteration has finished. */
  readonly result: WalScanResult;
}

function u32be(buf: Uint8Array, offset: number): number {
  return ((buf[offset]! << 24) | (buf[offset + 1]! << 16) | (buf[offset + 2]! << 8) | buf[offset + 3]!) >>> 0;
}

/**
 * Parses and validates a WAL header (the first 32 bytes of `buf`). Returns null unless the magic,
 * version, page size (a power of two from 512 to 65536) and the header checksum over bytes 0-23
 * are all valid.
 */
export function parseWalHeader(buf: Uint8Array): WalHeader | null {
  if (buf.byteLength < WAL_HEADER_SIZE) return null;
  const magic = u32be(buf, 0);
  if (magic !== WAL_MAGIC_LITTLE_ENDIAN && magic !== WAL_MAGIC_BIG_ENDIAN) return null;
  const version = u32be(buf, 4);
  const pageSize = u32be(buf, 8);
  if (version !== WAL_FORMAT_VERSION) return null;
  if (pageSize < 512 || pageSize > 65536 || (pageSize & (pageSize - 1)) !== 0) return null;
  const bigEndianChecksum = magic === WAL_MAGIC_BIG_ENDIAN;
  const checksum1 = u32be(buf, 24);
  const checksum2 = u32be(buf, 28);
  const [s0, s1] = walChecksum(buf.subarray(0, 24), 0, 0, bigEndianChecksum);
  if (s0 !== checksum1 || s1 !== checksum2) return null;
  return {
    magic,
    bigEndianChecksum,
    version,
    pageSize,
    checkpointSeq: u32be(buf, 12),
    salt1: u32be(buf, 16),
    salt2: u32be(buf, 20),
    checksum1,
    checksum2,
  };
}

/** Decodes a frame header at `offset` of `buf` (no validation). */
export function parseWalFrameHeader(buf: Uint8Array, offset = 0): WalFrameHeader {
  return {
    pgno: u32be(buf, offset),
    commitSize: u32be(buf, offset + 4),
    salt1: u32be(buf, offset + 8),
    salt2: u32be(buf, offset + 12),
    checksum1: u32be(buf, offset + 16),
    checksum2: u32be(buf, offset + 20),
  };
}

/** Byte offset of frame `frame` (1-based) in a WAL file; its page image starts 24 bytes later. */
export function walFrameOffset(frame: number, pageSize: number): number {
  return WAL_HEADER_SIZE + (frame - 1) * (WAL_FRAME_HEADER_SIZE + pageSize);
}

/** The position at the start of a WAL (before frame 1). */
export function walStartPosition(header: WalHeader): WalPosition {
  return {
    salt1: header.salt1,
    salt2: header.salt2,
    frame: 0,
    checksum1: header.checksum1,
    checksum2: header.checksum2,
  };
}

/**
 * Scans the WAL at `path` in large sequential reads and yields its committed transactions in
 * order: from frame 1, or after `options.after`. Stops at the first invalid frame, at
 * `maxFrame`, or at the end of the file. Frames after the last valid commit frame are counted in
 * `result.uncommittedFrames` and never yielded.
 *
 * When resuming, the WAL must still continue `after`: same salts, the file long enough, and the
 * frame at `after.frame` a commit frame whose stored checksum equals `after`'s. Otherwise
 * `result.reset` says why and nothing is yielded: the caller starts over without `after` (and,
 * for continuous archiving, a new generation). A missing file or a header of the generation
 * before `after` (salt-1 one less: SQLite restarted the WAL in its index but has not written the
 * new header yet) is not a reset when `after.frame` is 0.
 *
 * Memory: one read buffer plus the page numbers of the transaction being assembled (and the
 * page records, when asked for).
 */
export function scanWal(path: string, options: WalScanOptions = {}): WalScan {
  let result: WalScanResult | undefined;
  let started = false;
  return {
    get result(): WalScanResult {
      if (!result) throw internal("WalScan.result is available once the iteration has finished");
      return result;
    },
    async *[Symbol.asyncIterator](): AsyncIterator<WalTransaction> {
      if (started) throw internal("A WalScan can be iterated only once");
      started = true;
      for await (const batch of runScan(path, options, (r) => {
        result = r;
      }))
        yield* batch;
    },
  };
}

/** Runs a scan to the end and collects its transactions (metadata only: page numbers, not pages). */
export async function readWalTransactions(
  path: string,
  options: WalScanOptions = {},
): Promise<{ transactions: WalTransaction[]; result: WalScanResult }> {
  let result: WalScanResult | undefined;
  const transactions: WalTransaction[] = [];
  // Batch by batch: a busy WAL holds thousands of transactions, and an await per transaction
  // cost the replicator more than checksumming their frames.
  for await (const batch of runScan(path, options, (r) => {
    result = r;
  }))
    for (const txn of batch) transactions.push(txn);
  return { transactions, result: result! };
}

/**
 * The page records of a scan. Frames are read straight into it, after the records so far, and
 * each validated frame's record is moved down over the frame headers: no copy of the pages and
 * no allocation per frame. It grows (up to the limit plus one read) when a read does not fit.
 */
class RecordBuffer {
  #buf: Buffer;
  /** Bytes up to the end of the last committed transaction. */
  #committed = 0;
  #used = 0;
  constructor(
    readonly limit: number,
    reuse: ArrayBuffer | undefined,
    first: number,
    expected: number,
  ) {
    this.#buf =
      reuse && reuse.byteLength >= first ? Buffer.from(reuse) : Buffer.allocUnsafeSlow(Math.max(first, expected));
  }
  /** Where a read of `bytes` goes (at `offset`), or null past the limit. */
  room(bytes: number): { buf: Buffer; offset: number } | null {
    if (this.#used >= this.limit) return null;
    if (this.#used + bytes > this.#buf.byteLength) {
      const grown = Buffer.allocUnsafeSlow(Math.max(this.#used + bytes, this.#buf.byteLength * 2));
      this.#buf.copy(grown, 0, 0, this.#used);
      this.#buf = grown;
    }
    return { buf: this.#buf, offset: this.#used };
  }
  /**
   * Turns the first `count` frames read at the end into records; the first `committed` of them
   * end with a commit frame. False when the records would pass the limit.
   */
  append(count: number, pageSize: number, committed: number): boolean {
    const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;
    const recordSize = 4 + pageSize;
    const at = this.#used;
    if (at + count * recordSize > this.limit) return false;
    // Record k goes before frame k's own bytes: moving them in order never overwrites a frame
    // not moved yet. The first record's page number is already in place.
    const buf = this.#buf;
    for (let k = 0; k < count; k++) {
      const to = at + k * recordSize;
      const from = at + k * frameSize;
      if (k > 0) buf.copyWithin(to, from, from + 4);
      buf.copyWithin(to + 4, from + WAL_FRAME_HEADER_SIZE, from + frameSize);
    }
    if (committed > 0) this.#committed = at + committed * recordSize;
    this.#used = at + count * recordSize;
    return true;
  }
  take(): Buffer {
    return this.#buf.subarray(0, this.#committed);
  }
}

/** Page numbers of the transactions a scan yields: views into shared arrays, not one allocation each. */
class PgnoArena {
  #arena = new Uint32Array(1024);
  #start = 0;
  #used = 0;
  push(pgno: number): void {
    if (this.#used === this.#arena.length) {
      // Full: the transaction in progress moves to a new arena; views handed out keep the old one.
      const pending = this.#used - this.#start;
      const next = new Uint32Array(Math.max(1024, pending * 2));
      next.set(this.#arena.subarray(this.#start, this.#used));
      this.#arena = next;
      this.#start = 0;
      this.#used = pending;
    }
    this.#arena[this.#used++] = pgno;
  }
  /** The page numbers pushed since the last call. */
  take(): Uint32Array {
    const view = this.#arena.subarray(this.#start, this.#used);
    this.#start = this.#used;
    return view;
  }
}

/**
 * The scan itself: yields the committed transactions found in each read (a batch per read, only
 * non-empty ones).
 */
async function* runScan(
  path: string,
  options: WalScanOptions,
  finish: (result: WalScanResult) => void,
): AsyncGenerator<WalTransaction[], void, undefined> {
  const after = options.after;
  const maxFrame = options.maxFrame ?? Number.POSITIVE_INFINITY;
  let handle: WalFileHandle;
  try {
    handle = options.sync ? openWalSync(path) : await open(path, "r");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") throw error;
    finish(noHeaderResult(null, 0, after, after && after.frame > 0 ? "missing" : null));
    return;
  }
  try {
    const fileSize = (await handle.stat()).size;
    const headerBuf = Buffer.alloc(WAL_HEADER_SIZE);
    const { bytesRead } = await handle.read(headerBuf, 0, WAL_HEADER_SIZE, 0);
    const header = bytesRead === WAL_HEADER_SIZE ? parseWalHeader(headerBuf) : null;
    if (!header) {
      const reason = after && after.frame > 0 ? (bytesRead < WAL_HEADER_SIZE ? "missing" : "header-invalid") : null;
      finish(noHeaderResult(null, fileSize, after, reason));
      return;
    }
    const pageSize = header.pageSize;
    const frameSize = WAL_FRAME_HEADER_SIZE + pageSize;

    // The running checksum.
    let r0 = header.checksum1;
    let r1 = header.checksum2;
    let frame = 1;
    let lastCommitFrame = 0;
    let commitSize = 0;
    let end: WalPosition = walStartPosition(header);

    if (after) {
      if (after.salt1 !== header.salt1 || after.salt2 !== header.salt2) {
        // Frame 0 of a generation SQLite has announced in its index but not yet written.
        const announced = after.frame === 0 && ((header.salt1 + 1) >>> 0 === after.salt1 || fileSize === 0);
        finish(
          announced
            ? { ...noHeaderResult(header, fileSize, after, null), stop: "end-of-file" }
            : noHeaderResult(header, fileSize, after, "salt-changed"),
        );
        return;
      }
      if (after.frame > 0) {
        const afterOffset = walFrameOffset(after.frame, pageSize);
        if (fileSize < afterOffset + frameSize) {
          finish(noHeaderResult(header, fileSize, after, "truncated"));
          return;
        }
        const frameHeader = Buffer.alloc(WAL_FRAME_HEADER_SIZE);
        await handle.read(frameHeader, 0, WAL_FRAME_HEADER_SIZE, afterOffset);
        const fh = parseWalFrameHeader(frameHeader);
        if (
          fh.commitSize === 0 ||
          fh.salt1 !== header.salt1 ||
          fh.salt2 !== header.salt2 ||
          fh.checksum1 !== after.checksum1 ||
          fh.checksum2 !== after.checksum2
        ) {
          finish(noHeaderResult(header, fileSize, after, "position-mismatch"));
          return;
        }
        r0 = after.checksum1;
        r1 = after.checksum2;
        frame = after.frame + 1;
        lastCommitFrame = after.frame;
        commitSize = fh.commitSize;
        end = after;
      }
    }

    const swap = needsSwap(header.bigEndianChecksum);
    const maxFramesPerChunk = Math.max(1, Math.floor((options.chunkSize ?? DEFAULT_CHUNK_SIZE) / frameSize));
    // The first read is small and each next one twice as big (up to the chunk size): a replicator
    // scans a few new frames many times a second, and a full-size buffer each time made work for
    // the garbage collector and held memory for nothing. allocUnsafeSlow: its own ArrayBuffer at
    // offset 0, so the Int32Array view is aligned (records are 4 + pageSize bytes: aligned too).
    let framesPerChunk = Math.min(maxFramesPerChunk, Math.max(1, Math.floor(SMALL_FIRST_READ / frameSize)));
    let records =
      (options.pageRecords ?? 0) > 0
        ? new RecordBuffer(
            options.pageRecords!,
            options.pageRecordsBuffer,
            framesPerChunk * frameSize,
            // Room for every frame the file may still hold, up to 16 MiB: growing means copying.
            Math.min(RECORDS_FIRST_BYTES, Math.max(0, fileSize - walFrameOffset(frame, pageSize))),
          )
        : null;
    let readBuf: Buffer | null = null;
    const frameWords = frameSize >>> 2;
    const pgnos = new PgnoArena();
    const sum = new Uint32Array(2);
    let firstPending = frame;
    let lastValidFrame = frame - 1;
    let stop: WalStopReason = "end-of-file";

    while (true) {
      if (frame > maxFrame) {
        stop = "max-frame";
        break;
      }
      options.signal?.throwIfAborted();
      const frames = Math.min(framesPerChunk, maxFrame - frame + 1);
      const want = frames * frameSize;
      const room = records?.room(want) ?? null;
      if (!room && (!readBuf || readBuf.byteLength < want)) readBuf = Buffer.allocUnsafeSlow(want);
      const { buf, offset } = room ?? { buf: readBuf!, offset: 0 };
      const words = new Int32Array(buf.buffer, buf.byteOffset + offset, want >>> 2);
      const got = await readFully(handle, buf, offset, want, walFrameOffset(frame, pageSize));
      const whole = Math.floor(got / frameSize);
      // Nothing yielded refers to the buffer, so the next read may reuse it.
      const batch: WalTransaction[] = [];
      let valid = 0;
      let committed = 0;
      for (let k = 0; k < whole; k++) {
        const base = offset + k * frameSize;
        const pgno = u32be(buf, base);
        const frameCommit = u32be(buf, base + 4);
        if (u32be(buf, base + 8) !== header.salt1 || u32be(buf, base + 12) !== header.salt2) {
          stop = "salt-mismatch";
          break;
        }
        if (pgno === 0) {
          stop = "invalid-page-number";
          break;
        }
        checksumFrame(words, k * frameWords, frameWords, r0, r1, swap, sum);
        if (sum[0] !== u32be(buf, base + 16) || sum[1] !== u32be(buf, base + 20)) {
          stop = "checksum-mismatch";
          break;
        }
        r0 = sum[0]!;
        r1 = sum[1]!;
        lastValidFrame = frame;
        pgnos.push(pgno);
        valid = k + 1;
        if (frameCommit !== 0) {
          committed = k + 1;
          end = { salt1: header.salt1, salt2: header.salt2, frame, checksum1: r0, checksum2: r1 };
          lastCommitFrame = frame;
          commitSize = frameCommit;
          batch.push({ firstFrame: firstPending, lastFrame: frame, commitSize: frameCommit, pgnos: pgnos.take(), end });
          firstPending = frame + 1;
        }
        frame++;
      }
      // Last: it rewrites the frames just validated.
      if (records && (room ? !records.append(valid, pageSize, committed) : valid > 0)) records = null;
      if (batch.length > 0) yield batch;
      if (stop !== "end-of-file") break;
      if (got < want) {
        stop = got % frameSize === 0 ? "end-of-file" : "partial-frame";
        break;
      }
      framesPerChunk = Math.min(maxFramesPerChunk, framesPerChunk * 2);
    }
    finish({
      header,
      reset: null,
      end,
      lastCommitFrame,
      commitSize,
      lastValidFrame,
      uncommittedFrames: lastValidFrame - lastCommitFrame,
      stop,
      fileSize,
      pageRecords: records ? records.take() : null,
    });
  } finally {
    await handle.close();
  }
}

function noHeaderResult(
  header: WalHeader | null,
  fileSize: number,
  after: WalPosition | undefined,
  reset: WalResetReason | null,
): WalScanResult {
  const keep = reset === null && after !== undefined;
  const frame = keep ? after.frame : 0;
  return {
    header,
    reset,
    end: keep ? after : null,
    lastCommitFrame: frame,
    commitSize: 0,
    lastValidFrame: frame,
    uncommittedFrames: 0,
    stop: reset ? "reset" : "no-header",
    fileSize,
    pageRecords: null,
  };
}

/** What a scan needs of an open file: `fs/promises`' FileHandle, or a synchronous stand-in. */
interface WalFileHandle {
  stat(): Promise<{ size: number }>;
  read(buf: Buffer, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

/** A file read with synchronous calls behind the FileHandle shape: awaiting it lets no other work run. */
function openWalSync(path: string): WalFileHandle {
  const fd = openSync(path, "r");
  return {
    stat: async () => fstatSync(fd),
    read: async (buf, offset, length, position) => ({ bytesRead: readSync(fd, buf, offset, length, position) }),
    close: async () => closeSync(fd),
  };
}

/** Reads until `length` bytes (into `buf` at `offset`) or the end of the file; returns the bytes read. */
async function readFully(
  handle: WalFileHandle,
  buf: Buffer,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buf, offset + done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/** Where to find each page of a database as of a WAL commit. */
export interface WalPageIndex {
  /** The WAL header, or null when there is no valid WAL. */
  readonly header: WalHeader | null;
  /** Page number -> byte offset of its page image (after the frame header) in the WAL file: the latest frame at or before `lastCommitFrame`. */
  readonly pages: ReadonlyMap<number, number>;
  /** The commit the index is as of (0 when the WAL has no committed frame). */
  readonly lastCommitFrame: number;
  /** Database size in pages after that commit (0 when none). */
  readonly commitSize: number;
  /** The position after `lastCommitFrame`, or null without a WAL. */
  readonly end: WalPosition | null;
  /** The full scan result (stop reason, uncommitted frames). */
  readonly scan: WalScanResult;
}

/**
 * Builds the page index of a snapshot: for frames 1..last commit (at most `maxFrame`), maps each
 * page number to the file offset of its latest page image. Pages absent from the map are read
 * from the database file; pages past `commitSize` are not part of the database.
 */
export async function buildWalPageIndex(
  path: string,
  options: { readonly maxFrame?: number; readonly signal?: AbortSignal; readonly chunkSize?: number } = {},
): Promise<WalPageIndex> {
  const scan = scanWal(path, options);
  const latestFrame = new Map<number, number>();
  for await (const txn of scan) {
    for (let i = 0; i < txn.pgnos.length; i++) latestFrame.set(txn.pgnos[i]!, txn.firstFrame + i);
  }
  const result = scan.result;
  const pageSize = result.header?.pageSize ?? 0;
  const pages = new Map<number, number>();
  for (const [pgno, frame] of latestFrame) pages.set(pgno, walFrameOffset(frame, pageSize) + WAL_FRAME_HEADER_SIZE);
  return {
    header: result.header,
    pages,
    lastCommitFrame: result.lastCommitFrame,
    commitSize: result.commitSize,
    end: result.end,
    scan: result,
  };
}

/** A page image read from a WAL frame. */
export interface WalPage {
  readonly frame: number;
  readonly pgno: number;
  /** The page image (not shared with later pages). */
  readonly data: Buffer;
}

/**
 * Reads the page images of a transaction reported by `scanWal`, in frame order, in large
 * sequential reads. The caller must still hold the read transaction that kept the WAL from being
 * reset since the scan; the frames' salts are checked again and a mismatch throws.
 */
export function readWalPages(
  path: string,
  header: WalHeader,
  txn: WalTransaction,
  options: { readonly chunkSize?: number } = {},
): AsyncGenerator<WalPage, void, undefined> {
  return readWalFrames(path, header, txn.firstFrame, txn.lastFrame, options);
}

/**
 * Reads the page images of frames `first` to `last` (consecutive transactions reported by one
 * scan, read through one file handle), under the same rule as `readWalPages`.
 */
export async function* readWalFrames(
  path: string,
  header: WalHeader,
  first: number,
  last: number,
  options: { readonly chunkSize?: number } = {},
): AsyncGenerator<WalPage, void, undefined> {
  const frameSize = WAL_FRAME_HEADER_SIZE + header.pageSize;
  const framesPerChunk = Math.max(1, Math.floor((options.chunkSize ?? DEFAULT_CHUNK_SIZE) / frameSize));
  const handle = await open(path, "r");
  try {
    let frame = first;
    while (frame <= last) {
      const count = Math.min(framesPerChunk, last - frame + 1);
      const buf = Buffer.allocUnsafe(count * frameSize);
      const got = await readFully(handle, buf, 0, buf.byteLength, walFrameOffset(frame, header.pageSize));
      if (got < buf.byteLength)
        throw internal(
          `WAL ${path} ends before frame ${frame + Math.floor(got / frameSize)}, which a scan reported as committed`,
        );
      for (let k = 0; k < count; k++, frame++) {
        const fh = parseWalFrameHeader(buf, k * frameSize);
        if (fh.salt1 !== header.salt1 || fh.salt2 !== header.salt2) {
          throw internal(`WAL ${path} was reset while frame ${frame} was being read`);
        }
        const start = k * frameSize + WAL_FRAME_HEADER_SIZE;
        // A fresh buffer per chunk, so handing out views of it is safe.
        yield { frame, pgno: fh.pgno, data: buf.subarray(start, start + header.pageSize) };
      }
    }
  } finally {
    await handle.close();
  }
}

function internal(message: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INTERNAL, message, {
    plugin: "sqlite",
    hint: "Hold a read transaction on the database while reading its WAL; if you did, please report this.",
  });
}
