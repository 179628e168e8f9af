import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ByteStream, ErrorCodes, isLifeboatError, LifeboatError, parsePluginOptions } from "@lifeboat/core";
import { createFixtureDatabase } from "@lifeboat/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { gzipCodec, gzipCodecPlugin, type NamedCodec, zstdCodec, zstdCodecPlugin } from "./index.js";

const root = mkdtempSync(join(tmpdir(), "lifeboat-codecs-compression-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let db: Buffer;
beforeAll(async () => {
  const summary = await createFixtureDatabase({ path: join(root, "fixture.db"), sizeMB: 3, seed: 3 });
  db = readFileSync(summary.path);
});

async function collect(stream: ByteStream): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return Buffer.concat(parts);
}

/** Streams `data` in chunks of `size` bytes, as a storage target would. */
async function* chunks(data: Uint8Array, size = 64 * 1024): ByteStream {
  for (let offset = 0; offset < data.byteLength; offset += size) yield data.subarray(offset, offset + size);
}

async function decodeError(codec: NamedCodec, data: Uint8Array, name?: string): Promise<LifeboatError> {
  try {
    await collect(codec.decode(chunks(data), name));
  } catch (error) {
    expect(error).toBeInstanceOf(LifeboatError);
    return error as LifeboatError;
  }
  throw new Error("decode did not fail");
}

const codecs: Array<[string, () => NamedCodec, string[]]> = [
  ["gzip", () => gzipCodec({ level: 6 }), ["gzip", "-dc"]],
  ["zstd", () => zstdCodec({ level: 3 }), ["zstd", "-dcq"]],
];

describe.each(codecs)("%s codec", (type, make, cli) => {
  it("round-trips database pages, whatever the chunking, and compresses them", async () => {
    const codec = make();
    const encoded = await collect(codec.encode(chunks(db, 1000)));
    expect(encoded.byteLength).toBeLessThan(db.byteLength * 0.7);
    expect((await collect(codec.decode(chunks(encoded, 7919)))).equals(db)).toBe(true);
    expect((await collect(codec.decode(chunks(encoded, encoded.byteLength)))).equals(db)).toBe(true);
    expect(codec.extension).toBe(type === "gzip" ? ".gz" : ".zst");
  });

  it("round-trips empty input", async () => {
    const codec = make();
    const encoded = await collect(codec.encode(chunks(new Uint8Array(0))));
    expect(encoded.byteLength).toBeGreaterThan(0);
    expect((await collect(codec.decode(chunks(encoded)))).byteLength).toBe(0);
  });

  it("writes files the standard command-line tool decompresses", async () => {
    const file = join(root, `cli.${type}`);
    writeFileSync(file, await collect(make().encode(chunks(db))));
    const result = spawnSync(cli[0]!, [...cli.slice(1), file], { maxBuffer: 64 * 1024 * 1024 });
    expect(result.status, String(result.stderr)).toBe(0);
    expect(result.stdout.equals(db)).toBe(true);
  });

  it("reads files the command-line tool wrote", async () => {
    const file = join(root, `from-cli.${type}`);
    writeFileSync(file, db.subarray(0, 500_000));
    const tool = spawnSync(
      cli[0]!,
      ["-c", "-q", file].filter((a) => a !== "-q" || type === "zstd"),
      {
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    expect(tool.status, String(tool.stderr)).toBe(0);
    expect((await collect(make().decode(chunks(tool.stdout)))).equals(db.subarray(0, 500_000))).toBe(true);
  });

  it("reports a flipped byte as CORRUPT_BACKUP naming the object", async () => {
    const encoded = await collect(make().encode(chunks(db)));
    const tampered = Buffer.from(encoded);
    tampered[Math.floor(tampered.byteLength / 2)]! ^= 0x20;
    const error = await decodeError(make(), tampered, "app/generations/g1/snapshots/0.snap.x");
    expect(error.code).toBe(ErrorCodes.CORRUPT_BACKUP);
    expect(error.message).toContain("app/generations/g1/snapshots/0.snap.x");
    expect(error.hint).toBeTruthy();
  });

  it("reports truncation as CORRUPT_BACKUP", async () => {
    const encoded = await collect(make().encode(chunks(db)));
    for (const keep of [encoded.byteLength - 1, Math.floor(encoded.byteLength / 2), 5, 0]) {
      const error = await decodeError(make(), encoded.subarray(0, keep));
      expect(error.code, `kept ${keep} bytes`).toBe(ErrorCodes.CORRUPT_BACKUP);
    }
  });

  it("passes an error of its input through unchanged", async () => {
    const encoded = await collect(make().encode(chunks(db)));
    const failure = new LifeboatError(ErrorCodes.STORAGE_ERROR, "connection reset");
    async function* failing(): ByteStream {
      yield encoded.subarray(0, 10_000);
      throw failure;
    }
    await expect(collect(make().decode(failing()))).rejects.toBe(failure);
  });

  it("expands highly compressible data in bounded pieces and memory", async () => {
    // 128 MiB of zeros compress to a few hundred KiB; handed over as one chunk, they must still
    // come out in small pieces, without the decoder holding the expansion in memory.
    const zeros = Buffer.alloc(8 * 1024 * 1024);
    async function* manyZeros(): ByteStream {
      for (let i = 0; i < 16; i++) yield zeros;
    }
    const encoded = await collect(make().encode(manyZeros()));
    expect(encoded.byteLength).toBeLessThan(1024 * 1024);
    const before = process.memoryUsage().rss;
    let total = 0;
    let largest = 0;
    let peak = before;
    for await (const chunk of make().decode(chunks(encoded, encoded.byteLength))) {
      total += chunk.byteLength;
      largest = Math.max(largest, chunk.byteLength);
      peak = Math.max(peak, process.memoryUsage().rss);
    }
    expect(total).toBe(128 * 1024 * 1024);
    expect(largest).toBeLessThanOrEqual(1024 * 1024);
    expect((peak - before) / (1024 * 1024)).toBeLessThan(64);
  });
});

describe("compression plugins", () => {
  it("validate their options strictly and record the level in the spec", async () => {
    const gzip = gzipCodecPlugin.create(await parsePluginOptions(gzipCodecPlugin, { level: 1 }, "codecs[0]"), ctx());
    expect(gzip.spec).toEqual({ type: "gzip", params: { level: 1 } });
    const zstd = zstdCodecPlugin.create(await parsePluginOptions(zstdCodecPlugin, {}, "codecs[0]"), ctx());
    expect(zstd.spec).toEqual({ type: "zstd", params: { level: 3 } });
    for (const [plugin, bad] of [
      [gzipCodecPlugin, { level: 0 }],
      [gzipCodecPlugin, { level: 10 }],
      [gzipCodecPlugin, { level: 5, window: 3 }],
      [zstdCodecPlugin, { level: 20 }],
      [zstdCodecPlugin, { level: 2.5 }],
    ] as const) {
      const error = await parsePluginOptions(plugin as typeof gzipCodecPlugin, bad, "databases[0].codecs[0]").catch(
        (e: unknown) => e,
      );
      expect(isLifeboatError(error, ErrorCodes.CONFIG_INVALID), JSON.stringify(bad)).toBe(true);
      expect((error as Error).message).toContain("databases[0].codecs[0]");
    }
  });

  it("zstd with worker threads writes standard frames that any zstd decoder reads", async () => {
    const options = await parsePluginOptions(zstdCodecPlugin, { level: 3, workers: 2 }, "codecs[0]");
    const codec = zstdCodecPlugin.create(options, ctx());
    expect(codec.spec).toEqual({ type: "zstd", params: { level: 3 } });
    const encoded = await collect(codec.encode(chunks(db, 100_000)));
    expect((await collect(zstdCodec().decode(chunks(encoded)))).equals(db)).toBe(true);
    const file = join(root, "workers.zst");
    writeFileSync(file, encoded);
    const cli = spawnSync("zstd", ["-dcq", file], { maxBuffer: 64 * 1024 * 1024 });
    expect(cli.status, String(cli.stderr)).toBe(0);
    expect(cli.stdout.equals(db)).toBe(true);
  });

  it("rebuild a decoder from a recorded spec", async () => {
    const encoded = await collect(zstdCodec({ level: 9 }).encode(chunks(db)));
    const decoder = zstdCodecPlugin.fromSpec({ type: "zstd", params: { level: 9 } }, undefined, ctx());
    expect((await collect(decoder.decode(chunks(encoded)))).equals(db)).toBe(true);
    const gz = await collect(gzipCodec({ level: 1 }).encode(chunks(db)));
    const gunzip = gzipCodecPlugin.fromSpec({ type: "gzip", params: { level: 1 } }, { level: 9 }, ctx());
    expect((await collect(gunzip.decode(chunks(gz)))).equals(db)).toBe(true);
  });
});

function ctx() {
  return { baseDir: root, databaseName: "app", env: {} };
}
