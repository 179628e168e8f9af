/** File-system helpers for "nothing is ever written in place": temp file, fsync, rename, fsync dir. */
import { randomBytes } from "node:crypto";
import { type FileHandle, open, rm } from "node:fs/promises";
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

/**
 * Starts the disk's work early while a large file is written: after every `every` bytes an
 * fdatasync runs in the background (one at a time), so the disk writes while the data is still
 * being produced and the final fsync has little left to flush. A background failure is kept and
 * thrown by `settle()`: Linux reports a writeback error to only one fsync per descriptor, so it
 * must never be swallowed. Call `settle()` before the final fsync and before closing the handle.
 */
export class WriteBehind {
  readonly #handle: FileHandle;
  readonly #every: number;
  #unflushed = 0;
  #inflight: Promise<void> | null = null;
  #error: unknown = null;

  constructor(handle: FileHandle, every = 32 * 1024 * 1024) {
    this.#handle = handle;
    this.#every = every;
  }

  /** Records `bytes` written; starts a background flush when enough has piled up. */
  wrote(bytes: number): void {
    this.#unflushed += bytes;
    if (this.#unflushed < this.#every || this.#inflight) return;
    this.#unflushed = 0;
    this.#inflight = this.#handle
      .datasync()
      .catch((error: unknown) => {
        this.#error ??= error;
      })
      .finally(() => {
        this.#inflight = null;
      });
  }

  /** Waits for a background flush in flight; throws if any failed. */
  async settle(): Promise<void> {
    await this.#inflight;
    if (this.#error !== null) throw this.#error;
  }
}
