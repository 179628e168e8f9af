/** `lifeboat delete`: guards, a verified backup, then the database with its -wal, -shm and -journal. */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import {
  type ConfirmOptions,
  checkGuards,
  type DatabaseContext,
  fsError,
  fsyncDir,
  type OperationOptions,
} from "@lifeboat/core";
import { assertNotProtected } from "./protection-state.js";
import { type SafetyBackup, takeSafetyBackup } from "./safety-backup.js";
import { assertDatabaseFile, COMPANION_SUFFIXES, pathExists } from "./sqlite-access.js";

export interface DeleteOptions extends ConfirmOptions, OperationOptions {}

export interface DeleteResult {
  readonly database: string;
  readonly path: string;
  /** The files removed. */
  readonly removed: readonly string[];
  /** Where the database can be restored from. */
  readonly safetyBackup: SafetyBackup;
  readonly durationMs: number;
}

/**
 * Deletes the database of `db`. In order: the file must be a database and not protected; the
 * guards allow `delete` and confirmations are given; nobody has it open; a verified safety backup
 * is taken (restorable with `lifeboat restore --backup <id>`); nobody opened it meanwhile; the
 * files are moved into a temporary folder beside them (each an atomic rename; if one fails the
 * others are moved back and nothing is lost), the directory is fsynced, and the folder removed.
 */
export async function deleteDatabase(db: DatabaseContext, options: DeleteOptions = {}): Promise<DeleteResult> {
  const started = Date.now();
  const path = resolve(db.path);
  await assertDatabaseFile(path, "delete");
  await assertNotProtected(path, "delete");
  await checkGuards(
    db,
    "delete",
    true,
    options,
    {},
    `Delete ${path} and its -wal/-shm files? A backup is taken first. [y/N]`,
  );
  await db.driver.assertNotInUse(path);
  const safetyBackup = await takeSafetyBackup(db, "delete", options);
  await db.driver.assertNotInUse(path);

  const dir = dirname(path);
  const trash = join(dir, `.${basename(path)}.lifeboat-delete-${randomBytes(4).toString("hex")}`);
  await mkdir(trash, { mode: 0o700 }).catch((error: unknown) => {
    throw fsError(error, "create", trash, "guards");
  });
  const moved: { from: string; to: string }[] = [];
  try {
    for (const suffix of ["", ...COMPANION_SUFFIXES]) {
      const file = path + suffix;
      if (!(await pathExists(file))) continue;
      const to = join(trash, basename(file));
      await rename(file, to).catch((error: unknown) => {
        throw fsError(error, "remove", file, "guards");
      });
      moved.push({ from: file, to });
    }
    await fsyncDir(dir);
  } catch (error) {
    for (const { from, to } of moved.reverse()) await rename(to, from).catch(() => {});
    await fsyncDir(dir).catch(() => {});
    await rm(trash, { recursive: true, force: true }).catch(() => {});
    throw error;
  }
  await rm(trash, { recursive: true, force: true });
  await fsyncDir(dir);
  return {
    database: db.name,
    path,
    removed: moved.map((m) => m.from),
    safetyBackup,
    durationMs: Date.now() - started,
  };
}
