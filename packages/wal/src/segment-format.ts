/**
 * The WAL segment format (docs/FORMAT.md, "WAL segments"). A segment holds one or more committed
 * transactions of one generation, in order, as page images:
 *
 *   magic    8 bytes  "LBWALSEG"
 *   version  u32 BE   1
 *   hlen     u32 BE   length of the JSON header
 *   header   hlen bytes of UTF-8 JSON (SegmentHeader)
 *   body     gzip stream (or raw when header.compression is "none") of, per transaction in order,
 *            per page: pgno u32 BE, then pageSize bytes
 *   trailer  32 bytes: sha256 of every byte before it
 *
 * The header lists every transaction (number, observed time, commit page count, page count), so a
 * reader knows where each ends without framing in the body.
 */
import { createHash } from "node:crypto";
import { createGunzip, createGzip, gzipSync, constants as zlibConstants } from "node:zlib";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";

export const SEGMENT_MAGIC = Buffer.from("LBWALSEG", "latin1");
export const SEGMENT_FORMAT_VERSION = 1;
const TRAILER = 32;
/** Uncompressed bytes gathered before each write to the compressor. */
const BATCH_BYTES = 1024 * 1024;

export interface SegmentTransaction {
  /** Transaction number within the generation (1-based, consecutive). */
  readonly txn: number;
  /** When the replicator saw it committed (ms since the epoch). */
  readonly observedAt: number;
  /** Database size in pages after the commit. */
  readonly commitSize: number;
  /** Number of page images that follow for this transaction. */
  readonly pages: number;
}

export interface SegmentHeader {
  readonly generation: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
  readonly pageSize: number;
  readonly compression: "gzip" | "none";
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
 * count per transaction must match the header. Memory: one compression window.
 */
export async function* encodeSegment(
  header: SegmentHeader,
  pages: AsyncIterable<SegmentPage> | Iterable<SegmentPage>,
): AsyncGenerator<Buffer> {
  const hash = createHash("sha256");
  const emit = (chunk: Buffer): Buffer => {
    hash.update(chunk);
    return chunk;
  };
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const prefix = Buffer.alloc(16);
  SEGMENT_MAGIC.copy(prefix, 0);
  prefix.writeUInt32BE(SEGMENT_FORMAT_VERSION, 8);
  prefix.writeUInt32BE(json.length, 12);
  yield emit(Buffer.concat([prefix, json]));

  const expected = header.transactions.reduce((n, t) => n + t.pages, 0);
  const recordSize = 4 + header.pageSize;
  let seen = 0;
  // Records (page number + page image) are gathered into batches of up to BATCH_BYTES: a stream
  // write per record cost more than the compression itself.
  const batches = (async function* () {
    const batchRecords = Math.max(1, Math.floor(BATCH_BYTES / recordSize));
    let batch: Buffer | null = null;
    let used = 0;
    for await (const page of pages) {
      if (page.data.byteLength !== header.pageSize)
        throw internal(`page ${page.pgno} has ${page.data.byteLength} bytes, expected ${header.pageSize}`);
      if (!batch) batch = Buffer.allocUnsafe(Math.min(batchRecords, Math.max(1, expected - seen)) * recordSize);
      batch.writeUInt32BE(page.pgno, used);
      batch.set(page.data, used + 4);
      used += recordSize;
      seen++;
      if (used === batch.byteLength) {
        yield batch;
        batch = null;
        used = 0;
      }
    }
    if (batch && used > 0) yield batch.subarray(0, used);
  })();
  if (header.compression === "gzip" && expected * recordSize <= BATCH_BYTES) {
    // The whole segment fits one batch (the usual case): compressed in one call.
    const whole: Buffer[] = [];
    for await (const batch of batches) whole.push(batch);
    yield emit(gzipSync(Buffer.concat(whole), { level: 1 }));
  } else if (header.compression === "gzip") {
    const gzip = createGzip({ level: 1, chunkSize: 256 * 1024 });
    const feeding = (async () => {
      try {
        for await (const chunk of batches) {
          if (!gzip.write(chunk)) await new Promise<void>((r) => gzip.once("drain", r));
        }
        gzip.end();
      } catch (error) {
        gzip.destroy(error as Error);
      }
    })();
    for await (const chunk of gzip) yield emit(chunk as Buffer);
    await feeding;
  } else {
    for await (const chunk of batches) yield emit(chunk);
  }
  if (seen !== expected) throw internal(`segment has ${seen} pages, its header lists ${expected}`);
  yield hash.digest();
}

/** A decoded segment: its header, and its transactions with their pages, streamed. */
export interface DecodedSegment {
  readonly header: SegmentHeader;
  /** Each transaction with its pages; iterate each transaction's pages fully before the next. */
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
  if (!prefix?.subarray(0, 8).equals(SEGMENT_MAGIC)) throw corrupt(name, "it does not start with the segment magic");
  const version = prefix.readUInt32BE(8);
  if (version > SEGMENT_FORMAT_VERSION) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `Segment ${name} has format version ${version}; this Lifeboat reads ${SEGMENT_FORMAT_VERSION}.`,
      {
        hint: "Upgrade Lifeboat to restore it.",
      },
    );
  }
  const json = await reader.read(prefix.readUInt32BE(12));
  if (!json) throw corrupt(name, "its header is truncated");
  hash.update(prefix);
  hash.update(json);
  let header: SegmentHeader;
  try {
    header = JSON.parse(json.toString("utf8")) as SegmentHeader;
  } catch {
    throw corrupt(name, "its header is not valid JSON");
  }
  // The body runs to 32 bytes before the end: hold back the trailer while hashing and inflating.
  const body = reader.allButLast(TRAILER, hash);
  const plain = header.compression === "gzip" ? inflate(body) : body;
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

/** Pages handed out per batch at most. */
const PAGE_BATCH = 256;

async function* inflate(source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  const gunzip = createGunzip({ finishFlush: zlibConstants.Z_SYNC_FLUSH, chunkSize: 128 * 1024 });
  const feeding = (async () => {
    try {
      for await (const chunk of source) {
        if (!gunzip.write(chunk)) await new Promise<void>((r) => gunzip.once("drain", r));
      }
      gunzip.end();
    } catch (error) {
      gunzip.destroy(error as Error);
    }
  })();
  for await (const chunk of gunzip) yield chunk as Buffer;
  await feeding;
}

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
