/**
 * The `zstd` codec: Zstandard through zstd-napi's native streaming context, `.zst`. Objects are
 * plain zstd frames with a content checksum (`zstd -d` opens them). The loop below drives the
 * context directly so output is produced only as the consumer pulls it: a page of zeros that
 * decompresses 10,000:1 still arrives in 128 KiB pieces.
 */
import { createRequire } from "node:module";
import { type ByteStream, type CodecSpec, defineCodecPlugin } from "@lifeboat/core";
import { z } from "zod";
import { corruptError, messageOf } from "./codec-errors.js";
import { levelOf, type NamedCodec } from "./named-codec.js";
import { InputWatch } from "./stream-adapters.js";
import { compressOnThread, THREAD_THRESHOLD } from "./zstd-thread.js";

type ZstdBinding = typeof import("zstd-napi/binding.js");
// zstd-napi's binding is a CommonJS module whose exports ESM cannot name statically.
const binding = createRequire(import.meta.url)("zstd-napi/binding") as ZstdBinding;

/** Default zstd level, chosen by measurement (see README.md). */
export const ZSTD_DEFAULT_LEVEL = 3;
/** Default zstd worker threads (see README.md). */
export const ZSTD_DEFAULT_WORKERS = 0;
const EMPTY = new Uint8Array(0);

const zstdOptionsSchema = z.strictObject({
  level: z.number().int("level must be a whole number").min(1).max(19).optional(),
  /** zstd worker threads (0: compress on the calling thread). Output is a standard frame either way. */
  workers: z.number().int("workers must be a whole number").min(0).max(16).optional(),
  /**
   * Compress on a worker thread (default true), so reading, hashing, encryption and writing go on
   * meanwhile. Streams under 1 MiB (most WAL segments) are compressed on the calling thread.
   */
  thread: z.boolean().optional(),
});

/** Options of a `type: zstd` codec. */
export type ZstdCodecOptions = z.output<typeof zstdOptionsSchema>;

/**
 * A zstd codec at `level` (1-19, default 3). Encoding runs on a worker thread unless `thread` is
 * false or the stream is under 1 MiB; the output is the same standard frame either way. Decoding
 * any level works.
 */
export function zstdCodec(options: ZstdCodecOptions = {}): NamedCodec {
  const level = options.level ?? ZSTD_DEFAULT_LEVEL;
  const workers = options.workers ?? ZSTD_DEFAULT_WORKERS;
  const thread = options.thread ?? true;
  return {
    spec: { type: "zstd", params: { level } },
    extension: ".zst",
    encode: (input) => (thread ? compressLarge(input, level, workers) : compress(input, level, workers)),
    decode: (input, name) => decompress(input, name),
  };
}

/** Takes up to THREAD_THRESHOLD bytes; a stream that ends there is compressed here, a longer one on a thread. */
async function* compressLarge(input: ByteStream, level: number, workers: number): ByteStream {
  const iterator = input[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let bytes = 0;
  while (bytes < THREAD_THRESHOLD) {
    const next = await iterator.next();
    if (next.done) {
      yield* compress(head, level, workers);
      return;
    }
    head.push(next.value);
    bytes += next.value.byteLength;
  }
  yield* compressOnThread(head, iterator, level, workers);
}

async function* compress(
  input: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  level: number,
  workers: number,
): ByteStream {
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, level);
  cctx.setParameter(binding.CParameter.checksumFlag, 1);
  if (workers > 0) cctx.setParameter(binding.CParameter.nbWorkers, workers);
  const size = binding.cStreamOutSize();
  let out = Buffer.allocUnsafe(size);
  let used = 0;
  for await (const chunk of input) {
    let src = chunk;
    while (src.byteLength > 0) {
      const [, produced, consumed] = cctx.compressStream2(out.subarray(used), src, binding.EndDirective.continue);
      used += produced;
      src = src.subarray(consumed);
      if (used === out.length) {
        yield out;
        out = Buffer.allocUnsafe(size);
        used = 0;
      }
    }
  }
  for (;;) {
    const [remaining, produced] = cctx.compressStream2(out.subarray(used), EMPTY, binding.EndDirective.end);
    used += produced;
    if (remaining === 0 || used === out.length) {
      yield out.subarray(0, used);
      out = Buffer.allocUnsafe(size);
      used = 0;
    }
    if (remaining === 0) return;
  }
}

async function* decompress(input: ByteStream, name: string | undefined): ByteStream {
  const watch = new InputWatch();
  const dctx = new binding.DCtx();
  const size = binding.dStreamOutSize();
  let out = Buffer.allocUnsafe(size);
  let used = 0;
  let inFrame = false;
  let sawInput = false;
  try {
    for await (const chunk of watch.watch(input)) {
      let src = chunk;
      sawInput ||= chunk.byteLength > 0;
      for (;;) {
        const [hint, produced, consumed] = dctx.decompressStream(out.subarray(used), src);
        used += produced;
        src = src.subarray(consumed);
        // A call after the frame ended, with no input, hints at the next frame's header: ignore it.
        if (consumed > 0 || produced > 0) inFrame = hint !== 0;
        const full = used === out.length;
        if (full) {
          yield out;
          out = Buffer.allocUnsafe(size);
          used = 0;
        }
        // A full buffer may hide more output even when the input is used up: go round again.
        if (src.byteLength === 0 && !full) break;
      }
    }
  } catch (error) {
    if (watch.failed) throw watch.error;
    throw corruptError("zstd", name, `the zstd data is damaged (${messageOf(error)})`, error);
  }
  if (!sawInput) throw corruptError("zstd", name, "it is empty, not a zstd frame");
  if (inFrame) throw corruptError("zstd", name, "it ends in the middle of a zstd frame (truncated)");
  if (used > 0) yield out.subarray(0, used);
}

/** The `zstd` codec plugin: `codecs: [{ type: zstd, level: 3 }]`. */
export const zstdCodecPlugin = defineCodecPlugin<ZstdCodecOptions>({
  name: "zstd",
  optionsSchema: zstdOptionsSchema,
  create: (options) => zstdCodec(options),
  fromSpec: (spec: CodecSpec) => zstdCodec({ level: levelOf(spec, 1, 19) }),
});
