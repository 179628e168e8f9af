/**
 * `lifeboat protect`, `unprotect` and `status`: applying the file-system layers (hash,
 * permissions, immutability) to a database at rest, undoing exactly what was applied, and
 * reporting the state of each, tampering included.
 */
import { stat } from "node:fs/promises";
import { resolve } from "node:path";
import { ErrorCodes, type Guard, LifeboatError } from "@lifeboat/core";
import { type DatabaseHolder, findHolders } from "@lifeboat/sqlite";
import { hashDatabase, hashGuard, hashStatus, removeHash } from "./database-hash.js";
import { type EnvironmentMarker, readEnvironmentMarker } from "./environment-marker.js";
import { immutableGuard, immutableStatus, isImmutable, removeImmutable } from "./immutability.js";
import { findLayer, type LayerGuard, type LayerName } from "./layer.js";
import { permissionsGuard, permissionsStatus, removePermissions } from "./permissions.js";
import { appliedSections, readSidecar, type SidecarSection } from "./sidecar.js";
import { assertDatabaseFile, closeQuietly, openForWriting, withReadConnection } from "./sqlite-access.js";

/** The layers `protect` applies, in the order it applies them (unprotect goes backwards). */
const FILE_LAYERS = ["hash", "permissions", "immutable"] as const satisfies readonly (LayerName & SidecarSection)[];
type FileLayer = (typeof FILE_LAYERS)[number];

export interface ProtectionChoice {
  /** Mode for the permissions layer (replaces a configured one's). */
  readonly mode?: number;
  /** Add the immutable layer. */
  readonly immutable?: boolean;
  /** Leave out the hash layer. */
  readonly hash?: boolean;
}

/**
 * The file-system layers to apply: those configured among `guards`, else hash + permissions;
 * then `choice` adjusts them (a mode, the immutable layer added, the hash left out).
 */
export function protectionLayers(guards: readonly Guard[], choice: ProtectionChoice = {}): LayerGuard[] {
  const layers = new Map<FileLayer, LayerGuard>();
  for (const name of FILE_LAYERS) {
    const found = findLayer(guards, name);
    if (found?.apply) layers.set(name, found);
  }
  if (layers.size === 0) {
    layers.set("hash", hashGuard());
    layers.set("permissions", permissionsGuard());
  }
  if (choice.mode !== undefined) layers.set("permissions", permissionsGuard({ mode: choice.mode }));
  if (choice.immutable && !layers.has("immutable")) layers.set("immutable", immutableGuard());
  if (choice.hash === false) layers.delete("hash");
  return FILE_LAYERS.flatMap((name) => layers.get(name) ?? []);
}

export interface ProtectOptions {
  /** The layers to apply (default: `protectionLayers([])`, i.e. hash + permissions). */
  readonly layers?: readonly LayerGuard[];
  /**
   * Protect even while other processes have the database open. They keep writing through the
   * descriptors they already hold; only new connections are stopped (see the README).
   */
  readonly allowInUse?: boolean;
}

export interface ProtectResult {
  readonly path: string;
  readonly applied: readonly string[];
  /** The WAL was checkpointed into the database file first, so the file alone holds everything. */
  readonly checkpointed: boolean;
  /** Processes that had it open (only with `allowInUse`). */
  readonly inUseBy: readonly DatabaseHolder[];
}

/**
 * Protects the database at `path` at rest. Refuses (DATABASE_LOCKED) while another process has it
 * open, unless `allowInUse`, and when a crashed writer left a hot journal. A WAL database nobody
 * uses is checkpointed first (its content moves from the -wal into the file; nothing changes for
 * readers). Layers are applied hash, permissions, immutable; if one fails, the ones this call
 * applied are undone. Protecting again keeps what the first protect remembered; a recorded hash
 * that no longer matches refuses (the content changed while protected).
 */
export async function protectDatabase(path: string, options: ProtectOptions = {}): Promise<ProtectResult> {
  const file = resolve(path);
  const layers = options.layers ?? protectionLayers([]);
  const holders = await findHolders(file).catch(() => []);
  if (holders.length > 0 && !options.allowInUse) {
    const who = holders.map((h) => `pid ${h.pid}${h.command ? ` (${h.command})` : ""}`).join(", ");
    throw new LifeboatError(ErrorCodes.DATABASE_LOCKED, `${file} is in use by ${who}.`, {
      plugin: "guards",
      operation: "protect",
      details: { path: file, holders },
      hint: "Protect a database at rest: stop the application first. (--force protects it anyway: running processes keep writing through the descriptors they hold; only new connections are stopped.)",
    });
  }
  // Before SQLite reads it: a read-only connection cannot roll a hot journal back.
  const journal = await stat(`${file}-journal`).catch(() => null);
  if (journal && journal.size > 0 && holders.length === 0) {
    throw new LifeboatError(
      ErrorCodes.DATABASE_LOCKED,
      `${file} has a hot journal: a writer stopped in the middle of a transaction, and the next writer must roll it back.`,
      {
        plugin: "guards",
        operation: "protect",
        hint: `Open it once with its application (or run \`sqlite3 ${file} "PRAGMA quick_check"\`), then protect it.`,
      },
    );
  }
  await assertDatabaseFile(file, "protect");
  const sidecar = await readSidecar(file);
  const before = appliedSections(sidecar);
  if (sidecar?.hash && layers.some((l) => l.name === "hash")) {
    const current = await hashDatabase(file);
    if (current.sha256 !== sidecar.hash.sha256) {
      throw new LifeboatError(
        ErrorCodes.GUARD_DENIED,
        `${file} changed since it was protected (${sidecar.hash.recordedAt}); refusing to record its new content as the protected one.`,
        {
          plugin: "guards",
          operation: "protect",
          hint: "Find out who wrote to it (lifeboat status shows the state). To accept the new content: lifeboat unprotect, then lifeboat protect.",
        },
      );
    }
  }
  const checkpointed =
    holders.length === 0 && before.length === 0 && (await isImmutable(file).catch(() => null)) !== true
      ? checkpointAtRest(file)
      : false;
  const applied: LayerGuard[] = [];
  try {
    for (const layer of layers) {
      await layer.apply!(file);
      applied.push(layer);
    }
  } catch (error) {
    for (const layer of applied.reverse()) {
      if (!before.includes(layer.name as SidecarSection)) await layer.remove?.(file).catch(() => {});
    }
    throw error;
  }
  return { path: file, applied: applied.map((l) => l.name), checkpointed, inUseBy: holders };
}

/** TRUNCATE-checkpoints a WAL database nobody uses; closing the last connection removes -wal and -shm. */
function checkpointAtRest(file: string): boolean {
  const journalMode = withReadConnection(file, "protect", (db) =>
    String(db.pragma("journal_mode", { simple: true })).toLowerCase(),
  );
  if (journalMode !== "wal") return false;
  let db: ReturnType<typeof openForWriting> | undefined;
  try {
    db = openForWriting(file, "protect");
    const [result] = db.pragma("wal_checkpoint(TRUNCATE)") as { busy: number }[];
    return result?.busy === 0;
  } catch {
    // Not ours to write (already read-only for this user): protect what is there.
    return false;
  } finally {
    closeQuietly(db);
  }
}

export interface UnprotectResult {
  readonly path: string;
  /** The layers removed (empty: it was not protected). */
  readonly removed: readonly string[];
}

/**
 * Undoes what `protect` recorded, from the sidecar (whatever the config now says): the immutable
 * attribute it set, the modes it changed (companions created since get the database's mode back),
 * the recorded hash. The sidecar is gone afterwards.
 */
export async function unprotectDatabase(path: string): Promise<UnprotectResult> {
  const file = resolve(path);
  const sections = appliedSections(await readSidecar(file));
  if (sections.includes("immutable")) await removeImmutable(file);
  if (sections.includes("permissions")) await removePermissions(file);
  if (sections.includes("hash")) await removeHash(file);
  return { path: file, removed: [...FILE_LAYERS].reverse().filter((s) => sections.includes(s)) };
}

export interface LayerState {
  readonly name: string;
  readonly active: boolean;
  /** Something is wrong: tampered content, a file writable again, the attribute cleared. */
  readonly problem: boolean;
  readonly summary: string;
}

export interface ProtectionStatus {
  readonly path: string;
  /** At least one layer is in force. */
  readonly protected: boolean;
  /** A layer reports a problem (see `LayerState.problem`). */
  readonly problems: boolean;
  readonly layers: readonly LayerState[];
  readonly environment: EnvironmentMarker | null;
  readonly inUseBy: readonly DatabaseHolder[];
}

/**
 * The state of every file-system layer (recomputing the hash unless `verifyHash` is false), the
 * environment marker, and who has the database open.
 */
export async function protectionStatus(
  path: string,
  options: { readonly verifyHash?: boolean; readonly markerTable?: string } = {},
): Promise<ProtectionStatus> {
  const file = resolve(path);
  await assertDatabaseFile(file, "inspect");
  const layers: LayerState[] = [
    await hashStatus(file, { verify: options.verifyHash !== false }),
    await permissionsStatus(file),
    await immutableStatus(file),
  ].map(({ name, active, problem, summary }) => ({ name, active, problem, summary }));
  const environment = await readEnvironmentMarker(file, options.markerTable ? { table: options.markerTable } : {});
  return {
    path: file,
    protected: layers.some((l) => l.active),
    problems: layers.some((l) => l.problem),
    layers,
    environment,
    inUseBy: await findHolders(file),
  };
}
