import { closeSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { checkDatabase, checkOptionsFor } from "./check-database.js";
import { markEnvironment } from "./environment-marker.js";
import { protectDatabase } from "./protect.js";
import { makeBank, makeLifeboat, sql, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 100 });
});
afterEach(() => cleanup());

const failed = (result: Awaited<ReturnType<typeof checkDatabase>>) =>
  result.checks.filter((c) => !c.ok).map((c) => `${c.name}: ${c.message}`);

describe("checkDatabase", () => {
  it("passes a healthy database and says what it found", async () => {
    await markEnvironment(path, "production");
    const result = await checkDatabase(path, {
      declaredEnvironment: "production",
      requiredTables: ["accounts", "ledger"],
      minRows: { accounts: 20 },
      journalMode: "wal",
    });
    expect(failed(result)).toEqual([]);
    expect(result).toMatchObject({ ok: true, exists: true, opened: true, environment: "production" });
    expect(result.checks.map((c) => c.name)).toEqual([
      "opens",
      "integrity",
      "tables",
      "rows",
      "environment",
      "journal-mode",
      "protection",
    ]);
    expect(result.description?.tables.find((t) => t.name === "notes")?.rows).toBe(100);
  });

  it("reports every failed check, not just the first", async () => {
    await markEnvironment(path, "development");
    await protectDatabase(path);
    const result = await checkDatabase(path, {
      declaredEnvironment: "production",
      requiredTables: ["accounts", "users"],
      minRows: { notes: 1000 },
      journalMode: "delete",
    });
    expect(result.ok).toBe(false);
    expect(failed(result)).toEqual([
      "tables: missing tables: users",
      "rows: table notes: 100 rows (at least 1000)",
      "environment: the config says production, the database says development",
      "journal-mode: journal_mode wal, expected delete",
    ]);
    expect(result.checks.at(-1)).toEqual({ name: "protection", ok: true, message: "protected (permissions, hash)" });
  });

  it("tells a missing file from one that is not a database and from a damaged one", async () => {
    const missing = await checkDatabase(join(dir, "nope.db"));
    expect(missing).toMatchObject({ ok: false, exists: false, opened: false });

    const text = join(dir, "notes.txt");
    writeFileSync(text, "this is not a database\n".repeat(50));
    const notDatabase = await checkDatabase(text);
    expect(notDatabase).toMatchObject({ ok: false, exists: true, opened: false });
    expect(failed(notDatabase)[0]).toMatch(/^opens: .*not a SQLite database/);

    sql(path, "PRAGMA journal_mode = DELETE");
    // Overwrite the middle of a b-tree page: the header still says SQLite, the content is damaged.
    const fd = openSync(path, "r+");
    writeSync(fd, Buffer.alloc(3000, 0xa5), 0, 3000, 4096 * 3 + 500);
    closeSync(fd);
    const damaged = await checkDatabase(path);
    expect(damaged).toMatchObject({ ok: false, exists: true });
    expect(damaged.checks.find((c) => c.name === "integrity")?.ok).toBe(false);
  });

  it("takes its expectations from the configured layers", async () => {
    const { db } = await makeLifeboat({
      dir,
      path,
      environment: "staging",
      guards: [
        { type: "environment", requireMarker: true },
        { type: "transaction", requiredTables: ["accounts"], minRows: { accounts: 1 } },
      ],
    });
    const options = checkOptionsFor(db);
    expect(options).toMatchObject({
      declaredEnvironment: "staging",
      requireMarker: true,
      requiredTables: ["accounts"],
      minRows: { accounts: 1 },
    });
    expect(failed(await checkDatabase(path, options))).toEqual([
      "environment: no environment marker (the config says staging; lifeboat mark sets one)",
    ]);
  });
});
