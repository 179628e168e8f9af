/**
 * Putting a finished database file in place of another, as core's restore does it: the replaced
 * database is kept in `.lifeboat-safety/` (a hard link, so no copy) with its -wal/-shm moved
 * beside it, the new file is renamed over it atomically, and on failure the original comes back.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { chown, copyFile, link, mkdir, open, rename, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { errnoCode, fsError, fsyncDir, removeQuietly } from "@lifeboat/core";
import { sqliteSource } from "@lifeboat/sqlite";
import { DEFAULT_SAFETY_FOLDER } from "./safety-backup.js";
import { COMPANION_SUFFIXES, pathExists } from "./sqlite-access.js";

/**
 * Renames `temp` to `output`. An existing `output` must not be in use (DATABASE_LOCKED); it is
 * kept as a safety copy, whose path is returned (null when nothing was replaced), and the new
 * file takes its mode and (as root) its owner. `temp` is gone afterwards either way.
 */
export async function replaceDatabaseFile(temp: string, output: string): Promise<string | null> {
  let safetyCopy: string | null = null;
  try {
    if (await pathExists(output)) {
      await sqliteSource().assertNotInUse(output);
      await copyOwnership(output, temp);
      safetyCopy = await keepSafetyCopy(output);
    }
    await rename(temp, output);
    await fsyncDir(dirname(output));
  } catch (error) {
    await removeQuietly(temp);
    if (safetyCopy) await putBack(safetyCopy, output);
    throw fsError(error, "replace", output, "guards");
  }
  return safetyCopy;
}

async function keepSafetyCopy(output: string): Promise<string> {
  const dir = join(dirname(output), DEFAULT_SAFETY_FOLDER);
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
  for (const suffix of COMPANION_SUFFIXES) {
    if (await pathExists(output + suffix)) await rename(output + suffix, copy + suffix);
  }
  await fsyncDir(dir);
  await fsyncDir(dirname(output));
  return copy;
}

async function putBack(safetyCopy: string, output: string): Promise<void> {
  for (const suffix of COMPANION_SUFFIXES) {
    if (await pathExists(safetyCopy + suffix)) await rename(safetyCopy + suffix, output + suffix).catch(() => {});
  }
  if (!(await pathExists(output))) await link(safetyCopy, output).catch(() => copyFile(safetyCopy, output));
  await fsyncDir(dirname(output)).catch(() => {});
}

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
