/**
 * Failures a user meets with S3, produced for real: the gateway killed in the middle of an upload,
 * an endpoint where nothing listens, a server that accepts connections and never answers, 5xx and
 * throttling answers (from a fault-injecting proxy in front of the real server), wrong credentials,
 * a missing bucket, aborts. Every error must name the target, say what to do, and hold no secret.
 */
import { createHash, randomUUID } from "node:crypto";
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  request as httpRequest,
  type IncomingHttpHeaders,
} from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { inspect } from "node:util";
import { HeadObjectCommand, ListMultipartUploadsCommand, S3Client } from "@aws-sdk/client-s3";
import { type LifeboatError, readAll } from "@lifeboat/core";
import { type S3Server, startS3Server } from "@lifeboat/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type S3StorageOptions, type S3StorageTarget, s3Storage } from "./index.js";

const MiB = 1024 * 1024;
let server: S3Server;
let admin: S3Client;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  server = await startS3Server();
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
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  admin?.destroy();
  await server?.stop();
});

function target(options: Partial<S3StorageOptions> = {}): S3StorageTarget {
  return s3Storage({
    bucket: server.bucket,
    prefix: `f/${randomUUID()}`,
    endpoint: server.endpoint,
    forcePathStyle: true,
    region: server.region,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    partSize: 5 * MiB,
    ...options,
  });
}

async function failure(promise: Promise<unknown>): Promise<LifeboatError> {
  try {
    await promise;
  } catch (error) {
    return error as LifeboatError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/** Asserts the error reads as a message for a person, names the target, and leaks no secret. */
function expectUserFacing(error: LifeboatError, t: S3StorageTarget, secrets: readonly string[]): void {
  expect(error.name).toMatch(/Error$/);
  expect(typeof error.code).toBe("string");
  expect(error.message).toContain(t.location);
  expect(error.message).not.toMatch(/\n\s+at /); // not a stack trace
  expect(error.hint).toBeTruthy();
  expect(error.plugin).toBe("s3");
  const everything = [
    error.message,
    error.hint,
    JSON.stringify(error),
    JSON.stringify(error.details),
    inspect(error, { depth: 10 }),
    t.location,
  ].join("\n");
  for (const secret of secrets) expect(everything).not.toContain(secret);
}

async function multipartUploads(prefix: string): Promise<number> {
  const out = await admin.send(new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: prefix }));
  return out.Uploads?.length ?? 0;
}

async function objectExists(key: string): Promise<boolean> {
  try {
    await admin.send(new HeadObjectCommand({ Bucket: server.bucket, Key: key }));
    return true;
  } catch (error) {
    if ((error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode === 404) return false;
    throw error;
  }
}

/** A port nothing listens on (it was free a moment ago). */
function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

/** A TCP server that accepts connections and never answers. */
async function hangingServer(): Promise<{ endpoint: string; connections: () => number }> {
  const sockets = new Set<Socket>();
  let count = 0;
  const hang: Server = createServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on("error", () => undefined);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => hang.listen(0, "127.0.0.1", resolve));
  cleanups.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => hang.close(() => resolve()));
  });
  return { endpoint: `http://127.0.0.1:${(hang.address() as { port: number }).port}`, connections: () => count };
}

interface Fault {
  status: number;
  code: string;
}

/**
 * An HTTP proxy in front of the real server that answers the next requests with the given faults
 * (as S3 would: an XML error body) and forwards the rest unchanged (the Host header included, so
 * signatures stay valid). It records every request's method, path and headers.
 */
async function faultProxy(): Promise<{
  endpoint: string;
  failNext(faults: Fault[]): void;
  requests: { method: string; path: string; headers: IncomingHttpHeaders; fault?: number }[];
}> {
  const queue: Fault[] = [];
  const requests: { method: string; path: string; headers: IncomingHttpHeaders; fault?: number }[] = [];
  const upstream = new URL(server.endpoint);
  const proxy = createHttpServer((req, res) => {
    const fault = queue.shift();
    requests.push({
      method: req.method ?? "",
      path: req.url ?? "",
      headers: req.headers,
      ...(fault ? { fault: fault.status } : {}),
    });
    if (fault) {
      req.resume();
      req.on("end", () => {
        res.writeHead(fault.status, { "content-type": "application/xml" });
        res.end(
          `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${fault.code}</Code><Message>injected ${fault.code}</Message><RequestId>fault</RequestId></Error>`,
        );
      });
      return;
    }
    const forward = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  return {
    endpoint: await listenOnLoopback(proxy),
    failNext: (faults) => queue.push(...faults),
    requests,
  };
}

/**
 * An HTTP proxy in front of the real server that forwards everything, but cuts the connection
 * of the next `cuts` ranged GETs (the parts of a large read) after their first MiB of body.
 */
async function cuttingProxy(): Promise<{ endpoint: string; cutNext(count: number): void; cut: () => number }> {
  let pending = 0;
  let cut = 0;
  const upstream = new URL(server.endpoint);
  const proxy = createHttpServer((req, res) => {
    const cutThis = req.method === "GET" && req.headers.range !== undefined && pending > 0;
    if (cutThis) pending--;
    const forward = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (!cutThis) {
          answer.pipe(res);
          return;
        }
        let sent = 0;
        answer.on("data", (chunk: Buffer) => {
          if (sent >= MiB) return;
          res.write(chunk);
          sent += chunk.length;
          if (sent >= MiB) {
            cut++;
            answer.destroy();
            res.socket?.destroy();
          }
        });
      },
    );
    forward.on("error", () => res.destroy());
    req.pipe(forward);
  });
  return {
    endpoint: await listenOnLoopback(proxy),
    cutNext: (count) => {
      pending += count;
    },
    cut: () => cut,
  };
}

async function* megabytes(
  count: number,
  onChunk?: (index: number) => Promise<void> | void,
): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < count; i++) {
    await onChunk?.(i);
    const chunk = Buffer.alloc(MiB, i & 0xff);
    chunk.writeUInt32BE(i, 0);
    yield chunk;
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

// ---------------------------------------------------------------------------------------------

describe("the gateway goes away during an upload", () => {
  it("retries, then fails clearly; the multipart upload is aborted once the server is back; no object", async () => {
    const t = target({ maxAttempts: 3, retryBaseDelay: 100, retryMaxDelay: 400, queueSize: 1 });
    const started = Date.now();
    const error = await failure(
      t.put(
        "outage/object",
        megabytes(30, async (i) => {
          // Part 1 (5 MiB) is uploaded; part 2 is being assembled.
          if (i === 11) await server.stopGateway({ kill: true });
        }),
      ),
    );
    const elapsed = Date.now() - started;
    try {
      expect(error.code).toBe("STORAGE_ERROR");
      expect(error.message).toMatch(/^Cannot reach http:\/\/127\.0\.0\.1:\d+: /);
      expect(error.message).toContain("the connection was refused (after 3 attempts)");
      expect(error.message).toContain('the put of "outage/object"');
      expect(error.hint).toContain("server is running");
      expectUserFacing(error, t, [server.secretAccessKey, server.accessKeyId]);
      // Backoff happened: at least the lower bounds of two retry delays (50 + 100 ms).
      expect(elapsed).toBeGreaterThanOrEqual(150);
      // The upload could not be aborted while the server was down; the target remembers it.
      expect(t.pendingAborts()).toBe(1);
    } finally {
      await server.startGateway();
    }
    expect(await multipartUploads(`${t.prefix}/`)).toBe(1);
    await t.close();
    expect(await multipartUploads(`${t.prefix}/`)).toBe(0);
    expect(await objectExists(`${t.prefix}/outage/object`)).toBe(false);
  }, 120_000);

  it("an outage shorter than the retry window is ridden out: the put succeeds intact", async () => {
    // Equal-jitter backoff guarantees at least 100 + 200 + 400 + 800 + 7 * 1000 ms of retrying.
    const t = target({ maxAttempts: 12, retryBaseDelay: 200, retryMaxDelay: 2000, queueSize: 2 });
    let restarted: Promise<void> | undefined;
    const expected = sha256(await readAll(megabytes(24)));
    const info = await t.put(
      "blip/object",
      megabytes(24, async (i) => {
        if (i === 11) {
          await server.stopGateway({ kill: true });
          restarted = new Promise((resolve) => setTimeout(resolve, 1500)).then(() => server.startGateway());
        }
      }),
    );
    await restarted;
    expect(info.size).toBe(24 * MiB);
    expect(sha256(await readAll((await t.get("blip/object")).body))).toBe(expected);
    // 1 create + 5 parts + 1 complete, plus the attempts that met the closed port.
    expect(t.requestCounts().PUT).toBeGreaterThan(7);
    expect(await multipartUploads(`${t.prefix}/`)).toBe(0);
  }, 120_000);
});

describe("an unreachable or silent endpoint", () => {
  it("nothing listening: retries with backoff, then says the connection was refused", async () => {
    const port = await closedPort();
    const t = target({
      endpoint: `http://127.0.0.1:${port}`,
      maxAttempts: 4,
      retryBaseDelay: 100,
      retryMaxDelay: 1000,
    });
    const started = Date.now();
    const error = await failure(t.init());
    const elapsed = Date.now() - started;
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toBe(
      `Cannot reach http://127.0.0.1:${port}: the connection was refused (after 4 attempts); the init on ${t.location} failed.`,
    );
    expect(error.details).toMatchObject({ errno: "ECONNREFUSED", attempts: 4, endpoint: `http://127.0.0.1:${port}` });
    expect(t.requestCounts().HEAD).toBe(4);
    // Lower bounds of the three retry delays: 50 + 100 + 200 ms.
    expect(elapsed).toBeGreaterThanOrEqual(350);
    expectUserFacing(error, t, [server.secretAccessKey]);
  });

  it("a server that never answers: every attempt times out after requestTimeout", async () => {
    const hang = await hangingServer();
    const t = target({ endpoint: hang.endpoint, requestTimeout: 400, maxAttempts: 3, retryBaseDelay: 50 });
    const started = Date.now();
    const error = await failure(t.put("slow", Buffer.from("x")));
    const elapsed = Date.now() - started;
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toContain("did not answer within the request timeout (400 ms) (after 3 attempts)");
    expect(hang.connections()).toBe(3);
    expect(elapsed).toBeGreaterThanOrEqual(3 * 400);
    // 3 timeouts + 2 backoff delays of at most 50 and 100 ms, plus scheduling slack.
    expect(elapsed).toBeLessThan(3 * 400 + 150 + 3000);
    expectUserFacing(error, t, [server.secretAccessKey]);
  });

  it("an abort ends a hanging request and a retry delay at once", async () => {
    const hang = await hangingServer();
    const waiting = target({ endpoint: hang.endpoint, requestTimeout: 60_000 });
    let started = Date.now();
    const error = await failure(waiting.head("x", { signal: AbortSignal.timeout(300) }));
    expect(error.code).toBe("ABORTED");
    expect(Date.now() - started).toBeLessThan(3000);
    expect(error.message).toBe(`The head of "x" in ${waiting.location} was aborted.`);

    const refused = target({
      endpoint: `http://127.0.0.1:${await closedPort()}`,
      maxAttempts: 5,
      retryBaseDelay: 20_000,
    });
    started = Date.now();
    const backingOff = await failure(refused.get("y", { signal: AbortSignal.timeout(300) }));
    expect(backingOff.code).toBe("ABORTED");
    expect(Date.now() - started).toBeLessThan(3000);
    expect(refused.requestCounts().GET).toBe(1);
  });
});

describe("5xx and throttling answers", () => {
  it("retries 503 SlowDown and 500 InternalError, then succeeds; the retries are counted", async () => {
    const proxy = await faultProxy();
    const t = target({ endpoint: proxy.endpoint, maxAttempts: 3, retryBaseDelay: 50 });
    proxy.failNext([
      { status: 503, code: "SlowDown" },
      { status: 500, code: "InternalError" },
    ]);
    await t.put("flaky", Buffer.from("survived"));
    expect(proxy.requests.filter((r) => r.method === "PUT").map((r) => r.fault ?? 200)).toEqual([503, 500, 200]);
    expect(t.requestCounts().PUT).toBe(3);
    proxy.failNext([{ status: 502, code: "BadGateway" }]);
    expect((await readAll((await t.get("flaky")).body)).toString()).toBe("survived");
    expect(t.requestCounts().GET).toBe(2);
  });

  it("gives up after maxAttempts with a message that says S3 is throttling", async () => {
    const proxy = await faultProxy();
    const t = target({ endpoint: proxy.endpoint, maxAttempts: 3, retryBaseDelay: 50 });
    proxy.failNext([
      { status: 503, code: "SlowDown" },
      { status: 503, code: "SlowDown" },
      { status: 503, code: "SlowDown" },
    ]);
    const error = await failure(t.put("throttled", Buffer.from("x")));
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toBe(
      `The S3 server is throttling requests (SlowDown) (after 3 attempts); the put of "throttled" in ${t.location} failed.`,
    );
    expect(error.hint).toContain("queueSize");
    expectUserFacing(error, t, [server.secretAccessKey]);
    expect(await objectExists(`${t.prefix}/throttled`)).toBe(false);
  });

  it("does not retry a 4xx answer", async () => {
    const proxy = await faultProxy();
    const t = target({ endpoint: proxy.endpoint, maxAttempts: 5, retryBaseDelay: 50 });
    proxy.failNext([{ status: 400, code: "InvalidRequest" }]);
    const error = await failure(t.put("bad", Buffer.from("x")));
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toContain("InvalidRequest (HTTP 400): injected InvalidRequest");
    expect(proxy.requests).toHaveLength(1);
  });

  it("sends request checksums only where the target's checksum mode says so", async () => {
    const proxy = await faultProxy();
    const checksumHeaders = () =>
      proxy.requests
        .filter((r) => r.method === "PUT")
        .map((r) => Object.keys(r.headers).filter((name) => name.startsWith("x-amz-checksum-")));
    await target({ endpoint: proxy.endpoint }).put("plain", Buffer.from("x"));
    expect(checksumHeaders()).toEqual([[]]);
    await target({ endpoint: proxy.endpoint, checksum: "when_supported" }).put("summed", Buffer.from("x"));
    expect(checksumHeaders()[1]).toEqual(["x-amz-checksum-crc32"]);
  });
});

describe("a large read whose parts break off mid-body", () => {
  it("fetches a part cut short again: the bytes arrive complete and in order", async () => {
    const proxy = await cuttingProxy();
    const t = target({ endpoint: proxy.endpoint, readConcurrency: 2, retryBaseDelay: 50 });
    const source = Buffer.concat(await collect(megabytes(17)));
    await t.put("cut/once", source);
    proxy.cutNext(1);
    const got = await readAll((await t.get("cut/once")).body);
    expect(proxy.cut()).toBe(1);
    expect(sha256(got)).toBe(sha256(source));
  });

  it("fails with a clear error when a part keeps breaking off", async () => {
    const proxy = await cuttingProxy();
    const t = target({ endpoint: proxy.endpoint, readConcurrency: 2, maxAttempts: 2, retryBaseDelay: 50 });
    await t.put("cut/always", Buffer.concat(await collect(megabytes(17))));
    proxy.cutNext(100);
    const got = await t.get("cut/always");
    let received = 0;
    const error = await failure(
      (async () => {
        for await (const chunk of got.body) received += chunk.byteLength;
      })(),
    );
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toBe(
      `Cannot reach ${proxy.endpoint}: the connection was reset; the get of "cut/always" in ${t.location} failed.`,
    );
    expectUserFacing(error, t, [server.secretAccessKey]);
    expect(received).toBeLessThan(17 * MiB);
  });
});

describe("wrong credentials and a missing bucket", () => {
  it("an unknown access key: PERMISSION_DENIED naming the target, from init and from put", async () => {
    const secret = `wrong-secret-${randomUUID()}`;
    const t = target({ accessKeyId: "LBTUNKNOWNKEY00000", secretAccessKey: secret });
    for (const call of [() => t.init(), () => t.put("x", Buffer.from("x"))]) {
      const error = await failure(call());
      expect(error.code).toBe("PERMISSION_DENIED");
      expect(error.message).toContain("does not know the access key ID");
      expect(error.message).toContain("InvalidAccessKeyId");
      expect(error.hint).toContain("access key ID");
      expectUserFacing(error, t, [secret, "LBTUNKNOWNKEY00000"]);
    }
  });

  it("a wrong secret key: PERMISSION_DENIED saying the signature does not match", async () => {
    const secret = `wrong-secret-${randomUUID()}`;
    const t = target({ secretAccessKey: secret });
    for (const call of [() => t.init(), () => t.get("x"), () => collect(t.list(""))]) {
      const error = await failure(call());
      expect(error.code).toBe("PERMISSION_DENIED");
      expect(error.message).toContain("the secret access key does not match the access key ID");
      expect(error.hint).toContain("secret access key");
      expectUserFacing(error, t, [secret, server.accessKeyId]);
    }
  });

  it("a missing bucket: says so and how to create it", async () => {
    const t = target({ bucket: "no-such-bucket-here" });
    for (const call of [() => t.init(), () => t.put("x", Buffer.from("x")), () => collect(t.list(""))]) {
      const error = await failure(call());
      expect(error.code).toBe("STORAGE_ERROR");
      expect(error.message).toContain(`The bucket "no-such-bucket-here" does not exist at ${server.endpoint}`);
      expect(error.hint).toBe(
        `Create it, e.g. \`aws s3 mb s3://no-such-bucket-here --endpoint-url ${server.endpoint}\`, or correct \`bucket\` (and \`region\`/\`endpoint\`) in the target's options.`,
      );
      expectUserFacing(error, t, [server.secretAccessKey]);
    }
    // Following the hint fixes it.
    await server.createBucket("no-such-bucket-here");
    await t.init();
    await t.put("x", Buffer.from("x"));
  });

  it("refuses credentials inside the endpoint URL, and never shows secrets in its location", () => {
    expect(() => target({ endpoint: `http://user:${server.secretAccessKey}@127.0.0.1:1` })).toThrow(
      /must not contain credentials/,
    );
    const t = target({ sessionToken: "session-token-secret" });
    expect(t.location).toMatch(/^s3:\/\/lifeboat-test\/f\/[0-9a-f-]+ @ http:\/\/127\.0\.0\.1:\d+$/);
  });
});

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

/** Starts `server` on a free loopback port (closed after the test); returns its http:// endpoint. */
async function listenOnLoopback(server: HttpServer): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}
