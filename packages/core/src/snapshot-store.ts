/**
 * Stores one snapshot on several targets at once: the stream is read once, fanned out with
 * backpressure, passed through the codec chain per target, hashed on the way, and each target
 * gets its manifest after its object. Used by `backup` and by the replicator.
 */
import { Fanout, newTally, tally } from "./byte-streams.js";
import { encodeChain } from "./codec.js";
import type { DatabaseContext, OperationOptions } from "./context.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import { keys, MANIFEST_FORMAT_VERSION, type SnapshotManifest, snapshotId } from "./layout.js";
import { type Repository, TOOL_VERSION } from "./repository.js";
import type { IntegrityResult, Snapshot } from "./source.js";

export interface SnapshotPlacement {
  readonly generation: string;
  readonly position: number;
  readonly reason: string;
}

export interface StoreOutcome {
  readonly repo: Repository;
  /** Set when the target holds the object and its manifest. */
  readonly manifest?: SnapshotManifest;
  readonly error?: LifeboatError;
}

/**
 * Stores `snapshot` (already taken; released here) at `placement` on every repository. Throws if
 * the database fails its integrity check or the snapshot cannot be read (nothing is left behind
 * then); a failing target is reported in its outcome and holds no object and no manifest. A
 * snapshot with deferred checks is checked after its body is stored and before any manifest.
 */
export async function storeSnapshot(
  db: DatabaseContext,
  snapshot: Snapshot,
  repositories: readonly Repository[],
  placement: SnapshotPlacement,
  options: OperationOptions = {},
): Promise<{ readonly outcomes: readonly StoreOutcome[]; readonly contentBytes: number }> {
  if (!snapshot.completeChecks) assertIntact(db, snapshot.integrity, snapshot);
  const { generation, position } = placement;
  const key = keys.snapshotObject(db.name, generation, position, db.codecs.map((c) => c.extension).join(""));
  const expectedBytes = snapshot.description.sizeBytes;
  const content = newTally();
  const fanout = new Fanout(repositories.length);
  // Without codecs the stored object is the content itself: hash it once, not once per target.
  const plain = db.codecs.length === 0;
  const uploads = repositories.map(async (repo, i) => {
    const stored = newTally();
    try {
      const output = fanout.outputs[i]!;
      await repo.target.put(key, plain ? output : tally(encodeChain(db.codecs, output), stored), {
        ...(options.signal ? { signal: options.signal } : {}),
        ...(plain ? { contentLength: expectedBytes } : {}),
      });
      return { repo, stored: plain ? content : stored };
    } catch (error) {
      fanout.drop(i);
      return { repo, error: asStorageError(error, repo, "store the snapshot") };
    }
  });
  let sourceError: unknown;
  try {
    await fanout.pump(snapshot.body, (chunk) => {
      content.hash.update(chunk);
      content.bytes += chunk.byteLength;
      options.onProgress?.({ phase: "upload", bytes: content.bytes, total: expectedBytes });
    });
  } catch (error) {
    sourceError = error;
  } finally {
    if (sourceError !== undefined || !snapshot.completeChecks) snapshot.release();
  }
  const uploaded = await Promise.all(uploads);
  // When every target failed, the stream was abandoned early: their outcomes say why.
  if (sourceError === undefined && fanout.anyAlive && content.bytes !== expectedBytes) {
    sourceError = new LifeboatError(
      ErrorCodes.INTERNAL,
      `The snapshot of ${db.path} had ${content.bytes} bytes, expected ${expectedBytes}.`,
    );
  }
  let { description, integrity } = snapshot;
  if (snapshot.completeChecks) {
    if (sourceError === undefined) {
      // Deferred checks: the same read transaction, now with every page in the cache.
      try {
        ({ description, integrity } = await snapshot.completeChecks());
        assertIntact(db, integrity);
      } catch (error) {
        sourceError = error;
      }
    } else snapshot.release();
  }
  if (sourceError !== undefined) {
    await Promise.all(uploaded.map((u) => (u.stored ? u.repo.target.delete([key]).catch(() => {}) : undefined)));
    throw sourceError instanceof LifeboatError
      ? sourceError
      : new LifeboatError(ErrorCodes.INTERNAL, `Reading the snapshot of ${db.path} failed: ${String(sourceError)}`, {
          cause: sourceError,
        });
  }
  const contentSha = content.hash.digest("hex");
  const createdAt = new Date().toISOString();
  const outcomes = await Promise.all(
    uploaded.map(async (u): Promise<StoreOutcome> => {
      if (!u.stored) return { repo: u.repo, error: u.error! };
      const manifest: SnapshotManifest = {
        format: "lifeboat.snapshot",
        formatVersion: MANIFEST_FORMAT_VERSION,
        id: snapshotId(generation, position),
        generation,
        position,
        database: { name: db.name, path: db.path },
        createdAt,
        reason: placement.reason,
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
        object: {
          key,
          size: u.stored.bytes,
          sha256: plain ? contentSha : u.stored.hash.digest("hex"),
          codecs: db.codecs.map((c) => c.spec),
        },
      };
      try {
        await u.repo.writeJson(keys.snapshotManifest(db.name, generation, position), manifest, options);
        return { repo: u.repo, manifest };
      } catch (error) {
        await u.repo.target.delete([key]).catch(() => {});
        return { repo: u.repo, error: asStorageError(error, u.repo, "store the manifest") };
      }
    }),
  );
  return { outcomes, contentBytes: content.bytes };
}

/** Throws (releasing `snapshot` if given) when the database failed its integrity check. */
function assertIntact(db: DatabaseContext, integrity: IntegrityResult, snapshot?: Snapshot): void {
  if (integrity.ok) return;
  snapshot?.release();
  throw new LifeboatError(
    ErrorCodes.INTEGRITY_FAILED,
    `${db.path} fails ${integrity.check}: ${integrity.messages.slice(0, 3).join("; ")}`,
    {
      hint: "The database is damaged, so it was not stored over good backups. Restore a backup (lifeboat restore --dry-run shows what it holds) or repair it with the sqlite3 .recover command.",
      details: { messages: integrity.messages },
    },
  );
}

export function asStorageError(error: unknown, repo: Repository, what: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  return new LifeboatError(ErrorCodes.STORAGE_ERROR, `Could not ${what} on ${repo.where}: ${String(error)}`, {
    cause: error,
    plugin: repo.target.type,
  });
}
