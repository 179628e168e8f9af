/**
 * The WAL segment format (docs/FORMAT.md, "WAL segments"). A segment holds one or more committed
 * transactions of one generation, in order, as page images:
 *
 *   magic    8 bytes  "LBWALSEG"
 *   version  u32 BE   2 when the body is zstd, else 1 (the layout is the same)
 *   hlen     u32 BE   length of the JSON header
 *   header   hlen bytes of UTF-8 JSON (SegmentHeader)
 *   body     per transaction in order, per page: pgno u32 BE, then pageSize bytes; compressed as
 *            header.compression says: one zstd frame, a gzip stream, or raw ("none")
 *   trailer  32 bytes: sha256 of every byte before it
 *
 * The header lists every transaction (number, observed time, commit page count, page count), so a
 * reader knows where each ends without framing in the body.
 */
import { createHash } from "node:crypto";
import type { Transform } from "node:stream";
import { promisify } from "node:util";
import { createGunzip, createGzip, gunzip, gzip, constants as zlibConstants } from "node:zlib";
import { ErrorCodes, LifeboatError, throughTransform } from "@lifeboat/core";
import { CompressStream, DecompressStream, compress as zstdCompress, decompress as zstdDecompress } from "zstd-napi";

export const SEGMENT_MAGIC = Buffer.from("LBWALSEG", "latin1");
/** The newest format version this code reads; it writes 2 for zstd bodies and 1 otherwise. */
export const SEGMENT_FORMAT_VERSION = 2;
/** The compressions a segment body may have. */
export type SegmentCompression = "zstd" | "gzip" | "none";
const COMPRESSIONS: readonly string[] = ["zstd", "gzip", "none"];
/** zstd level of new segments: the fastest standard level (the replicator's CPU is the app's CPU). */
const ZSTD_LEVEL = 1;
const TRAILER = 32;
const gunzipAsync = promisify(gunzip);
const gzipAsync = promisify(gzip);
/** Uncompressed bytes gathered before each write to the compressor. */
const BATCH_BYTES = 1024 * 1024;
/** Segments up to this size uncompressed are compressed in one call (a zstd frame that states its size). */
const ONE_CALL_BYTES = 16 * 1024 * 1024;

export interface SegmentTransaction {
  /** Transaction number within the generation (1-based, consecutive). */
  readonly txn: number;
  /** When the replicator saw it committed (ms since the epoch). */
  readonly observedAt: number;
  /** Database size in pages after the commit. */
  readonly commitSize: number;
  /** Number of page images that follow for this transaction. */
  readonly pages: number;
  /**
   * Set when the archiver found the transaction already committed when it started (it was not
   * running, or not watching, when the app committed it): the commit happened after this time (ms
   * since the epoch) and at or before `observedAt`, but exactly when is unknown.
   */
  readonly committedAfter?: number;
}

export interface SegmentHeader {
  readonly generation: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
  readonly pageSize: number;
  readonly compression: SegmentCompression;
  readonly createdAt: string;
  readonly transactions: readonly SegmentTransaction[];
  /** Where in the source WAL the segment ends (salts, frame, running checksum): lets a restarted replicator continue. */
  readonly walEnd?: { salt1: number; salt2: number; frame: number; checksum1: number; checksum2: number };
}

export interface SegmentPage {
  readonly pgno: number;
  readonly data: Uint8Array;
}

/**
 * Encodes a segment as a stream. `pages` yields each transaction's pages in header order; the
 * count per transaction must match the header. Or it is the body's records already laid out (page
 * number u32 BE, then the page image; what `scanWal`'s `pageRecords` gives), one per page the
 * header lists. Memory: one compression window.
 */
export async function* encodeSegment(
  header: SegmentHeader,
  pages: AsyncIterable<SegmentPage> | Iterable<SegmentPage> | Buffer,
): AsyncGenerator<Buffer> {
  const hash = createHash("sha256");
  const emit = (chunk: Buffer): Buffer => {
    hash.update(chunk);
    return chunk;
  };
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(16);
  SEGMENT_MAGIC.copy(prefix, 0);
  prefix.writeUInt32BE(header.compression === "zstd" ? 2 : 1, 8);
  prefix.writeUInt32BE(json.length, 12);
  yield emit(Buffer.concat([prefix, json]));

  const expected = pageCount(header);
  const recordSize = 4 + header.pageSize;
  let seen = 0;
  const record = (page: SegmentPage, into: Buffer, at: number) => {
    if (page.data.byteLength !== header.pageSize)
      throw internal(`page ${page.pgno} has ${page.data.byteLength} bytes, expected ${header.pageSize}`);
    if (seen === expected) throw internal(`segment has more pages than the ${expected} its header lists`);
    into.writeUInt32BE(page.pgno, at);
    into.set(page.data, at + 4);
    seen++;
  };
  if (Buffer.isBuffer(pages)) {
    if (pages.byteLength !== expected * recordSize)
      throw internal(
        `segment body has ${pages.byteLength} bytes, its header lists ${expected} pages of ${header.pageSize}`,
      );
    if (header.compression === "none") yield emit(pages);
    else if (pages.byteLength <= ONE_CALL_BYTES) yield emit(await compressOnce(header.compression, pages));
    else {
      const batches = (async function* () {
        for (let at = 0; at < pages.byteLength; at += BATCH_BYTES) yield pages.subarray(at, at + BATCH_BYTES);
      })();
      for await (const chunk of throughTransform(batches, compressor(header.compression))) yield emit(chunk as Buffer);
    }
    yield hash.digest();
    return;
  }
  if (header.compression !== "none" && expected * recordSize <= ONE_CALL_BYTES) {
    // The usual case: the records gathered in one (reused) buffer and compressed in one call.
    const plain = takeBuffer(expected * recordSize);
    try {
      let used = 0;
      for await (const page of pages) {
        record(page, plain, used);
        used += recordSize;
      }
      yield emit(await compressOnce(header.compression, plain.subarray(0, used)));
    } finally {
      giveBuffer(plain);
    }
  } else {
    // Records (page number + page image) are gathered into batches of up to BATCH_BYTES: a stream
    // write per record cost more than the compression itself.
    const batches = (async function* () {
      const batchRecords = Math.max(1, Math.floor(BATCH_BYTES / recordSize));
      let batch: Buffer | null = null;
      let used = 0;
      for await (const page of pages) {
        batch ??= Buffer.allocUnsafe(Math.min(batchRecords, Math.max(1, expected - seen)) * recordSize);
        record(page, batch, used);
        used += recordSize;
        if (used === batch.byteLength) {
          yield batch;
          batch = null;
          used = 0;
        }
      }
      if (batch && used > 0) yield batch.subarray(0, used);
    })();
    if (header.compression === "none") {
      for await (const chunk of batches) yield emit(chunk);
    } else {
      for await (const chunk of throughTransform(batches, compressor(header.compression))) yield emit(chunk as Buffer);
    }
  }
  if (seen !== expected) throw internal(`segment has ${seen} pages, its header lists ${expected}`);
  yield hash.digest();
}

/** A segment body compressed in one call (zstd: a frame that states its size). */
async function compressOnce(compression: "zstd" | "gzip", body: Buffer): Promise<Buffer> {
  return compression === "zstd" ? zstdCompress(body, { compressionLevel: ZSTD_LEVEL }) : gzipAsync(body, { level: 1 });
}

/** A streaming compressor for segment bodies too big for one call. */
function compressor(compression: "zstd" | "gzip"): Transform {
  return compression === "zstd"
    ? new CompressStream({ compressionLevel: ZSTD_LEVEL })
    : createGzip({ level: 1, chunkSize: 256 * 1024 });
}

/**
 * Buffers for the records of a segment, reused: a replicator encodes segments back to back, and
 * a fresh multi-megabyte buffer for each made the garbage collector its busiest part.
 */
const spareBuffers: Buffer[] = [];
function takeBuffer(size: number): Buffer {
  const i = spareBuffers.findIndex((b) => b.length >= size);
  return i >= 0 ? spareBuffers.splice(i, 1)[0]! : Buffer.allocUnsafe(Math.max(size, 256 * 1024));
}
function giveBuffer(buffer: Buffer): void {
  if (spareBuffers.length < 1) spareBuffers.push(buffer);
}

/** A decoded segment: its header, and its transactions with their pages, streamed. */
export interface DecodedSegment {
  readonly header: SegmentHeader;
  /** Each transaction with its pages, in batches (read them before the next transaction). */
  transactions(): AsyncGenerator<{ readonly txn: SegmentTransaction; readonly pages: AsyncGenerator<SegmentPage[]> }>;
}

/**
 * Decodes a segment from a byte stream. The trailer checksum is verified when the last
 * transaction has been read: a mismatch (or a truncated stream) throws `CORRUPT_BACKUP` then,
 * so callers must treat everything applied from a segment as provisional until it is consumed.
 */
export async function decodeSegment(source: AsyncIterable<Uint8Array>, name: string): Promise<DecodedSegment> {
  const reader = new ByteReader(source[Symbol.asyncIterator]());
  const hash = createHash("sha256");
  const prefix = await reader.read(16);
  const json = await reader.read(checkPrefix(prefix, name));
  if (!json) throw corrupt(name, "its header is truncated");
  hash.update(prefix!);
  hash.update(json);
  const header = parseHeader(json, name);
  // The body runs to 32 bytes before the end: hold back the trailer while hashing and inflating.
  const body = reader.allButLast(TRAILER, hash);
  const plain =
    header.compression === "none"
      ? body
      : throughTransform(
          body,
          header.compression === "zstd"
            ? new DecompressStream()
            : createGunzip({ finishFlush: zlibConstants.Z_SYNC_FLUSH, chunkSize: 128 * 1024 }),
        );
  const pages = new ByteReader(plain[Symbol.asyncIterator]());
  /** Reads from the decompressed body; zlib and stream failures become CORRUPT_BACKUP naming the segment. */
  const readPlain = async (n: number): Promise<Buffer | undefined> => {
    try {
      return await pages.read(n);
    } catch (error) {
      if (error instanceof LifeboatError) throw error;
      throw corrupt(name, `its body cannot be read (${error instanceof Error ? error.message : String(error)})`);
    }
  };
  const recordSize = 4 + header.pageSize;
  async function* readTransactions(): AsyncGenerator<{
    readonly txn: SegmentTransaction;
    readonly pages: AsyncGenerator<SegmentPage[]>;
  }> {
    for (const txn of header.transactions) {
      let read = 0;
      // Pages come in batches of what is already inflated: one await per batch, not per page.
      const txnPages = (async function* (): AsyncGenerator<SegmentPage[]> {
        while (read < txn.pages) {
          const first = await readPlain(recordSize);
          if (!first) throw corrupt(name, `it ends inside transaction ${txn.txn}`);
          read++;
          const batch: SegmentPage[] = [{ pgno: first.readUInt32BE(0), data: first.subarray(4) }];
          for (; read < txn.pages && batch.length < PAGE_BATCH; read++) {
            const record = pages.readBuffered(recordSize);
            if (!record) break;
            batch.push({ pgno: record.readUInt32BE(0), data: record.subarray(4) });
          }
          yield batch;
        }
      })();
      yield { txn, pages: txnPages };
      for await (const _ of txnPages) {
        // drain what the caller did not read
      }
    }
    if (await readPlain(1)) throw corrupt(name, "it has bytes after its last transaction");
    const trailer = reader.trailer;
    if (!trailer?.equals(hash.digest())) throw corrupt(name, "its sha256 trailer does not match");
  }
  return {
    header,
    transactions: readTransactions,
  };
}

/** Page records in a segment: the sum of its transactions' page counts. */
function pageCount(header: SegmentHeader): number {
  return header.transactions.reduce((n, t) => n + t.pages, 0);
}

/** Checks the 16-byte prefix (magic, version); returns the header's length. */
function checkPrefix(prefix: Buffer | undefined, name: string): number {
  if (!prefix?.subarray(0, 8).equals(SEGMENT_MAGIC)) throw corrupt(name, "it does not start with the segment magic");
  const version = prefix.readUInt32BE(8);
  if (version > SEGMENT_FORMAT_VERSION) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `Segment ${name} has format version ${version}; this Lifeboat reads ${SEGMENT_FORMAT_VERSION}.`,
      { hint: "Upgrade Lifeboat to restore it." },
    );
  }
  return prefix.readUInt32BE(12);
}

function parseHeader(json: Buffer, name: string): SegmentHeader {
  let header: SegmentHeader;
  try {
    header = JSON.parse(json.toString("utf8")) as SegmentHeader;
  } catch {
    throw corrupt(name, "its header is not valid JSON");
  }
  if (!Array.isArray(header?.transactions) || !Number.isInteger(header.pageSize))
    throw corrupt(name, "its header lacks the transactions or the page size");
  if (!COMPRESSIONS.includes(header.compression)) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `Segment ${name} is compressed with ${JSON.stringify(header.compression)}, which this Lifeboat does not read.`,
      { hint: "Upgrade Lifeboat to restore it." },
    );
  }
  return header;
}

/** A segment held whole in memory, its trailer checked: the header, and the body as stored. */
export interface ParsedSegment {
  readonly header: SegmentHeader;
  /** The body as stored, compressed as `header.compression` says. */
  readonly body: Buffer;
  /** Size of the body once decompressed: a record (page number + page image) per page. */
  readonly plainBytes: number;
}

/**
 * Parses a whole segment held in memory and checks its sha256 trailer before anything is used.
 * For segments small enough to hold; `decodeSegment` streams any size.
 */
/**
 * Only the header of a segment, read from the start of its stream (the rest is left unread and
 * the stream closed). Not checked against the trailer: for planning; a restore checks it.
 */
export async function readSegmentHeader(source: AsyncIterable<Uint8Array>, name: string): Promise<SegmentHeader> {
  const iterator = source[Symbol.asyncIterator]();
  try {
    const reader = new ByteReader(iterator);
    const prefix = await reader.read(16);
    const json = await reader.read(checkPrefix(prefix, name));
    if (!json) throw corrupt(name, "its header is truncated");
    return parseHeader(json, name);
  } finally {
    await iterator.return?.();
  }
}

export function parseSegment(bytes: Buffer, name: string): ParsedSegment {
  if (bytes.length < 16 + TRAILER) throw corrupt(name, `it has only ${bytes.length} bytes`);
  const hlen = checkPrefix(bytes.subarray(0, 16), name);
  if (16 + hlen + TRAILER > bytes.length) throw corrupt(name, "its header is truncated");
  const end = bytes.length - TRAILER;
  if (!createHash("sha256").update(bytes.subarray(0, end)).digest().equals(bytes.subarray(end)))
    throw corrupt(name, "its sha256 trailer does not match");
  const header = parseHeader(bytes.subarray(16, 16 + hlen), name);
  return { header, body: bytes.subarray(16 + hlen, end), plainBytes: pageCount(header) * (4 + header.pageSize) };
}

/**
 * The decompressed body of a parsed segment. zstd runs here (about 1 GB/s); gzip runs on libuv's
 * thread pool, so several segments inflate in parallel.
 */
export async function decompressSegment(segment: ParsedSegment, name: string): Promise<Buffer> {
  const { header, body, plainBytes } = segment;
  let plain: Buffer;
  try {
    if (header.compression === "none") plain = body;
    else if (header.compression === "zstd") plain = zstdDecompress(body);
    else {
      // Output in one chunk: zlib's default 16 KiB chunks cost a main-thread callback and a copy each.
      plain = await gunzipAsync(body, {
        chunkSize: Math.max(64 * 1024, plainBytes + 1),
        maxOutputLength: plainBytes + 1,
      });
    }
  } catch (error) {
    throw corrupt(name, `its body cannot be read (${error instanceof Error ? error.message : String(error)})`);
  }
  if (plain.length !== plainBytes)
    throw corrupt(name, `its body holds ${plain.length} bytes, its header lists ${plainBytes}`);
  return plain;
}

/** Pages handed out per batch at most. */
const PAGE_BATCH = 256;

/** Reads exact byte counts from a chunked stream. */
class ByteReader {
  #buffered: Buffer[] = [];
  #length = 0;
  #done = false;
  trailer: Buffer | undefined;
  constructor(readonly source: AsyncIterator<Uint8Array>) {}

  async #fill(n: number): Promise<void> {
    while (this.#length < n && !this.#done) {
      const next = await this.source.next();
      if (next.done) this.#done = true;
      else {
        const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
        this.#buffered.push(chunk);
        this.#length += chunk.length;
      }
    }
  }

  /** Exactly `n` bytes, or undefined when the stream ends first. */
  async read(n: number): Promise<Buffer | undefined> {
    await this.#fill(n);
    return this.readBuffered(n);
  }

  /** Exactly `n` bytes if that many are buffered already (no waiting), else undefined. */
  readBuffered(n: number): Buffer | undefined {
    if (this.#length < n) return undefined;
    const all = this.#buffered.length === 1 ? this.#buffered[0]! : Buffer.concat(this.#buffered, this.#length);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.#buffered = rest.length > 0 ? [rest] : [];
    this.#length = rest.length;
    return out;
  }

  /** Everything except the last `keep` bytes (kept as `trailer`), hashing what it passes on. */
  async *allButLast(keep: number, hash: ReturnType<typeof createHash>): AsyncGenerator<Buffer> {
    for (;;) {
      await this.#fill(this.#length + 1);
      if (this.#done) break;
      if (this.#length > keep + 64 * 1024) {
        const all = Buffer.concat(this.#buffered, this.#length);
        const out = all.subarray(0, all.length - keep);
        this.#buffered = [all.subarray(all.length - keep)];
        this.#length = keep;
        hash.update(out);
        yield out;
      }
    }
    const all = Buffer.concat(this.#buffered, this.#length);
    if (all.length < keep) {
      this.trailer = undefined;
      return;
    }
    const out = all.subarray(0, all.length - keep);
    this.trailer = all.subarray(all.length - keep);
    this.#buffered = [];
    this.#length = 0;
    if (out.length > 0) {
      hash.update(out);
      yield out;
    }
  }
}

function corrupt(name: string, why: string): LifeboatError {
  return new LifeboatError(ErrorCodes.CORRUPT_BACKUP, `WAL segment ${name} is corrupt: ${why}.`, {
    plugin: "wal",
    hint: "Restore to a point before this segment, or from another target (--from NAME); run `lifeboat verify`.",
  });
}

function internal(message: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INTERNAL, message, { plugin: "wal" });
}
