import { copyFileSync, existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { markEnvironment } from "./environment-marker.js";
import { dumpDatabase, makeBank, makeLifeboat, runChild, scalar, sha256Of, tempDir } from "./test-fixtures.js";
import { execMigration } from "./transaction.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
});
afterEach(() => cleanup());

/** A migration that fails at its last statement after writing a lot: SQLite must spill pages before it fails. */
const BIG_FAILING = `
PRAGMA cache_size = 2;
UPDATE notes SET body = body || hex(randomblob(2000));
INSERT INTO notes (body) SELECT body FROM notes;
CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT);
INSERT INTO no_such_table VALUES (1);`;

const SMALL_FAILING = `UPDATE accounts SET balance = 0 WHERE id = 1;
INSERT INTO no_such_table VALUES (1);`;

/** Leaves committed transactions in the -wal, as an application killed before its last close does. */
async function crashAfterWriting(): Promise<void> {
  const child = runChild(
    dir,
    `crash-${Date.now()}.cjs`,
    `const Database = require(process.env.BETTER_SQLITE3);
     const db = new Database(process.argv[2]);
     db.prepare("INSERT INTO notes (body) VALUES ('committed before the crash')").run();
     console.log("ready");
     setInterval(() => {}, 1000);`,
    [path],
  );
  await child.waitFor("ready");
  await child.stop("SIGKILL");
}

/** Copies the database and its -wal into `name/` and checkpoints the copy: its file then holds everything committed. */
function checkpointedCopy(name: string): string {
  const copyDir = join(dir, name);
  mkdirSync(copyDir);
  const copy = join(copyDir, "app.db");
  copyFileSync(path, copy);
  if (existsSync(`${path}-wal`)) copyFileSync(`${path}-wal`, `${copy}-wal`);
  const db = new Database(copy);
  db.pragma("wal_checkpoint(TRUNCATE)");
  db.close();
  return copy;
}

describe("execMigration", () => {
  it("runs the script in one transaction after a verified backup and reports what changed", async () => {
    makeBank(path, { notes: 40 });
    const { lb, db } = await makeLifeboat({ dir, path });
    const result = await execMigration(db, {
      source: "007-audit.sql",
      sql: `ALTER TABLE notes ADD COLUMN tag TEXT;
            UPDATE notes SET tag = 'old';
            CREATE TABLE audit (id INTEGER PRIMARY KEY, note INTEGER REFERENCES notes (id));
            INSERT INTO audit (note) SELECT id FROM notes WHERE id <= 5;
            DELETE FROM notes WHERE id = 40;
            PRAGMA user_version = 4;`,
      yes: true,
    });
    expect(result).toMatchObject({ committed: true, statements: 6, userVersion: { before: 3, after: 4 } });
    expect(result.integrity).toEqual({ check: "integrity_check", ok: true, messages: [] });
    expect(result.tables.find((t) => t.name === "audit")).toEqual({ name: "audit", before: null, after: 5 });
    expect(result.tables.find((t) => t.name === "notes")).toEqual({ name: "notes", before: 40, after: 39 });
    expect(scalar(path, "SELECT count(*) FROM notes WHERE tag = 'old'")).toBe(39);
    const [listed] = await lb.list();
    expect(listed!.snapshots.map((s) => [s.manifest.id, s.manifest.reason, s.manifest.source.userVersion])).toEqual([
      [result.safetyBackup!.id, "pre-exec", 3],
    ]);
  });

  it("leaves a rollback-journal database byte-identical when a statement fails, even after spilling pages", async () => {
    makeBank(path, { journalMode: "delete", notes: 300 });
    const { db } = await makeLifeboat({ dir, path });
    const before = sha256Of(path);
    const size = statSync(path).size;
    const failed = execMigration(db, { sql: BIG_FAILING, source: "big.sql", yes: true });
    await expect(failed).rejects.toMatchObject({
      code: ErrorCodes.INVALID_ARGUMENT,
      details: { statement: 5, line: 6 },
    });
    await expect(failed).rejects.toThrow("no such table: no_such_table");
    expect(sha256Of(path)).toBe(before);
    expect(statSync(path).size).toBe(size);
    expect(existsSync(`${path}-journal`)).toBe(false);
  });

  it("leaves a WAL database's file and -wal byte-identical when a small migration fails", async () => {
    makeBank(path, { notes: 50 });
    await crashAfterWriting();
    const before = { db: sha256Of(path), wal: sha256Of(`${path}-wal`) };
    expect(statSync(`${path}-wal`).size).toBeGreaterThan(0);
    const { db } = await makeLifeboat({ dir, path });
    await expect(execMigration(db, { sql: SMALL_FAILING, yes: true })).rejects.toThrow("no such table");
    expect({ db: sha256Of(path), wal: sha256Of(`${path}-wal`) }).toEqual(before);
  });

  it("leaves a WAL database's file and every committed -wal byte unchanged when a spilling migration fails", async () => {
    makeBank(path, { notes: 300 });
    await crashAfterWriting();
    const before = { db: sha256Of(path), wal: readFileSync(`${path}-wal`) };
    const content = dumpDatabase(path);
    const beforeCopy = checkpointedCopy("before");
    const { db } = await makeLifeboat({ dir, path });

    await expect(execMigration(db, { sql: BIG_FAILING, yes: true })).rejects.toThrow("no such table");

    // The database file: untouched.
    expect(sha256Of(path)).toBe(before.db);
    // The -wal: what was committed is still there byte for byte; SQLite may have appended
    // uncommitted frames after it, which carry no commit record and are never read.
    const wal = readFileSync(`${path}-wal`);
    expect(wal.subarray(0, before.wal.byteLength).equals(before.wal)).toBe(true);
    expect(wal.byteLength).toBeGreaterThan(before.wal.byteLength);
    // So the content is the same, and a checkpoint produces the very same database file.
    expect(dumpDatabase(path)).toEqual(content);
    expect(sha256Of(checkpointedCopy("after"))).toBe(sha256Of(beforeCopy));
  });

  it("rolls back when the result breaks the validation rules, and commits when the rules allow it", async () => {
    makeBank(path, { notes: 100 });
    const { db } = await makeLifeboat({
      dir,
      path,
      guards: [{ type: "transaction", requiredTables: ["accounts"], minRows: { accounts: 20 } }],
    });
    const content = dumpDatabase(path);
    const cases: [string, string][] = [
      ["DROP TABLE accounts;", "required table accounts missing"],
      ["DELETE FROM accounts WHERE id > 10;", "table accounts has 10 rows, at least 20 required"],
      ["DELETE FROM notes WHERE id % 2 = 0;", "table notes lost 50 of 100 rows (50%; at most 10% allowed)"],
      ["ALTER TABLE notes RENAME TO memos;", "table notes (100 rows) is gone"],
    ];
    for (const [sql, problem] of cases) {
      const refused = execMigration(db, { sql, yes: true });
      await expect(refused).rejects.toMatchObject({ code: ErrorCodes.GUARD_DENIED, plugin: "transaction" });
      await expect(refused).rejects.toThrow(problem);
      expect(dumpDatabase(path)).toEqual(content);
    }
    const allowed = await execMigration(db, {
      sql: "DELETE FROM notes WHERE id % 2 = 0;",
      rules: { maxRowLoss: 0.5 },
      yes: true,
    });
    expect(allowed.committed).toBe(true);
    expect(scalar(path, "SELECT count(*) FROM notes")).toBe(50);
  });

  it("refuses a script that controls the transaction itself before running any of it", async () => {
    makeBank(path, { notes: 10 });
    const { lb, db } = await makeLifeboat({ dir, path });
    const content = dumpDatabase(path);
    const refused = execMigration(db, {
      source: "bad.sql",
      sql: "UPDATE notes SET body = 'x';\nCOMMIT;\nDROP TABLE notes;",
      yes: true,
    });
    await expect(refused).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
    await expect(refused).rejects.toThrow("Statement 2 of bad.sql (line 2): COMMIT would commit");
    expect(dumpDatabase(path)).toEqual(content);
    expect((await lb.list())[0]!.snapshots).toHaveLength(0);
  });

  it("runs a dry run to the end and keeps nothing", async () => {
    makeBank(path, { notes: 10 });
    const { lb, db } = await makeLifeboat({ dir, path });
    const content = dumpDatabase(path);
    const result = await execMigration(db, { sql: "INSERT INTO notes (body) VALUES ('dry');", dryRun: true });
    expect(result).toMatchObject({ dryRun: true, committed: false, safetyBackup: null });
    expect(result.tables.find((t) => t.name === "notes")).toEqual({ name: "notes", before: 10, after: 11 });
    expect(dumpDatabase(path)).toEqual(content);
    expect((await lb.list())[0]!.snapshots).toHaveLength(0);
  });

  it('needs "exec production" on a production database', async () => {
    makeBank(path, { notes: 10 });
    await markEnvironment(path, "production");
    const { db } = await makeLifeboat({
      dir,
      path,
      environment: "production",
      guards: [{ type: "environment" }, { type: "confirmation" }],
    });
    const sql = "UPDATE notes SET body = 'changed' WHERE id = 1;";
    await expect(execMigration(db, { sql, yes: true })).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
      hint: expect.stringContaining('--confirm "exec production"'),
    });
    await execMigration(db, { sql, yes: true, phrases: ["exec production"] });
    expect(scalar(path, "SELECT body FROM notes WHERE id = 1")).toBe("changed");
  });
});
