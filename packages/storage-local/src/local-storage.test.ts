import { execFile, execFileSync } from "node:child_process";
import { chmod, lstat, mkdir, mkdtemp, readdir, rm, stat, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { promisify } from "node:util";
import { type LifeboatError, PluginRegistry, parsePluginOptions, readAll, type StorageTarget } from "@lifeboat/core";
import { storageConformance } from "@lifeboat/testkit";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import localDefault, { localStorage, localStoragePlugin } from "./index.js";
import { TEMP_DIR_NAME } from "./local-storage.js";

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

// ---- the published conformance suite ----

const conformanceDirs = new Map<StorageTarget, string>();
storageConformance({
  name: "local",
  runner: { describe, it, beforeAll, afterAll },
  async createTarget() {
    const dir = await mkdtemp(join(tmpdir(), "lifeboat-local-"));
    const target = localStorage({ path: join(dir, "store") });
    conformanceDirs.set(target, dir);
    return target;
  },
  async cleanup(target) {
    await rm(conformanceDirs.get(target)!, { recursive: true, force: true });
    conformanceDirs.delete(target);
  },
});

// ---- helpers ----

const scratch: string[] = [];
afterAll(async () => {
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

async function scratchDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "lifeboat-local-test-"));
  scratch.push(dir);
  return dir;
}

async function freshTarget(options: { fileMode?: number; dirMode?: number } = {}) {
  const dir = await scratchDir();
  const root = join(dir, "store");
  const target = localStorage({ path: root, ...options });
  await target.init!();
  return { dir, root, target };
}

async function failure(promise: Promise<unknown>): Promise<LifeboatError> {
  try {
    await promise;
  } catch (error) {
    return error as LifeboatError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

async function keys(target: StorageTarget, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const info of target.list(prefix)) out.push(info.key);
  return out;
}

async function body(target: StorageTarget, key: string): Promise<Buffer> {
  return readAll((await target.get(key)).body);
}

async function* chunks(count: number, size: number, fill = 0x61): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < count; i++) yield Buffer.alloc(size, fill);
}

async function tempFiles(root: string): Promise<string[]> {
  return readdir(join(root, TEMP_DIR_NAME)).catch(() => []);
}

// ---- plugin ----

describe("localStoragePlugin", () => {
  it("is the default export, named local, handling file: URLs", () => {
    expect(localDefault).toBe(localStoragePlugin);
    expect(localStoragePlugin.kind).toBe("storage");
    expect(localStoragePlugin.name).toBe("local");
    expect(new PluginRegistry([localStoragePlugin]).forUrlScheme("file")).toBe(localStoragePlugin);
  });

  it("validates options strictly and accepts octal modes as strings", async () => {
    const ok = await parsePluginOptions(
      localStoragePlugin,
      { path: "./backups", fileMode: "0640", dirMode: 0o750 },
      "t",
    );
    expect(ok).toEqual({ path: "./backups", fileMode: 0o640, dirMode: 0o750 });

    const missing = await failure(parsePluginOptions(localStoragePlugin, {}, "databases[0].targets[0]"));
    expect(missing.code).toBe("CONFIG_INVALID");
    expect(missing.message).toContain("databases[0].targets[0].path");

    const extra = await failure(parsePluginOptions(localStoragePlugin, { path: "x", bucket: "b" }, "t"));
    expect(extra.code).toBe("CONFIG_INVALID");
    expect(extra.message).toContain("bucket");

    // YAML 1.2 reads `fileMode: 0600` as decimal 600; that must not pass as a mode.
    const decimal = await failure(parsePluginOptions(localStoragePlugin, { path: "x", fileMode: 600 }, "t"));
    expect(decimal.message).toContain("t.fileMode");
    const ownerLocked = await failure(parsePluginOptions(localStoragePlugin, { path: "x", fileMode: 0o400 }, "t"));
    expect(ownerLocked.message).toContain("0o600");
  });

  it("resolves a relative path from the config file's directory", async () => {
    const dir = await scratchDir();
    const context = { baseDir: dir, databaseName: "app", env: {} };
    const target = localStoragePlugin.create({ path: "./backups/app" }, context);
    expect(target.type).toBe("local");
    expect(target.apiVersion).toBe(1);
    expect(target.location).toBe(join(dir, "backups", "app"));
    expect(target.capabilities).toEqual({
      conditionalCreate: true,
      rangeReads: true,
      objectLock: false,
      metadata: false,
    });
    await target.init!();
    expect((await stat(join(dir, "backups", "app"))).isDirectory()).toBe(true);
  });

  it("parses file:///abs/dir URLs and refuses hosts and queries", () => {
    const context = { baseDir: "/", databaseName: "app", env: {} };
    expect(localStoragePlugin.fromUrl!(new URL("file:///var/backups/my%20app"), context)).toEqual({
      path: "/var/backups/my app",
    });
    const withHost = (() => {
      try {
        localStoragePlugin.fromUrl!(new URL("file://server/share"), context);
      } catch (error) {
        return error as LifeboatError;
      }
      throw new Error("expected a CONFIG_INVALID error");
    })();
    expect(withHost.code).toBe("CONFIG_INVALID");
    expect(withHost.hint).toContain("file:///");
    expect(() => localStoragePlugin.fromUrl!(new URL("file:///x?fileMode=0600"), context)).toThrow(/query/);
  });

  it("rejects bad options given programmatically", () => {
    expect(() => localStorage({ path: "" })).toThrow(/path/);
    expect(() => localStorage({ path: "/x", fileMode: 0o1777 })).toThrow(/fileMode/);
    expect(() => localStorage({ path: "/x", dirMode: 0o600 })).toThrow(/dirMode/);
  });
});

// ---- files, modes, temp files ----

describe("localStorage files", () => {
  const savedUmask = process.umask();
  afterEach(() => {
    process.umask(savedUmask);
  });

  it("maps keys to files under the root, with mode 0600 files and 0700 directories whatever the umask", async () => {
    process.umask(0);
    const { root, target } = await freshTarget();
    await target.put("generations/1/snap.bin", Buffer.from("x"));
    await target.put("flat", chunks(3, 10));
    expect((await stat(join(root, "generations/1/snap.bin"))).mode & 0o777).toBe(0o600);
    expect((await stat(join(root, "flat"))).mode & 0o777).toBe(0o600);
    expect((await stat(join(root, "generations"))).mode & 0o777).toBe(0o700);
    expect((await stat(join(root, "generations/1"))).mode & 0o777).toBe(0o700);
    expect((await stat(root)).mode & 0o777).toBe(0o700);
  });

  it("applies fileMode and dirMode exactly even when the umask would narrow them", async () => {
    process.umask(0o077);
    const { root, target } = await freshTarget({ fileMode: 0o640, dirMode: 0o750 });
    await target.put("a/b", Buffer.from("x"));
    await target.put("c", Buffer.from("x"), { ifNoneMatch: "*" });
    expect((await stat(join(root, "a/b"))).mode & 0o777).toBe(0o640);
    expect((await stat(join(root, "c"))).mode & 0o777).toBe(0o640);
    expect((await stat(join(root, "a"))).mode & 0o777).toBe(0o750);
  });

  it("leaves no temp file and no object when the body fails mid-stream", async () => {
    const { root, target } = await freshTarget();
    await target.put("kept", Buffer.from("old"));
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(300_000, 1);
      throw new Error("the producer broke");
    }
    const error = await failure(target.put("new", failing()));
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toContain("the producer broke");
    const overwrite = await failure(target.put("kept", failing()));
    expect(overwrite.code).toBe("STORAGE_ERROR");
    expect(await tempFiles(root)).toEqual([]);
    expect(await keys(target)).toEqual(["kept"]);
    expect((await body(target, "kept")).toString()).toBe("old");
  });

  it("never lists temp files, even while a put is streaming, and reserves their directory name", async () => {
    const { root, target } = await freshTarget();
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    let started!: () => void;
    const streaming = new Promise<void>((resolve) => {
      started = resolve;
    });
    async function* slow(): AsyncGenerator<Uint8Array> {
      yield Buffer.alloc(1000, 7);
      started();
      await released;
      yield Buffer.alloc(1000, 8);
    }
    const put = target.put("slow", slow());
    await streaming;
    expect(await tempFiles(root)).toHaveLength(1);
    expect(await keys(target)).toEqual([]);
    expect(await keys(target, ".lifeboat")).toEqual([]);
    expect(await keys(target, `${TEMP_DIR_NAME}/`)).toEqual([]);
    release();
    await put;
    expect(await keys(target)).toEqual(["slow"]);
    expect(await tempFiles(root)).toEqual([]);
    for (const key of [`${TEMP_DIR_NAME}/x`, TEMP_DIR_NAME]) {
      expect((await failure(target.put(key, Buffer.from("x")))).code).toBe("INVALID_KEY");
      expect((await failure(target.get(key))).code).toBe("INVALID_KEY");
    }
  });

  it("init() removes temp files abandoned by a crashed writer, and only those", async () => {
    const { root, target } = await freshTarget();
    const stale = join(root, TEMP_DIR_NAME, "999-crashed.tmp");
    const active = join(root, TEMP_DIR_NAME, "998-writing.tmp");
    await writeFile(stale, "partial");
    await writeFile(active, "partial");
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(stale, twoHoursAgo, twoHoursAgo);
    await target.init!();
    expect(await tempFiles(root)).toEqual(["998-writing.tmp"]);
  });

  it("writes a body that reuses one buffer correctly, in constant memory", async () => {
    const { root, target } = await freshTarget();
    const chunkSize = 1024 * 1024;
    const count = 96;
    const reused = Buffer.alloc(chunkSize);
    const baseline = process.memoryUsage().arrayBuffers;
    let peak = baseline;
    async function* producer(): AsyncGenerator<Uint8Array> {
      for (let i = 0; i < count; i++) {
        // Overwrites the previous chunk: only safe if put wrote (or copied) it before pulling again.
        reused.fill(i & 0xff);
        reused.writeUInt32BE(i, 0);
        peak = Math.max(peak, process.memoryUsage().arrayBuffers);
        yield reused;
      }
    }
    const info = await target.put("reused", producer());
    expect(info.size).toBe(chunkSize * count);
    expect(peak - baseline).toBeLessThan(16 * 1024 * 1024);
    let index = 0;
    let pending = Buffer.alloc(0);
    for await (const part of (await target.get("reused")).body) {
      pending = Buffer.concat([pending, part as Buffer]);
      while (pending.length >= chunkSize) {
        const block = pending.subarray(0, chunkSize);
        expect(block.readUInt32BE(0)).toBe(index);
        expect(block[chunkSize - 1]).toBe(index & 0xff);
        pending = pending.subarray(chunkSize);
        index++;
      }
    }
    expect(index).toBe(count);
    expect((await stat(join(root, "reused"))).size).toBe(chunkSize * count);
  });

  it("rejects a range that starts past the end, and an abort stops a get's body", async () => {
    const { target } = await freshTarget();
    await target.put("r", Buffer.alloc(2 * 1024 * 1024, 3));
    expect((await failure(target.get("r", { range: { offset: 2 * 1024 * 1024 + 1 } }))).code).toBe("INVALID_ARGUMENT");
    expect((await failure(target.get("r", { range: { offset: -1 } }))).code).toBe("INVALID_ARGUMENT");
    const controller = new AbortController();
    const got = await target.get("r", { signal: controller.signal });
    const read = (async () => {
      for await (const _ of got.body) controller.abort();
    })();
    expect((await failure(read)).code).toBe("ABORTED");
  });

  it("NOT_FOUND names the key and the directory", async () => {
    const { root, target } = await freshTarget();
    const error = await failure(target.get("no/such"));
    expect(error.code).toBe("NOT_FOUND");
    expect(error.message).toContain("no/such");
    expect(error.message).toContain(root);
    expect(error.hint).toBeTruthy();
  });

  it("a key cannot be both an object and the directory of other keys", async () => {
    const { target } = await freshTarget();
    await target.put("a/b", Buffer.from("1"));
    const asDir = await failure(target.put("a", Buffer.from("2")));
    expect(asDir.code).toBe("INVALID_KEY");
    expect(asDir.message).toContain('keys that start with "a/"');
    expect((await failure(target.put("a", Buffer.from("2"), { ifNoneMatch: "*" }))).code).toBe("INVALID_KEY");
    const underFile = await failure(target.put("a/b/c", Buffer.from("3")));
    expect(underFile.code).toBe("INVALID_KEY");
    expect(underFile.message).toContain('"a/b" is an object');
    expect((await failure(target.get("a"))).code).toBe("NOT_FOUND");
    expect(await keys(target)).toEqual(["a/b"]);
  });

  it("removes directories emptied by delete, never the root", async () => {
    const { root, target } = await freshTarget();
    await target.put("g/1/wal/0001", Buffer.from("x"));
    await target.put("g/2/snap", Buffer.from("x"));
    await target.delete(["g/1/wal/0001"]);
    expect(await readdir(join(root, "g"))).toEqual(["2"]);
    await target.delete(["g/2/snap"]);
    expect((await readdir(root)).filter((name) => name !== TEMP_DIR_NAME)).toEqual([]);
    expect((await stat(root)).isDirectory()).toBe(true);
  });

  it("puts racing deletes in the same directory all succeed", async () => {
    const { target } = await freshTarget();
    for (let round = 0; round < 100; round++) {
      await target.put(`race/${round}/old`, Buffer.from("x"));
      await Promise.all([target.delete([`race/${round}/old`]), target.put(`race/${round}/new`, Buffer.from("y"))]);
    }
    expect((await keys(target)).length).toBe(100);
  });

  it("refuses calls after close()", async () => {
    const { target } = await freshTarget();
    await target.close!();
    expect((await failure(target.put("x", Buffer.from("x")))).code).toBe("STORAGE_ERROR");
  });
});

// ---- escaping the root ----

describe("localStorage stays inside its directory", () => {
  it("rejects '..' keys without touching the parent directory", async () => {
    const { dir, target } = await freshTarget();
    for (const key of ["../escape", "a/../../escape", "/etc/escape"]) {
      expect((await failure(target.put(key, Buffer.from("x")))).code).toBe("INVALID_KEY");
    }
    expect(await readdir(dir)).toEqual(["store"]);
  });

  it("does not follow a symbolic link that leads out of the directory", async () => {
    const { dir, root, target } = await freshTarget();
    const outside = join(dir, "outside");
    await mkdir(outside);
    await writeFile(join(outside, "secret"), "do not read");
    await symlink(outside, join(root, "evil"));
    await target.put("fine", Buffer.from("x"));

    const put = await failure(target.put("evil/new", Buffer.from("x")));
    expect(put.code).toBe("INVALID_KEY");
    expect(put.message).toContain("symbolic link");
    expect((await failure(target.put("evil/deep/er", Buffer.from("x")))).code).toBe("INVALID_KEY");
    expect((await failure(target.get("evil/secret"))).code).toBe("INVALID_KEY");
    expect((await failure(target.head("evil/secret"))).code).toBe("INVALID_KEY");
    expect((await failure(target.delete(["evil/secret"]))).code).toBe("INVALID_KEY");
    expect((await failure(collectAll(target.list("evil/")))).code).toBe("INVALID_KEY");
    expect(await keys(target)).toEqual(["fine"]);
    expect((await readdir(outside)).sort()).toEqual(["secret"]);
    expect((await lstat(join(root, "evil"))).isSymbolicLink()).toBe(true);
  });

  it("works when the root itself is reached through a symbolic link", async () => {
    const dir = await scratchDir();
    await mkdir(join(dir, "real"));
    await symlink(join(dir, "real"), join(dir, "link"));
    const target = localStorage({ path: join(dir, "link") });
    await target.init!();
    await target.put("a/b", Buffer.from("x"));
    expect(await keys(target)).toEqual(["a/b"]);
    expect((await body(target, "a/b")).toString()).toBe("x");
    await target.delete(["a/b"]);
    expect(await keys(target)).toEqual([]);
  });
});

async function collectAll<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

// ---- init errors ----

describe("localStorage init()", () => {
  it("says so when the path is a file", async () => {
    const dir = await scratchDir();
    await writeFile(join(dir, "file"), "x");
    const error = await failure(localStorage({ path: join(dir, "file") }).init!());
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toBe(`The local target path ${join(dir, "file")} is a file, not a directory.`);
    expect(error.hint).toContain("directory");
  });

  it("says so when a parent of the path is a file", async () => {
    const dir = await scratchDir();
    await writeFile(join(dir, "file"), "x");
    const error = await failure(localStorage({ path: join(dir, "file", "sub") }).init!());
    expect(error.code).toBe("STORAGE_ERROR");
    expect(error.message).toContain("a parent path is a file");
    expect(error.message).toContain(join(dir, "file", "sub"));
  });

  it("creates a missing directory tree with dirMode", async () => {
    const dir = await scratchDir();
    const root = join(dir, "x", "y", "z");
    await localStorage({ path: root, dirMode: 0o750 }).init!();
    expect((await stat(root)).mode & 0o777).toBe(0o750);
  });

  // Root ignores mode bits, so "not writable" is tested as a real unprivileged user: a child
  // process with uid/gid 65534 (nobody) when we are root, or this process when we are not.
  it("reports PERMISSION_DENIED with a hint for a directory the user may not write", async () => {
    const dir = await scratchDir();
    await chmod(dir, 0o755);
    const locked = join(dir, "locked");
    await mkdir(locked, { mode: 0o755 });
    await chmod(locked, 0o555);
    const existing = await initAsUnprivileged(locked, dir);
    expect(existing.code).toBe("PERMISSION_DENIED");
    expect(existing.message).toBe(`Cannot write to the local target directory ${locked}: permission denied.`);
    expect(existing.hint).toContain("write access");
    const missing = await initAsUnprivileged(join(locked, "sub"), dir);
    expect(missing.code).toBe("PERMISSION_DENIED");
    expect(missing.message).toContain(join(locked, "sub"));
  });
});

describe("localStorage list()", () => {
  it("reads only the directories a prefix can match", async () => {
    const dir = await scratchDir();
    await chmod(dir, 0o755);
    const root = join(dir, "store");
    const target = localStorage({ path: root, dirMode: 0o755, fileMode: 0o644 });
    await target.init!();
    await target.put("generations/1/snap", Buffer.from("x"));
    await target.put("generations/2/snap", Buffer.from("y"));
    await target.put("generations/2/wal/1", Buffer.from("z"));
    await chmod(join(root, "generations/1"), 0o000); // unreadable for the unprivileged lister
    const script = `
      const target = localStorage({ path: ${JSON.stringify(root)} });
      const keys = async (prefix) => { const out = []; for await (const o of target.list(prefix)) out.push(o.key); return out; };
      const all = await keys("").then((k) => k, (e) => e.code);
      return { sub: await keys("generations/2/"), partial: await keys("generations/2"), wal: await keys("generations/2/wal/"), all };
    `;
    let result: unknown;
    try {
      result = await runUnprivileged(script, dir);
    } finally {
      await chmod(join(root, "generations/1"), 0o755);
    }
    expect(result).toEqual({
      sub: ["generations/2/snap", "generations/2/wal/1"],
      partial: ["generations/2/snap", "generations/2/wal/1"],
      wal: ["generations/2/wal/1"],
      all: "PERMISSION_DENIED", // proves the lister would have failed had it read generations/1
    });
  });
});

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const entry = fileURLToPath(new URL("./index.ts", import.meta.url));

/** Runs `body` (an async function body with `localStorage` in scope) as an unprivileged user. */
async function runUnprivileged(body: string, workDir: string): Promise<unknown> {
  const script = join(workDir, `child-${Date.now()}.mjs`);
  await writeFile(
    script,
    `import { localStorage } from ${JSON.stringify(pathToFileURL(entry).href)};\n` +
      `const result = await (async () => {\n${body}\n})();\nprocess.stdout.write(JSON.stringify(result));\n`,
  );
  await chmod(script, 0o644);
  const { stdout } = await run(process.execPath, ["--conditions=source", "--import", "tsx", script], {
    cwd: repoRoot,
    ...(isRoot ? { uid: 65534, gid: 65534 } : {}),
  });
  return JSON.parse(stdout);
}

async function initAsUnprivileged(path: string, workDir: string) {
  return (await runUnprivileged(
    `try { await localStorage({ path: ${JSON.stringify(path)} }).init(); return { code: "OK" }; }
     catch (e) { return { code: e.code, message: e.message, hint: e.hint }; }`,
    workDir,
  )) as { code: string; message: string; hint: string };
}

// ---- special file systems: a full disk and a read-only one ----

// These mount small tmpfs file systems, which needs root (CAP_SYS_ADMIN). Without it the tests
// fail with that reason rather than being skipped: a full disk is a failure users do hit.
describe("localStorage on a full or read-only file system (mounts tmpfs: needs root)", () => {
  const mounts: string[] = [];
  afterAll(async () => {
    for (const point of mounts.reverse()) {
      try {
        execFileSync("umount", [point]);
      } catch {
        execFileSync("umount", ["-l", point]);
      }
    }
  });

  async function mountTmpfs(options: string): Promise<string> {
    const point = join(await scratchDir(), "mnt");
    await mkdir(point);
    try {
      execFileSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", point], { stdio: "pipe" });
    } catch (error) {
      const stderr = (error as { stderr?: Buffer }).stderr?.toString().trim();
      throw new Error(
        `These tests need to mount a small tmpfs (mount -t tmpfs -o ${options} tmpfs ${point}) to produce a real full or read-only file system, which needs root or CAP_SYS_ADMIN; mount failed: ${stderr || String(error)}`,
      );
    }
    mounts.push(point);
    return point;
  }

  it("a full disk gives DISK_FULL naming the path, keeps the old object, leaves nothing partial", async () => {
    const point = await mountTmpfs("size=1m,mode=0755");
    const root = join(point, "store");
    const target = localStorage({ path: root });
    await target.init!();
    await target.put("keep", Buffer.alloc(10_000, 1));

    const full = await failure(target.put("big/object", chunks(32, 64 * 1024)));
    expect(full.code).toBe("DISK_FULL");
    expect(full.message).toContain(join(root, "big/object"));
    expect(full.hint).toContain("nothing partial");
    expect((await failure(target.get("big/object"))).code).toBe("NOT_FOUND");
    expect(await tempFiles(root)).toEqual([]);

    const overwrite = await failure(target.put("keep", Buffer.alloc(2 * 1024 * 1024, 2)));
    expect(overwrite.code).toBe("DISK_FULL");
    expect((await body(target, "keep")).equals(Buffer.alloc(10_000, 1))).toBe(true);
    expect(await tempFiles(root)).toEqual([]);
    expect(await keys(target)).toEqual(["keep"]);

    // The failed puts gave their space back.
    await target.put("after", Buffer.alloc(600_000, 3));
    expect((await target.head("after")).size).toBe(600_000);
  });

  it("a read-only file system gives PERMISSION_DENIED saying so", async () => {
    const point = await mountTmpfs("ro,size=1m");
    const existing = await failure(localStorage({ path: point }).init!());
    expect(existing.code).toBe("PERMISSION_DENIED");
    expect(existing.message).toBe(`Cannot write to the local target directory ${point}: the file system is read-only.`);
    expect(existing.hint).toContain("read-write");
    const missing = await failure(localStorage({ path: join(point, "sub") }).init!());
    expect(missing.code).toBe("PERMISSION_DENIED");
    expect(missing.message).toContain(join(point, "sub"));
    expect(missing.message).toContain("read-only");
  });
});
