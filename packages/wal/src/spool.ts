/**
 * The local queue: every segment is first made durable in a directory next to the database, then
 * shipped to each target at that target's own pace. A target that is down only delays its own
 * uploads; the queue keeps what it still needs, up to a size bound.
 */
import { createReadStream } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { fsError, fsyncDir, tempPathFor } from "@lifeboat/core";
import { decodeSegment, type SegmentHeader } from "./segment-format.js";

export interface SpooledSegment {
  readonly generation: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
  readonly lastObservedAt: number;
  readonly file: string;
  readonly size: number;
  /**
   * The file's bytes, kept in memory for the newest small segments (see MEMORY_BYTES): uploads
   * then need not read the file back. Dropped as newer segments arrive.
   */
  bytes?: Buffer | undefined;
}

/** Bytes of the newest segments kept in memory for their uploads (each at most MEMORY_SEGMENT_BYTES). */
const MEMORY_BYTES = 8 * 1024 * 1024;
const MEMORY_SEGMENT_BYTES = 1024 * 1024;

/** Unlinks in flight at once when segments leave the queue. */
const REMOVE_CONCURRENCY = 8;

const NAME = /^([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{12})\.seg$/;

export class Spool {
  /**
   * The segments of each generation listed so far, in order, kept up to date by `write` and
   * `remove` (one replicator owns a queue: it holds the lease), so a listing costs no directory
   * read and no stat per file after the first.
   */
  readonly #index = new Map<string, SpooledSegment[]>();
  /** Bytes of each listed generation's segments, kept with `#index` (read at every pass). */
  readonly #bytes = new Map<string, number>();

  constructor(readonly dir: string) {}

  generationDir(generation: string): string {
    return join(this.dir, "segments", generation);
  }

  /** Writes a segment durably (temp, fsync, rename, fsync dir) and returns it. */
  async write(header: SegmentHeader, body: AsyncIterable<Uint8Array>): Promise<SpooledSegment> {
    const dir = this.generationDir(header.generation);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const lastObservedAt = header.transactions.at(-1)?.observedAt ?? Date.now();
    const name = `${hex(header.firstTxn)}-${hex(header.lastTxn)}-${lastObservedAt.toString(16).padStart(12, "0")}.seg`;
    const file = join(dir, name);
    const temp = tempPathFor(file, "spool");
    const handle = await open(temp, "wx", 0o600).catch((error: unknown) => {
      throw fsError(error, "create", temp, "wal");
    });
    let size = 0;
    // Small segments (the usual case) are gathered, written in one call and kept (`bytes`).
    let gathered: Uint8Array[] | null = [];
    let bytes: Buffer | undefined;
    try {
      for await (const chunk of body) {
        size += chunk.byteLength;
        if (gathered) {
          gathered.push(chunk);
          if (size <= MEMORY_SEGMENT_BYTES) continue;
          for (const held of gathered) await handle.write(held);
          gathered = null;
        } else await handle.write(chunk);
      }
      if (gathered) {
        bytes = Buffer.concat(gathered, size);
        await handle.writeFile(bytes);
      }
      await handle.sync();
      await handle.close();
    } catch (error) {
      await handle.close().catch(() => {});
      await rm(temp, { force: true });
      throw fsError(error, "write", temp, "wal");
    }
    await rename(temp, file);
    await fsyncDir(dir);
    const segment: SpooledSegment = {
      generation: header.generation,
      firstTxn: header.firstTxn,
      lastTxn: header.lastTxn,
      lastObservedAt,
      file,
      size,
      bytes,
    };
    const listed = this.#index.get(header.generation);
    if (listed) {
      listed.push(segment);
      this.#bytes.set(header.generation, (this.#bytes.get(header.generation) ?? 0) + size);
      if (listed.length > 1 && listed.at(-2)!.firstTxn > segment.firstTxn)
        listed.sort((a, b) => a.firstTxn - b.firstTxn);
      // Only the newest segments keep their bytes in memory (older ones were dropped before).
      let held = 0;
      for (let i = listed.length - 1; i >= 0; i--) {
        const entry = listed[i]!;
        if (!entry.bytes) {
          if (held > MEMORY_BYTES) break;
          continue;
        }
        held += entry.bytes.length;
        if (held > MEMORY_BYTES) entry.bytes = undefined;
      }
    }
    return segment;
  }

  /** The segments of a generation, in transaction order. */
  async list(generation: string): Promise<SpooledSegment[]> {
    const listed = this.#index.get(generation);
    if (listed) return [...listed];
    const found = await this.#read(generation);
    this.#setListing(generation, found);
    return [...found];
  }

  async #read(generation: string): Promise<SpooledSegment[]> {
    const dir = this.generationDir(generation);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return [];
    }
    const out: SpooledSegment[] = [];
    for (const name of names) {
      const m = NAME.exec(name);
      if (!m) continue;
      const file = join(dir, name);
      const info = await stat(file).catch(() => undefined);
      if (!info) continue;
      out.push({
        generation,
        firstTxn: Number.parseInt(m[1]!, 16),
        lastTxn: Number.parseInt(m[2]!, 16),
        lastObservedAt: Number.parseInt(m[3]!, 16),
        file,
        size: info.size,
      });
    }
    return out.sort((a, b) => a.firstTxn - b.firstTxn);
  }

  async header(segment: SpooledSegment): Promise<SegmentHeader> {
    const decoded = await decodeSegment(createReadStream(segment.file), segment.file);
    return decoded.header;
  }

  #setListing(generation: string, segments: SpooledSegment[]): void {
    this.#index.set(generation, segments);
    this.#bytes.set(
      generation,
      segments.reduce((n, seg) => n + seg.size, 0),
    );
  }

  /** Bytes of a generation's listed segments (0 before its first listing). */
  queuedBytes(generation: string): number {
    return this.#bytes.get(generation) ?? 0;
  }

  /** Removes segments from the queue: unlinked a few at a time, then dropped from the listing. */
  async remove(segments: readonly SpooledSegment[]): Promise<void> {
    const gone = new Set<string>();
    let failure: unknown;
    for (let i = 0; i < segments.length && failure === undefined; i += REMOVE_CONCURRENCY) {
      const batch = segments.slice(i, i + REMOVE_CONCURRENCY).map((s) => s.file);
      const results = await Promise.allSettled(batch.map((file) => rm(file, { force: true })));
      results.forEach((r, j) => {
        if (r.status === "fulfilled") gone.add(batch[j]!);
        else failure ??= fsError(r.reason, "remove", batch[j]!, "wal");
      });
    }
    // The listing loses what is gone even when an unlink failed (then thrown after).
    for (const generation of new Set(segments.map((s) => s.generation))) {
      const listed = this.#index.get(generation);
      if (!listed) continue;
      this.#setListing(
        generation,
        listed.filter((s) => !gone.has(s.file)),
      );
    }
    if (failure !== undefined) throw failure;
  }

  /** Removes whole generations other than `keep`. */
  async removeGenerationsExcept(keep: string): Promise<void> {
    const root = join(this.dir, "segments");
    const names = await readdir(root).catch(() => [] as string[]);
    for (const name of names) if (name !== keep) await rm(join(root, name), { recursive: true, force: true });
    for (const generation of [...this.#index.keys()]) {
      if (generation === keep) continue;
      this.#index.delete(generation);
      this.#bytes.delete(generation);
    }
  }

  async readState<T>(): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir, "state.json"), "utf8")) as T;
    } catch {
      return undefined;
    }
  }

  async writeState(state: unknown): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const file = join(this.dir, "state.json");
    const temp = tempPathFor(file, "state");
    const handle = await open(temp, "wx", 0o600);
    try {
      await handle.writeFile(`${JSON.stringify(state, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(16, "0");
}
