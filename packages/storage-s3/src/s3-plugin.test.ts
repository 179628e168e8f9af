/**
 * The s3 plugin's options, URLs and pure helpers (no server needed): what a user writes in
 * lifeboat.yml or on the command line is accepted, or refused with the config path named.
 */
import { type LifeboatError, PluginRegistry, parsePluginOptions } from "@lifeboat/core";
import { describe, expect, it } from "vitest";
import s3Default, { parseSize, s3Storage, s3StoragePlugin } from "./index.js";
import { BackoffRetryStrategy, backoffDelay } from "./retry-strategy.js";
import { decodeListedKey, normalisePrefix, totalFromContentRange } from "./s3-storage.js";

const context = { baseDir: "/", databaseName: "app", env: {} };

function thrown(fn: () => unknown): LifeboatError {
  try {
    fn();
  } catch (error) {
    return error as LifeboatError;
  }
  throw new Error("expected it to throw");
}

async function rejected(promise: Promise<unknown>): Promise<LifeboatError> {
  try {
    await promise;
  } catch (error) {
    return error as LifeboatError;
  }
  throw new Error("expected it to reject");
}

describe("s3StoragePlugin", () => {
  it("is the default export, named s3, handling s3: URLs", () => {
    expect(s3Default).toBe(s3StoragePlugin);
    expect(s3StoragePlugin.kind).toBe("storage");
    expect(s3StoragePlugin.name).toBe("s3");
    expect(new PluginRegistry([s3StoragePlugin]).forUrlScheme("s3")).toBe(s3StoragePlugin);
  });

  it("accepts the documented options, with sizes and durations in units", async () => {
    const options = await parsePluginOptions(
      s3StoragePlugin,
      {
        bucket: "my-backups",
        prefix: "prod/app",
        region: "eu-central-1",
        endpoint: "https://s3.example.com",
        forcePathStyle: true,
        accessKeyIdEnv: "KEY_ID",
        secretAccessKeyEnv: "SECRET",
        storageClass: "STANDARD_IA",
        serverSideEncryption: "aws:kms",
        kmsKeyId: "alias/backups",
        checksum: "when_required",
        partSize: "16MiB",
        queueSize: 8,
        requestTimeout: "45s",
        maxAttempts: 7,
        retryBaseDelay: "250ms",
        retryMaxDelay: "20s",
      },
      "databases[0].targets[0]",
    );
    expect(options).toMatchObject({ partSize: 16 * 1024 * 1024, requestTimeout: 45_000, retryBaseDelay: 250 });
    expect(options.retryMaxDelay).toBe(20_000);
  });

  it("refuses unknown options, bad values and half-given credentials, naming the config path", async () => {
    const where = "databases[0].targets[1]";
    const cases: [Record<string, unknown>, string][] = [
      [{}, `${where}.bucket: bucket is required`],
      [{ bucket: "b", extra: 1 }, `${where}`],
      [{ bucket: "ok-bucket", bukcet: "typo" }, "bukcet"],
      [{ bucket: "ok-bucket", partSize: "1MiB" }, `${where}.partSize: partSize must be from 5MiB to 5GiB`],
      [{ bucket: "ok-bucket", partSize: "lots" }, `${where}.partSize: partSize must be a size like 8MiB`],
      [{ bucket: "ok-bucket", requestTimeout: "soon" }, `${where}.requestTimeout: requestTimeout must be a duration`],
      [
        { bucket: "ok-bucket", endpoint: "127.0.0.1:7480" },
        `${where}.endpoint: endpoint must be an http:// or https:// URL`,
      ],
      [{ bucket: "ok-bucket", kmsKeyId: "k" }, `${where}.kmsKeyId: kmsKeyId needs serverSideEncryption: "aws:kms"`],
      [{ bucket: "ok-bucket", accessKeyIdEnv: "ID" }, `${where}.secretAccessKeyEnv: give both`],
      [
        { bucket: "ok-bucket", accessKeyIdEnv: "not a name", secretAccessKeyEnv: "S" },
        "must be the name of an environment variable",
      ],
      [
        { bucket: "ok-bucket", accessKeyId: "a", accessKeyIdEnv: "A", secretAccessKeyEnv: "S" },
        "give accessKeyId or accessKeyIdEnv, not both",
      ],
      [{ bucket: "ok-bucket", checksum: "always" }, `${where}.checksum`],
      [{ bucket: "ok-bucket", serverSideEncryption: "rot13" }, `${where}.serverSideEncryption`],
    ];
    for (const [options, expected] of cases) {
      const error = await rejected(parsePluginOptions(s3StoragePlugin, options, where));
      expect(error.code).toBe("CONFIG_INVALID");
      expect(error.message).toContain(expected);
    }
  });

  it("parses s3://bucket/prefix?parameters into options", async () => {
    const parsed = s3StoragePlugin.fromUrl!(
      new URL(
        "s3://my-backups/prod/my%20app/?endpoint=http://127.0.0.1:7480&region=us-west-2&pathStyle=true&checksum=when_required&partSize=16MiB&queueSize=2&maxAttempts=3&requestTimeout=5s&sse=aws:kms&kmsKeyId=k1&accessKeyIdEnv=ID&secretAccessKeyEnv=SECRET",
      ),
      context,
    );
    expect(parsed).toEqual({
      bucket: "my-backups",
      prefix: "prod/my app",
      endpoint: "http://127.0.0.1:7480",
      region: "us-west-2",
      forcePathStyle: true,
      checksum: "when_required",
      partSize: "16MiB",
      queueSize: 2,
      maxAttempts: 3,
      requestTimeout: "5s",
      serverSideEncryption: "aws:kms",
      kmsKeyId: "k1",
      accessKeyIdEnv: "ID",
      secretAccessKeyEnv: "SECRET",
    });
    const options = await parsePluginOptions(s3StoragePlugin, parsed, "--to");
    expect(options.partSize).toBe(16 * 1024 * 1024);
    expect(options.requestTimeout).toBe(5000);
    expect(s3StoragePlugin.fromUrl!(new URL("s3://bucket"), context)).toEqual({ bucket: "bucket" });
  });

  it("refuses secrets, unknown parameters and malformed URLs, without echoing the secret", () => {
    const withKey = thrown(() => s3StoragePlugin.fromUrl!(new URL("s3://b/p?secretAccessKey=hunter2"), context));
    expect(withKey.code).toBe("CONFIG_INVALID");
    expect(withKey.message).toContain('the secret "secretAccessKey"');
    expect(withKey.hint).toContain("secretAccessKeyEnv");
    expect(JSON.stringify(withKey)).not.toContain("hunter2");
    const withUser = thrown(() => s3StoragePlugin.fromUrl!(new URL("s3://AKIA:hunter2@bucket/p"), context));
    expect(withUser.message).toBe("Invalid S3 target URL s3://bucket/p: it contains credentials.");
    expect(JSON.stringify(withUser)).not.toContain("hunter2");
    expect(thrown(() => s3StoragePlugin.fromUrl!(new URL("s3://b/p?colour=red"), context)).hint).toContain(
      "Known parameters: endpoint, region",
    );
    expect(thrown(() => s3StoragePlugin.fromUrl!(new URL("s3://b/p?pathStyle=yes"), context)).message).toContain(
      "pathStyle must be true or false",
    );
    expect(thrown(() => s3StoragePlugin.fromUrl!(new URL("s3:///p"), context)).message).toContain("names no bucket");
  });
});

describe("s3Storage options", () => {
  it("builds a location without secrets and normalises the prefix", () => {
    const t = s3Storage({
      bucket: "b-1",
      prefix: "/a/b/",
      endpoint: "https://s3.example.com:9000/",
      accessKeyId: "AKIDEXAMPLE",
      secretAccessKey: "very-secret-value",
    });
    expect(t.location).toBe("s3://b-1/a/b @ https://s3.example.com:9000");
    expect(t.prefix).toBe("a/b");
    expect(t.capabilities).toEqual({ conditionalCreate: true, rangeReads: true, objectLock: false, metadata: true });
    expect(s3Storage({ bucket: "b-1", region: "eu-west-1" }).location).toBe("s3://b-1");
  });

  it("refuses unusable options with INVALID_ARGUMENT", () => {
    for (const [options, text] of [
      [{ bucket: "" }, "bucket"],
      [{ bucket: "b-1", prefix: "a//b" }, "prefix"],
      [{ bucket: "b-1", prefix: "../x" }, "prefix"],
      [{ bucket: "b-1", partSize: 1024 }, "partSize"],
      [{ bucket: "b-1", queueSize: 0 }, "queueSize"],
      [{ bucket: "b-1", endpoint: "ftp://x" }, "endpoint"],
      [{ bucket: "b-1", endpoint: "http://user:pw@host" }, "must not contain credentials"],
      [{ bucket: "b-1", accessKeyId: "only-the-id" }, "secretAccessKey is missing"],
      [{ bucket: "b-1", kmsKeyId: "k" }, "kmsKeyId"],
    ] as const) {
      const error = thrown(() => s3Storage(options as never));
      expect(error.code).toBe("INVALID_ARGUMENT");
      expect(error.message).toContain(text);
      expect(error.message).not.toContain("pw@");
    }
  });

  it("reads credentials from the named environment variables, or says which one is unset", () => {
    const env = { ID: "AKIDEXAMPLE", SECRET: "s3cr3t" };
    expect(() => s3Storage({ bucket: "b-1", accessKeyIdEnv: "ID", secretAccessKeyEnv: "SECRET", env })).not.toThrow();
    const missing = thrown(() => s3Storage({ bucket: "b-1", accessKeyIdEnv: "ID", secretAccessKeyEnv: "NOPE", env }));
    expect(missing.code).toBe("CONFIG_INVALID");
    expect(missing.message).toBe(
      "secretAccessKeyEnv: the environment variable NOPE is not set (it should hold the S3 secretAccessKey).",
    );
  });
});

describe("helpers", () => {
  it("parseSize understands bytes and binary and decimal units", () => {
    expect(parseSize("1024")).toBe(1024);
    expect(parseSize("8MiB")).toBe(8 * 1024 * 1024);
    expect(parseSize("8 mib")).toBe(8 * 1024 * 1024);
    expect(parseSize("5MB")).toBe(5_000_000);
    expect(parseSize("1GiB")).toBe(1024 ** 3);
    expect(parseSize("1.5KiB")).toBe(1536);
    expect(parseSize("8 apples")).toBeUndefined();
    expect(parseSize("")).toBeUndefined();
  });

  it("backoff delays grow exponentially within [c/2, c] and stop at the cap", () => {
    const options = { maxAttempts: 10, baseDelayMs: 100, maxDelayMs: 1000 };
    for (const [retry, ceiling] of [
      [1, 100],
      [2, 200],
      [3, 400],
      [4, 800],
      [5, 1000],
      [9, 1000],
    ] as const) {
      expect(backoffDelay(retry, { ...options, random: () => 0 })).toBe(ceiling / 2);
      expect(backoffDelay(retry, { ...options, random: () => 0.999999 })).toBe(ceiling);
    }
  });

  it("the retry strategy retries transient, throttling and server errors, never client errors, up to maxAttempts", async () => {
    const strategy = new BackoffRetryStrategy({ maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
    let token = await strategy.acquireInitialRetryToken("s3");
    for (const errorType of ["TRANSIENT", "THROTTLING"] as const) {
      token = await strategy.refreshRetryTokenForRetry(token, { errorType });
    }
    expect(token.getRetryCount()).toBe(2);
    expect(token.getRetryDelay()).toBe(100);
    await expect(strategy.refreshRetryTokenForRetry(token, { errorType: "SERVER_ERROR" })).rejects.toThrow();
    const fresh = await strategy.acquireInitialRetryToken("s3");
    await expect(strategy.refreshRetryTokenForRetry(fresh, { errorType: "CLIENT_ERROR" })).rejects.toThrow();
    const hinted = await strategy.refreshRetryTokenForRetry(fresh, {
      errorType: "THROTTLING",
      retryAfterHint: new Date(Date.now() + 5000),
    });
    expect(hinted.getRetryDelay()).toBe(1000); // Retry-After lengthens the delay, up to the cap
  });

  it("reads the total size from Content-Range and decodes URL-encoded listed keys", () => {
    expect(totalFromContentRange("bytes 100-149/1000")).toBe(1000);
    expect(totalFromContentRange(undefined)).toBeUndefined();
    expect(decodeListedKey("a%2Fb+c%2Bd%20e")).toBe("a/b c+d e");
    expect(decodeListedKey("%F0%9F%98%80")).toBe("😀");
    expect(normalisePrefix("//x/y//")).toBe("x/y");
  });
});
