/**
 * zstd compression on a worker thread. zstd-napi's streaming call is synchronous, so compressing
 * on the calling thread stops Lifeboat's reading, hashing, encryption and writing for as long as
 * zstd works; on a worker, they overlap. Chunks are copied to the worker (the caller's chunks may
 * be shared with other consumers) and compressed output is transferred back. At most
 * `IN_FLIGHT_BYTES` of input (and one chunk more) are on their way at once, and new input is taken
 * only when the consumer pulls: memory stays constant and backpressure reaches the source.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { ByteStream } from "@lifeboat/core";

/** Input sent to the worker and not yet answered: enough to keep it busy while the caller works. */
export const IN_FLIGHT_BYTES = 16 * 1024 * 1024;
/** Streams shorter than this are compressed on the calling thread (a worker costs ~20 ms to start). */
export const THREAD_THRESHOLD = 1024 * 1024;

const bindingPath = createRequire(import.meta.url).resolve("zstd-napi/binding");

// CommonJS source, run with `eval: true`: a separate file would need a build step under vitest.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const binding = require(workerData.bindingPath);
const cctx = new binding.CCtx();
cctx.setParameter(binding.CParameter.compressionLevel, workerData.level);
cctx.setParameter(binding.CParameter.checksumFlag, 1);
if (workerData.workers > 0) cctx.setParameter(binding.CParameter.nbWorkers, workerData.workers);
const size = binding.cStreamOutSize();
const EMPTY = new Uint8Array(0);
let out = Buffer.allocUnsafeSlow(size);
let used = 0;
parentPort.on("message", (message) => {
  const outputs = [];
  const take = (length) => {
    outputs.push(new Uint8Array(out.buffer, out.byteOffset, length));
    out = Buffer.allocUnsafeSlow(size);
    used = 0;
  };
  try {
    if (message.chunk) {
      let src = new Uint8Array(message.chunk);
      while (src.byteLength > 0) {
        const [, produced, consumed] = cctx.compressStream2(out.subarray(used), src, binding.EndDirective.continue);
        used += produced;
        src = src.subarray(consumed);
        if (used === out.length) take(used);
      }
    } else {
      for (;;) {
        const [remaining, produced] = cctx.compressStream2(out.subarray(used), EMPTY, binding.EndDirective.end);
        used += produced;
        if (remaining === 0 || used === out.length) take(used);
        if (remaining === 0) break;
      }
    }
    parentPort.postMessage({ outputs, end: !message.chunk }, outputs.map((o) => o.buffer));
  } catch (error) {
    parentPort.postMessage({ error: String(error && error.message ? error.message : error) });
  }
});
`;

interface Reply {
  readonly outputs?: Uint8Array[];
  readonly end?: boolean;
  readonly error?: string;
}

/**
 * Compresses `input` to one zstd frame (content checksum on) on a worker thread; `head` is input
 * already taken from `iterator` (below THREAD_THRESHOLD bytes), sent first.
 */
export async function* compressOnThread(
  head: readonly Uint8Array[],
  iterator: AsyncIterator<Uint8Array>,
  level: number,
  workers: number,
): ByteStream {
  // No inherited execArgv: the source is plain CommonJS (a parent's --input-type or loaders would
  // change how it is read).
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], workerData: { bindingPath, level, workers } });
  // Keeps the process alive only while an answer is awaited: a consumer that abandons the stream
  // without closing it must not leave a process that never exits.
  worker.unref();
  const replies: Reply[] = [];
  let failure: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  worker.on("message", (reply: Reply) => {
    replies.push(reply);
    notify();
  });
  worker.on("error", (error) => {
    failure = error;
    notify();
  });
  worker.on("exit", (code) => {
    failure ??= new Error(`the zstd worker thread exited (code ${code})`);
    notify();
  });
  const send = (chunk: Uint8Array | undefined) => {
    if (!chunk) {
      worker.postMessage({ end: true });
      return;
    }
    // A copy: the caller may still use (or hand others) the chunk's memory.
    const copy = new Uint8Array(chunk.byteLength);
    copy.set(chunk);
    worker.postMessage({ chunk: copy.buffer }, [copy.buffer]);
  };
  /** Sizes of the messages not yet answered, oldest first. */
  const inFlight: number[] = [];
  let inFlightBytes = 0;
  let inputDone = false;
  const pending = [...head];
  try {
    for (;;) {
      // Keep the worker busy: fill the window before waiting for an answer.
      while (!inputDone && (inFlight.length === 0 || inFlightBytes < IN_FLIGHT_BYTES)) {
        let next = pending.shift();
        if (next === undefined) {
          const result = await iterator.next();
          if (!result.done) next = result.value;
        }
        if (next === undefined) inputDone = true;
        else if (next.byteLength === 0) continue;
        send(next);
        inFlight.push(next?.byteLength ?? 0);
        inFlightBytes += next?.byteLength ?? 0;
      }
      if (replies.length === 0 && failure === undefined) {
        worker.ref();
        while (replies.length === 0 && failure === undefined) await new Promise<void>((resolve) => (wake = resolve));
        worker.unref();
      }
      const reply = replies.shift();
      if (!reply) throw failure;
      if (reply.error !== undefined) throw new Error(`zstd compression failed: ${reply.error}`);
      inFlightBytes -= inFlight.shift() ?? 0;
      for (const output of reply.outputs ?? []) if (output.byteLength > 0) yield output;
      if (reply.end) return;
    }
  } finally {
    worker.removeAllListeners("exit");
    await worker.terminate();
    // Stopped early (an error downstream or an abort): stop the source too.
    if (!inputDone) await iterator.return?.();
  }
}
