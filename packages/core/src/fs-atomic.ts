/** File-system helpers for "nothing is ever written in place": temp file, fsync, rename, fsync dir. */
import { randomBytes } from "node:crypto";
import { open, rm } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** fsyncs a directory so a rename or unlink inside it is durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** A temp path next to `file` (same directory, so same file system and an atomic rename). */
export function tempPathFor(file: string, purpose: string): string {
  return join(dirname(file), `.${basename(file)}.lifeboat-${purpose}-${randomBytes(4).toString("hex")}.tmp`);
}

export async function removeQuietly(path: string): Promise<void> {
  await rm(path, { force: true, recursive: true }).catch(() => {});
}
