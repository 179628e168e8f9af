/**
 * The S3 leg of the replication benchmark: one radosgw (from @lifeboat/testkit) shared by the
 * run, a fresh bucket per replicator session, and a poller that plays the part the inotify
 * TreeWatcher plays for a directory target. It lists the bucket (ListObjectsV2) every ~20 ms,
 * GETs every new or changed object and writes it into a local mirror directory (same relative
 * paths as on the target, file mtime = the object's LastModified), so the bench's decode path
 * (segments, snapshots, sizes) reads the mirror exactly as it reads a directory target.
 *
 * "Durable on the target" for S3 = listed by ListObjectsV2 and read back in full by GetObject.
 * The time recorded for an object is when the listing that first showed it returned (the GET that
 * follows only confirms it is readable; its time is kept separately).
 */
import { mkdirSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { dirname, join } from "node:path";
import { readAll } from "@lifeboat/core";
import { type S3Server, startS3Server } from "@lifeboat/testkit";
import { type S3StorageTarget, s3Storage } from "../../packages/storage-s3/src/index.js";
import { countEvents, type ObjectEvent, type TargetWatcher } from "./replication-watch.js";

/** Key prefix of the replica inside each session's bucket (Lifeboat `s3://BUCKET/replica`, Litestream `path: replica`). */
export const S3_PREFIX = "replica";
/** Environment variables that hold the credentials for Lifeboat (its s3:// URL names them; never the secret itself). */
export const KEY_ID_ENV = "BENCH_S3_KEY_ID";
export const SECRET_ENV = "BENCH_S3_SECRET";

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const address = probe.address();
      const port = typeof address === "object" && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts the run's radosgw. With `tcpNoDelay` (the default here) its beast frontend disables
 * Nagle's algorithm: with radosgw's default, every response with a body (ListObjectsV2, GetObject)
 * waits for the client's delayed ACK, ~40 ms on loopback (measured: list 48 ms, get 45 ms, put
 * 4 ms; with tcp_nodelay=1: 3, 2 and 3 ms), which would swamp a 20 ms poll and every restore's GETs.
 */
export async function startGateway(tcpNoDelay: boolean): Promise<S3Server> {
  if (!tcpNoDelay) return startS3Server({ bucket: "bench-replication" });
  const port = await freePort();
  return startS3Server({
    bucket: "bench-replication",
    port,
    gatewayConfig: { "rgw frontends": `beast endpoint=127.0.0.1:${port} tcp_nodelay=1` },
  });
}

/** The shared gateway and what a session needs to point a replicator (or the poller) at a bucket. */
export class S3Remote {
  #buckets = 0;

  constructor(readonly server: S3Server) {
    process.env[KEY_ID_ENV] = server.accessKeyId;
    process.env[SECRET_ENV] = server.secretAccessKey;
  }

  /** A bucket name not used before in this run (S3 rules: 3-63 lower-case letters, digits, '-'). */
  nextBucket(id: string): string {
    this.#buckets++;
    return `bench-${this.#buckets}-${id}`
      .toLowerCase()
      .replace(/[^a-z0-9-]/g, "-")
      .slice(0, 63);
  }

  createBucket(bucket: string): Promise<void> {
    return this.server.createBucket(bucket);
  }

  /** Lifeboat's `--to`: the built-in s3 plugin's URL form, credentials by environment variable name. */
  lifeboatUrl(bucket: string): string {
    const q = new URLSearchParams({
      endpoint: this.server.endpoint,
      region: this.server.region,
      pathStyle: "true",
      accessKeyIdEnv: KEY_ID_ENV,
      secretAccessKeyEnv: SECRET_ENV,
    });
    return `s3://${bucket}/${S3_PREFIX}?${q.toString()}`;
  }

  /** Litestream's replica entry (YAML lines at the `replicas:` list's indentation). */
  litestreamReplica(bucket: string): string[] {
    return [
      "      - type: s3",
      `        bucket: ${bucket}`,
      `        path: ${S3_PREFIX}`,
      `        endpoint: ${this.server.endpoint}`,
      `        region: ${this.server.region}`,
      "        force-path-style: true",
      `        access-key-id: ${this.server.accessKeyId}`,
      `        secret-access-key: ${this.server.secretAccessKey}`,
    ];
  }

  /** The bench's own client for a session's bucket (the Lifeboat S3 target: list + get). */
  target(bucket: string): S3StorageTarget {
    return s3Storage({
      bucket,
      prefix: S3_PREFIX,
      endpoint: this.server.endpoint,
      region: this.server.region,
      forcePathStyle: true,
      accessKeyId: this.server.accessKeyId,
      secretAccessKey: this.server.secretAccessKey,
    });
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A WAL directory: Lifeboat's `<db>/generations/<gen>/wal/`, Litestream's `generations/<gen>/wal/`. */
const WAL_DIR = /^(.*\/wal\/)/;
/**
 * A generation's directory (both tools). Its `wal/` directory is polled from the moment any of
 * its objects (the start-up snapshot) is listed, before it holds a WAL object. Until session 9 a
 * WAL directory was polled only once a full listing had shown a WAL object in it, so a new
 * generation's first second of WAL objects waited for the next full listing (up to 1 s): about 3%
 * of a 30 s run's transactions for Lifeboat, whose generation has no WAL object before the writer
 * starts, and that alone set its p99 (the 300-760 ms "first listed late" of sessions 6 and 8).
 */
const GENERATION_DIR = /^(.*\/generations\/[^/]+\/)/;

/**
 * A WAL-directory listing starts after the newest key that was seen at least this long ago (ms),
 * not after the newest one: should the server ever list an object before one uploaded earlier,
 * a listing that started after the later key would miss the earlier one until the next full
 * listing. A guard only; no such reordering has been seen.
 */
const LOOKBACK_MS = 1000;

function startAfter(seen: readonly { key: string; at: number }[], now: number): string {
  let after = "";
  for (const s of seen) if (s.at <= now - LOOKBACK_MS) after = s.key;
  return after;
}

/** Poll statistics of one session (for the method notes). */
export interface PollStats {
  polls: number;
  /** Full ListObjectsV2 round trips (all pages of one poll), ms. */
  readonly listMs: number[];
  /** Polls that listed only past the newest WAL object of each WAL directory, ms. */
  readonly incrementalMs: number[];
  /** GetObject + write to the mirror, ms, per fetched object. */
  readonly fetchMs: number[];
  readonly errors: string[];
}

/**
 * Polls a bucket and mirrors it into `root`. Same surface as TreeWatcher: `firstSeen` (key → when
 * the listing that first showed it returned, recorded once the object was read in full),
 * `events` (a put when a key appears or its ETag/size/LastModified changes, a delete when it is
 * no longer listed), `present()` (listed and fetched), `count()`. `settle()` runs one more poll
 * after the replicator stopped and waits for every fetch, so the mirror holds the final state.
 * Overwrites between two polls are seen as one put (a directory watch sees each).
 */
export class S3Watcher implements TargetWatcher {
  readonly events: ObjectEvent[] = [];
  readonly firstSeen = new Map<string, number>();
  readonly stats: PollStats = { polls: 0, listMs: [], incrementalMs: [], fetchMs: [], errors: [] };
  readonly #known = new Map<string, string>();
  /** When each known key was first listed (ms since the epoch). */
  readonly #knownAt = new Map<string, number>();
  /** WAL directory → the keys that were the newest seen in it over the last LOOKBACK_MS, oldest first. */
  readonly #streams = new Map<string, { key: string; at: number }[]>();
  readonly #present = new Set<string>();
  readonly #fetches = new Set<Promise<void>>();
  #loop: Promise<void> | undefined;
  #closed = false;

  constructor(
    readonly root: string,
    readonly target: S3StorageTarget,
    readonly intervalMs = 20,
    readonly fullEveryMs = 1000,
  ) {}

  start(): void {
    this.#loop = Promise.all([this.#run(false), this.#run(true)]).then(() => {});
  }

  /** The full listings (every `fullEveryMs`) and the WAL-directory ones (every `intervalMs`) run side by side. */
  async #run(full: boolean): Promise<void> {
    while (!this.#closed) {
      // Until a generation is known, the fast loop lists the whole (then nearly empty) bucket.
      await this.#poll(full || this.#streams.size === 0);
      await sleep(full ? this.fullEveryMs : this.intervalMs);
    }
  }

  /**
   * One poll. A full listing (new keys, changed keys, deletes) runs once a second on its own loop;
   * the other loop lists, every `intervalMs`, each WAL directory (the keys under a `/wal/`
   * component) after the newest key seen there. Both tools name WAL objects so that newer ones
   * sort later (Lifeboat: 16-hex-digit transaction numbers; Litestream: 8-hex-digit WAL index
   * and offset), so these short listings see every new WAL object, and their cost no longer grows
   * with the number of objects already in the bucket (nor waits for a full listing).
   */
  async #poll(full: boolean): Promise<void> {
    const started = performance.now();
    const startedAt = Date.now();
    const listed = new Map<string, string>();
    const lastModified = new Map<string, Date>();
    try {
      if (full) {
        for await (const info of this.target.list("")) {
          listed.set(info.key, `${info.etag ?? ""}:${info.size}:${info.lastModified.getTime()}`);
          lastModified.set(info.key, info.lastModified);
        }
      } else {
        for (const [prefix, seen] of [...this.#streams]) {
          for await (const info of this.target.list(prefix, { startAfter: startAfter(seen, startedAt) })) {
            listed.set(info.key, `${info.etag ?? ""}:${info.size}:${info.lastModified.getTime()}`);
            lastModified.set(info.key, info.lastModified);
          }
        }
      }
    } catch (error) {
      this.#error(`list: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    const at = Date.now();
    (full ? this.stats.listMs : this.stats.incrementalMs).push(performance.now() - started);
    this.stats.polls++;
    for (const [key, signature] of listed) {
      const generation = GENERATION_DIR.exec(key)?.[1];
      if (generation !== undefined && !this.#streams.has(`${generation}wal/`))
        this.#streams.set(`${generation}wal/`, []);
      const stream = WAL_DIR.exec(key)?.[1];
      if (stream !== undefined) {
        const seen = this.#streams.get(stream) ?? [];
        if (key > (seen.at(-1)?.key ?? "")) seen.push({ key, at });
        while (seen.length > 1 && seen[1]!.at <= at - LOOKBACK_MS) seen.shift();
        this.#streams.set(stream, seen);
      }
      if (this.#known.get(key) === signature) continue;
      if (!this.#known.has(key)) this.#knownAt.set(key, at);
      this.#known.set(key, signature);
      const fetch = this.#fetch(key, signature, lastModified.get(key)!, at);
      this.#fetches.add(fetch);
      void fetch.finally(() => this.#fetches.delete(fetch));
    }
    if (!full) return;
    // A key a WAL-directory poll found after this listing began may be missing from it.
    const since = (key: string) => this.#knownAt.get(key) ?? 0;
    for (const key of [...this.#known.keys()]) {
      if (listed.has(key) || since(key) >= startedAt) continue;
      this.#known.delete(key);
      this.#knownAt.delete(key);
      this.#present.delete(key);
      rmSync(join(this.root, key), { force: true });
      this.events.push({ at, kind: "delete", path: key });
    }
    const listedKeys = [...listed.keys()];
    for (const [stream, seen] of [...this.#streams]) {
      const newest = seen.at(-1)?.key;
      const gone =
        newest === undefined
          ? !listedKeys.some((key) => key.startsWith(stream.slice(0, -"wal/".length)))
          : !listed.has(newest) && since(newest) < startedAt;
      if (gone) this.#streams.delete(stream); // retention or a new generation
    }
  }

  async #fetch(key: string, signature: string, modified: Date, listedAt: number): Promise<void> {
    const started = performance.now();
    let bytes: Buffer;
    try {
      const got = await this.target.get(key);
      bytes = await readAll(got.body);
    } catch (error) {
      // Deleted between the listing and the GET: the next listing drops it. Anything else: try again then.
      if (this.#known.get(key) === signature) this.#known.delete(key);
      const code = (error as { code?: string }).code;
      if (code !== "NOT_FOUND") this.#error(`get ${key}: ${error instanceof Error ? error.message : String(error)}`);
      return;
    }
    if (this.#known.get(key) !== signature) return; // changed or deleted meanwhile: a newer fetch owns it
    const file = join(this.root, key);
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, bytes);
    utimesSync(file, modified, modified);
    this.stats.fetchMs.push(performance.now() - started);
    if (!this.firstSeen.has(key)) this.firstSeen.set(key, listedAt);
    this.#present.add(key);
    this.events.push({ at: listedAt, kind: "put", path: key });
  }

  #error(message: string): void {
    if (this.stats.errors.length < 20) this.stats.errors.push(message);
  }

  present(): string[] {
    return [...this.#present];
  }

  count(from: number, to: number, filter: (path: string) => boolean = () => true): { puts: number; deletes: number } {
    return countEvents(this.events, from, to, filter);
  }

  async settle(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#loop;
    await this.#poll(true);
    while (this.#fetches.size > 0) await Promise.all([...this.#fetches]);
  }

  close(): void {
    this.#closed = true;
    this.target.close().catch(() => {});
  }
}
