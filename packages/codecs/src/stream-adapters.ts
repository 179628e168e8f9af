/**
 * Adapters between the codec contract's `AsyncIterable<Uint8Array>` and the stream kinds the
 * libraries speak (Node transforms, web `ReadableStream`s). All are pull-based: nothing is read
 * from the input before the output is asked for, so memory stays constant.
 */

import type { ByteStream } from "@lifeboat/core";

/**
 * Wraps a codec's input and remembers whether the input itself failed, so the codec passes the
 * input's own errors (a storage error, an abort) through untouched and reports only its own
 * failures as corrupt data.
 */
export class InputWatch {
  #failed = false;
  #error: unknown;

  /** True once the input has thrown. */
  get failed(): boolean {
    return this.#failed;
  }

  /** What the input threw (libraries that wrap errors lose it; rethrow this one). */
  get error(): unknown {
    return this.#error;
  }

  watch(input: ByteStream): AsyncIterable<Uint8Array> {
    const mark = (error: unknown) => {
      this.#failed = true;
      this.#error = error;
    };
    return (async function* () {
      try {
        yield* input;
      } catch (error) {
        mark(error);
        throw error;
      }
    })();
  }
}

/** Splits chunks longer than `max` bytes, bounding how much a decoder can expand one step. */
export async function* slices(input: AsyncIterable<Uint8Array>, max: number): AsyncIterable<Uint8Array> {
  for await (const chunk of input) {
    if (chunk.byteLength <= max) {
      yield chunk;
      continue;
    }
    for (let offset = 0; offset < chunk.byteLength; offset += max) yield chunk.subarray(offset, offset + max);
  }
}

/** A web ReadableStream that pulls from `input` one chunk at a time. */
export function toWebStream(input: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const iterator = input[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const next = await iterator.next();
        if (next.done) controller.close();
        else controller.enqueue(next.value);
      },
      async cancel() {
        await iterator.return?.();
      },
    },
    { highWaterMark: 1 },
  );
}

/** Iterates a web ReadableStream; stopping early cancels it (and so its source). */
export async function* fromWebStream(stream: ReadableStream<Uint8Array>): ByteStream {
  const reader = stream.getReader();
  let finished = false;
  try {
    for (;;) {
      const next = await reader.read();
      if (next.done) {
        finished = true;
        return;
      }
      yield next.value;
    }
  } finally {
    if (!finished) await reader.cancel().catch(() => {});
    reader.releaseLock();
  }
}
