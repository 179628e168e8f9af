/**
 * The storage contract. A `StorageTarget` is a dumb, stateless object store: a flat key space
 * with `/` as separator and no notion of directories. Core builds everything (repositories,
 * generations, snapshots, segments, leases) on top of these few methods.
 *
 * Keys are UTF-8 strings of segments separated by `/`. A valid key is non-empty, does not start
 * or end with `/`, has no empty, `.` or `..` segment, and contains no NUL or backslash.
 * Targets reject anything else with an `INVALID_KEY` error (see `assertValidKey`). A key may not
 * also be the `/`-prefix of another key (`a` beside `a/b`): file-system targets cannot store both
 * and may reject such a put with `INVALID_KEY` (Lifeboat's own layout never needs it).
 */
import { ErrorCodes, LifeboatError } from "./errors.js";

/** The version of this contract a target implements. Core refuses targets of a newer major. */
export const STORAGE_API_VERSION = 1 as const;

/** A body to store: bytes in memory, or a stream of chunks (e.g. a Node `Readable`). */
export type Body = Uint8Array | AsyncIterable<Uint8Array>;

export interface StorageCapabilities {
  /** `put(..., { ifNoneMatch: "*" })` is atomic: exactly one of two racing creators wins. */
  readonly conditionalCreate: boolean;
  /** `get(key, { range })` reads part of an object without transferring the rest. */
  readonly rangeReads: boolean;
  /** The target can make objects immutable for a retention period (e.g. S3 Object Lock). */
  readonly objectLock: boolean;
  /** `put` stores `metadata` and `head`/`get` return it (listings need not). */
  readonly metadata: boolean;
}

export interface ObjectInfo {
  readonly key: string;
  /** Size in bytes of the stored object. */
  readonly size: number;
  readonly lastModified: Date;
  /** Opaque version tag, when the target has one. */
  readonly etag?: string;
  /** User metadata given to `put`, when the target supports it (lower-case keys). */
  readonly metadata?: Readonly<Record<string, string>>;
}

export interface CallOptions {
  /** Aborting rejects the call with an `ABORTED` error and leaves no partial object. */
  readonly signal?: AbortSignal;
}

export interface PutOptions extends CallOptions {
  /** `"*"`: create only if the key does not exist, else throw `PreconditionFailedError`. */
  readonly ifNoneMatch?: "*";
  /**
   * The exact body length when known; lets targets pick a single-request upload. If the body's
   * length differs, `put` fails and stores nothing.
   */
  readonly contentLength?: number;
  /** Small string metadata (keys lower-case ASCII). Stored only with the `metadata` capability. */
  readonly metadata?: Readonly<Record<string, string>>;
}

/** A range past the end fails with `INVALID_ARGUMENT`; an offset equal to the size yields an empty body. */
export interface ByteRange {
  /** First byte, 0-based. */
  readonly offset: number;
  /** Number of bytes; to the end of the object when omitted. */
  readonly length?: number;
}

export interface GetOptions extends CallOptions {
  /** Part of the object. Targets without `rangeReads` must still honour it (by skipping). */
  readonly range?: ByteRange;
}

/** `size` is the whole object's size, also when a range was asked. */
export interface GetResult extends ObjectInfo {
  /** The bytes (of the range, if one was asked). Consume it or call `return()` to release. */
  readonly body: AsyncIterable<Uint8Array>;
}

export interface ListOptions extends CallOptions {
  /** Only keys strictly after this one (lexicographic by UTF-8 bytes). */
  readonly startAfter?: string;
}

export interface StorageTarget {
  /** The storage contract version this target implements. */
  readonly apiVersion: typeof STORAGE_API_VERSION;
  /** The plugin name (`local`, `s3`, or a package name). */
  readonly type: string;
  /** A human-readable location without secrets, e.g. `/var/backups/app` or `s3://bucket/prefix`. */
  readonly location: string;
  readonly capabilities: StorageCapabilities;

  /**
   * Prepares the target (creates the directory, checks the bucket). Idempotent. Throws a
   * `STORAGE_ERROR`/`PERMISSION_DENIED` error with a hint when the target is unusable.
   */
  init?(options?: CallOptions): Promise<void>;

  /** Releases connections and handles. Idempotent; the target is unusable afterwards. */
  close?(): Promise<void>;

  /**
   * Stores `body` at `key`, replacing any existing object unless `ifNoneMatch` is `"*"`.
   * Atomic: readers see the old object or the complete new one, never a partial one, and a
   * failed or aborted put leaves no object behind (and the old one, if any, intact).
   * Durable when it resolves. Not idempotent with `ifNoneMatch` (the second call throws
   * `PreconditionFailedError`); otherwise idempotent for equal bodies.
   */
  put(key: string, body: Body, options?: PutOptions): Promise<ObjectInfo>;

  /** Reads an object (or a range of it). Throws `NotFoundError` if `key` does not exist. */
  get(key: string, options?: GetOptions): Promise<GetResult>;

  /** Size, time and metadata of an object. Throws `NotFoundError` if `key` does not exist. */
  head(key: string, options?: CallOptions): Promise<ObjectInfo>;

  /**
   * Every object whose key starts with `prefix` (a plain string prefix, not a directory), in
   * ascending lexicographic order of the keys' UTF-8 bytes, each exactly once. An empty
   * prefix lists everything. Objects created or deleted during the listing may or may not
   * appear.
   */
  list(prefix: string, options?: ListOptions): AsyncIterable<ObjectInfo>;

  /** Deletes the objects. Idempotent: missing keys are not an error. */
  delete(keys: readonly string[], options?: CallOptions): Promise<void>;
}

/**
 * Throws `INVALID_ARGUMENT` for a `put` whose body is neither bytes nor an async iterable of byte
 * chunks, or whose `contentLength` is not a byte count. Targets call it at the top of `put`.
 */
export function assertPutArguments(
  key: string,
  body: unknown,
  contentLength: number | undefined,
  plugin?: string,
): void {
  const where = { ...(plugin ? { plugin } : {}), operation: "put" };
  if (contentLength !== undefined && !(Number.isSafeInteger(contentLength) && contentLength >= 0)) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `contentLength must be a byte count, got ${contentLength}.`, {
      ...where,
      hint: "Pass the exact body length in bytes, or omit it.",
    });
  }
  const iterable =
    typeof body === "object" &&
    body !== null &&
    typeof (body as Partial<AsyncIterable<unknown>>)[Symbol.asyncIterator] === "function";
  if (!(body instanceof Uint8Array) && !iterable) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `The body for "${key}" must be a Uint8Array or an async iterable of Uint8Array chunks.`,
      { ...where, hint: "Wrap strings with Buffer.from(); pass streams as they are." },
    );
  }
}

/**
 * Throws `INVALID_KEY` unless `key` is a valid storage key (see the module comment).
 * Targets call it at the top of every method.
 */
export function assertValidKey(key: string, plugin?: string): void {
  const problem = keyProblem(key);
  if (problem) {
    throw new LifeboatError(ErrorCodes.INVALID_KEY, `Invalid storage key ${JSON.stringify(key)}: ${problem}.`, {
      plugin,
      hint: "Keys are '/'-separated names without empty, '.' or '..' segments, NUL or backslashes.",
    });
  }
}

function keyProblem(key: string): string | undefined {
  if (typeof key !== "string" || key.length === 0) return "it is empty";
  if (key.includes("\0")) return "it contains a NUL character";
  if (key.includes("\\")) return "it contains a backslash";
  if (key.startsWith("/")) return "it is absolute (starts with '/')";
  if (key.endsWith("/")) return "it ends with '/'";
  for (const segment of key.split("/")) {
    if (segment === "") return "it has an empty segment ('//')";
    if (segment === "." || segment === "..") return `it has a '${segment}' segment`;
  }
  return undefined;
}

/** Collects a body into one buffer. For small objects only (manifests, markers). */
export async function readAll(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body) chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  return Buffer.concat(chunks);
}
