/** Restore of a stored snapshot: verified download to a temp file, then an atomic swap. */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chown, copyFile, link, lstat, mkdir, open, rename, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { newTally, tally } from "./byte-streams.js";
import { type ByteStream, type Codec, decodeChain } from "./codec.js";
import type { DatabaseContext, OperationOptions } from "./context.js";
import { ErrorCodes, errnoCode, fsError, isLifeboatError, LifeboatError } from "./errors.js";
import { fsyncDir, removeQuietly, tempPathFor } from "./fs-atomic.js";
import { type ConfirmOptions, checkGuards } from "./guards-check.js";
import type { SnapshotManifest } from "./layout.js";
import { Repository, type StoredSnapshot } from "./repository.js";
import type { DatabaseDescription, IntegrityMode, IntegrityResult } from "./source.js";

export interface SelectOptions {
  /** A backup id or a unique prefix of one. */
  readonly backupId?: string;
  /** Name of the target to read from; default: the first that answers. */
  readonly from?: string;
}

export interface RestoreOptions extends OperationOptions, SelectOptions, ConfirmOptions {
  /** Where to write; default: the database's own path. */
  readonly output?: string;
  /** Show what would change and change nothing. */
  readonly dryRun?: boolean;
  /** Integrity check of the restored file before it is put in place. Default `quick`. */
  readonly integrity?: IntegrityMode;
}

export interface TableDiff {
  readonly name: string;
  readonly currentRows: number | null;
  readonly backupRows: number | null;
  readonly difference: number;
}

/** Every table of either side, by name, with its rows before and after (null: not on that side). */
export function tableDiffs(
  current: readonly { name: string; rows: number }[],
  backup: readonly { name: string; rows: number }[],
): TableDiff[] {
  const names = new Set([...backup.map((t) => t.name), ...current.map((t) => t.name)]);
  return [...names].sort().map((name): TableDiff => {
    const currentRows = current.find((t) => t.name === name)?.rows ?? null;
    const backupRows = backup.find((t) => t.name === name)?.rows ?? null;
    return { name, currentRows, backupRows, difference: (backupRows ?? 0) - (currentRows ?? 0) };
  });
}

export interface RestorePlan {
  readonly backupId: string;
  readonly createdAt: string;
  readonly target: string;
  readonly output: string;
  readonly outputExists: boolean;
  readonly tables: readonly TableDiff[];
  readonly userVersion: { readonly current: number | null; readonly backup: number };
  readonly sizeBytes: number;
}

export interface RestoreResult extends RestorePlan {
  readonly dryRun: boolean;
  /** Where the replaced database (and its -wal) was kept, if one was replaced. */
  readonly safetyCopy: string | null;
  readonly integrity: IntegrityResult | null;
  readonly durationMs: number;
}

/** Picks the target to read from and the snapshot (by id prefix, else the newest good one). */
export async function selectSnapshot(
  db: DatabaseContext,
  options: SelectOptions & OperationOptions,
): Promise<{ repo: Repository; snapshot: StoredSnapshot }> {
  const candidates = options.from ? db.targets.filter((t) => t.name === options.from) : db.targets;
  if (candidates.length === 0) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `No target named "${options.from}" for ${db.name}.`, {
      hint: `Targets of ${db.name}: ${db.targets.map((t) => t.name).join(", ")}.`,
    });
  }
  const failures: string[] = [];
  for (const named of candidates) {
    const repo = new Repository(named, db.name, db);
    await repo.checkOwner({ signal: options.signal });
    let snapshots: StoredSnapshot[];
    try {
      snapshots = (await repo.listSnapshots({ signal: options.signal })).snapshots;
    } catch (error) {
      failures.push(`${named.name}: ${error instanceof Error ? error.message : String(error)}`);
      continue;
    }
    const found = pick(snapshots, options.backupId);
    if (found === "ambiguous") {
      throw new LifeboatError(
        ErrorCodes.INVALID_ARGUMENT,
        `The backup id prefix "${options.backupId}" matches several backups.`,
        {
          hint: "Give more characters of the id (see `lifeboat list`).",
        },
      );
    }
    if (found) return { repo, snapshot: found };
    failures.push(`${named.name}: ${options.backupId ? `no backup ${options.backupId}` : "no backups"}`);
  }
  throw new LifeboatError(
    ErrorCodes.NOT_FOUND,
    `${options.backupId ? `Backup ${options.backupId}` : "No backup"} of ${db.name} found (${failures.join("; ")}).`,
    { hint: "Run `lifeboat list` to see the backups on each target." },
  );
}

function pick(snapshots: readonly StoredSnapshot[], id: string | undefined): StoredSnapshot | "ambiguous" | undefined {
  if (!id) return [...snapshots].reverse().find((s) => s.manifest.integrity.ok);
  const matches = snapshots.filter((s) => s.manifest.id.startsWith(id));
  if (matches.length > 1) return matches.find((s) => s.manifest.id === id) ?? "ambiguous";
  return matches[0];
}

export async function planRestore(
  db: DatabaseContext,
  manifest: SnapshotManifest,
  target: string,
  output: string,
): Promise<RestorePlan> {
  let current: DatabaseDescription | null = null;
  const outputExists = await exists(output);
  if (outputExists) current = await db.driver.describe(output).catch(() => null);
  const tables = tableDiffs(current?.tables ?? [], manifest.source.tables);
  return {
    backupId: manifest.id,
    createdAt: manifest.createdAt,
    target,
    output,
    outputExists,
    tables,
    userVersion: { current: current?.userVersion ?? null, backup: manifest.source.userVersion },
    sizeBytes: manifest.content.size,
  };
}

/**
 * Restores a snapshot to `output` (default: the database path). The object is downloaded to a
 * temp file next to the output, checked against the manifest's sha256 and size, decoded, and
 * integrity-checked; only then is anything touched. An existing database is first kept as a safety
 * copy (a hard link, so it costs no space and no time), its stale -wal/-shm moved beside it, and
 * the temp file renamed into place; if that fails the original is put back.
 */
export async function restore(db: DatabaseContext, options: RestoreOptions = {}): Promise<RestoreResult> {
  const started = Date.now();
  const output = resolve(options.output ?? db.path);
  const { repo, snapshot } = await selectSnapshot(db, options);
  const manifest = snapshot.manifest;
  const plan = await planRestore(db, manifest, repo.named.name, output);
  if (options.dryRun) {
    await repo.target.head(manifest.object.key, { signal: options.signal }).catch((error: unknown) => {
      throw isLifeboatError(error, ErrorCodes.NOT_FOUND)
        ? new LifeboatError(
            ErrorCodes.CORRUPT_BACKUP,
            `The manifest of ${manifest.id} names ${manifest.object.key}, which is missing on ${repo.where}.`,
            {
              hint: "Pick another backup (lifeboat list) and run `lifeboat verify`.",
            },
          )
        : error;
    });
    return { ...plan, dryRun: true, safetyCopy: null, integrity: null, durationMs: Date.now() - started };
  }

  await confirmRestore(db, plan, options, manifest.source.environment);

  const temp = tempPathFor(output, "restore");
  let integrity: IntegrityResult;
  try {
    const { durable } = await download(db, repo, manifest, temp, options, "overlap");
    integrity = await whileSyncing(durable, () =>
      checkRestoredFile(
        db,
        temp,
        options.integrity ?? db.integrity,
        `Backup ${manifest.id} (${manifest.object.key} on ${repo.where})`,
      ),
    );
  } catch (error) {
    await removeQuietly(temp);
    throw error;
  }
  const safetyCopy = await installRestoredFile(db, temp, output, plan.outputExists);
  await db.hooks.run("afterRestore", { database: { name: db.name, path: db.path }, backupId: manifest.id, output });
  return { ...plan, dryRun: false, safetyCopy, integrity, durationMs: Date.now() - started };
}

/**
 * Everything before a restore touches anything: the output must be a file nobody uses; guards
 * allow it; confirmation is given when it replaces a database; `beforeRestore` hooks agree.
 */
export async function confirmRestore(
  db: DatabaseContext,
  plan: RestorePlan,
  options: ConfirmOptions,
  backupEnvironment: string | null,
): Promise<void> {
  const { output } = plan;
  if (plan.outputExists) {
    const info = await stat(output);
    if (!info.isFile()) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${output} exists and is not a file.`, {
        hint: "Choose another --output path.",
      });
    }
    await db.driver.assertNotInUse(output);
  }
  await checkGuards(
    db,
    "restore",
    plan.outputExists,
    options,
    { backupId: plan.backupId, output, backupEnvironment },
    `Replace ${output} with backup ${plan.backupId} from ${plan.createdAt}? [y/N]`,
  );
  await db.hooks.run("beforeRestore", { database: { name: db.name, path: db.path }, backupId: plan.backupId, output });
}

/** Integrity check of a restored temp file; throws `INTEGRITY_FAILED` naming `what`. */
export async function checkRestoredFile(
  db: DatabaseContext,
  file: string,
  mode: IntegrityMode,
  what: string,
): Promise<IntegrityResult> {
  const integrity = await db.driver.checkIntegrity(file, mode);
  if (!integrity.ok) {
    throw new LifeboatError(
      ErrorCodes.INTEGRITY_FAILED,
      `${what} fails ${integrity.check}: ${integrity.messages.slice(0, 3).join("; ")}`,
      {
        hint: "Nothing was changed. Restore another backup or point in time (lifeboat list) and run `lifeboat verify`.",
      },
    );
  }
  return integrity;
}

/**
 * Puts a verified temp file in place of `output`: keeps the replaced database as a safety copy,
 * renames atomically, fsyncs the directory; on failure puts the original back. Returns the safety
 * copy's path (null when nothing was replaced). The temp file is gone afterwards either way.
 */
export async function installRestoredFile(
  db: DatabaseContext,
  temp: string,
  output: string,
  outputExists: boolean,
): Promise<string | null> {
  return replaceDatabaseFile(temp, output, outputExists ? (path) => db.driver.assertNotInUse(path) : null);
}

/**
 * The swap itself, for any caller (restore, clone): with `assertNotInUse` given, `output` exists
 * and is checked, kept as a safety copy and its mode and owner carried over; `temp` is renamed
 * into place and the directory fsynced; on failure the original comes back.
 */
export async function replaceDatabaseFile(
  temp: string,
  output: string,
  assertNotInUse: ((path: string) => Promise<void>) | null,
): Promise<string | null> {
  let safetyCopy: string | null = null;
  try {
    if (assertNotInUse) {
      await assertNotInUse(output);
      await copyOwnership(output, temp);
      safetyCopy = await keepSafetyCopy(output);
    }
    await rename(temp, output);
    await fsyncDir(dirname(output));
  } catch (error) {
    await removeQuietly(temp);
    if (safetyCopy) await rollBack(safetyCopy, output);
    throw fsError(error, "replace", output);
  }
  return safetyCopy;
}

/**
 * When a downloaded file becomes durable: `"sync"` fsyncs before `download` returns; `"overlap"`
 * starts the fsync and returns at once (await `durable` before relying on the file, e.g. while
 * its integrity check runs); `"none"` does not fsync (the caller writes more and fsyncs the file).
 */
export type DownloadSync = "sync" | "overlap" | "none";

/**
 * Streams an object into `file` (created exclusively, mode 0600), verifying size and sha256 on
 * the way. `durable` settles when the file is on disk (see `DownloadSync`); it never rejects
 * unawaited: await it.
 */
export async function download(
  db: DatabaseContext,
  repo: Repository,
  manifest: SnapshotManifest,
  file: string,
  options: OperationOptions,
  sync: DownloadSync = "sync",
): Promise<{ readonly durable: Promise<void> }> {
  const codecs: Codec[] = [];
  for (const spec of manifest.object.codecs) codecs.push(await db.codecForSpec(spec));
  // Without codecs the object is the content: one hash pass, not two.
  const plain = codecs.length === 0;
  const stored = newTally();
  const content = plain ? stored : newTally();
  let handle: Awaited<ReturnType<typeof open>>;
  try {
    handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    throw fsError(error, "create", file);
  }
  let durable: Promise<void>;
  try {
    const object = await repo.target.get(manifest.object.key, { signal: options.signal }).catch((error: unknown) => {
      throw isLifeboatError(error, ErrorCodes.NOT_FOUND)
        ? new LifeboatError(
            ErrorCodes.CORRUPT_BACKUP,
            `Backup ${manifest.id}: its object ${manifest.object.key} is missing on ${repo.where}.`,
            {
              hint: "Pick another backup (lifeboat list) and run `lifeboat verify`.",
            },
          )
        : error;
    });
    const decoded: ByteStream = plain
      ? tally(object.body, stored)
      : tally(decodeChain(codecs, tally(object.body, stored), manifest.object.key), content);
    for await (const chunk of coalesce(decoded, 4 * 1024 * 1024)) {
      try {
        await handle.write(chunk);
      } catch (error) {
        throw fsError(error, "write", file);
      }
      options.onProgress?.({ phase: "download", bytes: content.bytes, total: manifest.content.size });
    }
    const h = handle;
    const syncing =
      sync === "none"
        ? Promise.resolve()
        : h.sync().catch((error: unknown) => {
            throw fsError(error, "fsync", file);
          });
    durable = syncing.finally(() => h.close());
    durable.catch(() => {}); // rejections reach whoever awaits it, never the process
    if (sync !== "overlap") await durable;
  } catch (error) {
    await handle.close().catch(() => {});
    throw error;
  }
  const problems: string[] = [];
  if (stored.bytes !== manifest.object.size)
    problems.push(`size ${stored.bytes}, manifest says ${manifest.object.size}`);
  const storedSha = stored.hash.digest("hex");
  if (storedSha !== manifest.object.sha256)
    problems.push(`sha256 ${storedSha}, manifest says ${manifest.object.sha256}`);
  const contentSha = plain ? storedSha : content.hash.digest("hex");
  if (problems.length === 0 && contentSha !== manifest.content.sha256)
    problems.push(`decoded sha256 ${contentSha}, manifest says ${manifest.content.sha256}`);
  if (problems.length > 0) {
    await durable.catch(() => {});
    throw new LifeboatError(
      ErrorCodes.CORRUPT_BACKUP,
      `Backup ${manifest.id} is corrupt: ${manifest.object.key} on ${repo.where} has ${problems.join(", ")}.`,
      {
        hint: "Nothing was changed. Restore another backup (lifeboat list) or read it from another target (--from NAME).",
      },
    );
  }
  return { durable };
}

/**
 * Runs `check` while `durable` (an fsync in flight) completes; both must succeed. The check reads
 * the file through the page cache, so it need not wait for the disk.
 */
export async function whileSyncing<T>(durable: Promise<void>, check: () => Promise<T>): Promise<T> {
  let result: T;
  try {
    result = await check();
  } catch (error) {
    await durable.catch(() => {}); // the check's failure is the one to report
    throw error;
  }
  await durable;
  return result;
}

/** Joins small chunks into writes of about `size` bytes (fewer syscalls). */
async function* coalesce(source: ByteStream, size: number): AsyncIterable<Uint8Array> {
  let parts: Uint8Array[] = [];
  let length = 0;
  for await (const chunk of source) {
    parts.push(chunk);
    length += chunk.byteLength;
    if (length >= size) {
      yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
      parts = [];
      length = 0;
    }
  }
  if (length > 0) yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
}

const SIDE_FILES = ["-wal", "-shm", "-journal"];

/**
 * Keeps the database being replaced in `<dir>/.lifeboat-safety/` (hard link, or a copy across
 * file systems) and moves its -wal/-shm/-journal there too, so nothing of it is lost and the new
 * file cannot be mixed with the old WAL. Returns the safety copy's path.
 */
async function keepSafetyCopy(output: string): Promise<string> {
  const dir = join(dirname(output), ".lifeboat-safety");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const copy = join(dir, `${basename(output)}.${stamp}.${randomBytes(2).toString("hex")}`);
  try {
    await link(output, copy);
  } catch (error) {
    if (!["EXDEV", "EPERM", "EMLINK", "ENOTSUP"].includes(errnoCode(error) ?? "")) throw error;
    await copyFile(output, copy, constants.COPYFILE_EXCL);
    const handle = await open(copy, "r+");
    await handle.sync();
    await handle.close();
  }
  for (const suffix of SIDE_FILES) {
    if (await exists(output + suffix)) await rename(output + suffix, copy + suffix);
  }
  await fsyncDir(dir);
  await fsyncDir(dirname(output));
  return copy;
}

async function rollBack(safetyCopy: string, output: string): Promise<void> {
  for (const suffix of SIDE_FILES) {
    if (await exists(safetyCopy + suffix)) await rename(safetyCopy + suffix, output + suffix).catch(() => {});
  }
  if (!(await exists(output))) await link(safetyCopy, output).catch(() => copyFile(safetyCopy, output));
  await fsyncDir(dirname(output)).catch(() => {});
}

/** The restored file keeps the replaced file's mode and (when we may) its owner. */
async function copyOwnership(from: string, to: string): Promise<void> {
  const info = await stat(from);
  const handle = await open(to, "r");
  try {
    await handle.chmod(info.mode & 0o7777);
  } finally {
    await handle.close();
  }
  if (process.getuid?.() === 0) await chown(to, info.uid, info.gid).catch(() => {});
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return false;
    throw fsError(error, "inspect", path);
  }
}
