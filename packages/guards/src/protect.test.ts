import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { permissionsGuard } from "./permissions.js";
import { protectDatabase, protectionLayers, protectionStatus, unprotectDatabase } from "./protect.js";
import { readSidecar, sidecarPath } from "./sidecar.js";
import { dumpDatabase, holdOpen, makeBank, makeLifeboat, runChild, sql, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;
const modeOf = (file: string) => statSync(file).mode & 0o777;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 50 });
});
afterEach(() => cleanup());

/** Leaves committed transactions in the -wal, as an application killed before its last close does. */
async function crashAfterWriting(): Promise<void> {
  const child = runChild(
    dir,
    "crash.cjs",
    `const Database = require(process.env.BETTER_SQLITE3);
     const db = new Database(process.argv[2]);
     db.prepare("INSERT INTO notes (body) VALUES ('committed, then the process died')").run();
     console.log("ready");
     setInterval(() => {}, 1000);`,
    [path],
  );
  await child.waitFor("ready");
  await child.stop("SIGKILL");
}

describe("protect, status and unprotect", () => {
  it("checkpoints a WAL database at rest, applies hash and permissions, reports it, and undoes exactly that", async () => {
    await crashAfterWriting();
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    const content = dumpDatabase(path);

    const result = await protectDatabase(path);
    expect(result).toMatchObject({ applied: ["hash", "permissions"], checkpointed: true, inUseBy: [] });
    // The file alone holds everything now (reading a WAL database leaves an empty -wal beside it).
    expect(existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0).toBe(0);
    expect(modeOf(path)).toBe(0o444);
    expect(dumpDatabase(path)).toEqual(content);
    const status = await protectionStatus(path);
    expect(status).toMatchObject({ protected: true, problems: false });
    expect(status.layers.map((l) => [l.name, l.active])).toEqual([
      ["hash", true],
      ["permissions", true],
      ["immutable", false],
    ]);

    expect(await unprotectDatabase(path)).toMatchObject({ removed: ["permissions", "hash"] });
    expect(modeOf(path)).toBe(0o644);
    expect(existsSync(sidecarPath(path))).toBe(false);
    expect(await protectionStatus(path)).toMatchObject({ protected: false, problems: false });
    expect(await unprotectDatabase(path)).toMatchObject({ removed: [] });
  });

  it("refuses a database another process has open, unless told to go ahead", async () => {
    const holder = await holdOpen(dir, path);
    try {
      const refused = protectDatabase(path);
      await expect(refused).rejects.toMatchObject({ code: ErrorCodes.DATABASE_LOCKED });
      await expect(refused).rejects.toThrow(`pid ${holder.pid}`);
      expect(await readSidecar(path)).toBeNull();
      const forced = await protectDatabase(path, { allowInUse: true });
      expect(forced.inUseBy.map((h) => h.pid)).toEqual([holder.pid]);
      expect(forced.checkpointed).toBe(false);
    } finally {
      await holder.stop();
    }
  });

  it("refuses a database a crashed writer left with a hot journal", async () => {
    sql(path, "PRAGMA journal_mode = DELETE");
    const child = runChild(
      dir,
      "hot-journal.cjs",
      `const Database = require(process.env.BETTER_SQLITE3);
       const db = new Database(process.argv[2]);
       db.pragma("cache_size = 2");
       db.exec("BEGIN");
       db.prepare("UPDATE notes SET body = body || randomblob(500)").run();
       console.log("ready");
       setInterval(() => {}, 1000);`,
      [path],
    );
    await child.waitFor("ready");
    await child.stop("SIGKILL");
    expect(statSync(`${path}-journal`).size).toBeGreaterThan(0);
    await expect(protectDatabase(path)).rejects.toThrow("hot journal");
  });

  it("keeps the first protect's record when protecting again, and refuses when the content changed meanwhile", async () => {
    await protectDatabase(path);
    const first = await readSidecar(path);
    await protectDatabase(path);
    expect(await readSidecar(path)).toEqual(first);
    sql(path, "DELETE FROM notes WHERE id < 10"); // root ignores the read-only mode
    await expect(protectDatabase(path)).rejects.toMatchObject({
      code: ErrorCodes.GUARD_DENIED,
      message: expect.stringContaining("changed since it was protected"),
    });
  });

  it("picks the configured layers, adjusted by the command line", async () => {
    const { db } = await makeLifeboat({
      dir,
      path,
      guards: [{ type: "environment" }, { type: "immutable" }, { type: "permissions", mode: "0440" }],
    });
    expect(protectionLayers(db.guards).map((l) => l.name)).toEqual(["permissions", "immutable"]);
    expect(protectionLayers([]).map((l) => l.name)).toEqual(["hash", "permissions"]);
    const chosen = protectionLayers([], { immutable: true, hash: false, mode: 0o400 });
    expect(chosen.map((l) => l.name)).toEqual(["permissions", "immutable"]);
    expect((chosen[0] as ReturnType<typeof permissionsGuard>).options.mode).toBe(0o400);
  });
});
