/**
 * Real `chattr` on real file systems: ext4 (the temp directory), tmpfs and ramfs mounted here
 * (the tests run as root, which mounting and the immutable attribute both need).
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, linkSync, mkdirSync, renameSync, unlinkSync } from "node:fs";
import { release } from "node:os";
import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import {
  applyImmutable,
  immutableGuard,
  immutableStatus,
  isImmutable,
  removeImmutable,
  setImmutable,
} from "./immutability.js";
import { protectDatabase, protectionLayers, unprotectDatabase } from "./protect.js";
import { readSidecar } from "./sidecar.js";
import { dumpDatabase, makeBank, runChild, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 10 });
});
afterEach(async () => {
  // An immutable file cannot be removed: clear it first.
  for (const file of [path, `${path}-wal`, `${path}-shm`]) {
    if (existsSync(file) && (await isImmutable(file).catch(() => null))) await setImmutable(file, false);
  }
  cleanup();
});

describe("the immutable layer on ext4", () => {
  it("stops every write, rename, link and delete, even by root, until it is removed", async () => {
    const before = dumpDatabase(path);
    await applyImmutable(path);
    expect(await isImmutable(path)).toBe(true);
    expect(execFileSync("lsattr", ["-d", path], { encoding: "utf8" }).split(/\s/)[0]).toContain("i");

    const db = new Database(path); // SQLite falls back to read-only
    try {
      expect(db.prepare("SELECT count(*) FROM notes").pluck().get()).toBe(10);
      expect(() => db.prepare("DELETE FROM notes").run()).toThrow(/readonly/);
    } finally {
      db.close();
    }
    expect(() => renameSync(path, `${path}.moved`)).toThrow(/EPERM/);
    expect(() => unlinkSync(path)).toThrow(/EPERM/);
    expect(() => linkSync(path, `${path}.link`)).toThrow(/EPERM/);
    expect(dumpDatabase(path)).toEqual(before);
    expect(await immutableStatus(path)).toMatchObject({ active: true, problem: false, immutable: true });

    await removeImmutable(path);
    expect(await isImmutable(path)).toBe(false);
    expect((await readSidecar(path))?.immutable).toBeUndefined();
    const writable = new Database(path);
    writable.prepare("DELETE FROM notes").run();
    writable.close();
  });

  it("leaves a file immutable after unprotect when it already was before protect", async () => {
    await setImmutable(path, true);
    await applyImmutable(path);
    expect((await readSidecar(path))?.immutable?.alreadyImmutable).toEqual(["app.db"]);
    await removeImmutable(path);
    expect(await isImmutable(path)).toBe(true);
  });

  it("reports the attribute cleared behind Lifeboat's back", async () => {
    await applyImmutable(path);
    execFileSync("chattr", ["-i", path]);
    expect(await immutableStatus(path)).toMatchObject({ active: false, problem: true });
  });

  it("as a guard, denies deleting or restoring over an immutable database, however it became immutable", async () => {
    const guard = immutableGuard();
    const context = {
      operation: "delete" as const,
      database: { name: "app", path, declaredEnvironment: null },
      destructive: true,
    };
    expect(await guard.check(context)).toEqual({ action: "allow" });
    await setImmutable(path, true);
    expect(await guard.check(context)).toMatchObject({ action: "deny", hint: expect.stringContaining("unprotect") });
    expect(await guard.check({ ...context, operation: "backup", destructive: false })).toEqual({ action: "allow" });
  });

  it("is refused with a clear message to a process without CAP_LINUX_IMMUTABLE, and nothing changes", async () => {
    const child = runChild(
      dir,
      "no-capability.mts",
      `const { protectDatabase, protectionLayers } = await import(process.env.PACKAGE_ENTRY!);
       try {
         await protectDatabase(process.argv[2]!, { layers: protectionLayers([], { immutable: true }) });
         console.log("PROTECTED");
       } catch (error) {
         console.log(JSON.stringify({ code: error.code, message: error.message, hint: error.hint }));
       }`,
      [path],
      { prefix: ["setpriv", "--bounding-set=-linux_immutable", "--inh-caps=-linux_immutable"] },
    );
    const { output } = await child.exited();
    const reported = JSON.parse(output.trim().split("\n").at(-1)!) as { code: string; message: string; hint: string };
    expect(reported.code).toBe(ErrorCodes.PERMISSION_DENIED);
    expect(reported.message).toContain("CAP_LINUX_IMMUTABLE");
    expect(reported.hint).toContain("sudo");
    // The hash and permissions layers it applied first were undone.
    expect(await readSidecar(path)).toBeNull();
    expect(await isImmutable(path)).toBe(false);
  });
});

describe("the immutable layer on other file systems", () => {
  const mounts: string[] = [];
  let root: { dir: string; cleanup: () => void };
  beforeAll(() => {
    root = tempDir("lifeboat-guards-mounts-");
  });
  afterAll(() => {
    // Lazily: snapshots keep read descriptors open for the life of the process (see @lifeboat/sqlite).
    for (const mount of mounts) execFileSync("umount", ["-l", mount]);
    root.cleanup();
  });
  const mount = (type: "tmpfs" | "ramfs"): string => {
    const target = join(root.dir, type);
    mkdirSync(target);
    execFileSync("mount", ["-t", type, "-o", type === "tmpfs" ? "size=8m" : "mode=0755", type, target]);
    mounts.push(target);
    return target;
  };

  it("says clearly that ramfs keeps no attributes, and leaves nothing half-protected", async () => {
    const ramfs = mount("ramfs");
    const file = join(ramfs, "app.db");
    copyFileSync(path, file);
    expect(await isImmutable(file)).toBeNull();
    const refused = protectDatabase(file, { layers: protectionLayers([], { immutable: true }) });
    await expect(refused).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
    await expect(refused).rejects.toThrow("does not support the immutable attribute");
    expect(await readSidecar(file)).toBeNull();
    expect(await immutableStatus(file)).toMatchObject({ active: false, immutable: null });
  });

  it("works on tmpfs from Linux 6.0 on (tmpfs gained FS_IOC_SETFLAGS), and says why not before", async () => {
    const tmpfs = mount("tmpfs");
    const file = join(tmpfs, "app.db");
    copyFileSync(path, file);
    const major = Number(release().split(".")[0]);
    if (major >= 6) {
      await protectDatabase(file, { layers: protectionLayers([], { immutable: true }) });
      expect(await isImmutable(file)).toBe(true);
      expect(() => unlinkSync(file)).toThrow(/EPERM/);
      await unprotectDatabase(file);
      expect(await isImmutable(file)).toBe(false);
    } else {
      await expect(applyImmutable(file)).rejects.toThrow("does not support the immutable attribute");
    }
  });
});
