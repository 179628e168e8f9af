/**
 * Layer 6, backup before operation: every destructive operation of this package (delete, clone
 * into an existing database, exec) first takes a verified backup, and can roll back to it.
 *
 * - `to: targets` (the default): core's `backup` with reason `pre-<operation>` to every configured
 *   target, then every stored object is read back and checked against its manifest's size and
 *   sha256. Restorable with `lifeboat restore --backup <id>` like any other backup.
 * - `to: local`: a consistent snapshot copied into a folder next to the database
 *   (`.lifeboat-safety/` by default), fsynced, read back and integrity-checked.
 *
 * If the backup cannot be taken or verified, the operation does not start.
 */
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, stat, statfs } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import {
  backup,
  checkRestoredFile,
  type DatabaseContext,
  defineGuardPlugin,
  download,
  ErrorCodes,
  errnoCode,
  fsError,
  fsyncDir,
  type GuardDecision,
  installRestoredFile,
  keys,
  LifeboatError,
  type OperationOptions,
  Repository,
  removeQuietly,
  type SnapshotManifest,
  selectSnapshot,
  tempPathFor,
} from "@lifeboat/core";
import { z } from "zod";
import { copySnapshot } from "./database-hash.js";
import { affectedPath, findLayer, LAYER, type LayerGuard, parseLayerOptions } from "./layer.js";
import { pathExists } from "./sqlite-access.js";

const PLUGIN = "safety-backup";
export const DEFAULT_SAFETY_FOLDER = ".lifeboat-safety";

const optionsSchema = z.strictObject({
  /** Where the backup goes: the database's configured targets, or a local folder. */
  to: z.enum(["targets", "local"]).default("targets"),
  /** The local folder (`to: local`), relative to the database's directory. */
  folder: z.string().min(1).default(DEFAULT_SAFETY_FOLDER),
});
export type SafetyBackupGuardOptions = z.input<typeof optionsSchema>;
type ResolvedOptions = z.output<typeof optionsSchema>;

export interface SafetyBackup {
  readonly operation: string;
  readonly kind: "targets" | "local";
  /** The backup id on the targets, or the local copy's file name. */
  readonly id: string;
  /** The targets' locations, or the local copy's path. */
  readonly locations: readonly string[];
  /** sha256 of the database image it holds. */
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly createdAt: string;
}

/** The safety-backup options of `db`: its configured layer's, else the defaults. */
export function safetyBackupOptions(db: DatabaseContext): ResolvedOptions {
  return findLayer<ResolvedOptions>(db.guards, "safety-backup")?.options ?? optionsSchema.parse({});
}

/**
 * Takes and verifies the backup that precedes `operation` on `db` (see the module comment).
 * Throws (and nothing was changed) when it cannot be taken or does not verify.
 */
export async function takeSafetyBackup(
  db: DatabaseContext,
  operation: string,
  options: OperationOptions = {},
): Promise<SafetyBackup> {
  const settings = safetyBackupOptions(db);
  return settings.to === "local"
    ? takeLocalBackup(db, operation, resolve(dirname(db.path), settings.folder), options)
    : takeTargetBackup(db, operation, options);
}

async function takeTargetBackup(
  db: DatabaseContext,
  operation: string,
  options: OperationOptions,
): Promise<SafetyBackup> {
  const result = await backup(db, { ...options, reason: `pre-${operation}` });
  const first = result.manifest;
  for (const outcome of result.targets) {
    const named = db.targets.find((t) => t.name === outcome.target);
    if (!named) continue;
    const repo = new Repository(named, db.name);
    // Each target has its own manifest: with encryption its stored bytes differ.
    const manifest = await repo.readJson<SnapshotManifest>(
      keys.snapshotManifest(db.name, first.generation, first.position),
      { signal: options.signal },
    );
    const object = await named.target.get(manifest.object.key, { signal: options.signal });
    const hash = createHash("sha256");
    let size = 0;
    for await (const chunk of object.body) {
      hash.update(chunk);
      size += chunk.byteLength;
    }
    const sha = hash.digest("hex");
    if (size !== manifest.object.size || sha !== manifest.object.sha256) {
      throw new LifeboatError(
        ErrorCodes.CORRUPT_BACKUP,
        `The safety backup ${result.id} of ${db.name} did not verify on ${repo.where}: read back ${size} bytes with sha256 ${sha}, the manifest says ${manifest.object.size} bytes, ${manifest.object.sha256}.`,
        {
          plugin: PLUGIN,
          operation,
          hint: `Nothing was changed. Check the target (lifeboat verify ${db.name}) before trying the ${operation} again.`,
        },
      );
    }
  }
  return {
    operation,
    kind: "targets",
    id: result.id,
    locations: result.targets.map((t) => `${t.target}: ${t.location}/${t.key ?? ""}`),
    sha256: first.content.sha256,
    sizeBytes: first.content.size,
    createdAt: first.createdAt,
  };
}

async function takeLocalBackup(
  db: DatabaseContext,
  operation: string,
  folder: string,
  options: OperationOptions,
): Promise<SafetyBackup> {
  await mkdir(folder, { recursive: true, mode: 0o700 }).catch((error: unknown) => {
    throw fsError(error, "create", folder, PLUGIN);
  });
  const createdAt = new Date().toISOString();
  const name = `${basename(db.path)}.pre-${operation}.${createdAt.replace(/[:.]/g, "-")}.${randomBytes(2).toString("hex")}`;
  const file = join(folder, name);
  const copy = await copySnapshot(db.path, file, {
    integrity: db.integrity === "off" ? "quick" : db.integrity,
    ...(options.signal ? { signal: options.signal } : {}),
  });
  try {
    if (!copy.integrity.ok) {
      throw new LifeboatError(
        ErrorCodes.INTEGRITY_FAILED,
        `${db.path} fails ${copy.integrity.check} (${copy.integrity.messages.slice(0, 3).join("; ")}), so no good safety copy can be made before the ${operation}.`,
        {
          plugin: PLUGIN,
          operation,
          hint: "Nothing was changed. Restore the database from a backup first, or move the damaged file away by hand.",
        },
      );
    }
    await fsyncDir(folder);
    const reread = await sha256File(file);
    const check = await db.driver.checkIntegrity(file, "quick");
    if (reread !== copy.sha256 || !check.ok) {
      throw new LifeboatError(
        ErrorCodes.CORRUPT_BACKUP,
        `The safety copy ${file} did not verify (${reread !== copy.sha256 ? `sha256 ${reread}, written ${copy.sha256}` : check.messages.join("; ")}).`,
        { plugin: PLUGIN, operation, hint: "Nothing was changed. Check the disk holding the safety folder." },
      );
    }
  } catch (error) {
    await removeQuietly(file);
    throw error;
  }
  return {
    operation,
    kind: "local",
    id: name,
    locations: [file],
    sha256: copy.sha256,
    sizeBytes: copy.sizeBytes,
    createdAt,
  };
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/**
 * Puts the database back as the safety backup holds it: downloaded (or copied) to a temp file,
 * verified, integrity-checked and renamed into place the way core's restore does it (the state
 * being replaced is kept in `.lifeboat-safety/`). The database must not be in use.
 */
export async function restoreSafetyBackup(
  db: DatabaseContext,
  safety: SafetyBackup,
  options: OperationOptions = {},
): Promise<void> {
  const temp = tempPathFor(db.path, "rollback");
  try {
    if (safety.kind === "targets") {
      const { repo, snapshot } = await selectSnapshot(db, { backupId: safety.id, ...options });
      await download(db, repo, snapshot.manifest, temp, options);
    } else {
      const source = safety.locations[0]!;
      await copyFile(source, temp).catch((error: unknown) => {
        throw fsError(error, "copy", source, PLUGIN);
      });
      const sha = await sha256File(temp);
      if (sha !== safety.sha256) {
        throw new LifeboatError(
          ErrorCodes.CORRUPT_BACKUP,
          `The safety copy ${source} changed since it was taken (sha256 ${sha}, was ${safety.sha256}).`,
          { plugin: PLUGIN, hint: "Restore from a backup on the targets instead (lifeboat list, lifeboat restore)." },
        );
      }
    }
    await checkRestoredFile(db, temp, "quick", `The safety backup ${safety.id}`);
  } catch (error) {
    await removeQuietly(temp);
    throw error;
  }
  await installRestoredFile(db, temp, db.path, await pathExists(db.path));
}

/** Free bytes for an unprivileged user on the file system holding `path` (or its nearest existing parent). */
async function freeBytes(path: string): Promise<number> {
  for (let dir = path; ; dir = dirname(dir)) {
    try {
      const info = await statfs(dir);
      return info.bavail * info.bsize;
    } catch (error) {
      if (errnoCode(error) !== "ENOENT" || dirname(dir) === dir) throw fsError(error, "inspect", dir, PLUGIN);
    }
  }
}

async function sizeWithWal(path: string): Promise<number> {
  let total = 0;
  for (const file of [path, `${path}-wal`]) {
    total += await stat(file).then(
      (s) => s.size,
      () => 0,
    );
  }
  return total;
}

/**
 * Layer 6 as a guard. delete, clone and exec take the backup themselves; for a restore over the
 * database, `prepare` takes it once every guard and confirmation agreed (core's restore also keeps
 * its own safety copy, a hard link, and rolls back to it). With `to: local` the guard refuses a
 * destructive operation when the safety folder's file system has no room for the copy.
 */
export function safetyBackupGuard(options: SafetyBackupGuardOptions = {}): LayerGuard<ResolvedOptions> {
  const resolved = parseLayerOptions(optionsSchema, options, PLUGIN);
  return {
    name: PLUGIN,
    [LAYER]: "safety-backup",
    options: resolved,
    async check(context): Promise<GuardDecision> {
      if (!context.destructive || resolved.to !== "local" || context.operation === "restore")
        return { action: "allow" };
      const target = affectedPath(context);
      if (!(await pathExists(target))) return { action: "allow" };
      const folder = resolve(dirname(target), resolved.folder);
      const needed = await sizeWithWal(target);
      const free = await freeBytes(folder);
      if (free < needed) {
        return {
          action: "deny",
          reason: `the safety copy of ${target} needs about ${needed} bytes, and ${folder} has ${free} bytes free.`,
          hint: "Free some space (old copies in the safety folder can go once you no longer need them), or point `folder:` at a larger disk.",
        };
      }
      return { action: "allow" };
    },
    async prepare(context, db): Promise<void> {
      if (context.operation !== "restore" || affectedPath(context) !== resolve(db.path)) return;
      if (!(await pathExists(db.path))) return;
      try {
        await takeSafetyBackup(db, "restore");
      } catch (error) {
        // A damaged database is the reason for many restores: it cannot be snapshotted, and core's
        // hard-link safety copy still keeps it. Anything else (a target down) stops the restore.
        const code = (error as { code?: string }).code;
        if (code !== ErrorCodes.INTEGRITY_FAILED && code !== ErrorCodes.NOT_A_DATABASE) throw error;
      }
    },
  };
}

/** `type: safety-backup` in lifeboat.yml. */
export const safetyBackupGuardPlugin = defineGuardPlugin({
  name: PLUGIN,
  optionsSchema,
  create: (options) => safetyBackupGuard(options),
});
