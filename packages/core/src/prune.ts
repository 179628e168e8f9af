/**
 * Applies retention to every target of a database. A dry run unless `apply` is set. Besides what
 * the policy keeps, it always keeps the bases of WAL chains (`chainProtectedSnapshots`): the
 * earliest good snapshot of the newest generation and of the live WAL chain, and the snapshot
 * each one's latest state is restored from. Deletion order keeps every listing consistent:
 * manifests first (a snapshot without its manifest is invisible), then objects and verification
 * records, then every object of a generation left without any snapshot, then WAL segments no kept
 * snapshot needs (those ending before a generation's earliest kept snapshot). `keepPointInTime`
 * keeps the snapshots every moment of its window restores from (`pointInTimeProtected`).
 */
import type { DatabaseContext, OperationOptions } from "./context.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import { keys, parseManifestKey, parseSegmentKey, type SegmentKeyInfo } from "./layout.js";
import { Repository, type StoredSnapshot } from "./repository.js";
import {
  chainProtectedSnapshots,
  planRetention,
  pointInTimeProtected,
  policyFromConfig,
  type RetentionPolicy,
  removableSegments,
} from "./retention.js";

export interface PruneOptions extends OperationOptions {
  /** Default: the database's configured `retention`. */
  readonly policy?: RetentionPolicy;
  /** Delete for real. Without it nothing is deleted (dry run). */
  readonly apply?: boolean;
  readonly now?: number;
}

export interface PruneTargetResult {
  readonly target: string;
  readonly keep: readonly { readonly id: string; readonly createdAt: string; readonly reasons: readonly string[] }[];
  readonly remove: readonly { readonly id: string; readonly createdAt: string; readonly sizeBytes: number }[];
  /** Snapshots the policy alone would have removed, kept as WAL chain bases. */
  readonly protected: readonly { readonly id: string; readonly reason: string }[];
  /** WAL segments no kept snapshot needs (deleted unless a dry run). */
  readonly segments: { readonly remove: number; readonly bytes: number };
  readonly deletedObjects: number;
  readonly error?: LifeboatError;
}

export interface PruneResult {
  readonly dryRun: boolean;
  readonly targets: readonly PruneTargetResult[];
}

/**
 * Prunes every target. A failing target does not stop the others; the call then rejects (the
 * first failure's code, `details.result` holding every target's outcome).
 */
export async function prune(db: DatabaseContext, options: PruneOptions = {}): Promise<PruneResult> {
  const policy = options.policy ?? policyFromConfig(db.retention);
  const results: PruneTargetResult[] = [];
  for (const named of db.targets) {
    try {
      results.push(await pruneTarget(db, new Repository(named, db.name, db), policy, options));
    } catch (error) {
      if (error instanceof LifeboatError && error.code === ErrorCodes.INVALID_ARGUMENT) throw error; // no policy
      const wrapped =
        error instanceof LifeboatError
          ? error
          : new LifeboatError(ErrorCodes.STORAGE_ERROR, `Pruning ${db.name} on ${named.name}: ${String(error)}`, {
              cause: error,
            });
      results.push({
        target: named.name,
        keep: [],
        remove: [],
        protected: [],
        segments: { remove: 0, bytes: 0 },
        deletedObjects: 0,
        error: wrapped,
      });
    }
  }
  const result: PruneResult = { dryRun: !options.apply, targets: results };
  const failed = results.filter((r) => r.error);
  if (failed.length > 0) {
    throw new LifeboatError(
      failed[0]!.error!.code,
      `Pruning ${db.name} failed on ${failed.map((r) => `${r.target} (${r.error!.message})`).join("; ")}.`,
      {
        hint: failed[0]!.error!.hint ?? "Fix the target and prune again.",
        details: { result },
        operation: "prune",
      },
    );
  }
  return result;
}

async function pruneTarget(
  db: DatabaseContext,
  repo: Repository,
  policy: RetentionPolicy,
  options: PruneOptions,
): Promise<PruneTargetResult> {
  const call = options.signal ? { signal: options.signal } : {};
  const manifestGenerations = new Map<string, string>(); // every manifest key -> generation, readable or not
  const segments: (SegmentKeyInfo & { readonly size: number })[] = [];
  for await (const info of repo.target.list(keys.generations(db.name), call)) {
    const manifest = parseManifestKey(info.key);
    if (manifest) manifestGenerations.set(info.key, manifest.generation);
    const segment = parseSegmentKey(info.key);
    if (segment) segments.push({ ...segment, size: info.size });
  }
  const { snapshots } = await repo.listSnapshots(call);
  const okOf = (s: StoredSnapshot) => s.manifest.integrity.ok && (s.verification?.ok ?? true);
  const plan = planRetention(
    snapshots.map((s) => ({ id: s.manifest.id, createdAt: Date.parse(s.manifest.createdAt), ok: okOf(s) })),
    policy,
    options.now ?? Date.now(),
  );
  const chainSnapshots = snapshots.map((s) => ({
    id: s.manifest.id,
    generation: s.manifest.generation,
    position: s.manifest.position,
    ok: okOf(s),
    createdAt: Date.parse(s.manifest.createdAt),
  }));
  const guarded = chainProtectedSnapshots(chainSnapshots, segments);
  if (policy.keepPointInTimeMs !== undefined) {
    const window = pointInTimeProtected(chainSnapshots, policy.keepPointInTimeMs, options.now ?? Date.now(), segments);
    for (const [id, reason] of window) if (!guarded.has(id)) guarded.set(id, reason);
  }
  const byId = new Map(snapshots.map((s) => [s.manifest.id, s]));
  const protectedIds = plan.remove.filter((id) => guarded.has(id));
  const removing = plan.remove.filter((id) => !guarded.has(id)).map((id) => byId.get(id)!);
  const removingIds = new Set(removing.map((s) => s.manifest.id));
  const unneeded = removableSegments(
    segments,
    chainSnapshots.filter((s) => !removingIds.has(s.id)),
  );
  let deletedObjects = 0;
  if (options.apply && removing.length > 0) {
    const removedManifests = new Set(removing.map((s) => s.manifestKey));
    const generationsLeft = new Set(
      [...manifestGenerations].filter(([key]) => !removedManifests.has(key)).map(([, generation]) => generation),
    );
    await repo.target.delete([...removedManifests], call);
    await repo.target.delete(
      removing.flatMap((s) => [s.manifest.object.key, s.verificationKey]),
      call,
    );
    deletedObjects += removing.length * 2;
    // A generation without any snapshot cannot be restored: its segments go too.
    for (const generation of new Set(removing.map((s) => s.manifest.generation))) {
      if (generationsLeft.has(generation)) continue;
      const rest: string[] = [];
      for await (const info of repo.target.list(keys.generation(db.name, generation), call)) rest.push(info.key);
      if (rest.length > 0) await repo.target.delete(rest, call);
      deletedObjects += rest.length;
    }
  }
  if (options.apply && unneeded.length > 0) {
    // After the snapshots: a listing never shows a kept snapshot without the segments it needs.
    const gone = new Set(
      removing
        .map((s) => s.manifest.generation)
        .filter((g) => !chainSnapshots.some((c) => c.generation === g && !removingIds.has(c.id))),
    );
    const left = unneeded.filter((s) => !gone.has(s.generation)).map((s) => s.key);
    if (left.length > 0) await repo.target.delete(left, call);
    deletedObjects += left.length;
  }
  const keepIds = new Set([...plan.keep.map((k) => k.id), ...protectedIds]);
  return {
    target: repo.named.name,
    keep: snapshots
      .filter((s) => keepIds.has(s.manifest.id))
      .reverse()
      .map((s) => ({
        id: s.manifest.id,
        createdAt: s.manifest.createdAt,
        reasons: plan.keep.find((k) => k.id === s.manifest.id)?.reasons ?? [guarded.get(s.manifest.id)!],
      })),
    remove: removing.map((s) => ({
      id: s.manifest.id,
      createdAt: s.manifest.createdAt,
      sizeBytes: s.manifest.object.size,
    })),
    protected: protectedIds.map((id) => ({ id, reason: guarded.get(id)! })),
    segments: { remove: unneeded.length, bytes: unneeded.reduce((n, s) => n + s.size, 0) },
    deletedObjects,
  };
}
