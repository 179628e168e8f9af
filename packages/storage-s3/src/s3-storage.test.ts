/**
 * The S3 target against a real S3 server: Ceph radosgw started by the testkit (one per file).
 * The published conformance suite first, then what is specific to S3: multipart uploads,
 * request counting, ranges, batched deletes with per-key errors, encryption, storage classes,
 * credentials from the environment, the AWS chain and profiles.
 */
import { createHash, randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  DeleteBucketPolicyCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  PutBucketPolicyCommand,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { type LifeboatError, parsePluginOptions, readAll, type StorageTarget } from "@lifeboat/core";
import { type S3Server, startS3Server, storageConformance } from "@lifeboat/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type S3StorageOptions, type S3StorageTarget, s3Storage, s3StoragePlugin } from "./index.js";

const MiB = 1024 * 1024;
let server: S3Server;
let admin: S3Client;

beforeAll(async () => {
  server = await startS3Server({ storageClasses: ["COLD"] });
  admin = new S3Client({
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: "WHEN_REQUIRED",
    responseChecksumValidation: "WHEN_REQUIRED",
  });
}, 300_000);

afterAll(async () => {
  admin?.destroy();
  await server?.stop();
});

/** A target on the test server under a fresh random prefix. */
function target(options: Partial<S3StorageOptions> = {}): S3StorageTarget {
  return s3Storage({
    bucket: server.bucket,
    prefix: `t/${randomUUID()}`,
    endpoint: server.endpoint,
    forcePathStyle: true,
    region: server.region,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    partSize: 5 * MiB,
    ...options,
  });
}

// ---- the published conformance suite ----

storageConformance({
  name: "s3 on radosgw",
  runner: { describe, it, beforeAll, afterAll },
  createTarget: () => target(),
});

// ---- helpers ----

async function failure(promise: Promise<unknown>): Promise<LifeboatError> {
  try {
    await promise;
  } catch (error) {
    return error as LifeboatError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

async function keys(t: StorageTarget, prefix = "", signal?: AbortSignal): Promise<string[]> {
  const out: string[] = [];
  for await (const info of t.list(prefix, signal ? { signal } : {})) out.push(info.key);
  return out;
}

async function collect(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  return readAll(chunks);
}

/** `count` chunks of `size` bytes; chunk i is filled with i (mod 256) and starts with i as u32. */
async function* numberedChunks(count: number, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < count; i++) {
    const chunk = Buffer.alloc(size, i & 0xff);
    chunk.writeUInt32BE(i, 0);
    yield chunk;
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

async function multipartUploads(prefix: string): Promise<number> {
  const out = await admin.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: prefix }));
  return out.Uploads?.length ?? 0;
}

async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

// ---- writes ----

describe("s3Storage writes", () => {
  it("streams a body of unknown length as a multipart upload, counting every part as a PUT", async () => {
    const t = target({ queueSize: 2 });
    await t.init();
    const before = t.requestCounts();
    const body = await collect(numberedChunks(12, MiB));
    const info = await t.put("multi/object", numberedChunks(12, MiB));
    expect(info.size).toBe(12 * MiB);
    const after = t.requestCounts();
    // CreateMultipartUpload + 3 parts (5 + 5 + 2 MiB) + CompleteMultipartUpload
    expect(after.PUT - before.PUT).toBe(5);
    const got = await t.get("multi/object");
    expect(got.size).toBe(12 * MiB);
    expect(sha256(await readAll(got.body))).toBe(sha256(body));
    expect(await multipartUploads(`${t.prefix}/`)).toBe(0);
  });

  it("sends a known-length body up to partSize as one PutObject, a larger array as multipart", async () => {
    const t = target();
    const small = Buffer.alloc(5 * MiB, 1);
    await t.put("small", chunked(small, 64 * 1024), { contentLength: small.length });
    expect(t.requestCounts().PUT).toBe(1);
    await t.put("array", Buffer.alloc(11 * MiB, 2));
    expect(t.requestCounts().PUT).toBe(1 + 1 + 3 + 1);
    expect((await t.head("array")).size).toBe(11 * MiB);
    expect(sha256(await readAll((await t.get("small")).body))).toBe(sha256(small));
  });

  it("copies chunks, so a producer may reuse its buffer", async () => {
    const t = target();
    const reused = Buffer.alloc(256 * 1024);
    const count = 48; // 12 MiB: three parts
    async function* producer(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < count; i++) {
        reused.fill(i & 0xff);
        reused.writeUInt32BE(i, 0);
        yield reused;
      }
    }
    await t.put("reused", producer());
    const bytes = await readAll((await t.get("reused")).body);
    expect(bytes.length).toBe(count * reused.length);
    for (let i = 0; i < count; i++) {
      const block = bytes.subarray(i * reused.length, (i + 1) * reused.length);
      expect(block.readUInt32BE(0)).toBe(i);
      expect(block[block.length - 1]).toBe(i & 0xff);
    }
  });

  it("never holds a whole streamed object in memory", async () => {
    const t = target({ queueSize: 2 });
    const chunk = 1 * MiB;
    const count = 160;
    const baseline = process.memoryUsage().arrayBuffers;
    let peak = baseline;
    async function* producer(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < count; i++) {
        peak = Math.max(peak, process.memoryUsage().arrayBuffers);
        yield Buffer.alloc(chunk, i & 0xff);
      }
    }
    const info = await t.put("big", producer());
    expect(info.size).toBe(count * chunk);
    // Parts in flight (2) plus the one being filled, each possibly held twice while it is cut, plus
    // garbage the collector has not reclaimed yet on a loaded machine: well under the 160 MiB object.
    expect(peak - baseline).toBeLessThan(112 * MiB);
    await t.delete(["big"]);
  }, 120_000);

  it("a conditional put of a multipart-sized body over an existing key fails and keeps the object", async () => {
    const t = target();
    await t.put("lease", Buffer.from("first"));
    const error = await failure(t.put("lease", numberedChunks(6, MiB), { ifNoneMatch: "*" }));
    expect(error.code).toBe("PRECONDITION_FAILED");
    expect(error.message).toContain('"lease"');
    expect((await readAll((await t.get("lease")).body)).toString()).toBe("first");
    const created = await t.put("fresh", numberedChunks(6, MiB), { ifNoneMatch: "*" });
    expect(created.size).toBe(6 * MiB);
  });

  it("aborting a multipart upload after some parts leaves no object and no upload", async () => {
    const t = target({ queueSize: 1 });
    const controller = new AbortController();
    async function* body(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < 40; i++) {
        if (i === 16) controller.abort(new Error("stop"));
        yield Buffer.alloc(MiB, i);
      }
    }
    const error = await failure(t.put("aborted", body(), { signal: controller.signal }));
    expect(error.code).toBe("ABORTED");
    expect(t.requestCounts().PUT).toBeGreaterThanOrEqual(3); // the upload had started
    expect(t.requestCounts().DELETE).toBe(1); // AbortMultipartUpload
    expect(await multipartUploads(`${t.prefix}/`)).toBe(0);
    expect((await failure(t.head("aborted"))).code).toBe("NOT_FOUND");
  });

  it("passes storageClass and aws:kms server-side encryption to the server", async () => {
    const cold = target({ storageClass: "COLD" });
    await cold.put("cold/small", Buffer.from("brr"));
    await cold.put("cold/multi", numberedChunks(6, MiB));
    for (const key of ["cold/small", "cold/multi"]) {
      const head = await admin.send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${cold.prefix}/${key}` }));
      expect(head.StorageClass).toBe("COLD");
    }
    const unknown = await failure(target({ storageClass: "NO_SUCH_CLASS" }).put("x", Buffer.from("x")));
    expect(unknown.code).toBe("STORAGE_ERROR");
    expect(unknown.message).toContain("InvalidArgument");

    const kms = target({ serverSideEncryption: "aws:kms", kmsKeyId: server.kmsKeyId });
    await kms.put("enc/small", Buffer.from("secret data"));
    await kms.put("enc/multi", numberedChunks(6, MiB));
    for (const key of ["enc/small", "enc/multi"]) {
      const head = await admin.send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${kms.prefix}/${key}` }));
      expect(head.ServerSideEncryption).toBe("aws:kms");
      expect(head.SSEKMSKeyId).toBe(server.kmsKeyId);
    }
    expect((await readAll((await kms.get("enc/small")).body)).toString()).toBe("secret data");
  });

  it("stores user metadata and returns it from head and get, not from list", async () => {
    const t = target();
    await t.put("m", Buffer.from("x"), { metadata: { sha256: "abc", "format-version": "1" } });
    expect((await t.head("m")).metadata).toEqual({ sha256: "abc", "format-version": "1" });
    const got = await t.get("m");
    await readAll(got.body);
    expect(got.metadata).toEqual({ sha256: "abc", "format-version": "1" });
    const raw = await admin.send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${t.prefix}/m` }));
    expect(raw.Metadata).toEqual({ sha256: "abc", "format-version": "1" });
  });
});

// ---- reads ----

describe("s3Storage reads", () => {
  it("asks for byte ranges and reports the whole object's size", async () => {
    const t = target();
    const bytes = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
    await t.put("r", bytes);
    const got = await t.get("r", { range: { offset: 100, length: 50 } });
    expect(got.size).toBe(1000);
    expect(await readAll(got.body)).toEqual(bytes.subarray(100, 150));
    const tail = await t.get("r", { range: { offset: 990 } });
    expect(tail.size).toBe(1000);
    expect(await readAll(tail.body)).toEqual(bytes.subarray(990));
    const atEnd = await t.get("r", { range: { offset: 1000 } });
    expect(atEnd.size).toBe(1000);
    expect((await readAll(atEnd.body)).length).toBe(0);
    const past = await failure(t.get("r", { range: { offset: 1001 } }));
    expect(past.code).toBe("INVALID_ARGUMENT");
    expect(past.message).toContain("1000 bytes");
    await t.put("empty", new Uint8Array(0));
    expect((await readAll((await t.get("empty", { range: { offset: 0, length: 10 } })).body)).length).toBe(0);
  });

  it("a range read transfers only the range", async () => {
    const t = target();
    await t.put("big", numberedChunks(8, MiB));
    const got = await t.get("big", { range: { offset: 7 * MiB, length: 16 } });
    const part = await readAll(got.body);
    expect(part.readUInt32BE(0)).toBe(7);
    expect(got.size).toBe(8 * MiB);
  });

  it("aborting while reading a body fails with ABORTED", async () => {
    const t = target();
    await t.put("stream", numberedChunks(6, MiB));
    const controller = new AbortController();
    const got = await t.get("stream", { signal: controller.signal });
    const error = await failure(
      (async () => {
        for await (const _ of got.body) controller.abort();
      })(),
    );
    expect(error.code).toBe("ABORTED");
    for (const call of [
      () => t.get("stream", { signal: controller.signal }),
      () => t.head("stream", { signal: controller.signal }),
      () => t.delete(["stream"], { signal: controller.signal }),
      () => t.init({ signal: controller.signal }),
      () => keys(t, "", controller.signal),
    ]) {
      expect((await failure(call())).code).toBe("ABORTED");
    }
    expect(await keys(t)).toEqual(["stream"]);
  });

  it("reads a large object as parallel ranged parts, byte-identical and in order", async () => {
    const t = target({ readConcurrency: 2 });
    // 4 whole parts of 5 MiB and a short fifth: 1 GET for the lead part + 4 ranged GETs.
    const source = Buffer.concat([await collect(numberedChunks(20, MiB)), Buffer.alloc(12_345, 0xab)]);
    await t.put("parts/object", source);
    const before = t.requestCounts().GET;
    const got = await t.get("parts/object");
    expect(got.size).toBe(source.length);
    const received: Buffer[] = [];
    for await (const chunk of got.body) {
      received.push(Buffer.from(chunk));
      await new Promise((resolve) => setTimeout(resolve, 20)); // a slow consumer: parts wait for it
    }
    const bytes = Buffer.concat(received);
    expect(bytes.length).toBe(source.length);
    expect(sha256(bytes)).toBe(sha256(source));
    for (let i = 0; i < 20; i++) expect(bytes.readUInt32BE(i * MiB)).toBe(i);
    expect(t.requestCounts().GET - before).toBe(5);
    // The default reads one GetObject stream.
    const single = target({ prefix: t.prefix });
    expect(sha256(await readAll((await single.get("parts/object")).body))).toBe(sha256(source));
    expect(single.requestCounts().GET).toBe(1);
    // Leaving early releases the parts in flight; the target stays usable.
    const early = await t.get("parts/object");
    for await (const _ of early.body) break;
    expect(sha256(await readAll((await t.get("parts/object")).body))).toBe(sha256(source));
  });

  it("a large read fails (never mixes versions) when the object is replaced mid-read, or aborted", async () => {
    const t = target({ readConcurrency: 2 });
    await t.put("moving", numberedChunks(20, MiB));
    const got = await t.get("moving");
    const iterator = got.body[Symbol.asyncIterator]();
    expect((await iterator.next()).done).toBe(false);
    await t.put("moving", numberedChunks(21, MiB)); // a new version (new ETag) while parts remain
    const replaced = await failure(
      (async () => {
        for (;;) if ((await iterator.next()).done) break;
      })(),
    );
    expect(replaced.code).toBe("STORAGE_ERROR");
    expect(replaced.message).toBe(
      `The object "moving" in ${t.location} was replaced while it was being read; the get failed.`,
    );

    const controller = new AbortController();
    const reading = await t.get("moving", { signal: controller.signal });
    const aborted = await failure(
      (async () => {
        for await (const _ of reading.body) controller.abort();
      })(),
    );
    expect(aborted.code).toBe("ABORTED");
  });

  it("lists keys relative to the prefix, page by page, and skips folder markers", async () => {
    const t = target();
    const names = Array.from({ length: 1050 }, (_, i) => `page/${String(i).padStart(4, "0")}`);
    await forEachLimit(names, 16, (key) => t.put(key, Buffer.from(key)));
    // A "folder" object made by a console is not a valid key; list skips it.
    await admin.send(new PutObjectCommand({ Bucket: server.bucket, Key: `${t.prefix}/page/`, Body: "" }));
    const before = t.requestCounts().LIST;
    const listed = await keys(t, "page/");
    expect(listed).toEqual(names);
    expect(t.requestCounts().LIST - before).toBe(2);
    const other = target({ prefix: t.prefix.split("/")[0] });
    expect((await keys(other, `${t.prefix.split("/")[1]}/page/00`)).length).toBe(100);
  });
});

// ---- deletes ----

describe("s3Storage deletes", () => {
  it("deletes more than 1000 keys in batches of 1000", async () => {
    const t = target();
    const names = Array.from({ length: 1500 }, (_, i) => `d/${i}`);
    await forEachLimit(names, 24, (key) => t.put(key, Buffer.from("x")));
    await t.put("keep", Buffer.from("k"));
    const before = t.requestCounts().DELETE;
    await t.delete([...names, "d/0", "never/existed"]);
    expect(t.requestCounts().DELETE - before).toBe(2);
    expect(await keys(t)).toEqual(["keep"]);
  }, 120_000);

  it("throws when the server refuses some keys, naming them, and deletes the rest", async () => {
    const t = target();
    await t.put("open/a", Buffer.from("a"));
    await t.put("locked/b", Buffer.from("b"));
    const policy = {
      Version: "2012-10-17",
      Statement: [
        {
          Effect: "Deny",
          Principal: "*",
          Action: "s3:DeleteObject",
          Resource: `arn:aws:s3:::${server.bucket}/${t.prefix}/locked/*`,
        },
      ],
    };
    await admin.send(new PutBucketPolicyCommand({ Bucket: server.bucket, Policy: JSON.stringify(policy) }));
    let error: LifeboatError;
    try {
      error = await failure(t.delete(["open/a", "locked/b"]));
    } finally {
      await admin.send(new DeleteBucketPolicyCommand({ Bucket: server.bucket }));
    }
    expect(error.code).toBe("PERMISSION_DENIED");
    expect(error.message).toContain('"locked/b" (AccessDenied');
    expect(error.message).toContain("1 of 2");
    expect(error.details?.failed).toEqual([{ key: "locked/b", code: "AccessDenied" }]);
    expect(await keys(t)).toEqual(["locked/b"]);
  });

  it("rejects an invalid key before deleting anything", async () => {
    const t = target();
    await t.put("a", Buffer.from("a"));
    expect((await failure(t.delete(["a", "../b"]))).code).toBe("INVALID_KEY");
    expect(await keys(t)).toEqual(["a"]);
  });
});

// ---- requests, credentials, plugin ----

describe("s3Storage requests and credentials", () => {
  it("counts requests by kind", async () => {
    const t = target();
    await t.init();
    await t.put("a", Buffer.from("a"));
    await readAll((await t.get("a")).body);
    await t.head("a");
    await keys(t);
    await t.delete(["a"]);
    expect(t.requestCounts()).toEqual({ PUT: 1, GET: 1, HEAD: 2, LIST: 1, DELETE: 1 });
    // A snapshot, not a live view.
    const snapshot = t.requestCounts();
    await t.head("a").catch(() => undefined);
    expect(snapshot.HEAD).toBe(2);
    expect(t.requestCounts().HEAD).toBe(3);
  });

  it("uses the AWS default credential chain: environment variables", async () => {
    const saved = { id: process.env.AWS_ACCESS_KEY_ID, secret: process.env.AWS_SECRET_ACCESS_KEY };
    process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    try {
      const t = target({ accessKeyId: undefined, secretAccessKey: undefined });
      await t.init();
      await t.put("chain", Buffer.from("x"));
      expect(await keys(t)).toEqual(["chain"]);
    } finally {
      restoreEnv("AWS_ACCESS_KEY_ID", saved.id);
      restoreEnv("AWS_SECRET_ACCESS_KEY", saved.secret);
    }
  });

  it("uses the AWS default credential chain: a profile in the shared credentials file", async () => {
    const dir = await mkdtemp(join(tmpdir(), "lifeboat-s3-profile-"));
    const saved = process.env.AWS_SHARED_CREDENTIALS_FILE;
    const savedConfig = process.env.AWS_CONFIG_FILE;
    try {
      await writeFile(
        join(dir, "credentials"),
        `[backup]\naws_access_key_id = ${server.accessKeyId}\naws_secret_access_key = ${server.secretAccessKey}\n`,
      );
      await writeFile(join(dir, "config"), "");
      process.env.AWS_SHARED_CREDENTIALS_FILE = join(dir, "credentials");
      process.env.AWS_CONFIG_FILE = join(dir, "config");
      const t = target({ accessKeyId: undefined, secretAccessKey: undefined, profile: "backup" });
      await t.put("profile", Buffer.from("x"));
      expect(await keys(t)).toEqual(["profile"]);
    } finally {
      restoreEnv("AWS_SHARED_CREDENTIALS_FILE", saved);
      restoreEnv("AWS_CONFIG_FILE", savedConfig);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("the plugin reads credentials from the environment variables its options name", async () => {
    const context = {
      baseDir: "/",
      databaseName: "app",
      env: { MY_KEY_ID: server.accessKeyId, MY_SECRET: server.secretAccessKey },
    };
    const options = await parsePluginOptions(
      s3StoragePlugin,
      s3StoragePlugin.fromUrl!(
        new URL(
          `s3://${server.bucket}/plugin/${randomUUID()}?endpoint=${server.endpoint}&pathStyle=true&accessKeyIdEnv=MY_KEY_ID&secretAccessKeyEnv=MY_SECRET&partSize=5MiB`,
        ),
        context,
      ),
      "targets[0]",
    );
    const t = s3StoragePlugin.create(options, context);
    expect(t.location).toBe(`s3://${server.bucket}/${options.prefix} @ ${server.endpoint}`);
    await t.init!();
    await t.put("via-plugin", Buffer.from("x"));
    expect(await keys(t)).toEqual(["via-plugin"]);
    const missing = (() => {
      try {
        s3StoragePlugin.create(options, { ...context, env: {} });
      } catch (error) {
        return error as LifeboatError;
      }
      throw new Error("expected CONFIG_INVALID");
    })();
    expect(missing.code).toBe("CONFIG_INVALID");
    expect(missing.message).toContain("MY_KEY_ID is not set");
  });

  it("checksum when_supported works against the server for single and multipart puts", async () => {
    const t = target({ checksum: "when_supported" });
    await t.put("ck/small", Buffer.from("checked"));
    await t.put("ck/multi", numberedChunks(6, MiB));
    expect((await readAll((await t.get("ck/small")).body)).toString()).toBe("checked");
    expect((await t.head("ck/multi")).size).toBe(6 * MiB);
    const raw = await admin.send(new GetObjectCommand({ Bucket: server.bucket, Key: `${t.prefix}/ck/small` }));
    expect(await raw.Body?.transformToString()).toBe("checked");
  });
});

function restoreEnv(name: string, value: string | undefined): void {
  if (value === undefined) delete process.env[name];
  else process.env[name] = value;
}

function chunked(bytes: Uint8Array, chunkSize: number): AsyncIterable<Uint8Array> {
  return (async function* () {
    for (let i = 0; i < bytes.length; i += chunkSize) yield bytes.subarray(i, i + chunkSize);
  })();
}
