import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { deleteDatabase } from "./delete-database.js";
import { markEnvironment } from "./environment-marker.js";
import { protectDatabase } from "./protect.js";
import { dumpDatabase, holdOpen, makeBank, makeLifeboat, runChild, scalar, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 30 });
});
afterEach(() => cleanup());

const files = () => readdirSync(dir).filter((f) => f.startsWith("app.db"));

describe("deleteDatabase", () => {
  it("needs the production phrase, takes a verified backup, removes the database with its -wal/-shm, and the backup restores it", async () => {
    await markEnvironment(path, "production");
    const content = dumpDatabase(path);
    const { lb, db } = await makeLifeboat({
      dir,
      path,
      environment: "production",
      guards: [{ type: "environment" }, { type: "confirmation" }],
    });
    await expect(deleteDatabase(db, { yes: true })).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
      hint: expect.stringContaining('--confirm "delete production"'),
    });
    expect(existsSync(path)).toBe(true);
    expect((await lb.list())[0]!.snapshots).toHaveLength(0); // refused before any backup

    const result = await deleteDatabase(db, { yes: true, phrases: ["delete production"] });
    expect(result.removed).toEqual([path]);
    expect(files()).toEqual([]);
    expect(result.safetyBackup).toMatchObject({ kind: "targets", operation: "delete" });
    const [listed] = await lb.list();
    expect(listed!.snapshots.map((s) => [s.manifest.id, s.manifest.reason])).toEqual([
      [result.safetyBackup.id, "pre-delete"],
    ]);

    await lb.restore(undefined, { backupId: result.safetyBackup.id });
    expect(dumpDatabase(path)).toEqual(content);
  });

  it("leaves nothing of a database a crashed application left with a -wal, and its backup holds the WAL's commits", async () => {
    const writer = runChild(
      dir,
      "crash.cjs",
      `const Database = require(process.env.BETTER_SQLITE3);
       const db = new Database(process.argv[2]);
       db.prepare("INSERT INTO notes (body) VALUES ('only in the WAL')").run();
       console.log("ready");
       setInterval(() => {}, 1000);`,
      [path],
    );
    await writer.waitFor("ready");
    await writer.stop("SIGKILL");
    expect(files()).toEqual(["app.db", "app.db-shm", "app.db-wal"]);
    const { lb, db } = await makeLifeboat({ dir, path });
    const result = await deleteDatabase(db, { yes: true });
    expect(files()).toEqual([]);
    await lb.restore(undefined, { backupId: result.safetyBackup.id });
    expect(scalar(path, "SELECT count(*) FROM notes WHERE body = 'only in the WAL'")).toBe(1);
  });

  it("refuses a database another process has open, before taking any backup", async () => {
    const { lb, db } = await makeLifeboat({ dir, path });
    const holder = await holdOpen(dir, path);
    try {
      await expect(deleteDatabase(db, { yes: true })).rejects.toMatchObject({ code: ErrorCodes.DATABASE_LOCKED });
    } finally {
      await holder.stop();
    }
    expect(existsSync(path)).toBe(true);
    expect((await lb.list())[0]!.snapshots).toHaveLength(0);
  });

  it("refuses a protected database even when no guard is configured", async () => {
    const { db } = await makeLifeboat({ dir, path });
    await protectDatabase(path);
    await expect(deleteDatabase(db, { yes: true })).rejects.toMatchObject({
      code: ErrorCodes.GUARD_DENIED,
      hint: expect.stringContaining("lifeboat unprotect"),
    });
    expect(existsSync(path)).toBe(true);
  });

  it("keeps the safety copy in a local folder when configured so", async () => {
    const content = dumpDatabase(path);
    const { db } = await makeLifeboat({ dir, path, guards: [{ type: "safety-backup", to: "local" }] });
    const result = await deleteDatabase(db, { yes: true });
    expect(result.safetyBackup.kind).toBe("local");
    const copy = result.safetyBackup.locations[0]!;
    expect(copy.startsWith(join(dir, ".lifeboat-safety", "app.db.pre-delete."))).toBe(true);
    expect(dumpDatabase(copy)).toEqual(content);
  });
});
