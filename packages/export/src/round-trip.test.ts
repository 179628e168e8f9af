import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createFixtureDatabase, databaseContentHash, tableRowCounts } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportDatabase } from "./export.js";
import { importExport } from "./import.js";

let dir: string;
let fixture: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lifeboat-export-rt-"));
  fixture = join(dir, "fixture.db");
  await createFixtureDatabase({ path: fixture, sizeMB: 2, seed: 11 });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * A database with what the fixture lacks: hidden rowids (with gaps, and under another name when a
 * column is called rowid), generated columns, STRICT, an FTS5 virtual table, ANALYZE statistics,
 * an AUTOINCREMENT counter ahead of the rows, UTF-16 text, application_id, a larger page size,
 * auto_vacuum, every storage class in one column, names that collide as file names, triggers,
 * partial and expression indexes, and a view over a view.
 */
function awkwardDatabase(path: string): void {
  const db = new Database(path);
  db.pragma("page_size = 8192");
  db.pragma("encoding = 'UTF-16le'");
  db.pragma("auto_vacuum = 1");
  db.pragma("application_id = 1234567");
  db.pragma("user_version = 42");
  db.exec(`
    CREATE TABLE plain (a TEXT, b);
    CREATE TABLE shadowed (rowid TEXT, x INTEGER);
    CREATE TABLE all_taken (rowid, _rowid_, oid);
    CREATE TABLE gen (id INTEGER PRIMARY KEY, price REAL, qty INTEGER,
      total REAL GENERATED ALWAYS AS (price * qty) STORED, label TEXT AS (upper(name)) VIRTUAL, name TEXT);
    CREATE TABLE strict_t (k INTEGER PRIMARY KEY, v ANY, t TEXT) STRICT;
    CREATE TABLE counter (id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT);
    CREATE TABLE "a b" (x); CREATE TABLE "a_b" (x); CREATE TABLE "CON" (x); CREATE TABLE "manifest" (x);
    CREATE TABLE "new
line ""quoted"" ✓" ("col
umn" TEXT, "" TEXT);
    CREATE TABLE wr (a TEXT, b INTEGER, c BLOB, PRIMARY KEY (b DESC, a)) WITHOUT ROWID;
    CREATE VIRTUAL TABLE notes USING fts5(title, body);
    CREATE INDEX plain_partial ON plain (a) WHERE b IS NOT NULL;
    CREATE INDEX plain_expr ON plain (lower(a));
    CREATE VIEW v1 AS SELECT a, b FROM plain WHERE b IS NOT NULL;
    CREATE VIEW v2 AS SELECT count(*) AS n FROM v1;
    CREATE TRIGGER counter_log AFTER INSERT ON counter BEGIN INSERT INTO plain (a, b) VALUES ('trigger', NEW.id); END;
  `);
  const mixed: unknown[] = [
    null,
    "",
    "0",
    0n,
    0,
    -0,
    0.1,
    1e308,
    -1e308,
    5e-324,
    Number.POSITIVE_INFINITY,
    Number.NEGATIVE_INFINITY,
    2 ** 53,
    9007199254740993n,
    -(2n ** 63n),
    2n ** 63n - 1n,
    Buffer.alloc(0),
    Buffer.from([0, 1, 0, 255]),
    "\uFEFFbom",
    "tab\there",
    "cr\ronly",
    "nul\0inside",
    'quote "q", comma',
    "🚀 Ελληνικά 日本語 e\u0301",
    "x".repeat(20_000),
  ];
  const insert = db.prepare("INSERT INTO plain (a, b) VALUES (?, ?)");
  db.defaultSafeIntegers(true);
  for (const [i, v] of mixed.entries()) insert.run(`row ${i}`, v);
  db.exec("DELETE FROM plain WHERE rowid IN (3, 7)"); // gaps in the hidden rowids
  db.exec("INSERT INTO plain (rowid, a, b) VALUES (1000000, 'far', 1)");
  db.exec(`
    INSERT INTO shadowed (_rowid_, rowid, x) VALUES (10, 'not the rowid', 1), (20, NULL, 2);
    INSERT INTO all_taken VALUES (1, 2, 3), ('a', 'b', 'c');
    INSERT INTO gen (id, price, qty, name) VALUES (1, 2.5, 4, 'widget'), (2, NULL, 1, NULL), (3, 0.1, 3, 'ünïcode');
    INSERT INTO strict_t VALUES (1, 1, 'a'), (2, 1.5, 'b'), (3, 'text', 'c'), (4, x'00', NULL), (5, NULL, '');
    INSERT INTO counter (what) VALUES ('a'), ('b'), ('c');
    DELETE FROM counter WHERE id = 3;
    INSERT INTO "a b" VALUES (1); INSERT INTO a_b VALUES (2); INSERT INTO CON VALUES (3); INSERT INTO manifest VALUES (4);
    INSERT INTO "new
line ""quoted"" ✓" VALUES ('multi
line', 'x');
    INSERT INTO wr VALUES ('k', 2, x'01'), ('k', 1, NULL), ('', -5, x'');
    INSERT INTO notes (title, body) VALUES ('backup', 'the quick brown fox'), ('restore', 'jumps over the lazy dog');
    ANALYZE;
  `);
  db.close();
}

async function roundTrip(source: string, format: "dir" | "zip", name: string) {
  const exported = await exportDatabase({
    database: source,
    output: join(dir, `${name}${format === "zip" ? ".zip" : ""}`),
    format,
    views: true,
  });
  const back = join(dir, `${name}.db`);
  const imported = await importExport({ input: exported.output, output: back });
  return { exported, imported, back };
}

describe("export then import", () => {
  for (const format of ["dir", "zip"] as const) {
    it(`rebuilds the testkit fixture exactly (${format})`, async () => {
      const { back, imported } = await roundTrip(fixture, format, `fixture-${format}`);
      // The content hash covers user_version, application_id, every schema entry's SQL, and every
      // row of every table (sqlite_sequence included) with its storage class and rowid.
      expect(databaseContentHash(back)).toBe(databaseContentHash(fixture));
      expect(tableRowCounts(back)).toEqual(tableRowCounts(fixture));
      expect(imported.tables.find((t) => t.name === "users")?.rows).toBe(tableRowCounts(fixture).users);
    });
  }

  it("rebuilds a database with every awkward feature exactly, file settings included", async () => {
    const source = join(dir, "awkward-source.db");
    awkwardDatabase(source);
    const { back, exported } = await roundTrip(source, "zip", "awkward");
    expect(databaseContentHash(back)).toBe(databaseContentHash(source));

    const m = exported.manifest;
    const byName = new Map(m.tables.map((t) => [t.name, t]));
    expect(byName.get("plain")?.rowidColumn).toBe("rowid");
    expect(byName.get("shadowed")?.rowidColumn).toBe("_rowid_");
    expect(byName.get("all_taken")?.rowidColumn).toBeNull();
    expect(byName.get("gen")?.rowidColumn).toBeNull();
    expect(byName.get("gen")?.columns.map((c) => [c.name, c.generated, c.imported])).toEqual([
      ["id", null, true],
      ["price", null, true],
      ["qty", null, true],
      ["total", "stored", false],
      ["label", "virtual", false],
      ["name", null, true],
    ]);
    expect(byName.get("notes_data")?.kind).toBe("shadow");
    expect(byName.has("notes")).toBe(false);
    expect(byName.get("sqlite_sequence")?.kind).toBe("internal");
    expect(byName.get("sqlite_stat1")?.kind).toBe("internal");
    expect(byName.get("v2")?.kind).toBe("view");
    const classes = byName.get("plain")!.columns.find((c) => c.name === "b")!.storageClasses;
    const original = new Database(source, { readonly: true });
    const counted = Object.fromEntries(
      (
        original.prepare("SELECT typeof(b) AS t, count(*) AS n FROM plain GROUP BY t").all() as Array<{
          t: string;
          n: number;
        }>
      ).map((r) => [r.t, r.n]),
    );
    const viewRows = original.prepare("SELECT n FROM v2").pluck().get();
    original.close();
    expect(classes).toEqual({ null: 0, integer: 0, real: 0, text: 0, blob: 0, ...counted });
    expect(Object.values(classes).every((n) => n > 0)).toBe(true);
    const files = m.tables.map((t) => t.file);
    expect(new Set(files.map((f) => f.toLowerCase())).size).toBe(files.length);
    expect(files).toContain("a_b~2.csv");
    expect(files).toContain("_CON.csv");
    expect(files).toContain("_manifest.csv");

    const rebuilt = new Database(back, { readonly: true });
    try {
      expect(rebuilt.pragma("page_size", { simple: true })).toBe(8192);
      expect(rebuilt.pragma("encoding", { simple: true })).toBe("UTF-16le");
      expect(rebuilt.pragma("auto_vacuum", { simple: true })).toBe(1);
      expect(rebuilt.pragma("application_id", { simple: true })).toBe(1234567);
      expect(rebuilt.pragma("user_version", { simple: true })).toBe(42);
      expect(rebuilt.prepare("SELECT label, total FROM gen WHERE id = 1").get()).toEqual({
        label: "WIDGET",
        total: 10,
      });
      expect(rebuilt.prepare("SELECT title FROM notes WHERE notes MATCH 'lazy'").pluck().all()).toEqual(["restore"]);
      expect(rebuilt.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'counter'").pluck().get()).toBe(3);
      expect(rebuilt.prepare("SELECT n FROM v2").pluck().get()).toBe(viewRows);
    } finally {
      rebuilt.close();
    }
    // The trigger exists again, but did not fire for the imported rows.
    expect(tableRowCounts(back).plain).toBe(tableRowCounts(source).plain);
  });

  it("exports only the chosen tables, with their indexes and triggers", async () => {
    const exported = await exportDatabase({
      database: fixture,
      output: join(dir, "subset"),
      tables: ["USERS", "events"],
    });
    expect(exported.manifest.selection).toEqual(["users", "events"]);
    expect(exported.manifest.tables.map((t) => t.name)).toEqual(["users", "events", "sqlite_sequence"]);
    expect(exported.manifest.schema.map((e) => `${e.type} ${e.name}`)).toEqual([
      "table users",
      "table events",
      "table sqlite_sequence",
      "index users_email",
      "index events_kind_at",
      "trigger users_email_not_empty",
    ]);
    const back = join(dir, "subset.db");
    await importExport({ input: exported.output, output: back });
    const counts = tableRowCounts(back);
    const original = tableRowCounts(fixture);
    expect(counts).toEqual({ events: original.events, users: original.users });
    const a = new Database(fixture, { readonly: true });
    const b = new Database(back, { readonly: true });
    try {
      a.defaultSafeIntegers(true);
      b.defaultSafeIntegers(true);
      for (const table of ["users", "events", "sqlite_sequence"]) {
        const sql = `SELECT rowid, * FROM ${table} ORDER BY rowid`;
        expect(b.prepare(sql).raw().all()).toEqual(a.prepare(sql).raw().all());
      }
    } finally {
      a.close();
      b.close();
    }
  });

  it("keeps only the chosen tables' statistics and counters, and a virtual table's shadow tables", async () => {
    const source = join(dir, "awkward-subset-source.db");
    awkwardDatabase(source);
    const exported = await exportDatabase({
      database: source,
      output: join(dir, "awkward-subset"),
      tables: ["plain", "notes"],
    });
    const names = exported.manifest.tables.map((t) => t.name);
    expect(names).toEqual(expect.arrayContaining(["plain", "notes_data", "notes_config", "sqlite_stat1"]));
    expect(names).not.toContain("sqlite_sequence"); // counter was not chosen
    const back = join(dir, "awkward-subset.db");
    await importExport({ input: exported.output, output: back });
    const db = new Database(back, { readonly: true });
    try {
      expect(db.prepare("SELECT DISTINCT tbl FROM sqlite_stat1 ORDER BY tbl").pluck().all()).toEqual(
        expect.arrayContaining(["plain"]),
      );
      expect(
        db
          .prepare(
            "SELECT count(*) FROM sqlite_stat1 WHERE tbl NOT IN ('plain', 'notes_data', 'notes_idx', 'notes_content', 'notes_docsize', 'notes_config')",
          )
          .pluck()
          .get(),
      ).toBe(0);
      expect(db.prepare("SELECT title FROM notes WHERE notes MATCH 'fox'").pluck().all()).toEqual(["backup"]);
      expect(db.prepare("SELECT name FROM sqlite_schema WHERE name = 'counter'").pluck().get()).toBeUndefined();
    } finally {
      db.close();
    }
  });

  it("reads all tables from one snapshot while the application keeps writing", async () => {
    const live = join(dir, "live.db");
    await createFixtureDatabase({ path: live, sizeMB: 1, seed: 5 });
    const before = join(dir, "live-before.db");
    const writer = new Database(live);
    writer.exec(`VACUUM INTO '${before}'`);
    let wrote = false;
    const exported = await exportDatabase({
      database: live,
      output: join(dir, "live-export"),
      onProgress: () => {
        if (wrote) return;
        wrote = true;
        // Mid-export, after the first table's first rows: orders and users change together.
        writer.exec(`
          BEGIN;
          INSERT INTO users (email, name, created_at) VALUES ('late@example.com', 'Late', '2030-01-01');
          INSERT INTO orders (user_id, status, total_cents, currency, placed_at)
            VALUES (last_insert_rowid(), 'paid', 100, 'EUR', '2030-01-01');
          DELETE FROM events WHERE id IN (SELECT id FROM events LIMIT 10);
          COMMIT;
        `);
      },
    });
    writer.close();
    expect(wrote).toBe(true);
    const back = join(dir, "live-back.db");
    await importExport({ input: exported.output, output: back });
    expect(databaseContentHash(back)).toBe(databaseContentHash(before));
    expect(databaseContentHash(back)).not.toBe(databaseContentHash(live));
  });
});
