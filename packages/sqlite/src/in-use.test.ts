import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { isLifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { findHolders } from "./in-use.js";
import { sqliteSource } from "./index.js";
import { type Child, openWalDatabase, runChild, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
const children: Child[] = [];
const connections: Database.Database[] = [];
const source = sqliteSource();

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(async () => {
  for (const child of children.splice(0)) await child.stop("SIGKILL");
  for (const db of connections.splice(0)) if (db.open) db.close();
  cleanup();
});

/** A process that opens the database, runs `sql`, says "holding" and waits to be killed. */
const HOLDER = `
const Database = require(process.env.BETTER_SQLITE3);
const db = new Database(process.argv[2]);
for (const sql of process.argv.slice(3)) {
  const stmt = db.prepare(sql);
  if (stmt.reader) stmt.all(); else stmt.run();
}
console.log("holding");
setInterval(() => {}, 1000);
`;

async function hold(path: string, ...sql: string[]): Promise<Child> {
  const child = runChild(dir, "holder-app.cjs", HOLDER, [path, ...sql]);
  children.push(child);
  await child.waitFor("holding");
  return child;
}

function database(name: string, wal: boolean): string {
  const path = join(dir, name);
  const db = wal ? openWalDatabase(path) : new Database(path);
  db.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
  db.close();
  return path;
}

async function lockedError(path: string) {
  try {
    await source.assertNotInUse(path);
  } catch (error) {
    if (isLifeboatError(error, "DATABASE_LOCKED")) return error;
    throw error;
  }
  throw new Error("expected DATABASE_LOCKED");
}

describe("assertNotInUse", () => {
  it("resolves for a database nobody uses, and for a missing file", async () => {
    const path = database("idle.db", false);
    const before = createHash("sha256").update(readFileSync(path)).digest("hex");
    await expect(source.assertNotInUse(path)).resolves.toBeUndefined();
    expect(createHash("sha256").update(readFileSync(path)).digest("hex")).toBe(before);
    await expect(source.assertNotInUse(join(dir, "none.db"))).resolves.toBeUndefined();
  });

  it("names the process that has a WAL database open, and its command line", async () => {
    const path = database("app.db", true);
    const child = await hold(path, "SELECT count(*) FROM t");
    const error = await lockedError(path);
    expect(error.message).toContain(path);
    expect(error.message).toContain(`pid ${child.pid}`);
    expect(error.message).toContain("holder-app.cjs");
    expect(error.hint).toMatch(/stop the application/i);
    const holders = error.details?.holders as { pid: number; files: string[] }[];
    expect(holders.map((h) => h.pid)).toEqual([child.pid]);
    expect(holders[0]?.files).toEqual(expect.arrayContaining([expect.stringMatching(/app\.db-shm$/)]));
    await child.stop();
    await expect(source.assertNotInUse(path)).resolves.toBeUndefined();
  });

  it("finds a process holding a read transaction on a rollback-journal database", async () => {
    const path = database("plain.db", false);
    const child = await hold(path, "BEGIN", "SELECT count(*) FROM t");
    expect((await findHolders(path)).map((h) => h.pid)).toEqual([child.pid]);
    expect((await lockedError(path)).message).toContain(`pid ${child.pid}`);
  });

  it("finds holders through a symlinked path", async () => {
    const path = database("real.db", true);
    const link = join(dir, "link.db");
    (await import("node:fs")).symlinkSync(path, link);
    const child = await hold(path);
    expect((await findHolders(link)).map((h) => h.pid)).toEqual([child.pid]);
  });

  it("detects a lock held by a connection in this very process", async () => {
    const path = database("self.db", false);
    const db = new Database(path);
    connections.push(db);
    await expect(source.assertNotInUse(path)).resolves.toBeUndefined(); // open but idle: no lock
    db.exec("BEGIN IMMEDIATE");
    const error = await lockedError(path);
    expect(error.message).toMatch(/locked by another connection/);
    db.exec("ROLLBACK");
    await expect(source.assertNotInUse(path)).resolves.toBeUndefined();
  });
});
