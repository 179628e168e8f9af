import { execFileSync } from "node:child_process";
import { appendFileSync, closeSync, mkdirSync, openSync, readdirSync, statSync, writeSync } from "node:fs";
import { join } from "node:path";
import { checkGuards, ErrorCodes } from "@lifeboat/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { restoreSafetyBackup, takeSafetyBackup } from "./safety-backup.js";
import { dumpDatabase, makeBank, makeLifeboat, sql, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 100 });
});
afterEach(() => cleanup());

describe("safety backups", () => {
  it("on the targets: verified, and the database can be put back from it", async () => {
    const { db } = await makeLifeboat({ dir, path });
    const content = dumpDatabase(path);
    const safety = await takeSafetyBackup(db, "exec");
    expect(safety).toMatchObject({ kind: "targets", operation: "exec" });
    sql(path, "DELETE FROM notes; DROP TABLE ledger;");
    await restoreSafetyBackup(db, safety);
    expect(dumpDatabase(path)).toEqual(content);
    // The state it replaced is kept, as restore keeps it.
    expect(readdirSync(join(dir, ".lifeboat-safety")).some((f) => f.startsWith("app.db."))).toBe(true);
  });

  it("on the targets: a damaged stored object is caught before anything is replaced", async () => {
    const { db, backups } = await makeLifeboat({ dir, path });
    const safety = await takeSafetyBackup(db, "delete");
    const objects = execFileSync("find", [backups, "-name", "*.snap"], { encoding: "utf8" }).trim().split("\n");
    appendFileSync(objects[0]!, "x");
    sql(path, "DELETE FROM notes");
    const changed = dumpDatabase(path);
    await expect(restoreSafetyBackup(db, safety)).rejects.toMatchObject({ code: ErrorCodes.CORRUPT_BACKUP });
    expect(dumpDatabase(path)).toEqual(changed);
  });

  it("in a local folder: a private, verified copy that refuses to be used once altered", async () => {
    const { db } = await makeLifeboat({ dir, path, guards: [{ type: "safety-backup", to: "local", folder: "keep" }] });
    const content = dumpDatabase(path);
    const safety = await takeSafetyBackup(db, "clone");
    const copy = safety.locations[0]!;
    expect(copy.startsWith(join(dir, "keep", "app.db.pre-clone."))).toBe(true);
    expect(statSync(copy).mode & 0o777).toBe(0o600);
    expect(dumpDatabase(copy)).toEqual(content);
    sql(path, "DELETE FROM notes");
    await restoreSafetyBackup(db, safety);
    expect(dumpDatabase(path)).toEqual(content);

    sql(copy, "DELETE FROM accounts");
    await expect(restoreSafetyBackup(db, safety)).rejects.toMatchObject({ code: ErrorCodes.CORRUPT_BACKUP });
  });

  it("refuses to take a copy of a damaged database, leaving nothing behind", async () => {
    sql(path, "PRAGMA journal_mode = DELETE");
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.alloc(3000, 0xa5), 0, 3000, 4096 * 3 + 500);
    closeSync(fd);
    const { db } = await makeLifeboat({ dir, path, guards: [{ type: "safety-backup", to: "local" }] });
    await expect(takeSafetyBackup(db, "delete")).rejects.toMatchObject({ code: ErrorCodes.INTEGRITY_FAILED });
    expect(readdirSync(join(dir, ".lifeboat-safety"))).toEqual([]);
  });

  it("as a guard, refuses a destructive operation when the local folder has no room for the copy", async () => {
    sql(path, "INSERT INTO notes (body) SELECT hex(randomblob(3000)) FROM notes"); // ~700 KB
    const small = join(dir, "small");
    mkdirSync(small);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", small]);
    try {
      const { db } = await makeLifeboat({
        dir,
        path,
        guards: [{ type: "safety-backup", to: "local", folder: "small" }],
      });
      const refused = checkGuards(db, "delete", true, { yes: true });
      await expect(refused).rejects.toMatchObject({ code: ErrorCodes.GUARD_DENIED, plugin: "safety-backup" });
      await expect(refused).rejects.toThrow(/needs about \d+ bytes/);
      await expect(checkGuards(db, "backup", false, {})).resolves.toBeUndefined();
    } finally {
      execFileSync("umount", ["-l", small]);
    }
  });
});
