import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import type { ByteStream } from "@lifeboat/core";
import { describe, expect, it } from "vitest";
import { zstdCodec } from "./index.js";
import { IN_FLIGHT_BYTES, THREAD_THRESHOLD } from "./zstd-thread.js";

async function collect(stream: ByteStream): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return Buffer.concat(parts);
}

/** Page-like data: half random bytes, half repeated text, so it compresses about 2:1. */
function pages(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  for (let offset = 0; offset < bytes; offset += 4096) {
    randomBytes(2048).copy(out, offset);
    if (offset + 2048 < bytes) out.write("row text, repeated ".repeat(107), offset + 2048, "latin1");
  }
  return out;
}

async function* chunks(data: Uint8Array, size: number): ByteStream {
  for (let offset = 0; offset < data.byteLength; offset += size) yield data.subarray(offset, offset + size);
}

describe("zstd on a worker thread", () => {
  it("writes one standard frame that zstd -d and the calling-thread decoder read back", async () => {
    const data = pages(THREAD_THRESHOLD * 6 + 12345);
    const threaded = await collect(zstdCodec().encode(chunks(data, 256 * 1024)));
    const inline = await collect(zstdCodec({ thread: false }).encode(chunks(data, 256 * 1024)));
    expect(threaded.byteLength).toBeLessThan(data.byteLength * 0.7);
    // Same level, same content: the two paths differ by at most a few bytes of framing.
    expect(Math.abs(threaded.byteLength - inline.byteLength)).toBeLessThan(data.byteLength / 100);
    expect((await collect(zstdCodec().decode(chunks(threaded, 7919)))).equals(data)).toBe(true);
    const cli = spawnSync("zstd", ["-dcq"], { input: threaded, maxBuffer: 64 * 1024 * 1024 });
    expect(cli.status, cli.stderr.toString()).toBe(0);
    expect(cli.stdout.equals(data)).toBe(true);
  });

  it("does not mutate or keep the caller's chunks (they may be shared with other targets)", async () => {
    const data = pages(THREAD_THRESHOLD * 3);
    const copy = Buffer.from(data);
    const encoded = await collect(zstdCodec().encode(chunks(data, 1024 * 1024)));
    expect(data.equals(copy)).toBe(true);
    expect((await collect(zstdCodec().decode(chunks(encoded, 65536)))).equals(copy)).toBe(true);
  });

  it("takes input only as output is pulled (bounded memory), and a consumer that stops stops the source", async () => {
    const chunk = pages(1024 * 1024);
    let pulled = 0;
    let closed = false;
    async function* endless(): ByteStream {
      try {
        for (;;) {
          pulled += chunk.byteLength;
          yield chunk;
        }
      } finally {
        closed = true;
      }
    }
    let outputs = 0;
    for await (const _ of zstdCodec().encode(endless())) {
      if (++outputs === 3) break;
    }
    expect(closed).toBe(true);
    expect(pulled).toBeLessThanOrEqual(THREAD_THRESHOLD + IN_FLIGHT_BYTES + 2 * chunk.byteLength);
  });

  it("passes a failing source's error through and ends the worker", async () => {
    const failure = new Error("the disk went away");
    async function* failing(): ByteStream {
      yield pages(THREAD_THRESHOLD * 2);
      throw failure;
    }
    await expect(collect(zstdCodec().encode(failing()))).rejects.toBe(failure);
  });
});

describe("zstd on a worker thread, in a process", () => {
  it("a stream abandoned without being closed does not keep the process alive", () => {
    const index = join(import.meta.dirname, "index.ts");
    const script = `import { zstdCodec } from ${JSON.stringify(index)};
async function* big() { for (;;) yield new Uint8Array(1024 * 1024).fill(7); }
const it = zstdCodec().encode(big())[Symbol.asyncIterator]();
await it.next();
console.log("abandoned");`;
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
    const run = spawnSync(
      process.execPath,
      ["--conditions", "source", "--import", tsx, "--input-type=module", "-e", script],
      {
        encoding: "utf8",
        timeout: 30_000,
      },
    );
    expect(run.stdout.trim(), run.stderr).toBe("abandoned");
    expect(run.status, "the process exited by itself").toBe(0);
  });
});
