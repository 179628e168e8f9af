/**
 * Read-only file descriptors for database files and their `-shm` files that stay open for the
 * life of the process, one per file.
 *
 * Why: SQLite locks these files with POSIX advisory (fcntl) locks, and POSIX drops all of a
 * process's locks on a file as soon as the process closes any descriptor of that file. Opening
 * and closing our own descriptor would silently release the locks of every SQLite connection in
 * this process: the read mark that pins a snapshot, the write lock, the WAL index's dead-man
 * switch. Other processes could then reset the WAL or checkpoint under a reader that believes
 * it is protected. (The `-wal` file is not locked by SQLite and may be opened and closed freely.)
 */
import { fstatSync, openSync, read, readSync, statSync } from "node:fs";

const kept = new Map<string, number>();
/** Descriptors opened while racing a file replacement; kept open for the same reason. */
const spare: number[] = [];

function keyOf(stats: { dev: number; ino: number }): string {
  return `${stats.dev}:${stats.ino}`;
}

/**
 * A read-only descriptor for the file at `path` (the file it names now), never closed. Throws
 * the `fs` error (ENOENT, EACCES, EISDIR...) when it cannot be opened.
 */
export function keptDescriptor(path: string): number {
  const existing = kept.get(keyOf(statSync(path)));
  if (existing !== undefined) return existing;
  const fd = openSync(path, "r");
  const key = keyOf(fstatSync(fd));
  const raced = kept.get(key);
  if (raced !== undefined) {
    spare.push(fd);
    return raced;
  }
  kept.set(key, fd);
  return fd;
}

/** Reads up to `length` bytes at `position` into `buf[offset...]`; returns the bytes read (fewer only at the end of the file). */
export function readAtSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, offset + done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** Asynchronous `readAtSync` (runs on the libuv thread pool). */
export async function readAt(
  fd: number,
  buf: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  let done = 0;
  while (done < length) {
    const n = await new Promise<number>((resolve, reject) => {
      read(fd, buf, offset + done, length - done, position + done, (error, bytesRead) =>
        error ? reject(error) : resolve(bytesRead),
      );
    });
    if (n === 0) break;
    done += n;
  }
  return done;
}
