/**
 * `lifeboat clone SRC DST`: a hot copy of a database, taken while it is in use through a
 * consistent snapshot, with the copy marked as what it now is (`--environment staging`).
 */
import { statSync } from "node:fs";
import { chmod, stat } from "node:fs/promises";
import { resolve } from "node:path";
import {
  type ConfirmOptions,
  checkGuards,
  type DatabaseContext,
  ErrorCodes,
  type IntegrityMode,
  type IntegrityResult,
  LifeboatError,
  type OperationOptions,
  removeQuietly,
  tempPathFor,
} from "@lifeboat/core";
import { sqliteSource } from "@lifeboat/sqlite";
import Database from "better-sqlite3";
import { requireConfirmation } from "./confirm.js";
import { copySnapshot } from "./database-hash.js";
import {
  DEFAULT_MARKER_TABLE,
  type EnvironmentSettings,
  readEnvironmentMarker,
  writeMarker,
} from "./environment-marker.js";
import { replaceDatabaseFile } from "./file-replace.js";
import { DEFAULT_PRODUCTION_ENVIRONMENTS, findLayer } from "./layer.js";
import { assertNotProtected } from "./protection-state.js";
import { type SafetyBackup, takeSafetyBackup } from "./safety-backup.js";
import {
  assertDatabaseFile,
  BUSY_TIMEOUT_MS,
  closeQuietly,
  databaseError,
  openForWriting,
  pathExists,
} from "./sqlite-access.js";

export interface CloneOptions extends ConfirmOptions, OperationOptions {
  /** What the copy is; stored as its marker. Required when the source carries a marker. */
  readonly environment?: string;
  /** Integrity check of the copy before it is put in place (default `quick`). */
  readonly integrity?: IntegrityMode;
  /** Marker table (default: the environment layer's `table`, else `_lifeboat_environment`). */
  readonly markerTable?: string;
  /** Environments a non-matching clone may never overwrite (default: the environment layer's, else production). */
  readonly productionEnvironments?: readonly string[];
}

export interface CloneResult {
  readonly source: string;
  readonly destination: string;
  /** The copy's marker (null: it carries none). */
  readonly environment: string | null;
  /** sha256 of the snapshot image copied (before the marker was written). */
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly integrity: IntegrityResult;
  /** An existing destination was replaced; it is kept here. */
  readonly replacedCopy: string | null;
  /** The verified backup of a configured destination taken before it was replaced. */
  readonly safetyBackup: SafetyBackup | null;
  /**
   * The source was not written while it was copied (by anyone): its data_version, size and
   * modification time are the same before and after. A clone never writes to its source; when
   * an application wrote meanwhile, the copy holds the state of one moment during the clone.
   */
  readonly sourceUnchanged: boolean;
  readonly durationMs: number;
}

type Side = string | DatabaseContext;
const pathOf = (side: Side) => resolve(typeof side === "string" ? side : side.path);
const contextOf = (side: Side) => (typeof side === "string" ? undefined : side);

/**
 * Copies `source` to `destination` (each a path or a configured database). In order: the
 * destination must differ from the source and, if it exists, not be protected; a production
 * destination is never overwritten by a clone of another environment (GUARD_DENIED); guards
 * (the source's for `clone`, the destination's for a destructive `clone`) and confirmations (an
 * existing destination outside the config needs `yes` or an answer); the snapshot is written to a
 * temp file beside the destination, marked, switched to the source's journal mode and
 * integrity-checked; a configured destination gets a verified safety backup; the copy is renamed
 * over the destination (the old file is kept in `.lifeboat-safety/`).
 */
export async function cloneDatabase(source: Side, destination: Side, options: CloneOptions = {}): Promise<CloneResult> {
  const started = Date.now();
  const src = pathOf(source);
  const dst = pathOf(destination);
  const srcDb = contextOf(source);
  const dstDb = contextOf(destination);
  if (src === dst) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `The clone's source and destination are the same file (${src}).`,
      {
        plugin: "guards",
        operation: "clone",
        hint: "Give another destination path.",
      },
    );
  }
  await assertDatabaseFile(src, "clone");
  const layer = findLayer<EnvironmentSettings>([...(dstDb?.guards ?? []), ...(srcDb?.guards ?? [])], "environment");
  const table = options.markerTable ?? layer?.options.table ?? DEFAULT_MARKER_TABLE;
  const production = options.productionEnvironments ?? layer?.options.environments ?? DEFAULT_PRODUCTION_ENVIRONMENTS;

  const srcMarker = (await readEnvironmentMarker(src, { table }))?.environment ?? null;
  if (options.environment === undefined && srcMarker !== null) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `${src} is marked ${srcMarker}; say what the clone is, or it would claim to be ${srcMarker} too.`,
      {
        plugin: "guards",
        operation: "clone",
        hint: `Pass --environment staging (or development); --environment ${srcMarker} keeps the marker.`,
      },
    );
  }
  const cloneEnvironment = options.environment ?? srcMarker ?? srcDb?.declaredEnvironment ?? null;
  const dstExists = await pathExists(dst);
  const dstEnvironment =
    (dstExists ? (await readEnvironmentMarker(dst, { table }).catch(() => null))?.environment : undefined) ??
    dstDb?.declaredEnvironment ??
    null;
  if (dstEnvironment !== null && production.includes(dstEnvironment) && cloneEnvironment !== dstEnvironment) {
    throw new LifeboatError(
      ErrorCodes.GUARD_DENIED,
      `Refusing to ${dstExists ? "overwrite" : "create"} the ${dstEnvironment} database ${dst} with a ${cloneEnvironment ?? "unmarked"} clone of ${src}.`,
      {
        plugin: "guards",
        operation: "clone",
        hint: `Clone into another path. If ${dst} is not ${dstEnvironment}, correct its marker (lifeboat mark) or its config first.`,
      },
    );
  }
  if (dstExists) {
    await assertDatabaseFile(dst, "clone into");
    await assertNotProtected(dst, "clone into");
  }
  if (srcDb) await checkGuards(srcDb, "clone", false, {}, { role: "source", destination: dst });
  if (dstDb) {
    await checkGuards(
      dstDb,
      "clone",
      dstExists,
      options,
      { source: src, environment: cloneEnvironment },
      `Replace ${dst} with a copy of ${src}? A backup is taken first. [y/N]`,
    );
  } else if (dstExists) {
    await requireConfirmation(options, {
      action: `replace ${dst} with a copy of ${src}`,
      reason: `${dst} exists and would be replaced (the old file is kept in .lifeboat-safety/).`,
    });
  }

  const watch = watchSource(src);
  const temp = tempPathFor(dst, "clone");
  let replacedCopy: string | null = null;
  let safetyBackup: SafetyBackup | null = null;
  let copied: Awaited<ReturnType<typeof copySnapshot>>;
  let integrity: IntegrityResult;
  try {
    copied = await copySnapshot(src, temp, {
      integrity: options.integrity ?? "quick",
      ...(options.signal ? { signal: options.signal } : {}),
    });
    if (!copied.integrity.ok) {
      throw new LifeboatError(
        ErrorCodes.INTEGRITY_FAILED,
        `${src} fails ${copied.integrity.check}: ${copied.integrity.messages.slice(0, 3).join("; ")}. Nothing was written to ${dst}.`,
        {
          plugin: "guards",
          operation: "clone",
          hint: "Clone a healthy database (restore the source from a backup first).",
        },
      );
    }
    finishCopy(temp, {
      environment: options.environment ?? null,
      table,
      wal: copied.description.journalMode === "wal",
    });
    integrity = await sqliteSource().checkIntegrity(temp, options.integrity ?? "quick");
    if (!integrity.ok) {
      throw new LifeboatError(
        ErrorCodes.INTEGRITY_FAILED,
        `The copy of ${src} fails ${integrity.check} after it was written (${integrity.messages.slice(0, 3).join("; ")}). Nothing was written to ${dst}.`,
        { plugin: "guards", operation: "clone", hint: "Check the disk holding the destination." },
      );
    }
    if (dstExists && dstDb) safetyBackup = await takeSafetyBackup(dstDb, "clone", options);
    if (!dstExists) await chmod(temp, (await stat(src)).mode & 0o666);
    replacedCopy = await replaceDatabaseFile(temp, dst);
  } catch (error) {
    await removeQuietly(temp);
    await removeQuietly(`${temp}-wal`);
    await removeQuietly(`${temp}-shm`);
    watch.close();
    throw error;
  }
  const sourceUnchanged = watch.unchanged();
  watch.close();
  return {
    source: src,
    destination: dst,
    environment: cloneEnvironment,
    sha256: copied.sha256,
    sizeBytes: copied.sizeBytes,
    integrity,
    replacedCopy,
    safetyBackup,
    sourceUnchanged,
    durationMs: Date.now() - started,
  };
}

/** Marks the copy and gives it the source's journal mode; closing the only connection leaves one file. */
function finishCopy(file: string, settings: { environment: string | null; table: string; wal: boolean }): void {
  const db = openForWriting(file, "clone");
  try {
    if (settings.environment !== null) {
      db.exec("BEGIN IMMEDIATE");
      try {
        writeMarker(db, settings.table, settings.environment, file);
        db.exec("COMMIT");
      } catch (error) {
        if (db.inTransaction) db.exec("ROLLBACK");
        throw error;
      }
    }
    if (settings.wal) db.pragma("journal_mode = WAL");
  } catch (error) {
    throw databaseError(error, file, "clone");
  } finally {
    closeQuietly(db);
  }
}

/**
 * Watches the source for writes during the clone: `PRAGMA data_version` on a read-only connection
 * held open throughout (it changes when any other connection commits), plus the size and mtime of
 * the database file and its -wal.
 */
function watchSource(path: string): { unchanged(): boolean; close(): void } {
  let db: Database.Database;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
  } catch (error) {
    throw databaseError(error, path, "clone");
  }
  const version = () => db.pragma("data_version", { simple: true }) as number;
  const files = () =>
    [path, `${path}-wal`]
      .map((f) => {
        const s = statSyncQuiet(f);
        return s ? `${s.size}:${s.mtimeMs}` : "-";
      })
      .join("|");
  // data_version first: opening a WAL database may create its (empty) -wal, which is no write.
  const before = { version: version(), files: files() };
  return {
    unchanged: () => version() === before.version && files() === before.files,
    close: () => closeQuietly(db),
  };
}

function statSyncQuiet(path: string): { size: number; mtimeMs: number } | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}
