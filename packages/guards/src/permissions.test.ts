import { chmodSync, chownSync, existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { ErrorCodes, type GuardContext } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { applyPermissions, permissionsGuard, permissionsStatus, removePermissions } from "./permissions.js";
import { protectDatabase, unprotectDatabase } from "./protect.js";
import { readSidecar, sidecarPath } from "./sidecar.js";
import { makeBank, NOBODY, READ_WRITE_PROBE, runAs, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;
const modeOf = (file: string) => statSync(file).mode & 0o777;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 10 });
});
afterEach(() => cleanup());

describe("the permissions layer", () => {
  it("makes the database and its -wal/-shm read-only and puts back exactly the modes they had", async () => {
    chmodSync(path, 0o640);
    const open = new Database(path); // keeps the -wal and -shm in place
    open.prepare("INSERT INTO notes (body) VALUES ('x')").run();
    try {
      chmodSync(`${path}-wal`, 0o600);
      chmodSync(`${path}-shm`, 0o644);
      await applyPermissions(path, 0o440);
      expect([path, `${path}-wal`, `${path}-shm`].map(modeOf)).toEqual([0o440, 0o440, 0o440]);
      expect((await readSidecar(path))?.permissions).toMatchObject({
        mode: "0440",
        files: { "app.db": "0640", "app.db-wal": "0600", "app.db-shm": "0644" },
      });
      // Applying again must not forget the original modes.
      await applyPermissions(path, 0o444);
      expect((await readSidecar(path))?.permissions?.files["app.db"]).toBe("0640");
      await removePermissions(path);
      expect([path, `${path}-wal`, `${path}-shm`].map(modeOf)).toEqual([0o640, 0o600, 0o644]);
      expect(existsSync(sidecarPath(path))).toBe(false);
    } finally {
      open.close();
    }
  });

  it("stops another user's writes while letting them read, and unprotect gives writes back", async () => {
    chownSync(dir, NOBODY.uid, NOBODY.gid);
    chownSync(path, NOBODY.uid, NOBODY.gid);
    expect(runAs(NOBODY, dir, READ_WRITE_PROBE, [path]).output).toContain("WRITE ok");

    await protectDatabase(path, { layers: [permissionsGuard()] });
    const protectedRun = runAs(NOBODY, dir, READ_WRITE_PROBE, [path]).output;
    expect(protectedRun).toContain("READ ok");
    expect(protectedRun).toMatch(/WRITE fail SQLITE_READONLY/);
    // That reader created -wal/-shm with the database's (read-only) mode; unprotect must fix them too.
    expect(existsSync(`${path}-shm`)).toBe(true);
    expect(modeOf(`${path}-shm`)).toBe(0o444);

    await unprotectDatabase(path);
    expect(modeOf(path)).toBe(0o644);
    expect(modeOf(`${path}-shm`)).toBe(0o644);
    expect(runAs(NOBODY, dir, READ_WRITE_PROBE, [path]).output).toContain("WRITE ok");
  });

  it("reports a protected file made writable again", async () => {
    await applyPermissions(path);
    expect(await permissionsStatus(path)).toMatchObject({ active: true, problem: false });
    chmodSync(path, 0o664);
    const status = await permissionsStatus(path);
    expect(status).toMatchObject({ active: false, problem: true });
    expect(status.summary).toContain("WRITABLE again: app.db 0664");
  });

  it("as a guard, denies what would change a protected database and allows the rest", async () => {
    const guard = permissionsGuard();
    const context = (operation: GuardContext["operation"], destructive: boolean, output?: string): GuardContext => ({
      operation,
      database: { name: "app", path, declaredEnvironment: null },
      destructive,
      details: output ? { output } : {},
    });
    expect(await guard.check(context("delete", true))).toEqual({ action: "allow" });
    await applyPermissions(path);
    for (const c of [
      context("restore", true),
      context("delete", true),
      context("exec", true),
      context("replicate", false),
    ]) {
      const decision = await guard.check(c);
      expect(decision).toMatchObject({ action: "deny", hint: expect.stringContaining("lifeboat unprotect") });
    }
    expect(await guard.check(context("backup", false))).toEqual({ action: "allow" });
    expect(await guard.check(context("restore", true, join(dir, "elsewhere.db")))).toEqual({ action: "allow" });
  });

  it("refuses a mode that could be written", () => {
    expect(() => permissionsGuard({ mode: "0644" })).toThrow(
      expect.objectContaining({ code: ErrorCodes.CONFIG_INVALID }),
    );
    expect(permissionsGuard({ mode: "0440" }).options.mode).toBe(0o440);
  });
});
