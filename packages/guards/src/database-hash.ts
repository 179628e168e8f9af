/**
 * Layer 4, the content hash: `protect` records the sha256 of the database, `status` recomputes it
 * and reports tampering. The hash is taken over the consistent snapshot image of
 * `@lifeboat/sqlite` (the database as of one commit, WAL content included, header bytes 18-19 set
 * to 1), never over the raw file: a database in use is hashed as it was at one moment, never torn,
 * and a checkpoint (which moves pages from the -wal into the file) does not change the hash.
 */
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { resolve } from "node:path";
import {
  type CallOptions,
  type DatabaseDescription,
  defineGuardPlugin,
  fsError,
  type GuardDecision,
  type GuardStatus,
  type IntegrityMode,
  type IntegrityResult,
  removeQuietly,
} from "@lifeboat/core";
import { sqliteSource } from "@lifeboat/sqlite";
import { z } from "zod";
import { affectedPath, LAYER, type LayerGuard, parseLayerOptions, writesTo } from "./layer.js";
import { readSidecar, writeSection } from "./sidecar.js";
import { assertDatabaseFile } from "./sqlite-access.js";

const PLUGIN = "hash";

export interface DatabaseHash {
  /** sha256 of the snapshot image, hex. */
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly pageSize: number;
  readonly pageCount: number;
}

export interface SnapshotCopy extends DatabaseHash {
  readonly description: DatabaseDescription;
  readonly integrity: IntegrityResult;
}

/** sha256 of a consistent snapshot of the database at `path` (safe while others write). */
export async function hashDatabase(path: string, options: CallOptions = {}): Promise<DatabaseHash> {
  const file = resolve(path);
  await assertDatabaseFile(file, "hash");
  const snapshot = await sqliteSource().snapshot(file, { integrity: "off", ...options });
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of snapshot.body) {
    hash.update(chunk);
    bytes += chunk.byteLength;
  }
  const { pageSize, pageCount } = snapshot.description;
  return { sha256: hash.digest("hex"), sizeBytes: bytes, pageSize, pageCount };
}

/**
 * Writes a consistent snapshot of the database at `path` to `destination` (created exclusively,
 * mode 0600, fsynced), hashing it on the way; the integrity check `integrity` runs inside the
 * snapshot's read transaction. The destination is a plain rollback-journal database. On failure
 * nothing is left at `destination`.
 */
export async function copySnapshot(
  path: string,
  destination: string,
  options: CallOptions & { readonly integrity?: IntegrityMode } = {},
): Promise<SnapshotCopy> {
  const file = resolve(path);
  await assertDatabaseFile(file, "copy");
  const snapshot = await sqliteSource().snapshot(file, {
    integrity: options.integrity ?? "quick",
    ...(options.signal ? { signal: options.signal } : {}),
  });
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(destination, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    snapshot.release();
    throw fsError(error, "create", destination, "guards");
  }
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    for await (const chunk of snapshot.body) {
      hash.update(chunk);
      bytes += chunk.byteLength;
      await handle.write(chunk).catch((error: unknown) => {
        throw fsError(error, "write", destination, "guards");
      });
    }
    await handle.sync();
    await handle.close();
  } catch (error) {
    snapshot.release();
    await handle.close().catch(() => {});
    await removeQuietly(destination);
    throw error;
  }
  const { description, integrity } = snapshot;
  return {
    sha256: hash.digest("hex"),
    sizeBytes: bytes,
    pageSize: description.pageSize,
    pageCount: description.pageCount,
    description,
    integrity,
  };
}

/** Records the content hash in the sidecar; an earlier record of the same content is kept as it is. */
export async function applyHash(path: string): Promise<void> {
  const file = resolve(path);
  const hash = await hashDatabase(file);
  if ((await readSidecar(file))?.hash?.sha256 === hash.sha256) return;
  await writeSection(file, "hash", {
    recordedAt: new Date().toISOString(),
    algorithm: "sha256",
    of: "snapshot-image",
    ...hash,
  });
}

/** Drops the recorded hash. */
export async function removeHash(path: string): Promise<void> {
  const file = resolve(path);
  if ((await readSidecar(file))?.hash) await writeSection(file, "hash", undefined);
}

export interface HashStatus extends GuardStatus {
  /** The content differs from what was recorded: someone changed a protected database. */
  readonly problem: boolean;
  readonly recorded: string | null;
  /** Null when not recomputed (`verify: false`) or nothing was recorded. */
  readonly current: string | null;
}

/** Recomputes the hash (unless `verify` is false) and compares it with the recorded one. */
export async function hashStatus(path: string, options: { readonly verify?: boolean } = {}): Promise<HashStatus> {
  const file = resolve(path);
  const recorded = (await readSidecar(file))?.hash;
  if (!recorded) return { name: PLUGIN, active: false, problem: false, recorded: null, current: null, summary: "off" };
  if (options.verify === false) {
    return {
      name: PLUGIN,
      active: true,
      problem: false,
      recorded: recorded.sha256,
      current: null,
      summary: `sha256 ${recorded.sha256.slice(0, 16)}... recorded ${recorded.recordedAt} (not re-checked)`,
    };
  }
  const current = await hashDatabase(file);
  if (current.sha256 === recorded.sha256) {
    return {
      name: PLUGIN,
      active: true,
      problem: false,
      recorded: recorded.sha256,
      current: current.sha256,
      summary: `content unchanged since ${recorded.recordedAt} (sha256 ${recorded.sha256.slice(0, 16)}...)`,
    };
  }
  return {
    name: PLUGIN,
    active: true,
    problem: true,
    recorded: recorded.sha256,
    current: current.sha256,
    summary: `TAMPERED: the content changed since ${recorded.recordedAt} (sha256 ${current.sha256.slice(0, 16)}..., recorded ${recorded.sha256.slice(0, 16)}...; ${current.pageCount} pages, recorded ${recorded.pageCount})`,
  };
}

const optionsSchema = z.strictObject({});
export type HashGuardOptions = z.input<typeof optionsSchema>;

/**
 * Layer 4 as a guard: denies operations that would change a database whose hash is recorded
 * (the record would go stale), naming `lifeboat unprotect`. Tampering is reported by `status`.
 */
export function hashGuard(options: HashGuardOptions = {}): LayerGuard<z.output<typeof optionsSchema>> {
  const resolved = parseLayerOptions(optionsSchema, options, PLUGIN);
  return {
    name: PLUGIN,
    [LAYER]: "hash",
    options: resolved,
    async check(context): Promise<GuardDecision> {
      if (!writesTo(context)) return { action: "allow" };
      const target = affectedPath(context);
      const recorded = (await readSidecar(target))?.hash;
      if (!recorded) return { action: "allow" };
      return {
        action: "deny",
        reason: `${target} is protected: its content hash was recorded ${recorded.recordedAt}.`,
        hint: `Run \`lifeboat status ${target}\` to see whether it changed, and \`lifeboat unprotect ${target}\` before the ${context.operation}.`,
      };
    },
    apply: applyHash,
    remove: removeHash,
    status: (path) => hashStatus(path),
  };
}

/** `type: hash` in lifeboat.yml. */
export const hashGuardPlugin = defineGuardPlugin({
  name: PLUGIN,
  optionsSchema,
  create: (options) => hashGuard(options),
});
