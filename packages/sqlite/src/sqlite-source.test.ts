import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { isLifeboatError, PluginRegistry } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkIntegrity, sqliteSource, sqliteSourcePlugin } from "./index.js";
import { OTHER_USER, openWalDatabase, PACKAGE_ENTRY, runChild, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
const connections: Database.Database[] = [];
const source = sqliteSource();

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => {
  for (const db of connections.splice(0)) if (db.open) db.close();
  cleanup();
});

function create(name: string, sql: string, walMode = false): string {
  const path = join(dir, name);
  const db = walMode ? openWalDatabase(path) : new Database(path);
  db.exec(sql);
  db.close();
  return path;
}

function sha(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

async function errorOf(promise: Promise<unknown>): Promise<{ code: string; message: string; hint?: string }> {
  try {
    await promise;
  } catch (error) {
    if (isLifeboatError(error)) return { code: error.code, message: error.message, hint: error.hint };
    throw error;
  }
  throw new Error("expected a LifeboatError");
}

describe("describe", () => {
  it("lists user tables with exact row counts, odd names included, and the database facts", async () => {
    const path = create(
      "app.db",
      `PRAGMA user_version = 42;
       CREATE TABLE users(id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT);
       INSERT INTO users(name) VALUES ('a'), ('b'), ('c');
       CREATE TABLE "weird ""quoted"" name"(x);
       INSERT INTO "weird ""quoted"" name" VALUES (1), (2);
       CREATE TABLE "select"(x);
       CREATE TABLE "with space; DROP TABLE users; --"(x);
       INSERT INTO "with space; DROP TABLE users; --" VALUES (1);
       CREATE TABLE ünïcødé(x);
       INSERT INTO ünïcødé VALUES (1), (2), (3), (4);
       CREATE VIEW v AS SELECT * FROM users;
       CREATE VIRTUAL TABLE docs USING fts5(body);
       INSERT INTO docs VALUES ('hello');`,
    );
    const d = await source.describe(path);
    const rows = Object.fromEntries(d.tables.map((t) => [t.name, t.rows]));
    expect(rows).toMatchObject({
      users: 3,
      'weird "quoted" name': 2,
      select: 0,
      "with space; DROP TABLE users; --": 1,
      ünïcødé: 4,
    });
    expect(rows).not.toHaveProperty("sqlite_sequence");
    expect(rows).not.toHaveProperty("docs"); // virtual: its rows live in the listed shadow tables
    expect(rows).toHaveProperty("docs_content", 1);
    expect(rows).not.toHaveProperty("v");
    const db = new Database(path, { readonly: true });
    connections.push(db);
    expect(d).toMatchObject({
      path,
      pageSize: 4096,
      pageCount: db.pragma("page_count", { simple: true }),
      sizeBytes: 4096 * (db.pragma("page_count", { simple: true }) as number),
      journalMode: "delete",
      userVersion: 42,
      environment: null,
      engineVersion: db.prepare("SELECT sqlite_version()").pluck().get(),
    });
  });

  it("sees commits still in the WAL of a live writer, and changes neither the database nor its WAL", async () => {
    const path = join(dir, "live.db");
    const writer = openWalDatabase(path);
    connections.push(writer);
    writer.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3)");
    writer.exec("INSERT INTO t VALUES (4)");
    const before = [sha(path), sha(`${path}-wal`)];
    const d = await source.describe(path);
    expect(d.journalMode).toBe("wal");
    expect(d.tables).toEqual([{ name: "t", rows: 4 }]);
    expect([sha(path), sha(`${path}-wal`)]).toEqual(before);
  });

  it.each([
    [
      "_lifeboat_environment",
      "CREATE TABLE _lifeboat_environment(key TEXT, value TEXT); INSERT INTO _lifeboat_environment VALUES ('owner', 'ops'), ('environment', 'production')",
      "production",
    ],
    [
      "_environment with one column",
      "CREATE TABLE _environment(name TEXT); INSERT INTO _environment VALUES ('staging')",
      "staging",
    ],
    [
      "_environment with a name/value pair",
      "CREATE TABLE _environment(name TEXT, value TEXT); INSERT INTO _environment VALUES ('ENV', ' test ')",
      "test",
    ],
    [
      "Rails ar_internal_metadata",
      "CREATE TABLE ar_internal_metadata(key varchar PRIMARY KEY, value varchar, created_at datetime, updated_at datetime); INSERT INTO ar_internal_metadata VALUES ('environment', 'production', 0, 0), ('schema_sha1', 'abc', 0, 0)",
      "production",
    ],
    [
      "the first marker table wins",
      "CREATE TABLE _environment(v TEXT); INSERT INTO _environment VALUES ('second'); CREATE TABLE _lifeboat_environment(environment TEXT); INSERT INTO _lifeboat_environment VALUES ('first')",
      "first",
    ],
    [
      "a marker table without a marker",
      "CREATE TABLE _lifeboat_environment(key TEXT, value TEXT); INSERT INTO _lifeboat_environment VALUES ('owner', 'ops')",
      null,
    ],
    ["an empty value", "CREATE TABLE _environment(value TEXT); INSERT INTO _environment VALUES ('')", null],
    [
      "two rows and no key column",
      "CREATE TABLE _environment(value TEXT); INSERT INTO _environment VALUES ('a'), ('b')",
      null,
    ],
  ])("reads the environment marker: %s", async (_name, sql, expected) => {
    const d = await source.describe(create("env.db", sql));
    expect(d.environment).toBe(expected);
  });

  it("says DATABASE_NOT_FOUND, with the path and a hint, for a missing file", async () => {
    const path = join(dir, "missing.db");
    const error = await errorOf(source.describe(path));
    expect(error.code).toBe("DATABASE_NOT_FOUND");
    expect(error.message).toContain(path);
    expect(error.hint).toMatch(/path/i);
    expect(existsSync(path)).toBe(false); // SQLite was not allowed to create it
  });

  it("says NOT_A_DATABASE for a directory, an empty file, another file, and a damaged header", async () => {
    mkdirSync(join(dir, "folder.db"));
    writeFileSync(join(dir, "empty.db"), "");
    writeFileSync(join(dir, "notes.txt"), "just some text, long enough to fill a header ".repeat(10));
    const damaged = readFileSync(create("damaged.db", "CREATE TABLE t(x)"));
    damaged.fill(0xff, 16, 100); // valid magic, nonsense page size and the rest
    writeFileSync(join(dir, "damaged.db"), damaged);
    for (const [name, pattern] of [
      ["folder.db", /directory/],
      ["empty.db", /empty/],
      ["notes.txt", /not a SQLite database/],
      ["damaged.db", /not a SQLite database/],
    ] as const) {
      const error = await errorOf(source.describe(join(dir, name)));
      expect(error.code, name).toBe("NOT_A_DATABASE");
      expect(error.message).toContain(join(dir, name));
      expect(error.message).toMatch(pattern);
      expect(error.hint).toBeTruthy();
    }
    expect(readFileSync(join(dir, "empty.db")).byteLength).toBe(0);
  });
});

describe("a database a crashed writer left behind", () => {
  it("is not rolled back by Lifeboat's read-only connections: describe and snapshot say it needs recovery", async () => {
    const path = create(
      "crashed.db",
      `CREATE TABLE t(v BLOB); INSERT INTO t SELECT randomblob(1000) FROM (WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 500) SELECT n FROM s)`,
    );
    const crash = `
      const Database = require(process.env.BETTER_SQLITE3);
      const db = new Database(process.argv[2]);
      db.pragma("cache_size = 5"); // spill changed pages into the file mid-transaction
      db.exec("BEGIN");
      db.exec("UPDATE t SET v = randomblob(1000)");
      process.kill(process.pid, "SIGKILL");`;
    await runChild(dir, "crash.cjs", crash, [path]).exited();
    const journal = readFileSync(`${path}-journal`);
    // One at a time: both calls started at once would leave the second's rejection unhandled for a while.
    for (const call of [() => source.describe(path), () => source.snapshot(path)]) {
      const error = await errorOf(call());
      expect(error.code).toBe("DATABASE_LOCKED");
      expect(error.message).toMatch(/needs recovery/);
      expect(error.hint).toMatch(/open it once/);
    }
    expect(readFileSync(`${path}-journal`).equals(journal)).toBe(true);
  });
});

/** Runs describe and snapshot in a child process as a user who may not write (or read) `path`. */
async function asOtherUser(path: string): Promise<{ describe: unknown; snapshot: unknown }> {
  const script = `
    const { sqliteSource } = await import(${JSON.stringify(PACKAGE_ENTRY)});
    const source = sqliteSource();
    const out = {};
    try { const d = await source.describe(process.argv[2]); out.describe = { ok: true, tables: d.tables }; }
    catch (e) { out.describe = { code: e.code, message: e.message, hint: e.hint }; }
    try {
      const s = await source.snapshot(process.argv[2]);
      let bytes = 0;
      for await (const chunk of s.body) bytes += chunk.byteLength;
      out.snapshot = { ok: true, bytes, integrity: s.integrity.ok };
    } catch (e) { out.snapshot = { code: e.code, message: e.message, hint: e.hint }; }
    console.log("RESULT " + JSON.stringify(out));
  `;
  const child = runChild(dir, "other-user.mjs", script, [path], { ...OTHER_USER, typescript: true });
  const { output } = await child.exited();
  const line = output.split("\n").find((l) => l.startsWith("RESULT "));
  if (!line) throw new Error(`child failed:\n${output}`);
  return JSON.parse(line.slice(7));
}

describe("permissions", () => {
  it("says PERMISSION_DENIED for a database the user may not read", async () => {
    const path = create("secret.db", "CREATE TABLE t(x)");
    chmodSync(path, 0o000);
    const result = await asOtherUser(path);
    expect(result.describe).toMatchObject({ code: "PERMISSION_DENIED", message: expect.stringContaining(path) });
    expect(result.snapshot).toMatchObject({ code: "PERMISSION_DENIED" });
  });

  it("in a read-only directory: reads a rollback-journal database, refuses a WAL database it would need to create files for, and creates nothing", async () => {
    const ro = join(dir, "readonly");
    mkdirSync(ro);
    const plain = join(ro, "plain.db");
    const wal = join(ro, "wal.db");
    new Database(plain).exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    const w = openWalDatabase(wal);
    w.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1)");
    w.close(); // last connection: checkpoints and removes -wal and -shm
    chmodSync(ro, 0o555);
    const plainResult = await asOtherUser(plain);
    expect(plainResult.describe).toMatchObject({ ok: true, tables: [{ name: "t", rows: 1 }] });
    expect(plainResult.snapshot).toMatchObject({ ok: true, bytes: 8192, integrity: true });
    const walResult = await asOtherUser(wal);
    expect(walResult.describe).toMatchObject({
      code: "PERMISSION_DENIED",
      hint: expect.stringMatching(/-wal and -shm/),
    });
    expect(walResult.snapshot).toMatchObject({ code: "PERMISSION_DENIED" });
    expect(existsSync(`${wal}-wal`)).toBe(false);
    expect(existsSync(`${wal}-shm`)).toBe(false);
  });

  it("in a read-only directory: reads a WAL database while its application (another user) has it open", async () => {
    const ro = join(dir, "readonly");
    mkdirSync(ro);
    const path = join(ro, "app.db");
    const app = openWalDatabase(path);
    connections.push(app);
    app.exec("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2)");
    chmodSync(ro, 0o555);
    const result = await asOtherUser(path);
    expect(result.describe).toMatchObject({ ok: true, tables: [{ name: "t", rows: 2 }] });
    expect(result.snapshot).toMatchObject({ ok: true, integrity: true });
  });
});

describe("checkIntegrity", () => {
  it("reports a healthy database as ok in every mode", async () => {
    const path = create(
      "good.db",
      "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT); CREATE INDEX ia ON t(a); INSERT INTO t(a) VALUES ('x'), ('y')",
    );
    expect(await checkIntegrity(path, "full")).toEqual({ check: "integrity_check", ok: true, messages: [] });
    expect(await checkIntegrity(path, "quick")).toEqual({ check: "quick_check", ok: true, messages: [] });
    expect(await checkIntegrity(path, "off")).toEqual({ check: "none", ok: true, messages: [] });
  });

  it("finds a corrupted index with the full check (at most 100 messages); the quick check does not look at index contents", async () => {
    const path = join(dir, "bad.db");
    const db = new Database(path);
    db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT); CREATE INDEX ia ON t(a)");
    const insert = db.prepare("INSERT INTO t(a) VALUES (?)");
    db.transaction(() => {
      for (let i = 0; i < 1000; i++) insert.run(`value-${String(i).padStart(6, "0")}`);
    })();
    const leaves = db
      .prepare("SELECT pageno FROM dbstat WHERE name = 'ia' AND pagetype = 'leaf'")
      .pluck()
      .all() as number[];
    db.close();
    const bytes = readFileSync(path);
    for (const page of leaves) {
      const start = (page - 1) * 4096;
      for (let i = start; i < start + 4096 - 6; i++)
        if (bytes.toString("latin1", i, i + 6) === "value-") bytes[i + 4] = 0x45;
    }
    writeFileSync(path, bytes);
    const full = await checkIntegrity(path, "full");
    expect(full.ok).toBe(false);
    expect(full.check).toBe("integrity_check");
    expect(full.messages).toHaveLength(100);
    expect(full.messages[0]).toMatch(/missing from index ia/);
    expect((await checkIntegrity(path, "quick")).ok).toBe(true);
  });

  it("fails the quick check on a damaged b-tree page", async () => {
    const path = create(
      "tree.db",
      "CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(100)); INSERT INTO t SELECT randomblob(100) FROM t; INSERT INTO t SELECT randomblob(100) FROM t; INSERT INTO t SELECT randomblob(100) FROM t; INSERT INTO t SELECT randomblob(100) FROM t; INSERT INTO t SELECT randomblob(100) FROM t; INSERT INTO t SELECT randomblob(100) FROM t",
    );
    const bytes = readFileSync(path);
    bytes.fill(0x41, 4096 * 2 + 8, 4096 * 2 + 64); // cell pointers of page 3
    writeFileSync(path, bytes);
    const quick = await checkIntegrity(path, "quick");
    expect(quick.ok).toBe(false);
    expect(quick.messages.length).toBeGreaterThan(0);
  });

  it("leaves no -wal or -shm behind when checking a WAL-mode file", async () => {
    const path = create("restored.db", "CREATE TABLE t(x); INSERT INTO t VALUES (1)", true);
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect((await checkIntegrity(path, "full")).ok).toBe(true);
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect(existsSync(`${path}-shm`)).toBe(false);
  });

  it("rejects an unknown mode and a file that is not a database", async () => {
    const path = create("x.db", "CREATE TABLE t(x)");
    await expect(checkIntegrity(path, "fast" as never)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    writeFileSync(join(dir, "text.db"), "hello");
    await expect(checkIntegrity(join(dir, "text.db"), "full")).rejects.toMatchObject({ code: "NOT_A_DATABASE" });
  });
});

describe("sqliteSourcePlugin", () => {
  it("is a source plugin core's registry accepts, creating a sqlite driver", async () => {
    const registry = new PluginRegistry([sqliteSourcePlugin]);
    const plugin = await registry.resolve("source", "sqlite", dir, "source");
    expect(plugin).toBe(sqliteSourcePlugin);
    const driver = plugin.create();
    expect(driver.type).toBe("sqlite");
    const path = create("p.db", "CREATE TABLE t(x)");
    expect((await driver.describe(path)).tables).toEqual([{ name: "t", rows: 0 }]);
  });
});
