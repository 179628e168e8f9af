/**
 * An in-memory `StorageTarget`: objects live in a Map for the life of the process. Targets created
 * with the same `namespace` share their objects, so a test can back up through one target and
 * restore through another. Useful for tests and demos; everything is gone when the process exits.
 *
 * Written against the published contract only (`@lifeboat/core`'s storage.ts): every method
 * follows the semantics in its doc comment there, and the conformance suite checks them.
 */
import {
  assertValidKey,
  type Body,
  type CallOptions,
  ErrorCodes,
  type GetOptions,
  type GetResult,
  LifeboatError,
  type ListOptions,
  NotFoundError,
  type ObjectInfo,
  PreconditionFailedError,
  type PutOptions,
  STORAGE_API_VERSION,
  type StorageCapabilities,
  type StorageTarget,
} from "@lifeboat/core";

const PLUGIN = "lifeboat-storage-memory";
/** Bodies are handed out in slices of this size, like a stream from a real store. */
const READ_CHUNK = 64 * 1024;

export interface MemoryStorageOptions {
  /** Targets with the same namespace share objects. Default `"default"`. */
  readonly namespace?: string;
  /** Refuse puts that would make the namespace hold more than this many bytes. Default: no limit. */
  readonly maxBytes?: number;
}

interface StoredObject {
  readonly bytes: Buffer;
  readonly lastModified: Date;
  readonly metadata: Readonly<Record<string, string>> | undefined;
}

const namespaces = new Map<string, Map<string, StoredObject>>();

/** Forgets every object of a namespace (or all namespaces). For tests. */
export function clearMemoryStorage(namespace?: string): void {
  if (namespace === undefined) namespaces.clear();
  else namespaces.delete(namespace);
}

/**
 * A storage target in memory. Capabilities: atomic conditional create (the check and the insert
 * happen in one synchronous step), range reads, user metadata; no object lock.
 */
export function memoryStorage(options: MemoryStorageOptions = {}): StorageTarget {
  return new MemoryStorage(options);
}

class MemoryStorage implements StorageTarget {
  readonly apiVersion = STORAGE_API_VERSION;
  readonly type = PLUGIN;
  readonly location: string;
  readonly capabilities: StorageCapabilities = {
    conditionalCreate: true,
    rangeReads: true,
    objectLock: false,
    metadata: true,
  };

  readonly #namespace: string;
  readonly #maxBytes: number;
  #closed = false;

  constructor(options: MemoryStorageOptions) {
    this.#namespace = options.namespace ?? "default";
    this.#maxBytes = options.maxBytes ?? Number.POSITIVE_INFINITY;
    this.location = `memory://${this.#namespace}`;
  }

  get #objects(): Map<string, StoredObject> {
    let objects = namespaces.get(this.#namespace);
    if (!objects) {
      objects = new Map();
      namespaces.set(this.#namespace, objects);
    }
    return objects;
  }

  async init(options: CallOptions = {}): Promise<void> {
    this.#check(options.signal, "init");
    void this.#objects; // creates the namespace
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    assertValidKey(key, PLUGIN);
    const { signal, contentLength } = options;
    this.#check(signal, "put", key);
    if (options.ifNoneMatch === "*" && this.#objects.has(key)) throw this.#exists(key);
    // Read the whole body first: nothing is visible until it is complete (atomic put).
    const bytes = await readBody(body, signal, () => this.#aborted("put", key, signal));
    if (contentLength !== undefined && bytes.length !== contentLength) {
      throw new LifeboatError(
        ErrorCodes.STORAGE_ERROR,
        `The body for "${key}" has ${bytes.length} bytes but contentLength said ${contentLength}; nothing was stored in ${this.location}.`,
        { plugin: PLUGIN, operation: "put", hint: "Pass the exact length of the body as contentLength, or omit it." },
      );
    }
    this.#check(signal, "put", key);
    // From here to the end there is no await: the check and the insert cannot interleave with
    // another put, which makes the conditional create atomic.
    const objects = this.#objects;
    if (options.ifNoneMatch === "*" && objects.has(key)) throw this.#exists(key);
    if (Number.isFinite(this.#maxBytes) && usedBytes(objects, key) + bytes.length > this.#maxBytes) {
      throw new LifeboatError(
        ErrorCodes.DISK_FULL,
        `The memory target ${this.location} is full: storing "${key}" (${bytes.length} bytes) would exceed maxBytes (${this.#maxBytes}).`,
        { plugin: PLUGIN, operation: "put", hint: "Raise maxBytes, or delete objects (lifeboat prune)." },
      );
    }
    const stored: StoredObject = {
      bytes,
      lastModified: new Date(),
      metadata: options.metadata ? { ...options.metadata } : undefined,
    };
    objects.set(key, stored);
    return infoOf(key, stored);
  }

  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    assertValidKey(key, PLUGIN);
    const { signal, range } = options;
    this.#check(signal, "get", key);
    const stored = this.#objects.get(key);
    if (!stored) throw this.#notFound(key);
    const start = range?.offset ?? 0;
    if (!Number.isSafeInteger(start) || start < 0 || start > stored.bytes.length) {
      throw new LifeboatError(
        ErrorCodes.INVALID_ARGUMENT,
        `The range starting at byte ${start} is outside "${key}" (${stored.bytes.length} bytes) in ${this.location}.`,
        { plugin: PLUGIN, operation: "get", hint: "Ask for a range inside the object." },
      );
    }
    const end = range?.length === undefined ? stored.bytes.length : Math.min(stored.bytes.length, start + range.length);
    const slice = stored.bytes.subarray(start, Math.max(start, end));
    const aborted = () => this.#aborted("get", key, signal);
    return { ...infoOf(key, stored), body: chunksOf(slice, signal, aborted) };
  }

  async head(key: string, options: CallOptions = {}): Promise<ObjectInfo> {
    assertValidKey(key, PLUGIN);
    this.#check(options.signal, "head", key);
    const stored = this.#objects.get(key);
    if (!stored) throw this.#notFound(key);
    return infoOf(key, stored);
  }

  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    this.#check(options.signal, "list");
    const after = options.startAfter === undefined ? undefined : Buffer.from(options.startAfter);
    // The contract orders keys by their UTF-8 bytes, not by JavaScript's UTF-16 string order.
    const keys = [...this.#objects.keys()]
      .filter((key) => key.startsWith(prefix) && (!after || Buffer.compare(Buffer.from(key), after) > 0))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    for (const key of keys) {
      this.#check(options.signal, "list");
      const stored = this.#objects.get(key);
      if (stored) yield infoOf(key, stored); // deleted meanwhile: skipped
    }
  }

  async delete(keys: readonly string[], options: CallOptions = {}): Promise<void> {
    for (const key of keys) assertValidKey(key, PLUGIN);
    this.#check(options.signal, "delete");
    for (const key of keys) this.#objects.delete(key);
  }

  #check(signal: AbortSignal | undefined, operation: string, key?: string): void {
    if (this.#closed) {
      throw new LifeboatError(ErrorCodes.STORAGE_ERROR, `The memory target ${this.location} was closed.`, {
        plugin: PLUGIN,
        operation,
        hint: "Create a new target; a closed one cannot be used again.",
      });
    }
    if (signal?.aborted) throw this.#aborted(operation, key, signal);
  }

  #aborted(operation: string, key: string | undefined, signal: AbortSignal | undefined): LifeboatError {
    return new LifeboatError(
      ErrorCodes.ABORTED,
      `The ${operation}${key === undefined ? "" : ` of "${key}"`} in ${this.location} was aborted.`,
      { plugin: PLUGIN, operation, cause: signal?.reason, hint: "Run the operation again." },
    );
  }

  #notFound(key: string): NotFoundError {
    return new NotFoundError(`No object "${key}" in ${this.location}.`, {
      plugin: PLUGIN,
      details: { key },
      hint: "Check the key; list the target to see what it holds.",
    });
  }

  #exists(key: string): PreconditionFailedError {
    return new PreconditionFailedError(`The object "${key}" already exists in ${this.location}; it was not replaced.`, {
      plugin: PLUGIN,
      operation: "put",
      hint: "Another writer created it first; read it, or write under another key.",
    });
  }
}

/** Bytes held by every object but `except` (which a put is about to replace). */
function usedBytes(objects: Map<string, StoredObject>, except: string): number {
  let sum = 0;
  for (const [key, object] of objects) if (key !== except) sum += object.bytes.length;
  return sum;
}

function infoOf(key: string, stored: StoredObject): ObjectInfo {
  return {
    key,
    size: stored.bytes.length,
    lastModified: stored.lastModified,
    ...(stored.metadata ? { metadata: stored.metadata } : {}),
  };
}

/** Collects a body into one buffer, copying chunks (the producer may reuse its buffers). */
async function readBody(body: Body, signal: AbortSignal | undefined, aborted: () => LifeboatError): Promise<Buffer> {
  if (body instanceof Uint8Array) return Buffer.from(body);
  const chunks: Buffer[] = [];
  const iterator = body[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      // Race the producer against the signal: an abort must not wait for a stalled body.
      const next = await raceAbort(iterator.next(), signal, aborted);
      if (next.done) {
        done = true;
        break;
      }
      if (signal?.aborted) throw aborted();
      chunks.push(Buffer.from(next.value));
    }
  } finally {
    if (!done) void Promise.resolve(iterator.return?.()).catch(() => undefined);
  }
  return Buffer.concat(chunks);
}

async function* chunksOf(
  bytes: Buffer,
  signal: AbortSignal | undefined,
  aborted: () => LifeboatError,
): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < bytes.length; offset += READ_CHUNK) {
    if (signal?.aborted) throw aborted();
    yield bytes.subarray(offset, offset + READ_CHUNK);
  }
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined, aborted: () => LifeboatError): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) {
    promise.catch(() => undefined);
    return Promise.reject(aborted());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      promise.catch(() => undefined);
      reject(aborted());
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
