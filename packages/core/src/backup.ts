/** The backup operation: one consistent snapshot, streamed to every target at once. */
import { hostname } from "node:os";
import { Fanout, newTally, tally } from "./byte-streams.js";
import { encodeChain } from "./codec.js";
import type { DatabaseContext, OperationOptions } from "./context.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import { checkGuards } from "./guards-check.js";
import { keys, MANIFEST_FORMAT_VERSION, newGenerationId, type SnapshotManifest, snapshotId } from "./layout.js";
import { Repository, TOOL_VERSION } from "./repository.js";

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
  readonly manifest: SnapshotManifest;
  readonly targets: readonly TargetOutcome[];
  readonly durationMs: number;
}

/**
 * Takes a verified snapshot of the database and stores it, with its manifest, on every target.
 * Resolves when every target has it. If some targets fail the others still get the backup,
 * and the call rejects with `STORAGE_ERROR` whose `details.result` lists each target's outcome.
 * A target that failed holds no partial object and no manifest.
 */
export async function backup(db: DatabaseContext, options: BackupOptions = {}): Promise<BackupResult> {
  const started = Date.now();
  const reason = options.reason ?? "manual";
  await checkGuards(db, "backup", false, {});
  await db.hooks.run("beforeBackup", { database: { name: db.name, path: db.path }, reason });

  const repositories = db.targets.map((named) => new Repository(named, db.name));
  await Promise.all(repositories.map((repo) => repo.open({ signal: options.signal })));

  const snapshot = await db.driver.snapshot(db.path, { integrity: db.integrity, signal: options.signal });
  const { description, integrity } = snapshot;
  if (!integrity.ok) {
    snapshot.release();
    throw new LifeboatError(
      ErrorCodes.INTEGRITY_FAILED,
      `${db.path} fails ${integrity.check}: ${integrity.messages.slice(0, 3).join("; ")}`,
      {
        hint: "The database is damaged, so it was not backed up over good backups. Restore a backup (lifeboat restore --dry-run shows what it holds) or repair it with the sqlite3 .recover command.",
        details: { messages: integrity.messages },
      },
    );
  }

  const generation = newGenerationId();
  const position = 0;
  const extensions = db.codecs.map((c) => c.extension).join("");
  const content = newTally();
  const fanout = new Fanout(repositories.length);
  const uploads = repositories.map(async (repo, i): Promise<TargetOutcome> => {
    const key = keys.snapshotObject(db.name, generation, position, extensions);
    const stored = newTally();
    try {
      await repo.target.put(key, tally(encodeChain(db.codecs, fanout.outputs[i]!), stored), {
        signal: options.signal,
        ...(db.codecs.length === 0 ? { contentLength: description.sizeBytes } : {}),
      });
      return {
        target: repo.named.name,
        location: repo.target.location,
        ok: true,
        key,
        storedBytes: stored.bytes,
        ...{ sha: stored.hash.digest("hex") },
      };
    } catch (error) {
      fanout.drop(i);
      return {
        target: repo.named.name,
        location: repo.target.location,
        ok: false,
        error: asStorageError(error, repo, "store the snapshot"),
      };
    }
  });

  let sourceError: unknown;
  try {
    await fanout.pump(snapshot.body, (chunk) => {
      content.hash.update(chunk);
      content.bytes += chunk.byteLength;
      options.onProgress?.({ phase: "upload", bytes: content.bytes, total: description.sizeBytes });
    });
  } catch (error) {
    sourceError = error;
  } finally {
    snapshot.release();
  }
  const outcomes = await Promise.all(uploads);
  if (sourceError !== undefined) {
    await Promise.all(
      outcomes.map((o, i) => (o.key ? repositories[i]!.target.delete([o.key]).catch(() => {}) : undefined)),
    );
    throw sourceError instanceof LifeboatError
      ? sourceError
      : new LifeboatError(ErrorCodes.INTERNAL, `Reading the snapshot of ${db.path} failed: ${String(sourceError)}`, {
          cause: sourceError,
        });
  }
  if (content.bytes !== description.sizeBytes) {
    throw new LifeboatError(
      ErrorCodes.INTERNAL,
      `The snapshot of ${db.path} had ${content.bytes} bytes, expected ${description.sizeBytes}.`,
    );
  }

  const contentSha = content.hash.digest("hex");
  const createdAt = new Date().toISOString();
  const id = snapshotId(generation, position);
  const baseManifest: Omit<SnapshotManifest, "object"> = {
    format: "lifeboat.snapshot",
    formatVersion: MANIFEST_FORMAT_VERSION,
    id,
    generation,
    position,
    database: { name: db.name, path: db.path },
    createdAt,
    reason,
    tool: { name: "lifeboat", version: TOOL_VERSION },
    source: {
      type: db.driver.type,
      engineVersion: description.engineVersion,
      pageSize: description.pageSize,
      pageCount: description.pageCount,
      journalMode: description.journalMode,
      userVersion: description.userVersion,
      environment: description.environment,
      tables: description.tables,
    },
    integrity,
    content: { size: content.bytes, sha256: contentSha },
  };
  const finalOutcomes = await Promise.all(
    outcomes.map(async (outcome, i): Promise<TargetOutcome> => {
      if (!outcome.ok || !outcome.key) return outcome;
      const repo = repositories[i]!;
      const manifest: SnapshotManifest = {
        ...baseManifest,
        object: {
          key: outcome.key,
          size: outcome.storedBytes ?? 0,
          sha256: (outcome as { sha?: string }).sha ?? "",
          codecs: db.codecs.map((c) => c.spec),
        },
      };
      try {
        await repo.writeJson(keys.snapshotManifest(db.name, generation, position), manifest, {
          signal: options.signal,
        });
        const { sha: _sha, ...clean } = outcome as TargetOutcome & { sha?: string };
        return clean;
      } catch (error) {
        await repo.target.delete([outcome.key]).catch(() => {});
        return {
          target: outcome.target,
          location: outcome.location,
          ok: false,
          error: asStorageError(error, repo, "store the manifest"),
        };
      }
    }),
  );
  const manifest: SnapshotManifest = {
    ...baseManifest,
    object: {
      key: finalOutcomes.find((o) => o.ok)?.key ?? "",
      size: 0,
      sha256: "",
      codecs: db.codecs.map((c) => c.spec),
    },
  };
  const result: BackupResult = { id, manifest, targets: finalOutcomes, durationMs: Date.now() - started };
  await db.hooks.run("afterBackup", {
    database: { name: db.name, path: db.path },
    backupId: id,
    sizeBytes: content.bytes,
    targets: finalOutcomes.map((o) => ({ name: o.target, ok: o.ok, ...(o.error ? { error: o.error.message } : {}) })),
  });
  const failed = finalOutcomes.filter((o) => !o.ok);
  if (failed.length > 0) {
    const okCount = finalOutcomes.length - failed.length;
    throw new LifeboatError(
      failed.length === 1 && failed[0]!.error ? failed[0]!.error.code : ErrorCodes.STORAGE_ERROR,
      `Backup ${id} of ${db.name} was stored on ${okCount} of ${finalOutcomes.length} targets. Failed: ${failed
        .map((o) => `${o.target} (${o.location}): ${o.error?.message ?? "unknown error"}`)
        .join("; ")}`,
      {
        hint: failed.map((o) => o.error?.hint).filter(Boolean)[0] ?? "Fix the failing target and run the backup again.",
        details: { result, host: hostname() },
        operation: "backup",
      },
    );
  }
  return result;
}

function asStorageError(error: unknown, repo: Repository, what: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  return new LifeboatError(ErrorCodes.STORAGE_ERROR, `Could not ${what} on ${repo.where}: ${String(error)}`, {
    cause: error,
    plugin: repo.target.type,
  });
}
