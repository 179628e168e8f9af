import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isLifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import {
  createFixtureDatabase,
  databaseContentHash,
  FIXTURE_ODD_TABLE,
  FIXTURE_USER_VERSION,
  tableRowCounts,
} from "./fixtures.js";

const root = mkdtempSync(join(tmpdir(), "lifeboat-fixtures-test-"));
let dirs = 0;
const freshDir = (): string => mkdtempSync(join(root, `case${dirs++}-`));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const MiB = 1024 * 1024;

function expectCode(fn: () => unknown, code: string): void {
  try {
    fn();
  } catch (error) {
    expect(isLifeboatError(error), String(error)).toBe(true);
    expect((error as { code: string }).code).toBe(code);
    expect((error as { hint?: string }).hint).toBeTruthy();
    return;
  }
  throw new Error(`expected a LifeboatError ${code}`);
}

describe("createFixtureDatabase", () => {
  it("builds a valid, realistic WAL database of the requested size with every awkward feature", async () => {
    const path = join(freshDir(), "app.sqlite");
    const summary = await createFixtureDatabase({ path, sizeMB: 4, seed: 11 });

    expect(summary.bytes).toBeGreaterThanOrEqual(4 * MiB);
    expect(summary.bytes).toBeLessThan(4.4 * MiB);
    expect(summary.bytes).toBe(summary.pageSize * summary.pageCount);
    expect(summary.pageSize).toBe(4096);
    expect(summary.journalMode).toBe("wal");
    expect(summary.tables).toEqual(tableRowCounts(path));
    for (const table of ["users", "orders", "order_items", "events", "documents", "edge_values", FIXTURE_ODD_TABLE]) {
      expect(summary.tables[table], table).toBeGreaterThan(0);
    }
    // Header bytes 18/19 are 2 in WAL mode; the generator's temp files are gone.
    const header = readFileSync(path).subarray(0, 100);
    expect([header[18], header[19]]).toEqual([2, 2]);
    expect(readdirSync(join(path, ".."))).toEqual(["app.sqlite"]);

    const db = new Database(path, { readonly: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      expect(db.pragma("foreign_key_check")).toEqual([]);
      expect(db.pragma("user_version", { simple: true })).toBe(FIXTURE_USER_VERSION);
      const list = db.prepare("SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main'").all() as Array<{
        name: string;
        type: string;
        wr: number;
      }>;
      expect(list.find((t) => t.name === "order_items")?.wr).toBe(1);
      expect(list.find((t) => t.name === "order_totals")?.type).toBe("view");
      const unique = db.prepare("SELECT \"unique\" FROM pragma_index_list('users') WHERE name = 'users_email'").pluck();
      expect(unique.get()).toBe(1);
      expect(db.prepare("SELECT count(*) FROM pragma_index_info('orders_user_placed')").pluck().get()).toBe(2);
      expect(db.prepare("SELECT count(*) FROM pragma_foreign_key_list('orders')").pluck().get()).toBe(1);
      // The view works over the generated data.
      expect(db.prepare("SELECT count(*) FROM order_totals").pluck().get()).toBe(summary.tables.orders);
      // Some BLOBs span overflow pages.
      const overflow = db.prepare("SELECT count(*) FROM dbstat WHERE name = 'documents' AND pagetype = 'overflow'");
      expect(overflow.pluck().get()).toBeGreaterThan(0);
      // Odd identifiers round-trip.
      const odd = db.prepare(`SELECT "order", "select", "column with spaces" FROM "odd ""names"", here" ORDER BY 1`);
      expect(odd.safeIntegers(true).raw(true).all()[0]).toEqual([-5n, "", "negative key"]);

      const edge = db.prepare("SELECT value FROM edge_values WHERE label = ?").pluck().safeIntegers(true);
      const typeOf = db.prepare("SELECT typeof(value) FROM edge_values WHERE label = ?").pluck();
      expect(edge.get("null")).toBeNull();
      expect(edge.get("empty text")).toBe("");
      expect(edge.get("integer zero")).toBe(0n);
      expect(typeOf.get("real zero")).toBe("real");
      expect(Object.is(edge.get("real negative zero"), -0)).toBe(true);
      expect(edge.get("real one tenth")).toBe(0.1);
      expect(edge.get("real 1e308")).toBe(1e308);
      expect(edge.get("real smallest subnormal")).toBe(5e-324);
      expect(edge.get("int64 max")).toBe(9223372036854775807n);
      expect(edge.get("int64 min")).toBe(-9223372036854775808n);
      expect(edge.get("2^53 + 1")).toBe(9007199254740993n);
      expect(edge.get("empty blob")).toEqual(Buffer.alloc(0));
      expect(typeOf.get("empty blob")).toBe("blob");
      expect(edge.get("blob with NUL bytes")).toEqual(Buffer.from([0, 1, 2, 0, 255, 0]));
      expect(edge.get("emoji")).toBe("🚀👩‍💻🇳🇴👍🏽 🏳️‍🌈");
      expect(edge.get("combining characters")).toBe("e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353");
      expect(edge.get("newlines")).toBe("a\nb\r\nc\rd");
      expect((edge.get("blob larger than a page") as Buffer).length).toBeGreaterThan(summary.pageSize);
      // Generated rows carry NULLs, empty strings, multi-script names and big integers too.
      const users = db.prepare(
        "SELECT sum(bio IS NULL), sum(bio = ''), sum(karma > 9007199254740992), sum(name GLOB '*[^ -~]*') FROM users",
      );
      const [nulls, empties, bigs, unicode] = users.raw(true).get() as number[];
      expect(nulls).toBeGreaterThan(0);
      expect(empties).toBeGreaterThan(0);
      expect(bigs).toBeGreaterThan(0);
      expect(unicode).toBeGreaterThan(0);
      const karma = db.prepare("SELECT karma FROM users WHERE id = 1").pluck().safeIntegers(true);
      expect(karma.get()).toBe(9223372036854775807n);
    } finally {
      db.close();
    }
    // Reading it back leaves no -wal/-shm behind either.
    expect(databaseContentHash(path)).toMatch(/^[0-9a-f]{64}$/);
    expect(readdirSync(join(path, ".."))).toEqual(["app.sqlite"]);
  });

  it("is deterministic: the same seed gives the same file, another seed other content", async () => {
    const a = await createFixtureDatabase({ path: join(freshDir(), "a.db"), sizeMB: 1, seed: 5 });
    const b = await createFixtureDatabase({ path: join(freshDir(), "b.db"), sizeMB: 1, seed: 5 });
    const c = await createFixtureDatabase({ path: join(freshDir(), "c.db"), sizeMB: 1, seed: 6 });
    expect(a.tables).toEqual(b.tables);
    expect(readFileSync(a.path).equals(readFileSync(b.path))).toBe(true);
    expect(databaseContentHash(a.path)).toBe(databaseContentHash(b.path));
    expect(databaseContentHash(a.path)).not.toBe(databaseContentHash(c.path));
  });

  it("builds a ~20 MB rollback-journal database with a custom page size", async () => {
    const dir = freshDir();
    const summary = await createFixtureDatabase({
      path: join(dir, "big.db"),
      sizeMB: 20,
      seed: 2,
      pageSize: 8192,
      journalMode: "delete",
    });
    expect(summary.bytes).toBeGreaterThanOrEqual(20 * MiB);
    expect(summary.bytes).toBeLessThan(22 * MiB);
    expect(summary.pageSize).toBe(8192);
    const header = readFileSync(summary.path).subarray(0, 100);
    expect(header.readUInt16BE(16)).toBe(8192);
    expect([header[18], header[19]]).toEqual([1, 1]);
    const db = new Database(summary.path, { readonly: true });
    try {
      expect(db.pragma("quick_check", { simple: true })).toBe("ok");
      expect(db.pragma("journal_mode", { simple: true })).toBe("delete");
      // Real app data compresses, but not to nothing: random BLOBs and text are mixed.
      const kinds = db.prepare("SELECT mime, count(*) AS n FROM documents GROUP BY mime").all();
      expect(kinds.length).toBe(3);
    } finally {
      db.close();
    }
    expect(readdirSync(dir)).toEqual(["big.db"]);
  });

  it("refuses to overwrite and rejects bad options with actionable errors", async () => {
    const dir = freshDir();
    const path = join(dir, "x.db");
    writeFileSync(path, "precious");
    const attempt = async (options: Parameters<typeof createFixtureDatabase>[0]): Promise<unknown> =>
      createFixtureDatabase(options).then(
        () => undefined,
        (error: unknown) => error,
      );
    for (const [options, code] of [
      [{ path, sizeMB: 1 }, "INVALID_ARGUMENT"],
      [{ path: join(dir, "y.db"), sizeMB: 0 }, "INVALID_ARGUMENT"],
      [{ path: join(dir, "y.db"), sizeMB: 1, pageSize: 1000 }, "INVALID_ARGUMENT"],
      [{ path: join(dir, "missing", "y.db"), sizeMB: 1 }, "INVALID_ARGUMENT"],
    ] as const) {
      const error = await attempt(options);
      expect(isLifeboatError(error), String(error)).toBe(true);
      expect((error as { code: string }).code).toBe(code);
    }
    expect(readFileSync(path, "utf8")).toBe("precious");
    expect(readdirSync(dir)).toEqual(["x.db"]);
  });
});

describe("databaseContentHash", () => {
  it("ignores page layout: VACUUM, page size and journal mode do not change it, one value does", async () => {
    const dir = freshDir();
    const summary = await createFixtureDatabase({ path: join(dir, "a.db"), sizeMB: 2, seed: 9 });
    const original = databaseContentHash(summary.path);
    const copy = join(dir, "b.db");
    const source = new Database(summary.path, { readonly: true });
    source.exec(`VACUUM INTO '${copy}'`);
    source.close();
    const db = new Database(copy);
    try {
      db.pragma("journal_mode = DELETE");
      db.pragma("page_size = 1024");
      db.exec("VACUUM");
      expect(db.pragma("page_size", { simple: true })).toBe(1024);
      expect(readFileSync(copy).equals(readFileSync(summary.path))).toBe(false);
      expect(databaseContentHash(db)).toBe(original);
      expect(databaseContentHash(copy)).toBe(original);

      db.prepare("UPDATE edge_values SET value = NULL WHERE label = 'empty text'").run();
      const changed = databaseContentHash(db);
      expect(changed).not.toBe(original);
      db.prepare("UPDATE edge_values SET value = '' WHERE label = 'empty text'").run();
      expect(databaseContentHash(db)).toBe(original);
      db.pragma("user_version = 99");
      expect(databaseContentHash(db)).not.toBe(original);
    } finally {
      db.close();
    }
  });

  it("tells apart values that naive comparisons conflate", () => {
    const db = new Database(":memory:");
    db.exec("CREATE TABLE t (v)");
    const hashOf = (value: unknown): string => {
      db.exec("DELETE FROM t");
      db.prepare("INSERT INTO t (v) VALUES (?)").run(value);
      return databaseContentHash(db);
    };
    const values: unknown[] = [
      null,
      "",
      Buffer.alloc(0),
      0n,
      0,
      -0,
      "0",
      1n,
      1,
      "1",
      "abc",
      Buffer.from("abc"),
      9223372036854775807n,
      9223372036854775806n,
      "e\u0301",
      "é",
    ];
    const hashes = values.map(hashOf);
    expect(new Set(hashes).size).toBe(values.length);
    // Row order is by rowid, not insertion order, and the rowid is content.
    db.exec("DELETE FROM t; INSERT INTO t (rowid, v) VALUES (2, 'b'), (1, 'a')");
    const ordered = databaseContentHash(db);
    db.exec("DELETE FROM t; INSERT INTO t (rowid, v) VALUES (1, 'a'), (2, 'b')");
    expect(databaseContentHash(db)).toBe(ordered);
    db.exec("DELETE FROM t; INSERT INTO t (rowid, v) VALUES (1, 'a'), (3, 'b')");
    expect(databaseContentHash(db)).not.toBe(ordered);
    db.close();
  });

  it("reports missing files and non-databases with codes", () => {
    const dir = freshDir();
    expectCode(() => databaseContentHash(join(dir, "nope.db")), "DATABASE_NOT_FOUND");
    const junk = join(dir, "junk.db");
    writeFileSync(junk, Buffer.alloc(8192, 7));
    expectCode(() => databaseContentHash(junk), "NOT_A_DATABASE");
    expectCode(() => tableRowCounts(junk), "NOT_A_DATABASE");
  });
});
