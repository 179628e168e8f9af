/** Small streaming helpers shared by the operations. All keep memory constant. */
import { createHash, type Hash } from "node:crypto";
import { PassThrough, pipeline, Readable, type Transform } from "node:stream";

export interface Tally {
  bytes: number;
  readonly hash: Hash;
}

export function newTally(): Tally {
  return { bytes: 0, hash: createHash("sha256") };
}

/**
 * `input` through a Node transform stream (a compressor, a decompressor), pulled: nothing is read
 * before the output is asked for. Errors of the input or the transform reach the consumer.
 */
export async function* throughTransform(
  input: AsyncIterable<Uint8Array>,
  transform: Transform,
): AsyncIterable<Uint8Array> {
  const source = Readable.from(input, { objectMode: false });
  // Errors reach the consumer through the iteration below; the callback only keeps them handled.
  pipeline(source, transform, () => {});
  for await (const chunk of transform) yield chunk as Uint8Array;
}

/** Passes chunks through while counting and hashing them. */
export async function* tally(source: AsyncIterable<Uint8Array>, into: Tally): AsyncIterable<Uint8Array> {
  for await (const chunk of source) {
    into.hash.update(chunk);
    into.bytes += chunk.byteLength;
    yield chunk;
  }
}

/**
 * Feeds one source to several consumers with backpressure: the source advances when every
 * consumer still alive has room. A consumer that fails is dropped (`drop(i)`); the others go on.
 */
export class Fanout {
  readonly outputs: PassThrough[];
  readonly #alive: boolean[];

  constructor(count: number, highWaterMark = 8 * 1024 * 1024) {
    this.outputs = Array.from({ length: count }, () => new PassThrough({ highWaterMark }));
    this.#alive = this.outputs.map(() => true);
  }

  get anyAlive(): boolean {
    return this.#alive.some(Boolean);
  }

  drop(index: number, error?: Error): void {
    if (!this.#alive[index]) return;
    this.#alive[index] = false;
    this.outputs[index]!.destroy(error);
  }

  /** Pumps the whole source; rejects only if the source itself fails (then every output gets the error). */
  async pump(source: AsyncIterable<Uint8Array>, onChunk?: (chunk: Uint8Array) => void): Promise<void> {
    try {
      for await (const chunk of source) {
        if (!this.anyAlive) return;
        onChunk?.(chunk);
        const waits: Promise<void>[] = [];
        this.outputs.forEach((out, i) => {
          if (this.#alive[i] && !out.destroyed && !out.write(chunk)) waits.push(drained(out));
        });
        if (waits.length > 0) await Promise.all(waits);
      }
      this.outputs.forEach((out, i) => {
        if (this.#alive[i]) out.end();
      });
    } catch (error) {
      this.outputs.forEach((_out, i) => {
        if (this.#alive[i]) this.drop(i, error instanceof Error ? error : new Error(String(error)));
      });
      throw error;
    }
  }
}

function drained(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
