/**
 * A `StorageTarget` on S3 or an S3-compatible service (R2, B2, Ceph radosgw, MinIO, Wasabi). Key
 * `a/b` is the object `<prefix>/a/b` in the bucket.
 *
 * Writes: a body of known length up to `partSize` is one PutObject; anything else is a multipart
 * upload through `@aws-sdk/lib-storage` (`queueSize` parts in flight, each buffered once), aborted
 * when it fails, so a failed or aborted put leaves no object. Every request goes through the SDK's
 * retry middleware with exponential backoff and jitter (see `retry-strategy.ts`), honours
 * `requestTimeout` and the caller's AbortSignal, and is counted by type for metrics.
 *
 * Reads: one GetObject stream; with `readConcurrency` above 1, a whole object of two parts or
 * more is read as parallel ranged GETs, yielded in order (see `#partsBody`).
 */
import { createHash } from "node:crypto";
import { setMaxListeners } from "node:events";
import { Readable } from "node:stream";
import {
  AbortMultipartUploadCommand,
  type AbortMultipartUploadCommandInput,
  DeleteObjectsCommand,
  type DeleteObjectsCommandOutput,
  GetObjectCommand,
  type GetObjectCommandOutput,
  HeadBucketCommand,
  HeadObjectCommand,
  type HeadObjectCommandOutput,
  ListObjectsV2Command,
  type ListObjectsV2CommandOutput,
  PutObjectCommand,
  type PutObjectCommandInput,
  type PutObjectCommandOutput,
  S3Client,
  type S3ClientConfig,
  type ServerSideEncryption,
  type StorageClass,
} from "@aws-sdk/client-s3";
import { Upload } from "@aws-sdk/lib-storage";
import {
  assertPutArguments,
  assertValidKey,
  type Body,
  type ByteRange,
  type CallOptions,
  ErrorCodes,
  type GetOptions,
  type GetResult,
  LifeboatError,
  type ListOptions,
  type ObjectInfo,
  type PutOptions,
  STORAGE_API_VERSION,
  type StorageCapabilities,
  type StorageTarget,
} from "@lifeboat/core";
import { BackoffRetryStrategy } from "./retry-strategy.js";
import {
  existsError,
  httpStatus,
  isNotFound,
  isPreconditionFailed,
  notFoundError,
  PLUGIN,
  s3Code,
  type TargetFacts,
  toLifeboatError,
} from "./s3-errors.js";

/** S3's smallest part (except the last). */
export const MIN_PART_SIZE = 5 * 1024 * 1024;
/** S3's largest part. */
export const MAX_PART_SIZE = 5 * 1024 * 1024 * 1024;
/** Keys per DeleteObjects request (S3's limit). */
export const DELETE_BATCH_SIZE = 1000;

export const DEFAULTS = {
  partSize: 8 * 1024 * 1024,
  queueSize: 4,
  readConcurrency: 1,
  requestTimeout: 30_000,
  maxAttempts: 5,
  retryBaseDelay: 200,
  retryMaxDelay: 10_000,
} as const;

/** DeleteObjects requests in flight at once. */
const DELETE_CONCURRENCY = 4;
/** The largest part a whole-object read fetches at once (memory: about (queueSize + 1) parts). */
export const MAX_READ_PART_SIZE = 64 * 1024 * 1024;

export type ChecksumMode = "when_required" | "when_supported";

export interface S3StorageOptions {
  /** The bucket. It must exist (`init()` checks). */
  readonly bucket: string;
  /** Key prefix inside the bucket, without leading or trailing `/` (`app/prod`). Default: the whole bucket. */
  readonly prefix?: string;
  /** Region to sign for. Default: AWS_REGION / AWS_DEFAULT_REGION from the environment, else `us-east-1`. */
  readonly region?: string;
  /** An S3-compatible service's URL (`https://<account>.r2.cloudflarestorage.com`, `http://127.0.0.1:7480`). Default: AWS. */
  readonly endpoint?: string;
  /** Path-style URLs (`endpoint/bucket/key`), which most self-hosted servers need. Default: the SDK's choice. */
  readonly forcePathStyle?: boolean;
  /**
   * Explicit credentials. Without any, the SDK's default chain is used: environment variables,
   * shared config and credentials files (`profile`), SSO, web identity, container and instance roles.
   */
  readonly accessKeyId?: string;
  readonly secretAccessKey?: string;
  readonly sessionToken?: string;
  /** Names of environment variables that hold the credentials (preferred over literal values in a config file). */
  readonly accessKeyIdEnv?: string;
  readonly secretAccessKeyEnv?: string;
  readonly sessionTokenEnv?: string;
  /** A profile of the shared AWS config files, for the default chain. */
  readonly profile?: string;
  /** Storage class of new objects (`STANDARD_IA`, `GLACIER_IR`, ...). Default: the bucket's. */
  readonly storageClass?: string;
  /** Server-side encryption of new objects. */
  readonly serverSideEncryption?: "AES256" | "aws:kms";
  /** The KMS key for `aws:kms` (id, ARN or alias). Default: the service's key. */
  readonly kmsKeyId?: string;
  /**
   * Request checksums (`when_supported`: the SDK adds CRC checksums to uploads and validates
   * downloads; `when_required`: only where the API demands one). Default `when_required` with a
   * custom `endpoint` (many S3-compatible servers reject the SDK's streaming checksums), else
   * `when_supported`.
   */
  readonly checksum?: ChecksumMode;
  /**
   * Multipart part size in bytes, 5 MiB to 5 GiB. Also the largest body sent as one PutObject, and
   * the part size of parallel reads (at most 64 MiB there). Default 8 MiB.
   */
  readonly partSize?: number;
  /** Parts uploaded at once. Memory use is about (queueSize + 1) * partSize per upload. Default 4. */
  readonly queueSize?: number;
  /**
   * Ranged GETs in flight when reading a whole object of two parts or more, 1 to 64. 1 (the
   * default) reads one GetObject stream; more helps on links with high latency, and costs CPU and
   * about (readConcurrency + 1) * partSize of memory per read.
   */
  readonly readConcurrency?: number;
  /**
   * Milliseconds a request may go without progress (connecting, or waiting for the server) before
   * it is abandoned and retried. Default 30 000.
   */
  readonly requestTimeout?: number;
  /** Attempts per request, the first included (1 = no retries). Default 5. */
  readonly maxAttempts?: number;
  /** Backoff: ceiling of the first retry's delay in ms, doubled per retry up to `retryMaxDelay`. Defaults 200 and 10 000. */
  readonly retryBaseDelay?: number;
  readonly retryMaxDelay?: number;
  /** Where `*Env` names and AWS_REGION are looked up. Default `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** HTTP requests sent, by kind (retries included: each attempt is a request the service sees). */
export interface S3RequestCounts {
  /** PutObject, CreateMultipartUpload, UploadPart, CompleteMultipartUpload. */
  readonly PUT: number;
  /** GetObject. */
  readonly GET: number;
  /** HeadObject, HeadBucket. */
  readonly HEAD: number;
  /** ListObjectsV2. */
  readonly LIST: number;
  /** DeleteObjects, AbortMultipartUpload. */
  readonly DELETE: number;
}

type RequestKind = keyof S3RequestCounts;

const KIND_OF_COMMAND: Record<string, RequestKind> = {
  PutObjectCommand: "PUT",
  CreateMultipartUploadCommand: "PUT",
  UploadPartCommand: "PUT",
  CompleteMultipartUploadCommand: "PUT",
  CopyObjectCommand: "PUT",
  GetObjectCommand: "GET",
  HeadObjectCommand: "HEAD",
  HeadBucketCommand: "HEAD",
  ListObjectsV2Command: "LIST",
  ListMultipartUploadsCommand: "LIST",
  ListPartsCommand: "LIST",
  DeleteObjectsCommand: "DELETE",
  DeleteObjectCommand: "DELETE",
  AbortMultipartUploadCommand: "DELETE",
};

export interface S3StorageTarget extends StorageTarget {
  readonly bucket: string;
  /** The normalised prefix (no leading or trailing `/`; empty for the whole bucket). */
  readonly prefix: string;
  /** Checks the bucket exists and is usable (HeadBucket). */
  init(options?: CallOptions): Promise<void>;
  /** Aborts what failed puts left behind if it can, and releases the connections. */
  close(): Promise<void>;
  /** Requests sent so far, by kind (a snapshot). */
  requestCounts(): S3RequestCounts;
  /**
   * Multipart uploads of failed puts that could not be aborted yet (the server was unreachable).
   * The target retries aborting them (in the background) when a put starts, and on `close()`.
   */
  pendingAborts(): number;
}

/**
 * A storage target on an S3 bucket (`type: s3`). Capabilities: conditional create (`If-None-Match:
 * *`; atomic for bodies up to `partSize`, larger ones are checked first and rely on the server
 * honouring the header on CompleteMultipartUpload), range reads, user metadata; no object lock.
 * Throws `INVALID_ARGUMENT` for unusable options and `CONFIG_INVALID` when a named credential
 * environment variable is unset.
 */
export function s3Storage(options: S3StorageOptions): S3StorageTarget {
  return new S3Storage(options);
}

class S3Storage implements S3StorageTarget {
  readonly apiVersion = STORAGE_API_VERSION;
  readonly type = PLUGIN;
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly capabilities: StorageCapabilities = Object.freeze({
    conditionalCreate: true,
    rangeReads: true,
    objectLock: false,
    metadata: true,
  });

  readonly #client: S3Client;
  readonly #facts: TargetFacts;
  /** `prefix/` or "" : prepended to every key. */
  readonly #keyPrefix: string;
  readonly #partSize: number;
  readonly #queueSize: number;
  readonly #maxAttempts: number;
  readonly #readConcurrency: number;
  readonly #writeParams: Pick<PutObjectCommandInput, "StorageClass" | "ServerSideEncryption" | "SSEKMSKeyId">;
  readonly #counts: Record<RequestKind, number> = { PUT: 0, GET: 0, HEAD: 0, LIST: 0, DELETE: 0 };
  readonly #pendingAborts: AbortMultipartUploadCommandInput[] = [];
  #flushing: Promise<void> | undefined;
  #closed = false;

  constructor(options: S3StorageOptions) {
    const env = options.env ?? process.env;
    this.bucket = checkBucket(options.bucket);
    this.prefix = normalisePrefix(options.prefix);
    this.#keyPrefix = this.prefix === "" ? "" : `${this.prefix}/`;
    const endpoint = options.endpoint === undefined ? undefined : checkEndpoint(options.endpoint);
    const region = options.region ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? "us-east-1";
    this.#partSize = checkInteger("partSize", options.partSize ?? DEFAULTS.partSize, MIN_PART_SIZE, MAX_PART_SIZE);
    this.#queueSize = checkInteger("queueSize", options.queueSize ?? DEFAULTS.queueSize, 1, 64);
    this.#readConcurrency = checkInteger("readConcurrency", options.readConcurrency ?? DEFAULTS.readConcurrency, 1, 64);
    const requestTimeout = checkInteger(
      "requestTimeout",
      options.requestTimeout ?? DEFAULTS.requestTimeout,
      1,
      3_600_000,
    );
    const maxAttempts = checkInteger("maxAttempts", options.maxAttempts ?? DEFAULTS.maxAttempts, 1, 100);
    this.#maxAttempts = maxAttempts;
    const retryBaseDelay = checkInteger(
      "retryBaseDelay",
      options.retryBaseDelay ?? DEFAULTS.retryBaseDelay,
      0,
      600_000,
    );
    const retryMaxDelay = checkInteger(
      "retryMaxDelay",
      options.retryMaxDelay ?? Math.max(DEFAULTS.retryMaxDelay, retryBaseDelay),
      retryBaseDelay,
      3_600_000,
    );
    if (options.kmsKeyId !== undefined && options.serverSideEncryption !== "aws:kms") {
      throw invalidOption("kmsKeyId", 'needs serverSideEncryption: "aws:kms"');
    }
    if (options.serverSideEncryption !== undefined && !["AES256", "aws:kms"].includes(options.serverSideEncryption)) {
      throw invalidOption("serverSideEncryption", 'must be "AES256" or "aws:kms"');
    }
    const checksum = options.checksum ?? (endpoint ? "when_required" : "when_supported");
    if (checksum !== "when_required" && checksum !== "when_supported") {
      throw invalidOption("checksum", 'must be "when_required" or "when_supported"');
    }
    const credentials = resolveCredentials(options, env);

    this.location = `s3://${this.bucket}${this.prefix ? `/${this.prefix}` : ""}${endpoint ? ` @ ${endpoint}` : ""}`;
    this.#facts = {
      bucket: this.bucket,
      prefix: this.prefix,
      endpoint,
      region,
      location: this.location,
      requestTimeout,
      secrets: [credentials?.secretAccessKey, credentials?.sessionToken, credentials?.accessKeyId].filter(
        (s): s is string => typeof s === "string" && s.length > 0,
      ),
    };
    this.#writeParams = {
      ...(options.storageClass ? { StorageClass: options.storageClass as StorageClass } : {}),
      ...(options.serverSideEncryption
        ? { ServerSideEncryption: options.serverSideEncryption as ServerSideEncryption }
        : {}),
      ...(options.kmsKeyId ? { SSEKMSKeyId: options.kmsKeyId } : {}),
    };

    const checksumSetting = checksum === "when_required" ? "WHEN_REQUIRED" : "WHEN_SUPPORTED";
    const config: S3ClientConfig = {
      region,
      ...(options.endpoint ? { endpoint: options.endpoint } : { followRegionRedirects: true }),
      ...(options.forcePathStyle === undefined ? {} : { forcePathStyle: options.forcePathStyle }),
      ...(credentials ? { credentials } : {}),
      ...(options.profile ? { profile: options.profile } : {}),
      requestChecksumCalculation: checksumSetting,
      responseChecksumValidation: checksumSetting,
      maxAttempts,
      retryStrategy: new BackoffRetryStrategy({ maxAttempts, baseDelayMs: retryBaseDelay, maxDelayMs: retryMaxDelay }),
      requestHandler: {
        // Idle time, not total time: a large part on a slow link may take long but keeps moving.
        connectionTimeout: requestTimeout,
        socketTimeout: requestTimeout,
        httpAgent: { keepAlive: true, maxSockets: Math.max(16, this.#queueSize * 2) },
        httpsAgent: { keepAlive: true, maxSockets: Math.max(16, this.#queueSize * 2) },
      },
      customUserAgent: "lifeboat-storage-s3",
    };
    this.#client = new S3Client(config);
    // Innermost step: runs once per attempt, so retries are counted as the requests they are.
    this.#client.middlewareStack.add(
      (next, context) => async (args) => {
        const kind = KIND_OF_COMMAND[context.commandName ?? ""];
        if (kind) this.#counts[kind]++;
        return next(args);
      },
      { step: "deserialize", name: "lifeboatRequestCounter", priority: "low" },
    );
  }

  requestCounts(): S3RequestCounts {
    return { ...this.#counts };
  }

  pendingAborts(): number {
    return this.#pendingAborts.length;
  }

  /**
   * Checks the bucket exists and the credentials may use it (HeadBucket; on a bare 403, a one-key
   * listing of the prefix says why). Idempotent.
   */
  async init(options: CallOptions = {}): Promise<void> {
    this.#checkOpen();
    const { signal } = options;
    try {
      await this.#send(new HeadBucketCommand({ Bucket: this.bucket }), signal);
    } catch (error) {
      if (httpStatus(error) !== 403 || signal?.aborted) throw this.#error(error, "init", undefined, signal);
      // A HEAD response has no body, so a 403 does not say why. A one-key listing does
      // (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied), and is what a backup needs anyway.
      try {
        await this.#send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            MaxKeys: 1,
            ...(this.prefix ? { Prefix: this.#keyPrefix } : {}),
          }),
          signal,
        );
      } catch (detailed) {
        throw this.#error(detailed, "init", undefined, signal);
      }
      // Listing is allowed though HeadBucket is not (a policy scoped to the prefix): usable.
    }
  }

  /** Aborts multipart uploads left by failed puts if it can, then releases the connections. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.#flushing;
    await this.#flushPendingAborts();
    this.#closed = true;
    this.#client.destroy();
  }

  /**
   * One PutObject for a known length up to `partSize` (a stream of that length is read into one
   * buffer first, so the SDK can retry it), else a multipart upload. With `ifNoneMatch: "*"` the
   * request carries `If-None-Match: *` and a 412 becomes `PreconditionFailedError`.
   */
  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    this.#checkOpen();
    assertValidKey(key, PLUGIN);
    const { signal, contentLength } = options;
    assertPutArguments(key, body, contentLength, PLUGIN);
    try {
      this.#throwIfAborted(signal, "put", key);
      // In the background: a put must not wait for (or fail on) another upload's cleanup.
      void this.#flushPendingAborts();
      const params: PutObjectCommandInput = {
        Bucket: this.bucket,
        Key: this.#objectKey(key),
        ContentType: "application/octet-stream",
        ...this.#writeParams,
        ...(options.metadata && Object.keys(options.metadata).length > 0 ? { Metadata: { ...options.metadata } } : {}),
        ...(options.ifNoneMatch === "*" ? { IfNoneMatch: "*" } : {}),
      };
      if (body instanceof Uint8Array) {
        if (contentLength !== undefined && contentLength !== body.byteLength) {
          throw this.#lengthMismatch(key, contentLength, body.byteLength);
        }
        if (body.byteLength <= this.#partSize) return await this.#putOnce(key, params, body, signal);
        return await this.#putMultipart(key, params, body, signal, contentLength);
      }
      if (contentLength !== undefined && contentLength <= this.#partSize) {
        const bytes = await this.#readExactly(key, body, contentLength, signal);
        return await this.#putOnce(key, params, bytes, signal);
      }
      return await this.#putMultipart(key, params, body, signal, contentLength);
    } catch (error) {
      throw this.#error(error, "put", key, signal);
    }
  }

  /**
   * GetObject, with `Range: bytes=a-b` for a range. `size` is the whole object's (from
   * Content-Range). The body is the response stream: read it or `return()` it to free the socket.
   * With `readConcurrency` > 1, a whole object of two parts or more is read in parallel parts
   * instead (see `#partsBody`).
   */
  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    this.#checkOpen();
    assertValidKey(key, PLUGIN);
    const { signal, range } = options;
    if (range !== undefined) checkRange(range, key);
    try {
      this.#throwIfAborted(signal, "get", key);
      if (range?.length === 0) return await this.#emptyRange(key, range, signal);
      const whole = range === undefined || (range.offset === 0 && range.length === undefined);
      const header = whole
        ? undefined
        : `bytes=${range.offset}-${range.length === undefined ? "" : range.offset + range.length - 1}`;
      let out: GetObjectCommandOutput;
      try {
        out = await this.#send<GetObjectCommandOutput>(
          new GetObjectCommand({
            Bucket: this.bucket,
            Key: this.#objectKey(key),
            ...(header ? { Range: header } : {}),
          }),
          signal,
        );
      } catch (error) {
        // 416: the range starts at or past the end. At the end is a valid, empty read.
        if (range !== undefined && (httpStatus(error) === 416 || s3Code(error) === "InvalidRange")) {
          return await this.#emptyRange(key, range, signal);
        }
        throw error;
      }
      const size = totalFromContentRange(out.ContentRange) ?? Number(out.ContentLength ?? 0);
      const stream = out.Body as unknown as ResponseStream;
      const readPart = Math.min(this.#partSize, MAX_READ_PART_SIZE);
      const parallel = this.#readConcurrency > 1 && whole && out.ContentRange === undefined && size >= 2 * readPart;
      return {
        key,
        size,
        lastModified: out.LastModified ?? new Date(0),
        ...(out.ETag ? { etag: out.ETag as string } : {}),
        ...metadataOf(out.Metadata),
        body: parallel
          ? this.#partsBody(key, stream, size, readPart, out.ETag, signal)
          : this.#wrapBody(stream, key, signal),
      };
    } catch (error) {
      throw this.#error(error, "get", key, signal);
    }
  }

  /** HeadObject: size, time, ETag and user metadata. */
  async head(key: string, options: CallOptions = {}): Promise<ObjectInfo> {
    this.#checkOpen();
    assertValidKey(key, PLUGIN);
    const { signal } = options;
    try {
      this.#throwIfAborted(signal, "head", key);
      const out = await this.#send<HeadObjectCommandOutput>(
        new HeadObjectCommand({ Bucket: this.bucket, Key: this.#objectKey(key) }),
        signal,
      );
      return {
        key,
        size: Number(out.ContentLength ?? 0),
        lastModified: out.LastModified ?? new Date(0),
        ...(out.ETag ? { etag: out.ETag } : {}),
        ...metadataOf(out.Metadata),
      };
    } catch (error) {
      throw this.#error(error, "head", key, signal);
    }
  }

  /**
   * ListObjectsV2 pages (1000 keys each) under `<prefix>/<prefix argument>`, in the order S3
   * returns them (ascending UTF-8 bytes). Keys are asked URL-encoded so any character survives the
   * XML. Objects whose names are not valid keys (folder markers ending in `/`) are skipped.
   */
  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    this.#checkOpen();
    if (typeof prefix !== "string") {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "The list prefix must be a string.", {
        plugin: PLUGIN,
        operation: "list",
        hint: 'Pass "" to list everything.',
      });
    }
    const { signal, startAfter } = options;
    const fullPrefix = this.#keyPrefix + prefix;
    const after = startAfter === undefined || startAfter === "" ? undefined : this.#keyPrefix + startAfter;
    let token: string | undefined;
    try {
      this.#throwIfAborted(signal, "list");
      do {
        const out = await this.#send<ListObjectsV2CommandOutput>(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            ...(fullPrefix ? { Prefix: fullPrefix } : {}),
            ...(after && !token ? { StartAfter: after } : {}),
            ...(token ? { ContinuationToken: token } : {}),
            EncodingType: "url",
          }),
          signal,
        );
        for (const object of out.Contents ?? []) {
          if (object.Key === undefined) continue;
          const full = decodeListedKey(object.Key);
          if (!full.startsWith(this.#keyPrefix)) continue;
          const key = full.slice(this.#keyPrefix.length);
          if (!isValidKey(key)) continue;
          this.#throwIfAborted(signal, "list");
          yield {
            key,
            size: Number(object.Size ?? 0),
            lastModified: object.LastModified ?? new Date(0),
            ...(object.ETag ? { etag: object.ETag } : {}),
          };
        }
        token = out.IsTruncated ? out.NextContinuationToken : undefined;
      } while (token);
    } catch (error) {
      throw this.#error(error, "list", undefined, signal);
    }
  }

  /**
   * DeleteObjects in batches of 1000 keys (a few batches at once). S3 answers 200 even when some
   * keys failed; those per-key errors are checked, and any makes the call throw naming the keys
   * (`PERMISSION_DENIED` if one was AccessDenied, else `STORAGE_ERROR`). Missing keys are not errors.
   */
  async delete(keys: readonly string[], options: CallOptions = {}): Promise<void> {
    this.#checkOpen();
    for (const key of keys) assertValidKey(key, PLUGIN);
    const { signal } = options;
    const unique = [...new Set(keys)];
    const batches: string[][] = [];
    for (let i = 0; i < unique.length; i += DELETE_BATCH_SIZE) batches.push(unique.slice(i, i + DELETE_BATCH_SIZE));
    const failed: { key: string; code: string; message: string }[] = [];
    try {
      this.#throwIfAborted(signal, "delete");
      await forEachLimit(batches, DELETE_CONCURRENCY, async (batch) => {
        const out = await this.#send<DeleteObjectsCommandOutput>(
          new DeleteObjectsCommand({
            Bucket: this.bucket,
            Delete: { Objects: batch.map((key) => ({ Key: this.#objectKey(key) })), Quiet: true },
          }),
          signal,
        );
        for (const error of out.Errors ?? []) {
          if (error.Code === "NoSuchKey") continue;
          const full = error.Key ?? "";
          failed.push({
            key: full.startsWith(this.#keyPrefix) ? full.slice(this.#keyPrefix.length) : full,
            code: error.Code ?? "Unknown",
            message: error.Message ?? "",
          });
        }
      });
    } catch (error) {
      throw this.#error(error, "delete", undefined, signal);
    }
    if (failed.length > 0) {
      const shown = failed
        .slice(0, 5)
        .map((f) => `"${f.key}" (${f.code}${f.message ? `: ${this.#redact(f.message)}` : ""})`)
        .join(", ");
      const more = failed.length > 5 ? ` and ${failed.length - 5} more` : "";
      const denied = failed.some((f) => f.code === "AccessDenied");
      throw new LifeboatError(
        denied ? ErrorCodes.PERMISSION_DENIED : ErrorCodes.STORAGE_ERROR,
        `Could not delete ${failed.length} of ${unique.length} objects from ${this.location}: ${shown}${more}. The others were deleted.`,
        {
          plugin: PLUGIN,
          operation: "delete",
          details: {
            bucket: this.bucket,
            prefix: this.prefix,
            failed: failed.slice(0, 100).map(({ key, code }) => ({ key, code })),
          },
          hint: denied
            ? "The credentials (or a bucket policy) do not allow deleting these objects; grant s3:DeleteObject on the prefix."
            : "Run the operation again; deletes are idempotent.",
        },
      );
    }
  }

  // ---- writes ----

  async #putOnce(
    key: string,
    params: PutObjectCommandInput,
    bytes: Uint8Array,
    signal?: AbortSignal,
  ): Promise<ObjectInfo> {
    try {
      const out = await this.#send<PutObjectCommandOutput>(
        new PutObjectCommand({ ...params, Body: bytes, ContentLength: bytes.byteLength }),
        signal,
      );
      return { key, size: bytes.byteLength, lastModified: new Date(), ...(out.ETag ? { etag: out.ETag } : {}) };
    } catch (error) {
      if (!isPreconditionFailed(error)) throw error;
      // A retried conditional put may have succeeded the first time and met itself: if the stored
      // object has our bytes' MD5 as its ETag, the put did happen.
      const attempts = (error as { $metadata?: { attempts?: number } }).$metadata?.attempts ?? 1;
      if (attempts > 1) {
        const md5 = `"${createHash("md5").update(bytes).digest("hex")}"`;
        const stored = await this.#send<HeadObjectCommandOutput>(
          new HeadObjectCommand({ Bucket: this.bucket, Key: params.Key }),
          signal,
        ).catch(() => undefined);
        if (stored?.ETag === md5) {
          return { key, size: bytes.byteLength, lastModified: stored.LastModified ?? new Date(), etag: md5 };
        }
      }
      throw existsError(this.#facts, key);
    }
  }

  /**
   * Multipart upload through lib-storage. lib-storage sends its requests without our signal and,
   * when a part fails, keeps the other part uploaders going; so it gets a client wrapper that adds
   * the signal to every request and stops the rest at the first failure, and that records an
   * AbortMultipartUpload the server could not be reached for, to retry later.
   */
  async #putMultipart(
    key: string,
    params: PutObjectCommandInput,
    body: Uint8Array | AsyncIterable<Uint8Array>,
    signal: AbortSignal | undefined,
    contentLength: number | undefined,
  ): Promise<ObjectInfo> {
    if (params.IfNoneMatch === "*") {
      // Servers that ignore If-None-Match on CompleteMultipartUpload (radosgw 16) would overwrite.
      const exists = await this.#send(new HeadObjectCommand({ Bucket: this.bucket, Key: params.Key }), signal).then(
        () => true,
        (error: unknown) => {
          if (isNotFound(error)) return false;
          throw error;
        },
      );
      if (exists) throw existsError(this.#facts, key);
    }
    const stop = new AbortController();
    // Every request of the upload listens to it (ours and the SDK's listener): more than Node's
    // default of 10 with a large queueSize.
    setMaxListeners(8 * this.#queueSize + 16, stop.signal);
    const onAbort = () => stop.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    let firstFailure: { error: unknown } | undefined;
    const fail = (error: unknown) => {
      firstFailure ??= { error };
      stop.abort(error);
    };
    let size = 0;
    let source: Uint8Array | Readable;
    if (body instanceof Uint8Array) {
      source = body;
      size = body.byteLength;
    } else {
      const counted = this.#copiedChunks(key, body, stop.signal, contentLength, fail, (n) => {
        size = n;
      });
      source = Readable.from(counted, { objectMode: true, highWaterMark: 1 });
    }
    const upload = new Upload({
      client: this.#uploadClient(stop.signal, fail),
      params: { ...params, Body: source },
      partSize: this.#partSize,
      queueSize: this.#queueSize,
      leavePartsOnError: false,
    });
    try {
      const out = await upload.done();
      if (signal?.aborted) throw signal.reason ?? new Error("aborted");
      return { key, size, lastModified: new Date(), ...(out.ETag ? { etag: out.ETag } : {}) };
    } catch (error) {
      if (signal?.aborted) throw Object.assign(new Error("aborted"), { name: "AbortError" });
      const reported = firstFailure?.error ?? error;
      if (isPreconditionFailed(reported)) throw existsError(this.#facts, key);
      throw reported;
    } finally {
      signal?.removeEventListener("abort", onAbort);
      if (source instanceof Readable) source.destroy();
    }
  }

  #uploadClient(stopSignal: AbortSignal, fail: (error: unknown) => void): S3Client {
    const client = this.#client;
    const send = async (command: any, options?: object) => {
      if (command instanceof AbortMultipartUploadCommand) {
        // Sent even after an abort: it is the cleanup. If the server is unreachable, retry later.
        try {
          return await client.send(command);
        } catch (error) {
          if (!isNotFound(error)) this.#pendingAborts.push(command.input);
          return {};
        }
      }
      if (stopSignal.aborted) throw abortErrorFrom(stopSignal);
      try {
        return await raceAbort(client.send(command, { ...options, abortSignal: stopSignal }), stopSignal);
      } catch (error) {
        if (!stopSignal.aborted) fail(error);
        throw error;
      }
    };
    return { config: client.config, send } as unknown as S3Client;
  }

  /**
   * The body as copies of its chunks (lib-storage keeps references until a part is full, and a
   * producer may reuse its buffer), checked against `contentLength`, and ended early by `signal`
   * even while the producer stalls.
   */
  async *#copiedChunks(
    key: string,
    body: AsyncIterable<Uint8Array>,
    signal: AbortSignal,
    contentLength: number | undefined,
    fail: (error: unknown) => void,
    onSize: (bytes: number) => void,
  ): AsyncGenerator<Buffer> {
    const iterator = body[Symbol.asyncIterator]();
    let total = 0;
    let finished = false;
    try {
      for (;;) {
        const next = await raceAbort(iterator.next(), signal);
        if (next.done) {
          finished = true;
          break;
        }
        const chunk: unknown = next.value;
        if (!(chunk instanceof Uint8Array)) throw chunkTypeError(chunk);
        total += chunk.byteLength;
        onSize(total);
        if (contentLength !== undefined && total > contentLength) throw this.#lengthMismatch(key, contentLength, total);
        if (chunk.byteLength > 0) yield Buffer.from(chunk);
      }
      if (contentLength !== undefined && total !== contentLength) throw this.#lengthMismatch(key, contentLength, total);
    } catch (error) {
      if (!signal.aborted) fail(error);
      throw error;
    } finally {
      if (!finished) void Promise.resolve(iterator.return?.()).catch(() => undefined);
    }
  }

  /** Reads a stream of declared length `length` into one buffer; fails if it is longer or shorter. */
  async #readExactly(
    key: string,
    body: AsyncIterable<Uint8Array>,
    length: number,
    signal: AbortSignal | undefined,
  ): Promise<Buffer> {
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    const iterator = body[Symbol.asyncIterator]();
    let finished = false;
    try {
      for (;;) {
        const next = signal ? await raceAbort(iterator.next(), signal) : await iterator.next();
        if (next.done) {
          finished = true;
          break;
        }
        const chunk: unknown = next.value;
        if (!(chunk instanceof Uint8Array)) throw chunkTypeError(chunk);
        if (filled + chunk.byteLength > length) throw this.#lengthMismatch(key, length, filled + chunk.byteLength);
        out.set(chunk, filled);
        filled += chunk.byteLength;
      }
    } finally {
      if (!finished) void Promise.resolve(iterator.return?.()).catch(() => undefined);
    }
    if (filled !== length) throw this.#lengthMismatch(key, length, filled);
    return out;
  }

  /** Aborts the recorded multipart uploads (one pass at a time); keeps those it cannot reach. */
  #flushPendingAborts(): Promise<void> {
    if (this.#pendingAborts.length === 0) return Promise.resolve();
    this.#flushing ??= (async () => {
      try {
        for (const input of [...this.#pendingAborts]) {
          try {
            await this.#send(new AbortMultipartUploadCommand(input));
          } catch (error) {
            if (!isNotFound(error)) return; // still unreachable: keep them for next time
          }
          this.#pendingAborts.splice(this.#pendingAborts.indexOf(input), 1);
        }
      } finally {
        this.#flushing = undefined;
      }
    })();
    return this.#flushing;
  }

  // ---- reads ----

  async #emptyRange(key: string, range: ByteRange, signal: AbortSignal | undefined): Promise<GetResult> {
    const info = await this.head(key, signal ? { signal } : {});
    if (range.offset > info.size) {
      throw new LifeboatError(
        ErrorCodes.INVALID_ARGUMENT,
        `The range starting at byte ${range.offset} is past the end of "${key}" (${info.size} bytes) in ${this.location}.`,
        {
          plugin: PLUGIN,
          operation: "get",
          details: { key, size: info.size, range },
          hint: "Ask for a range inside the object.",
        },
      );
    }
    return { ...info, body: Readable.from([]) };
  }

  /**
   * A large object's bytes in order, read as ranged GETs of `partSize` bytes with
   * `readConcurrency` of them in flight while the caller consumes the previous one. On a link
   * with high latency one stream is bound by its TCP window; several keep it busy (as rclone and
   * the AWS CLI do). On a fast local link one stream is as fast, and cheaper in CPU. The first part comes from the response
   * already open (then closed); the others carry `If-Match: <etag>`, so an object replaced
   * mid-read fails instead of mixing versions. A part whose body breaks off is fetched again (up
   * to `maxAttempts`; the SDK retries failed requests itself). Memory: about
   * (readConcurrency + 1) parts. Errors are mapped as for one stream; the signal, and leaving the loop early, stop
   * every request in flight.
   */
  async *#partsBody(
    key: string,
    lead: ResponseStream,
    size: number,
    partSize: number,
    etag: string | undefined,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Uint8Array> {
    const count = Math.ceil(size / partSize);
    const stop = new AbortController();
    // Each part's request and body reader listen to it: more than Node's default of 10.
    setMaxListeners(8 * this.#readConcurrency + 16, stop.signal);
    const onAbort = () => stop.abort(signal?.reason);
    signal?.addEventListener("abort", onAbort, { once: true });
    const parts: (Promise<Uint8Array[]> | undefined)[] = [];
    let started = 0;
    const startNext = () => {
      const index = started++;
      const offset = index * partSize;
      const length = Math.min(partSize, size - offset);
      const part =
        index === 0
          ? readPart(lead, length, stop.signal, true).catch((error: unknown) => {
              if (stop.signal.aborted) throw error;
              return this.#fetchPart(key, offset, length, size, etag, stop.signal);
            })
          : this.#fetchPart(key, offset, length, size, etag, stop.signal);
      part.catch(() => undefined); // awaited in order below; a later part's failure waits its turn
      parts[index] = part;
    };
    try {
      this.#throwIfAborted(signal, "get", key);
      for (let index = 0; index < count; index++) {
        // `readConcurrency` parts in flight while the caller works on this one.
        while (started < count && started <= index + this.#readConcurrency) startNext();
        const part = await raceAbort(parts[index]!, stop.signal);
        parts[index] = undefined;
        for (const chunk of part) {
          this.#throwIfAborted(signal, "get", key);
          yield chunk;
        }
      }
    } catch (error) {
      throw this.#error(error, "get", key, signal);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      stop.abort();
      lead.destroy?.();
    }
  }

  /** One ranged GET read whole (exactly `length` bytes, as received); a body cut short is fetched again. */
  async #fetchPart(
    key: string,
    offset: number,
    length: number,
    size: number,
    etag: string | undefined,
    signal: AbortSignal,
  ): Promise<Uint8Array[]> {
    for (let attempt = 1; ; attempt++) {
      const out = await this.#send<GetObjectCommandOutput>(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.#objectKey(key),
          Range: `bytes=${offset}-${offset + length - 1}`,
          ...(etag ? { IfMatch: etag } : {}),
        }),
        signal,
      ).catch((error: unknown) => {
        if (isPreconditionFailed(error) && !signal.aborted) throw this.#changedWhileReading(key, error);
        throw error;
      });
      const total = totalFromContentRange(out.ContentRange);
      if (total !== size) {
        (out.Body as unknown as ResponseStream | undefined)?.destroy?.();
        if (total !== undefined) throw this.#changedWhileReading(key, undefined, { size, now: total });
        throw new LifeboatError(
          ErrorCodes.STORAGE_ERROR,
          `The S3 server ignored the Range header while reading "${key}" in ${this.location}; the get failed.`,
          {
            plugin: PLUGIN,
            operation: "get",
            details: { key, range: { offset, length } },
            hint: "Lifeboat reads large objects in ranged parts; use a server that supports Range requests.",
          },
        );
      }
      try {
        return await readPart(out.Body as unknown as ResponseStream, length, signal, false);
      } catch (error) {
        if (signal.aborted || attempt >= this.#maxAttempts) throw error;
      }
    }
  }

  #changedWhileReading(key: string, cause: unknown, details: Record<string, unknown> = {}): LifeboatError {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `The object "${key}" in ${this.location} was replaced while it was being read; the get failed.`,
      {
        plugin: PLUGIN,
        operation: "get",
        details: { key, ...details },
        ...(cause === undefined ? {} : { cause }),
        hint: "Something else writes to this key; read it again once the writer is done.",
      },
    );
  }

  /** The response stream, with errors mapped, the signal honoured, and the socket freed on early exit. */
  async *#wrapBody(
    stream: AsyncIterable<Uint8Array> & { destroy?(error?: Error): void },
    key: string,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Uint8Array> {
    const onAbort = () => stream.destroy?.(abortErrorFrom(signal!));
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      this.#throwIfAborted(signal, "get", key);
      for await (const chunk of stream) {
        this.#throwIfAborted(signal, "get", key);
        yield chunk;
      }
    } catch (error) {
      throw this.#error(error, "get", key, signal);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      stream.destroy?.();
    }
  }

  // ---- plumbing ----

  #objectKey(key: string): string {
    return this.#keyPrefix + key;
  }

  /** Sends a command with the signal; rejects as soon as the signal aborts (even during a retry delay). */
  async #send<T = unknown>(command: unknown, signal?: AbortSignal): Promise<T> {
    if (signal?.aborted) throw abortErrorFrom(signal);
    const sent = this.#client.send(command as any, signal ? { abortSignal: signal } : {}) as Promise<T>;
    return signal ? raceAbort(sent, signal) : sent;
  }

  #throwIfAborted(signal: AbortSignal | undefined, operation: string, key?: string): void {
    if (signal?.aborted) throw this.#error(abortErrorFrom(signal), operation, key, signal);
  }

  #error(error: unknown, operation: string, key: string | undefined, signal: AbortSignal | undefined): LifeboatError {
    if (
      (operation === "get" || operation === "head") &&
      key !== undefined &&
      !(error instanceof LifeboatError) &&
      !signal?.aborted &&
      isNotFound(error)
    ) {
      return notFoundError(this.#facts, key, operation);
    }
    return toLifeboatError(error, this.#facts, {
      operation,
      ...(key === undefined ? {} : { key }),
      ...(signal ? { signal } : {}),
    });
  }

  #redact(text: string): string {
    let out = text;
    for (const secret of this.#facts.secrets) out = out.split(secret).join("***");
    return out;
  }

  #lengthMismatch(key: string, declared: number, received: number): LifeboatError {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `${
        received > declared
          ? `The body for "${key}" is longer than contentLength (${declared} bytes)`
          : `The body for "${key}" has ${received} bytes but contentLength said ${declared}`
      }; nothing was stored in ${this.location}.`,
      {
        plugin: PLUGIN,
        operation: "put",
        details: { key, contentLength: declared, received },
        hint: "Pass the exact length of the body as contentLength, or omit it.",
      },
    );
  }

  #checkOpen(): void {
    if (this.#closed) {
      throw new LifeboatError(ErrorCodes.STORAGE_ERROR, `The S3 target ${this.location} was closed.`, {
        plugin: PLUGIN,
        hint: "Create a new target; a closed one cannot be used again.",
      });
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Options

function resolveCredentials(
  options: S3StorageOptions,
  env: Readonly<Record<string, string | undefined>>,
): { accessKeyId: string; secretAccessKey: string; sessionToken?: string } | undefined {
  const fromEnv = (field: string, name: string | undefined): string | undefined => {
    if (name === undefined) return undefined;
    const value = env[name];
    if (value === undefined || value === "") {
      throw new LifeboatError(
        ErrorCodes.CONFIG_INVALID,
        `${field}: the environment variable ${name} is not set (it should hold the S3 ${field.replace(/Env$/, "")}).`,
        {
          plugin: PLUGIN,
          hint: `Export ${name} before running Lifeboat, or correct ${field} in the target's options.`,
        },
      );
    }
    return value;
  };
  for (const [literal, named] of [
    ["accessKeyId", "accessKeyIdEnv"],
    ["secretAccessKey", "secretAccessKeyEnv"],
    ["sessionToken", "sessionTokenEnv"],
  ] as const) {
    if (options[literal] !== undefined && options[named] !== undefined) {
      throw invalidOption(literal, `and ${named} are both given; use one`);
    }
  }
  const accessKeyId = options.accessKeyId ?? fromEnv("accessKeyIdEnv", options.accessKeyIdEnv);
  const secretAccessKey = options.secretAccessKey ?? fromEnv("secretAccessKeyEnv", options.secretAccessKeyEnv);
  const sessionToken = options.sessionToken ?? fromEnv("sessionTokenEnv", options.sessionTokenEnv);
  if (accessKeyId === undefined && secretAccessKey === undefined) {
    if (sessionToken !== undefined) throw invalidOption("sessionToken", "needs an access key ID and secret access key");
    return undefined; // the SDK's default provider chain
  }
  if (accessKeyId === undefined || secretAccessKey === undefined) {
    throw invalidOption(
      accessKeyId === undefined ? "accessKeyId" : "secretAccessKey",
      "is missing: give both the access key ID and the secret access key (or neither, to use the default AWS credential chain)",
    );
  }
  return { accessKeyId, secretAccessKey, ...(sessionToken ? { sessionToken } : {}) };
}

function checkBucket(bucket: unknown): string {
  if (typeof bucket !== "string" || !/^[a-zA-Z0-9][a-zA-Z0-9._-]{1,254}$/.test(bucket)) {
    throw invalidOption(
      "bucket",
      `must be a bucket name (3 or more letters, digits, '.', '-', '_'), got ${JSON.stringify(bucket)}`,
    );
  }
  return bucket;
}

/** Strips surrounding slashes; the rest must be a valid key (no empty, `.` or `..` segments). */
export function normalisePrefix(prefix: string | undefined): string {
  if (prefix === undefined) return "";
  const trimmed = prefix.replace(/^\/+|\/+$/g, "");
  if (trimmed !== "" && !isValidKey(trimmed)) {
    throw invalidOption(
      "prefix",
      `must be '/'-separated names without empty, '.' or '..' segments, got ${JSON.stringify(prefix)}`,
    );
  }
  return trimmed;
}

/** Validates an endpoint URL and returns it for display: no user info, query or trailing slash. */
function checkEndpoint(endpoint: string): string {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw invalidOption(
      "endpoint",
      `must be a URL like https://s3.example.com or http://127.0.0.1:7480, got ${JSON.stringify(endpoint)}`,
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalidOption("endpoint", `must be an http:// or https:// URL, got ${url.protocol}`);
  }
  if (url.username || url.password) {
    throw invalidOption("endpoint", "must not contain credentials; use accessKeyIdEnv/secretAccessKeyEnv");
  }
  return `${url.origin}${url.pathname === "/" ? "" : url.pathname.replace(/\/+$/, "")}`;
}

function checkInteger(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw invalidOption(name, `must be a whole number from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

function invalidOption(name: string, problem: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `S3 storage option ${name} ${problem}.`, {
    plugin: PLUGIN,
    hint: "See the @lifeboat/storage-s3 README for its options.",
  });
}

function checkRange(range: ByteRange, key: string): void {
  const ok =
    Number.isSafeInteger(range.offset) &&
    range.offset >= 0 &&
    (range.length === undefined || (Number.isSafeInteger(range.length) && range.length >= 0));
  if (!ok) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `Invalid range for "${key}": offset and length must be non-negative integers, got ${JSON.stringify(range)}.`,
      { plugin: PLUGIN, operation: "get", hint: "Pass { offset, length? } in bytes." },
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** `bytes 0-99/1234` -> 1234. */
export function totalFromContentRange(header: string | undefined): number | undefined {
  const match = header ? /\/(\d+)\s*$/.exec(header) : null;
  return match ? Number(match[1]) : undefined;
}

/**
 * Keys listed with `encoding-type=url` are percent-encoded; AWS encodes a space as `+` (and a
 * literal `+` as `%2B`), so `+` decodes to a space.
 */
export function decodeListedKey(encoded: string): string {
  return decodeURIComponent(encoded.replace(/\+/g, " "));
}

function metadataOf(metadata: Record<string, string> | undefined): { metadata?: Record<string, string> } {
  return metadata && Object.keys(metadata).length > 0 ? { metadata } : {};
}

function isValidKey(key: string): boolean {
  try {
    assertValidKey(key);
    return true;
  } catch {
    return false;
  }
}

function chunkTypeError(chunk: unknown): LifeboatError {
  return new LifeboatError(
    ErrorCodes.INVALID_ARGUMENT,
    `A body chunk is a ${typeof chunk}, not a Uint8Array; nothing was stored.`,
    {
      plugin: PLUGIN,
      operation: "put",
      hint: "Yield Buffers or Uint8Arrays (a Node Readable without setEncoding does).",
    },
  );
}

/** A GetObject response body (a Node `IncomingMessage`, possibly wrapped by the SDK). */
type ResponseStream = AsyncIterable<Uint8Array> & { destroy?(error?: Error): void };

/**
 * The first `length` bytes of `stream`, as the chunks received (not copied: they are fresh
 * buffers), then the stream is destroyed (its socket with it when bytes remain). Fails if the
 * stream ends sooner, or (unless `prefix`) has more. `signal` ends the read at once.
 */
async function readPart(
  stream: ResponseStream,
  length: number,
  signal: AbortSignal,
  prefix: boolean,
): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  let filled = 0;
  const onAbort = () => stream.destroy?.(abortErrorFrom(signal));
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    if (signal.aborted) throw abortErrorFrom(signal);
    for await (const chunk of stream) {
      const take = Math.min(chunk.byteLength, length - filled);
      if (take < chunk.byteLength && !prefix) throw shortBody(length, filled + chunk.byteLength);
      if (take > 0) chunks.push(take === chunk.byteLength ? chunk : chunk.subarray(0, take));
      filled += take;
      // A prefix stops here (the rest is not wanted); a whole body is read to its end, which
      // keeps the connection reusable.
      if (filled === length && prefix) break;
    }
    if (signal.aborted) throw abortErrorFrom(signal);
  } finally {
    signal.removeEventListener("abort", onAbort);
    stream.destroy?.();
  }
  if (filled !== length) throw shortBody(length, filled);
  return chunks;
}

/** A body of the wrong length: a connection cut short (retried as a reset would be). */
function shortBody(expected: number, received: number): Error {
  return Object.assign(new Error(`The response body has ${received} bytes, ${expected} were expected.`), {
    code: "ECONNRESET",
  });
}

function abortErrorFrom(signal: AbortSignal): Error {
  return Object.assign(new Error("The operation was aborted."), { name: "AbortError", cause: signal.reason });
}

/** Rejects as soon as `signal` aborts, without waiting for `promise` (which is left to settle). */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(abortErrorFrom(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => undefined);
      reject(abortErrorFrom(signal));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
