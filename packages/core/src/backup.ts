/** The backup operation: one consistent snapshot, streamed to every target at once. */
import type { DatabaseContext, OperationOptions } from "./context.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import { checkGuards } from "./guards-check.js";
import { newGenerationId, type SnapshotManifest, snapshotId } from "./layout.js";
import { Repository } from "./repository.js";
import { storeSnapshot } from "./snapshot-store.js";

export interface BackupOptions extends OperationOptions {
  /** Why the backup was taken (`manual`, `startup`, `pre-migration`, ...). */
  readonly reason?: string;
}

export interface TargetOutcome {
  readonly target: string;
  readonly location: string;
  readonly ok: boolean;
  readonly key?: string;
  readonly storedBytes?: number;
  readonly error?: LifeboatError;
}

export interface BackupResult {
  readonly id: string;
  /** The manifest as stored on the first target that took it. */
  readonly manifest: SnapshotManifest;
  readonly targets: readonly TargetOutcome[];
  readonly durationMs: number;
}

/**
 * Takes a verified snapshot of the database and stores it, with its manifest, on every target.
 * Resolves when every target has it. If some targets fail the others still get the backup, and
 * the call rejects (the code of the failure, or `STORAGE_ERROR`) with `details.result` listing
 * each target's outcome. A target that failed holds no partial object and no manifest.
 */
export async function backup(db: DatabaseContext, options: BackupOptions = {}): Promise<BackupResult> {
  const started = Date.now();
  const reason = options.reason ?? "manual";
  await checkGuards(db, "backup", false, {});
  await db.hooks.run("beforeBackup", { database: { name: db.name, path: db.path }, reason });

  const repositories = db.targets.map((named) => new Repository(named, db.name, db));
  await Promise.all(repositories.map((repo) => repo.open({ ...(options.signal ? { signal: options.signal } : {}) })));
  const snapshot = await db.driver.snapshot(db.path, {
    integrity: db.integrity,
    deferChecks: true,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  const generation = newGenerationId();
  const { outcomes, contentBytes } = await storeSnapshot(
    db,
    snapshot,
    repositories,
    { generation, position: 0, reason },
    options,
  );

  const targets: TargetOutcome[] = outcomes.map((o) => ({
    target: o.repo.named.name,
    location: o.repo.target.location,
    ok: o.manifest !== undefined,
    ...(o.manifest ? { key: o.manifest.object.key, storedBytes: o.manifest.object.size } : {}),
    ...(o.error ? { error: o.error } : {}),
  }));
  const id = snapshotId(generation, 0);
  const stored = outcomes.find((o) => o.manifest)?.manifest;
  await db.hooks.run("afterBackup", {
    database: { name: db.name, path: db.path },
    backupId: id,
    sizeBytes: contentBytes,
    targets: targets.map((o) => ({ name: o.target, ok: o.ok, ...(o.error ? { error: o.error.message } : {}) })),
  });
  const failed = targets.filter((o) => !o.ok);
  if (!stored || failed.length > 0) {
    const partial = stored ? { id, manifest: stored, targets, durationMs: Date.now() - started } : { id, targets };
    throw new LifeboatError(
      failed.length === 1 && failed[0]!.error ? failed[0]!.error.code : ErrorCodes.STORAGE_ERROR,
      `Backup ${id} of ${db.name} was stored on ${targets.length - failed.length} of ${targets.length} targets. Failed: ${failed
        .map((o) => `${o.target} (${o.location}): ${o.error?.message ?? "unknown error"}`)
        .join("; ")}`,
      {
        hint: failed.map((o) => o.error?.hint).find(Boolean) ?? "Fix the failing target and run the backup again.",
        details: { result: partial },
        operation: "backup",
      },
    );
  }
  return { id, manifest: stored, targets, durationMs: Date.now() - started };
}
