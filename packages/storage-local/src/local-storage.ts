/**
 * A `StorageTarget` on a local directory. Key `a/b/c` is the file `<root>/a/b/c`.
 *
 * Every put streams into a temp file under `<root>/.lifeboat-tmp/` (same file system as the
 * objects), fsyncs it, and only then renames it into place (or hard-links it, for an atomic
 * create-if-absent), then fsyncs the directories it touched. Readers therefore see the old object
 * or the complete new one, and a crash leaves at most a stale temp file that `init()` sweeps.
 */
import { randomUUID } from "node:crypto";
import type { Dirent, Stats } from "node:fs";
import {
  chmod,
  type FileHandle,
  link,
  lstat,
  mkdir,
  open,
  readdir,
  realpath,
  rename,
  rmdir,
  stat,
  unlink,
} from "node:fs/promises";
import { basename, dirname, join, resolve, sep } from "node:path";
import { Readable } from "node:stream";
import {
  assertPutArguments,
  assertValidKey,
  type Body,
  type ByteRange,
  type CallOptions,
  ErrorCodes,
  errnoCode,
  fsError,
  type GetOptions,
  type GetResult,
  LifeboatError,
  type ListOptions,
  NotFoundError,
  type ObjectInfo,
  PreconditionFailedError,
  type PutOptions,
  STORAGE_API_VERSION,
  type StorageCapabilities,
  type StorageTarget,
  WriteBehind,
} from "@lifeboat/core";

const PLUGIN = "local";

/** Directory under the root that holds in-flight puts and the init probe. Never a key. */
export const TEMP_DIR_NAME = ".lifeboat-tmp";

/** Temp files untouched this long belong to a crashed writer; `init()` removes them. */
const STALE_TEMP_MS = 60 * 60 * 1000;
/** Small chunks are gathered into writes of this size; bigger chunks are written as they come. */
const STAGE_BYTES = 256 * 1024;
/** Reads of whole objects: large enough that a restore makes few syscalls and stream calls per GiB. */
const READ_CHUNK_BYTES = 4 * 1024 * 1024;
/** Files stat'ed in parallel while listing, and keys unlinked in parallel while deleting. */
const PARALLEL_FS_CALLS = 16;
/** How often a put retries after a concurrent delete removed the (empty) parent directory. */
const PARENT_RACE_RETRIES = 5;

export interface LocalStorageOptions {
  /** The directory that holds the objects. Created by `init()` (and by the first put) if missing. */
  readonly path: string;
  /** Base directory for a relative `path`; defaults to the working directory. */
  readonly baseDir?: string;
  /** Mode of object files, applied with fchmod so the umask cannot widen or narrow it. Default 0o600. */
  readonly fileMode?: number;
  /** Mode of directories the target creates. Default 0o700. */
  readonly dirMode?: number;
}

/**
 * A storage target on a local directory (`type: local`). Capabilities: atomic conditional create
 * (hard link), range reads; no object lock, no user metadata (`metadata` given to `put` is
 * ignored). Keys map to paths below the directory, so a key cannot also be a directory prefix of
 * other keys (`a` and `a/b` cannot coexist): such a put fails with `INVALID_KEY`.
 */
export function localStorage(options: LocalStorageOptions): StorageTarget {
  return new LocalStorage(options);
}

class LocalStorage implements StorageTarget {
  readonly apiVersion = STORAGE_API_VERSION;
  readonly type = PLUGIN;
  readonly location: string;
  readonly capabilities: StorageCapabilities = Object.freeze({
    conditionalCreate: true,
    rangeReads: true,
    objectLock: false,
    metadata: false,
  });

  readonly #root: string;
  readonly #tempDir: string;
  readonly #fileMode: number;
  readonly #dirMode: number;
  #realRoot: string | undefined;
  #closed = false;

  constructor(options: LocalStorageOptions) {
    if (typeof options?.path !== "string" || options.path.trim() === "") {
      throw invalidOption("path", "must be a non-empty directory path");
    }
    this.#fileMode = checkMode("fileMode", options.fileMode ?? 0o600, 0o600);
    this.#dirMode = checkMode("dirMode", options.dirMode ?? 0o700, 0o700);
    this.#root = resolve(options.baseDir ?? process.cwd(), options.path);
    this.#tempDir = join(this.#root, TEMP_DIR_NAME);
    this.location = this.#root;
  }

  /**
   * Creates the directory if missing (mode `dirMode`), checks that it is a writable directory by
   * writing and removing a probe file, and removes temp files left by crashed writers. Idempotent.
   */
  async init(options: CallOptions = {}): Promise<void> {
    this.#checkOpen();
    throwIfAborted(options.signal, () => this.#abortError("init", undefined, options.signal));
    let existing: Stats | undefined;
    try {
      existing = await stat(this.#root);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw this.#initError(error, "inspect");
    }
    if (existing && !existing.isDirectory()) {
      throw new LifeboatError(
        ErrorCodes.STORAGE_ERROR,
        `The local target path ${this.#root} is a file, not a directory.`,
        {
          plugin: PLUGIN,
          operation: "init",
          details: { path: this.#root },
          hint: "Point `path` at a directory (it is created if missing), or move the file out of the way.",
        },
      );
    }
    try {
      if (!existing) await this.#createRoot();
      this.#realRoot = undefined;
      await this.#realRootPath();
      await this.#ensureDir(this.#tempDir, TEMP_DIR_NAME);
      const probe = join(this.#tempDir, `probe-${process.pid}-${randomUUID()}.tmp`);
      const handle = await open(probe, "wx", this.#fileMode);
      try {
        await handle.write(Buffer.from("lifeboat write probe\n"));
        await handle.sync();
      } finally {
        await handle.close();
        await unlink(probe).catch(ignore);
      }
    } catch (error) {
      throw this.#initError(error, "write to");
    }
    await this.#sweepStaleTemps();
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  /**
   * Streams `body` into a temp file, fsyncs it, then renames it to the key's path (or, with
   * `ifNoneMatch: "*"`, hard-links it there: atomic, `EEXIST` means another object won) and fsyncs
   * the parent directories. Chunks are written before the next one is pulled, so memory stays
   * constant and a slow disk slows the producer. On any failure or abort the temp file is removed
   * and a previous object at `key` is left untouched.
   */
  async put(key: string, body: Body, options: PutOptions = {}): Promise<ObjectInfo> {
    this.#checkOpen();
    const file = this.#pathOf(key);
    const { signal, contentLength } = options;
    assertPutArguments(key, body, contentLength, PLUGIN);
    const abortError = () => this.#abortError("put", key, signal);
    throwIfAborted(signal, abortError);

    const exclusive = options.ifNoneMatch === "*";
    // Fail a doomed create before streaming the body; the hard link below still decides races.
    if (exclusive && (await isFile(file))) throw this.#exists(key, file);

    const temp = join(this.#tempDir, `${process.pid}-${randomUUID()}.tmp`);
    let handle: FileHandle | undefined;
    try {
      handle = await this.#openTemp(temp);
      const writeBehind = new WriteBehind(handle);
      let written: number;
      try {
        written = await writeBody(handle, body, signal, abortError, contentLength, writeBehind);
      } catch (error) {
        await writeBehind.settle().catch(() => {});
        throw error;
      }
      // A failed background flush must fail the put: the fsync below might not see that error again.
      await writeBehind.settle();
      if (contentLength !== undefined && written !== contentLength) {
        throw new LifeboatError(
          ErrorCodes.STORAGE_ERROR,
          `${
            written > contentLength
              ? `The body for "${key}" is longer than contentLength (${contentLength} bytes)`
              : `The body for "${key}" has ${written} bytes but contentLength said ${contentLength}`
          }; nothing was stored at ${file}.`,
          {
            plugin: PLUGIN,
            operation: "put",
            details: { key, path: file, contentLength, received: written },
            hint: "Pass the exact length of the body as contentLength, or omit it.",
          },
        );
      }
      await handle.sync();
      const info = await handle.stat();
      await handle.close();
      handle = undefined;
      throwIfAborted(signal, abortError);
      await this.#commit(temp, file, key, exclusive);
      return { key, size: info.size, lastModified: info.mtime };
    } catch (error) {
      if (handle) await handle.close().catch(ignore);
      await unlink(temp).catch(ignore);
      throw this.#writeError(error, file);
    }
  }

  /**
   * Opens the object and returns its info with a Node `Readable` of its bytes (or of `range`).
   * The file is opened before the info is read, so body and info describe the same object even
   * if it is replaced meanwhile. `size` is the whole object's size, also for a range.
   */
  async get(key: string, options: GetOptions = {}): Promise<GetResult> {
    this.#checkOpen();
    const file = this.#pathOf(key);
    const { signal, range } = options;
    if (range !== undefined) checkRange(range, key);
    throwIfAborted(signal, () => this.#abortError("get", key, signal));
    const real = await this.#resolveObject(key, file);
    let handle: FileHandle;
    try {
      handle = await open(real, "r");
    } catch (error) {
      if (isMissing(error)) throw this.#notFound(key);
      throw fsError(error, "read", file, PLUGIN);
    }
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw this.#notFound(key);
      const start = range?.offset ?? 0;
      if (start > info.size) {
        throw new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `The range starting at byte ${start} is past the end of "${key}" (${info.size} bytes) in ${this.#root}.`,
          {
            plugin: PLUGIN,
            operation: "get",
            details: { key, size: info.size, range },
            hint: "Ask for a range inside the object.",
          },
        );
      }
      const end = range?.length === undefined ? info.size : Math.min(info.size, start + range.length);
      let body: Readable;
      if (end <= start) {
        await handle.close();
        body = Readable.from([]);
      } else {
        body = handle.createReadStream({ start, end: end - 1, highWaterMark: READ_CHUNK_BYTES, autoClose: true });
        if (signal) {
          const onAbort = () => body.destroy(this.#abortError("get", key, signal));
          signal.addEventListener("abort", onAbort, { once: true });
          body.once("close", () => signal.removeEventListener("abort", onAbort));
        }
      }
      return { key, size: info.size, lastModified: info.mtime, body };
    } catch (error) {
      await handle.close().catch(ignore);
      throw fsError(error, "read", file, PLUGIN);
    }
  }

  /** Size and modification time of the object, from `stat`. */
  async head(key: string, options: CallOptions = {}): Promise<ObjectInfo> {
    this.#checkOpen();
    const file = this.#pathOf(key);
    throwIfAborted(options.signal, () => this.#abortError("head", key, options.signal));
    const real = await this.#resolveObject(key, file);
    let info: Stats;
    try {
      info = await stat(real);
    } catch (error) {
      if (isMissing(error)) throw this.#notFound(key);
      throw fsError(error, "read", file, PLUGIN);
    }
    if (!info.isFile()) throw this.#notFound(key);
    return { key, size: info.size, lastModified: info.mtime };
  }

  /**
   * Walks the directory depth-first, each directory's entries sorted by the UTF-8 bytes of their
   * keys (a directory sorts as `name/`), which yields keys in global byte order. Only directories
   * that can hold keys starting with `prefix` (and after `startAfter`) are read, starting at the
   * deepest directory the prefix names. Symbolic links and the temp directory are not objects.
   */
  async *list(prefix: string, options: ListOptions = {}): AsyncIterable<ObjectInfo> {
    this.#checkOpen();
    if (typeof prefix !== "string") {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "The list prefix must be a string.", {
        plugin: PLUGIN,
        operation: "list",
        hint: 'Pass "" to list everything.',
      });
    }
    const { signal, startAfter } = options;
    const abortError = () => this.#abortError("list", undefined, signal);
    throwIfAborted(signal, abortError);
    const cut = prefix.lastIndexOf("/");
    let startKey = "";
    if (cut > 0) {
      const dirKey = prefix.slice(0, cut);
      // A prefix whose directory part is not a valid key cannot match any valid key.
      if (!isValidKey(dirKey) || firstSegment(dirKey) === TEMP_DIR_NAME) return;
      startKey = `${dirKey}/`;
    }
    const startPath = join(this.#root, startKey);
    let realStart: string;
    try {
      realStart = await realpath(startPath);
    } catch (error) {
      if (isMissing(error)) return;
      throw fsError(error, "list", startPath, PLUGIN);
    }
    await this.#assertInside(realStart, prefix);
    const walk: Walk = {
      prefix,
      after: startAfter === undefined ? undefined : Buffer.from(startAfter, "utf8"),
      signal,
      abortError,
    };
    yield* this.#walk(realStart, startKey, walk);
  }

  /**
   * Unlinks the files (missing keys and directories are not objects and are skipped), fsyncs their
   * directories, then removes directories left empty, up to but never including the root.
   */
  async delete(keys: readonly string[], options: CallOptions = {}): Promise<void> {
    this.#checkOpen();
    const files = keys.map((key) => ({ key, file: this.#pathOf(key) }));
    const { signal } = options;
    const abortError = () => this.#abortError("delete", undefined, signal);
    throwIfAborted(signal, abortError);
    const touched = new Set<string>();
    await forEachLimit(files, PARALLEL_FS_CALLS, async ({ key, file }) => {
      throwIfAborted(signal, abortError);
      let parent: string;
      try {
        parent = await realpath(dirname(file));
      } catch (error) {
        if (isMissing(error)) return;
        throw fsError(error, "delete", file, PLUGIN);
      }
      await this.#assertInside(parent, key);
      const target = join(parent, basename(file));
      try {
        await unlink(target);
        touched.add(parent);
      } catch (error) {
        const errno = errnoCode(error);
        if (errno === "ENOENT" || errno === "ENOTDIR") return;
        if ((errno === "EISDIR" || errno === "EPERM") && (await isDirectory(target))) return;
        throw fsError(error, "delete", file, PLUGIN);
      }
    });
    await this.#syncDirs(touched);
    await this.#removeEmptyDirs(touched);
  }

  // ---- keys and paths ----

  #pathOf(key: string): string {
    assertValidKey(key, PLUGIN);
    if (firstSegment(key) === TEMP_DIR_NAME) {
      throw new LifeboatError(
        ErrorCodes.INVALID_KEY,
        `Invalid storage key ${JSON.stringify(key)}: the first segment "${TEMP_DIR_NAME}" is reserved for the local target's temporary files.`,
        { plugin: PLUGIN, hint: `Choose a key that does not start with "${TEMP_DIR_NAME}/".` },
      );
    }
    const file = resolve(this.#root, key);
    // assertValidKey already excludes '..'; this guards the mapping itself.
    if (!isInside(file, this.#root)) {
      throw new LifeboatError(ErrorCodes.INVALID_KEY, `The key ${JSON.stringify(key)} maps outside ${this.#root}.`, {
        plugin: PLUGIN,
        hint: "Keys are relative '/'-separated names.",
      });
    }
    return file;
  }

  async #realRootPath(): Promise<string> {
    this.#realRoot ??= await realpath(this.#root);
    return this.#realRoot;
  }

  /** Refuses paths that a symbolic link inside the target sends outside of it. */
  async #assertInside(real: string, key: string): Promise<void> {
    const root = await this.#realRootPath();
    if (real === root || isInside(real, root)) return;
    throw new LifeboatError(
      ErrorCodes.INVALID_KEY,
      `The key ${JSON.stringify(key)} resolves to ${real}, outside the local target ${this.#root}: a symbolic link inside the target points elsewhere.`,
      {
        plugin: PLUGIN,
        details: { key, resolved: real, root: this.#root },
        hint: "Remove the symbolic link (the target never reads or writes outside its directory), or point `path` at the real directory.",
      },
    );
  }

  /** The real path of an existing object's file, or `NotFoundError`. */
  async #resolveObject(key: string, file: string): Promise<string> {
    let real: string;
    try {
      real = await realpath(file);
    } catch (error) {
      if (isMissing(error)) throw this.#notFound(key);
      throw fsError(error, "read", file, PLUGIN);
    }
    await this.#assertInside(real, key);
    return real;
  }

  // ---- writing ----

  async #openTemp(temp: string): Promise<FileHandle> {
    let handle: FileHandle;
    try {
      handle = await open(temp, "wx", this.#fileMode);
    } catch (error) {
      if (errnoCode(error) !== "ENOENT") throw error;
      await this.#ensureDir(this.#tempDir, TEMP_DIR_NAME);
      handle = await open(temp, "wx", this.#fileMode);
    }
    try {
      await handle.chmod(this.#fileMode);
    } catch (error) {
      await handle.close().catch(ignore);
      throw error;
    }
    return handle;
  }

  /** Moves the fsynced temp file to `file` and makes the new directory entries durable. */
  async #commit(temp: string, file: string, key: string, exclusive: boolean): Promise<void> {
    const parent = dirname(file);
    for (let attempt = 0; ; attempt++) {
      const created = await this.#ensureDir(parent, key);
      try {
        if (exclusive) {
          await link(temp, file);
          // The object exists now; a leftover temp file is only litter that init() sweeps.
          await unlink(temp).catch(ignore);
        } else {
          await rename(temp, file);
        }
      } catch (error) {
        const errno = errnoCode(error);
        if (errno === "ENOENT" && attempt < PARENT_RACE_RETRIES) continue; // a delete pruned the parent
        if (errno === "EEXIST" && exclusive && !(await isDirectory(file))) throw this.#exists(key, file);
        if (errno === "EEXIST" || errno === "EISDIR" || errno === "ENOTEMPTY") throw this.#prefixConflict(key, file);
        if (errno === "ENOTDIR") throw await this.#ancestorConflict(key, file);
        if (exclusive && (errno === "EPERM" || errno === "ENOTSUP" || errno === "EOPNOTSUPP")) {
          throw new LifeboatError(
            ErrorCodes.STORAGE_ERROR,
            `Cannot create "${key}" in ${this.#root}: the file system refused a hard link (${errno}), which conditional create needs.`,
            {
              plugin: PLUGIN,
              operation: "put",
              cause: error,
              details: { key, path: file, errno },
              hint: "Put the target on a file system with hard links (ext4, xfs, btrfs, APFS, NTFS); FAT and some network mounts lack them.",
            },
          );
        }
        throw error;
      }
      await this.#syncDirs(new Set([parent, ...created.map((dir) => dirname(dir))]));
      return;
    }
  }

  /**
   * mkdir -p for a directory inside the root; returns the directories it created (each chmod'ed to
   * `dirMode`). Checks the deepest existing ancestor first, so a symbolic link out of the target
   * never makes it create directories elsewhere.
   */
  async #ensureDir(dir: string, key: string): Promise<string[]> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.#ensureDirOnce(dir, key);
      } catch (error) {
        // A concurrent delete pruned an empty ancestor between our check and our mkdir.
        if (errnoCode(error) !== "ENOENT" || attempt >= PARENT_RACE_RETRIES) throw error;
      }
    }
  }

  async #ensureDirOnce(dir: string, key: string): Promise<string[]> {
    const missing: string[] = [];
    let current = dir;
    for (;;) {
      try {
        const real = await realpath(current);
        await this.#assertInside(real, key);
        break;
      } catch (error) {
        const errno = errnoCode(error);
        if (errno === "ENOTDIR") throw await this.#ancestorConflict(key, join(dir, "x"));
        if (errno !== "ENOENT") throw error;
        if (current === this.#root) {
          await this.#createRoot();
          break;
        }
        missing.push(current);
        current = dirname(current);
      }
    }
    const created: string[] = [];
    for (const path of missing.reverse()) {
      try {
        await mkdir(path, { mode: this.#dirMode });
      } catch (error) {
        const errno = errnoCode(error);
        if (errno === "EEXIST" && (await isDirectory(path))) continue; // a concurrent put made it
        if (errno === "EEXIST" || errno === "ENOTDIR") throw await this.#ancestorConflict(key, join(dir, "x"));
        throw error;
      }
      await chmod(path, this.#dirMode);
      created.push(path);
    }
    return created;
  }

  /**
   * mkdir -p of the root itself (mode `dirMode`), then makes the new entries durable. Written out
   * because Node's recursive mkdir reports EROFS and EACCES on a missing parent as ENOENT.
   */
  async #createRoot(): Promise<void> {
    const missing: string[] = [];
    for (let dir = this.#root; ; dir = dirname(dir)) {
      const info = await stat(dir).catch((error: unknown) => {
        if (errnoCode(error) === "ENOENT") return undefined;
        throw error;
      });
      if (info?.isDirectory()) break;
      if (info) throw Object.assign(new Error(`${dir} is not a directory`), { code: "ENOTDIR" });
      missing.push(dir);
      if (dirname(dir) === dir) break;
    }
    const created: string[] = [];
    for (const dir of missing.reverse()) {
      try {
        await mkdir(dir, { mode: this.#dirMode });
      } catch (error) {
        if (errnoCode(error) === "EEXIST" && (await isDirectory(dir))) continue; // made concurrently
        throw error;
      }
      await chmod(dir, this.#dirMode);
      created.push(dir);
    }
    await this.#syncDirs(created.map((dir) => dirname(dir)));
    this.#realRoot = undefined;
  }

  /** fsync each directory so renames, links and unlinks in it survive a power loss. */
  async #syncDirs(dirs: Iterable<string>): Promise<void> {
    for (const dir of new Set(dirs)) {
      let handle: FileHandle;
      try {
        handle = await open(dir, "r");
      } catch (error) {
        if (errnoCode(error) === "ENOENT") continue; // pruned meanwhile: nothing left to persist
        throw error;
      }
      try {
        await handle.sync();
      } catch (error) {
        // Some file systems cannot fsync a directory; they give no stronger guarantee to ask for.
        const errno = errnoCode(error);
        if (errno !== "EINVAL" && errno !== "ENOTSUP" && errno !== "EISDIR") throw error;
      } finally {
        await handle.close();
      }
    }
  }

  async #removeEmptyDirs(dirs: Set<string>): Promise<void> {
    if (dirs.size === 0) return;
    const root = await this.#realRootPath();
    const tempDir = join(root, TEMP_DIR_NAME);
    const parentsToSync = new Set<string>();
    const tried = new Set<string>();
    const deepestFirst = [...dirs].sort((a, b) => b.length - a.length);
    for (let dir of deepestFirst) {
      while (isInside(dir, root) && dir !== tempDir && !tried.has(dir)) {
        tried.add(dir);
        try {
          await rmdir(dir);
        } catch {
          break; // not empty (or already gone, or busy): it or a parent still holds keys
        }
        parentsToSync.add(dirname(dir));
        dir = dirname(dir);
      }
    }
    await this.#syncDirs(parentsToSync);
  }

  async #sweepStaleTemps(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.#tempDir);
    } catch {
      return;
    }
    const cutoff = Date.now() - STALE_TEMP_MS;
    for (const name of names) {
      const path = join(this.#tempDir, name);
      try {
        const info = await lstat(path);
        if (info.isFile() && info.mtimeMs < cutoff) await unlink(path);
      } catch {
        // Best effort: another process may be sweeping too.
      }
    }
  }

  // ---- listing ----

  async *#walk(dirPath: string, dirKey: string, walk: Walk): AsyncGenerator<ObjectInfo> {
    let entries: Dirent[];
    try {
      entries = await readdir(dirPath, { withFileTypes: true });
    } catch (error) {
      if (isMissing(error)) return; // removed while listing
      throw fsError(error, "list", dirPath, PLUGIN);
    }
    const items: WalkItem[] = [];
    for (const entry of entries) {
      const name = entry.name;
      if (dirKey === "" && name === TEMP_DIR_NAME) continue;
      if (name.includes("\\")) continue; // not a valid key segment: not written by this target
      // Node lstat()s entries whose type readdir could not tell, so symlinks are never followed.
      const kind = entry.isFile() ? "file" : entry.isDirectory() ? "dir" : undefined;
      if (kind === undefined) continue;
      const key = dirKey + name;
      if (kind === "file") {
        if (!key.startsWith(walk.prefix)) continue;
        const sortKey = Buffer.from(key, "utf8");
        if (walk.after && Buffer.compare(sortKey, walk.after) <= 0) continue;
        items.push({ name, key, kind, sortKey });
      } else {
        const subKey = `${key}/`;
        if (!subKey.startsWith(walk.prefix) && !walk.prefix.startsWith(subKey)) continue;
        const sortKey = Buffer.from(subKey, "utf8");
        // Every key below sorts before startAfter unless startAfter is below this directory.
        if (walk.after && Buffer.compare(sortKey, walk.after) < 0 && !startsWithBytes(walk.after, sortKey)) continue;
        items.push({ name, key: subKey, kind, sortKey });
      }
    }
    items.sort((a, b) => Buffer.compare(a.sortKey, b.sortKey));

    let index = 0;
    while (index < items.length) {
      const item = items[index]!;
      if (item.kind === "dir") {
        index++;
        yield* this.#walk(join(dirPath, item.name), item.key, walk);
        continue;
      }
      const batch: WalkItem[] = [];
      while (index < items.length && items[index]!.kind === "file" && batch.length < PARALLEL_FS_CALLS) {
        batch.push(items[index]!);
        index++;
      }
      const infos = await Promise.all(batch.map((file) => lstat(join(dirPath, file.name)).catch(() => undefined)));
      for (const [i, file] of batch.entries()) {
        const info = infos[i];
        if (!info?.isFile()) continue; // deleted or replaced while listing
        throwIfAborted(walk.signal, walk.abortError);
        yield { key: file.key, size: info.size, lastModified: info.mtime };
      }
    }
  }

  // ---- errors ----

  #checkOpen(): void {
    if (this.#closed) {
      throw new LifeboatError(ErrorCodes.STORAGE_ERROR, `The local target ${this.#root} was closed.`, {
        plugin: PLUGIN,
        hint: "Create a new target; a closed one cannot be used again.",
      });
    }
  }

  #notFound(key: string): NotFoundError {
    return new NotFoundError(`No object "${key}" in the local target ${this.#root}.`, {
      plugin: PLUGIN,
      details: { key, location: this.#root },
      hint: "Check the key and the target's path; list the target to see what it holds.",
    });
  }

  #exists(key: string, file: string): PreconditionFailedError {
    return new PreconditionFailedError(`The object "${key}" already exists in ${this.#root}; it was not replaced.`, {
      plugin: PLUGIN,
      operation: "put",
      details: { key, path: file },
      hint: "Another writer created it first; read it, or write under another key.",
    });
  }

  #abortError(operation: string, key: string | undefined, signal: AbortSignal | undefined): LifeboatError {
    const what = key === undefined ? `${operation} on` : `${operation} of "${key}" in`;
    return new LifeboatError(ErrorCodes.ABORTED, `The ${what} the local target ${this.#root} was aborted.`, {
      plugin: PLUGIN,
      operation,
      cause: signal?.reason,
      details: key === undefined ? { location: this.#root } : { key, location: this.#root },
      hint:
        operation === "put" ? "Nothing was stored; run the operation again to store it." : "Run the operation again.",
    });
  }

  #writeError(error: unknown, file: string): LifeboatError {
    if (error instanceof LifeboatError) return error;
    // ENOENT while writing means a directory vanished under us, not a missing object.
    if (errnoCode(error) === "ENOENT") {
      return new LifeboatError(ErrorCodes.STORAGE_ERROR, `Cannot write ${file}: ${String(error)}`, {
        plugin: PLUGIN,
        operation: "put",
        cause: error,
        details: { path: file },
        hint: "A directory of the target was removed while writing; check that nothing else manages it.",
      });
    }
    return fsError(error, "write", file, PLUGIN);
  }

  #initError(error: unknown, action: string): LifeboatError {
    if (error instanceof LifeboatError) return error;
    const errno = errnoCode(error);
    const base = {
      plugin: PLUGIN,
      operation: "init",
      cause: error,
      details: { path: this.#root, errno },
    };
    if (errno === "EROFS") {
      return new LifeboatError(
        ErrorCodes.PERMISSION_DENIED,
        `Cannot ${action} the local target directory ${this.#root}: the file system is read-only.`,
        { ...base, hint: "Point `path` at a writable location, or remount the file system read-write." },
      );
    }
    if (errno === "EACCES" || errno === "EPERM") {
      const user = process.getuid ? ` (uid ${process.getuid()})` : "";
      return new LifeboatError(
        ErrorCodes.PERMISSION_DENIED,
        `Cannot ${action} the local target directory ${this.#root}: permission denied.`,
        {
          ...base,
          hint: `Give the user running Lifeboat${user} write access to ${this.#root} and its parents (chown/chmod), or choose another path.`,
        },
      );
    }
    if (errno === "ENOTDIR" || errno === "EEXIST") {
      return new LifeboatError(
        ErrorCodes.STORAGE_ERROR,
        `Cannot create the local target directory ${this.#root}: a parent path is a file, not a directory.`,
        { ...base, hint: "Point `path` at a location whose parents are directories." },
      );
    }
    const wrapped = fsError(error, action, this.#root, PLUGIN);
    if (wrapped.code === ErrorCodes.DISK_FULL) return wrapped;
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `Cannot ${action} the local target directory ${this.#root}: ${error instanceof Error ? error.message : String(error)}`,
      { ...base, hint: "Check that the path is a writable directory on a healthy, mounted file system." },
    );
  }

  #prefixConflict(key: string, file: string): LifeboatError {
    return new LifeboatError(
      ErrorCodes.INVALID_KEY,
      `Cannot store "${key}" in ${this.#root}: ${file} is a directory holding keys that start with "${key}/".`,
      {
        plugin: PLUGIN,
        operation: "put",
        details: { key, path: file },
        hint: "The local target maps '/' to directories, so a key cannot also be the directory of other keys. Use another key.",
      },
    );
  }

  async #ancestorConflict(key: string, file: string): Promise<LifeboatError> {
    let blocker = dirname(file);
    for (let dir = dirname(file); isInside(dir, this.#root); dir = dirname(dir)) {
      const info = await lstat(dir).catch(() => undefined);
      if (info && !info.isDirectory()) blocker = dir;
    }
    const blockingKey = blocker
      .slice(this.#root.length + 1)
      .split(sep)
      .join("/");
    return new LifeboatError(
      ErrorCodes.INVALID_KEY,
      `Cannot store "${key}" in ${this.#root}: "${blockingKey}" is an object, so it cannot also be a directory of other keys.`,
      {
        plugin: PLUGIN,
        operation: "put",
        details: { key, conflictingKey: blockingKey },
        hint: "The local target maps '/' to directories, so a key cannot also be the directory of other keys. Use another key.",
      },
    );
  }
}

interface Walk {
  readonly prefix: string;
  readonly after: Buffer | undefined;
  readonly signal: AbortSignal | undefined;
  readonly abortError: () => LifeboatError;
}

interface WalkItem {
  readonly name: string;
  /** The object key, or for a directory the key prefix ending with `/`. */
  readonly key: string;
  readonly kind: "file" | "dir";
  readonly sortKey: Buffer;
}

/**
 * Writes the body sequentially: each chunk is on its way to the file before the next is pulled
 * (backpressure), small chunks are copied into one staging buffer (so producers may reuse theirs),
 * and the abort signal is honoured while waiting for the producer. Returns the byte count.
 */
async function writeBody(
  handle: FileHandle,
  body: Body,
  signal: AbortSignal | undefined,
  abortError: () => LifeboatError,
  contentLength: number | undefined,
  writeBehind: WriteBehind,
): Promise<number> {
  if (body instanceof Uint8Array) {
    await writeFully(handle, body);
    throwIfAborted(signal, abortError);
    return body.byteLength;
  }
  const stage = Buffer.allocUnsafe(STAGE_BYTES);
  let staged = 0;
  let total = 0;
  const iterator = body[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const next = signal ? await raceAbort(iterator.next(), signal, abortError) : await iterator.next();
      if (next.done) {
        finished = true;
        break;
      }
      throwIfAborted(signal, abortError);
      const chunk: unknown = next.value;
      if (!(chunk instanceof Uint8Array)) {
        throw new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `A body chunk is a ${typeof chunk}, not a Uint8Array; nothing was stored.`,
          {
            plugin: PLUGIN,
            operation: "put",
            hint: "Yield Buffers or Uint8Arrays (a Node Readable without setEncoding does).",
          },
        );
      }
      total += chunk.byteLength;
      if (contentLength !== undefined && total > contentLength) return total; // the caller reports it
      if (chunk.byteLength >= STAGE_BYTES) {
        if (staged > 0) await writeFully(handle, stage.subarray(0, staged));
        staged = 0;
        await writeFully(handle, chunk);
        writeBehind.wrote(chunk.byteLength);
      } else {
        if (staged + chunk.byteLength > STAGE_BYTES) {
          await writeFully(handle, stage.subarray(0, staged));
          writeBehind.wrote(staged);
          staged = 0;
        }
        stage.set(chunk, staged);
        staged += chunk.byteLength;
      }
    }
    if (staged > 0) await writeFully(handle, stage.subarray(0, staged));
    return total;
  } finally {
    // Stop the producer (e.g. destroy a stream) when we stop early; don't wait on a stalled one.
    if (!finished) void Promise.resolve(iterator.return?.()).catch(ignore);
  }
}

async function writeFully(handle: FileHandle, data: Uint8Array): Promise<void> {
  let offset = 0;
  while (offset < data.byteLength) {
    const { bytesWritten } = await handle.write(data, offset, data.byteLength - offset);
    offset += bytesWritten;
  }
}

function raceAbort<T>(promise: Promise<T>, signal: AbortSignal, abortError: () => LifeboatError): Promise<T> {
  if (signal.aborted) {
    promise.catch(ignore);
    return Promise.reject(abortError());
  }
  return new Promise<T>((resolvePromise, reject) => {
    const onAbort = () => {
      promise.catch(ignore);
      reject(abortError());
    };
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolvePromise(value);
      },
      (error: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(error);
      },
    );
  });
}

function throwIfAborted(signal: AbortSignal | undefined, abortError: () => LifeboatError): void {
  if (signal?.aborted) throw abortError();
}

async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++]!;
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

function checkRange(range: ByteRange, key: string): void {
  const ok =
    Number.isSafeInteger(range.offset) &&
    range.offset >= 0 &&
    (range.length === undefined || (Number.isSafeInteger(range.length) && range.length >= 0));
  if (!ok) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `Invalid range for "${key}": offset and length must be non-negative integers, got ${JSON.stringify(range)}.`,
      { plugin: PLUGIN, operation: "get", hint: "Pass { offset, length? } in bytes." },
    );
  }
}

function checkMode(name: string, mode: number, required: number): number {
  if (!Number.isInteger(mode) || mode < 0 || mode > 0o777 || (mode & required) !== required) {
    throw invalidOption(
      name,
      `must be a permission mode between 0o${required.toString(8)} and 0o777 that lets the owner ${
        required === 0o700 ? "read, write and enter" : "read and write"
      } (got ${typeof mode === "number" ? `0o${mode.toString(8)}` : String(mode)})`,
    );
  }
  return mode;
}

function invalidOption(name: string, problem: string): LifeboatError {
  return new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `Local storage option ${name} ${problem}.`, {
    plugin: PLUGIN,
    hint: "See the @lifeboat/storage-local README for its options.",
  });
}

function isValidKey(key: string): boolean {
  try {
    assertValidKey(key);
    return true;
  } catch {
    return false;
  }
}

function firstSegment(key: string): string {
  const slash = key.indexOf("/");
  return slash === -1 ? key : key.slice(0, slash);
}

function isInside(path: string, root: string): boolean {
  return path.startsWith(root.endsWith(sep) ? root : root + sep);
}

function isMissing(error: unknown): boolean {
  const errno = errnoCode(error);
  return errno === "ENOENT" || errno === "ENOTDIR";
}

async function isFile(path: string): Promise<boolean> {
  return lstat(path).then(
    (info) => info.isFile(),
    () => false,
  );
}

async function isDirectory(path: string): Promise<boolean> {
  return lstat(path).then(
    (info) => info.isDirectory(),
    () => false,
  );
}

function startsWithBytes(bytes: Buffer, prefix: Buffer): boolean {
  return bytes.length >= prefix.length && bytes.subarray(0, prefix.length).equals(prefix);
}

function ignore(): void {}
