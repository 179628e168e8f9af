/**
 * How fresh the backups on a target are, found cheaply: one listing of the database's
 * `generations/` folder (keys, sizes and times only) and a read of the newest manifest, not of
 * every manifest. Manifests never change once written, so a cache keeps later checks at one
 * listing. Also: `backupIfOlderThan`, the start-up backup.
 */
import {
  type BackupResult,
  type DatabaseContext,
  keys,
  type Lifeboat,
  type NamedTarget,
  parseManifestKey,
  readAll,
  type SnapshotManifest,
  type VerificationRecord,
} from "@lifeboat/core";
import { parseSegmentKey, requestSnapshot } from "@lifeboat/wal";

export interface NewestBackup {
  readonly target: string;
  readonly id: string;
  readonly generation: string;
  readonly position: number;
  readonly createdAt: string;
  readonly reason: string;
  readonly sizeBytes: number;
}

export interface TargetListing {
  readonly target: string;
  /** The newest restorable snapshot (integrity ok, not marked damaged by `verify`), or null. */
  readonly newest: NewestBackup | null;
  readonly snapshots: number;
  readonly generations: number;
  readonly segments: number;
  /** Observed time (epoch ms) of the newest archived transaction, if any segment exists. */
  readonly lastSegmentAt: number | null;
  /** Bytes stored under the database's generations (snapshots, manifests, segments). */
  readonly storedBytes: number;
}

/** Manifests by key (one cache per target): they are immutable, so one read is enough. */
export type ManifestCache = Map<string, SnapshotManifest>;

/**
 * Lists one target's backups of `database`. Throws what the target throws (an unreachable
 * target is the caller's business). The newest manifest is found by the listing's modification
 * times and confirmed by reading it; a manifest that cannot be read is skipped.
 */
export async function listTargetBackups(
  named: NamedTarget,
  database: string,
  options: { readonly cache?: ManifestCache; readonly signal?: AbortSignal } = {},
): Promise<TargetListing> {
  const cache = options.cache ?? new Map<string, SnapshotManifest>();
  const manifests: { key: string; modified: number }[] = [];
  const verified = new Set<string>();
  const generations = new Set<string>();
  let segments = 0;
  let lastSegmentAt: number | null = null;
  let storedBytes = 0;
  for await (const info of named.target.list(keys.generations(database), { signal: options.signal })) {
    storedBytes += info.size;
    if (info.key.endsWith(".verified.json")) {
      verified.add(info.key);
      continue;
    }
    const manifest = parseManifestKey(info.key);
    if (manifest) {
      manifests.push({ key: info.key, modified: info.lastModified.getTime() });
      generations.add(manifest.generation);
      continue;
    }
    const segment = parseSegmentKey(info.key);
    if (segment) {
      segments++;
      generations.add(segment.generation);
      if (lastSegmentAt === null || segment.lastObservedAt > lastSegmentAt) lastSegmentAt = segment.lastObservedAt;
    }
  }
  if (options.cache) {
    const listed = new Set(manifests.map((m) => m.key));
    for (const key of cache.keys()) if (!listed.has(key)) cache.delete(key); // pruned since
  }
  // Newest first by the listing's times; read until one is readable, good and undamaged.
  manifests.sort((a, b) => b.modified - a.modified || b.key.localeCompare(a.key));
  let newest: NewestBackup | null = null;
  for (const { key } of manifests) {
    const manifest = await readManifest(named, key, cache, options.signal);
    if (!manifest?.integrity.ok) continue;
    const parsed = parseManifestKey(key)!;
    const verificationKey = keys.snapshotVerified(database, parsed.generation, parsed.position);
    if (verified.has(verificationKey)) {
      const record = await readJson<VerificationRecord>(named, verificationKey, options.signal);
      if (record && !record.ok) continue;
    }
    newest = {
      target: named.name,
      id: manifest.id,
      generation: manifest.generation,
      position: manifest.position,
      createdAt: manifest.createdAt,
      reason: manifest.reason,
      sizeBytes: manifest.content.size,
    };
    break;
  }
  return {
    target: named.name,
    newest,
    snapshots: manifests.length,
    generations: generations.size,
    segments,
    lastSegmentAt,
    storedBytes,
  };
}

async function readManifest(
  named: NamedTarget,
  key: string,
  cache: ManifestCache,
  signal: AbortSignal | undefined,
): Promise<SnapshotManifest | undefined> {
  const cached = cache.get(key);
  if (cached) return cached;
  const manifest = await readJson<SnapshotManifest>(named, key, signal);
  if (manifest?.format !== "lifeboat.snapshot" || typeof manifest.createdAt !== "string") return undefined;
  cache.set(key, manifest);
  return manifest;
}

async function readJson<T>(named: NamedTarget, key: string, signal: AbortSignal | undefined): Promise<T | undefined> {
  try {
    const { body } = await named.target.get(key, { signal });
    return JSON.parse((await readAll(body)).toString("utf8")) as T;
  } catch {
    return undefined; // deleted meanwhile, or damaged: `verify` reports those
  }
}

/**
 * The newest good backup of `db` on the first target that answers (in config order), or null
 * when that target holds none. Throws only when no target answers.
 */
export async function newestBackup(
  db: DatabaseContext,
  options: { readonly signal?: AbortSignal } = {},
): Promise<{ readonly newest: NewestBackup | null; readonly target: string; readonly skipped: readonly string[] }> {
  const skipped: string[] = [];
  let lastError: unknown;
  for (const named of db.targets) {
    try {
      const listing = await listTargetBackups(named, db.name, options);
      return { newest: listing.newest, target: named.name, skipped };
    } catch (error) {
      lastError = error;
      skipped.push(`${named.name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  throw lastError;
}

export type BackupIfOlderResult =
  | {
      /** A good backup younger than the limit exists: nothing was done. */
      readonly taken: false;
      readonly newest: NewestBackup;
      readonly ageMs: number;
    }
  | {
      readonly taken: true;
      readonly id: string;
      /** `replicator`: a running replicator took it (in its generation); `backup`: a standalone backup. */
      readonly via: "replicator" | "backup";
      /** Set for `backup`. */
      readonly result?: BackupResult;
      /** The newest backup before this one (null: there was none). */
      readonly previous: NewestBackup | null;
    };

export interface BackupIfOlderOptions {
  /** Ask a replicator running on this host for the snapshot first (as `lifeboat backup` does). Default true. */
  readonly cooperate?: boolean;
  readonly now?: () => number;
  readonly signal?: AbortSignal;
}

/**
 * Takes a backup of `database` unless the first reachable target already holds a good one
 * younger than `maxAgeMs`. The check is one listing and one manifest read, so it is cheap to
 * run at every start of a service. When no target answers, a backup is attempted (it reports
 * the failures properly).
 */
export async function backupIfOlderThan(
  lifeboat: Lifeboat,
  database: string,
  maxAgeMs: number,
  reason: string,
  options: BackupIfOlderOptions = {},
): Promise<BackupIfOlderResult> {
  const db = await lifeboat.database(database);
  const now = options.now ?? Date.now;
  let previous: NewestBackup | null = null;
  try {
    previous = (await newestBackup(db, options.signal ? { signal: options.signal } : {})).newest;
  } catch {
    previous = null; // every target failed: the backup below says how
  }
  if (previous) {
    const ageMs = now() - Date.parse(previous.createdAt);
    if (ageMs < maxAgeMs) return { taken: false, newest: previous, ageMs };
  }
  if (options.cooperate !== false) {
    const response = await requestSnapshot(db, reason);
    if (response?.id) return { taken: true, id: response.id, via: "replicator", previous };
  }
  const result = await lifeboat.backup(db.name, { reason, ...(options.signal ? { signal: options.signal } : {}) });
  return { taken: true, id: result.id, via: "backup", result, previous };
}
