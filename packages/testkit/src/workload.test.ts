import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { isLifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import {
  createFixtureDatabase,
  databaseContentHash,
  runWorkload,
  startWriterProcess,
  tableRowCounts,
  WORKLOAD_KINDS,
  type WorkloadKind,
  type WorkloadWeights,
  type WriterRecord,
  writerProcessScript,
} from "./fixtures.js";

const root = mkdtempSync(join(tmpdir(), "lifeboat-workload-test-"));
let dirs = 0;
const freshDir = (): string => mkdtempSync(join(root, `case${dirs++}-`));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const only = (...kinds: WorkloadKind[]): WorkloadWeights =>
  Object.fromEntries(WORKLOAD_KINDS.map((k) => [k, kinds.includes(k) ? 1 : 0]));

function openWal(path: string): Database.Database {
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  return db;
}

function loggedTxns(path: string): Array<{ txn: number; kind: string }> {
  const db = new Database(path, { readonly: true });
  try {
    return db.prepare("SELECT txn, kind FROM wl_log ORDER BY txn").all() as Array<{ txn: number; kind: string }>;
  } finally {
    db.close();
  }
}

function expectContiguous(records: ReadonlyArray<{ txn: number }>, first: number): void {
  expect(records.map((r) => r.txn)).toEqual(records.map((_, i) => first + i));
}

describe("runWorkload", () => {
  it("commits numbered transactions of every kind on a fixture and records each commit's content hash", async () => {
    const dir = freshDir();
    const fixture = await createFixtureDatabase({ path: join(dir, "app.db"), sizeMB: 0.3, seed: 4 });
    const before = tableRowCounts(fixture.path);
    const db = openWal(fixture.path);
    const seen: number[] = [];
    const records = await runWorkload(db, {
      transactions: 150,
      seed: 21,
      blobBytes: 16 * 1024,
      hashEachCommit: true,
      weights: { createTable: 8, addColumn: 8, createIndex: 8, dropTable: 5, vacuum: 3 },
      onCommit: (record) => seen.push(record.txn),
    });
    expectContiguous(records, 1);
    expect(seen).toEqual(records.map((r) => r.txn));
    for (let i = 1; i < records.length; i++) {
      expect(records[i]!.committedAt).toBeGreaterThanOrEqual(records[i - 1]!.committedAt);
      // Every transaction changes content (at least its wl_log row).
      expect(records[i]!.contentHash).not.toBe(records[i - 1]!.contentHash);
    }
    expect(new Set(records.map((r) => r.kind))).toEqual(new Set(WORKLOAD_KINDS));
    expect(records.at(-1)!.contentHash).toBe(databaseContentHash(db));
    db.close();

    expect(loggedTxns(fixture.path)).toEqual(records.map((r) => ({ txn: r.txn, kind: r.kind })));
    const after = tableRowCounts(fixture.path);
    // The fixture's own tables are left alone.
    for (const [table, rows] of Object.entries(before)) expect(after[table], table).toBe(rows);
    const check = new Database(fixture.path);
    expect(check.pragma("integrity_check", { simple: true })).toBe("ok");
    check.close();

    // Numbering continues where the database left off.
    const again = openWal(fixture.path);
    const more = await runWorkload(again, { transactions: 5, seed: 21, weights: only("insert") });
    again.close();
    expectContiguous(more, 151);
  });

  it("is deterministic: equal seeds give equal content after every transaction", async () => {
    const run = async (seed: number): Promise<string[]> => {
      const db = openWal(join(freshDir(), "w.db"));
      const records = await runWorkload(db, { transactions: 60, seed, blobBytes: 4096, hashEachCommit: true });
      db.close();
      return records.map((r) => r.contentHash!);
    };
    const [a, b, c] = [await run(3), await run(3), await run(4)];
    expect(a).toEqual(b);
    expect(c).not.toEqual(a);
  });

  it("honours the weights, and VACUUM shrinks the file", async () => {
    const path = join(freshDir(), "v.db");
    const db = new Database(path);
    db.pragma("journal_mode = DELETE");
    const inserts = await runWorkload(db, { transactions: 20, weights: only("insert", "blob"), blobBytes: 64 * 1024 });
    expect(new Set(inserts.map((r) => r.kind))).toEqual(new Set(["insert", "blob"]));
    const pages = (): number => db.pragma("page_count", { simple: true }) as number;
    const grown = pages();
    const [vacuum] = await runWorkload(db, { transactions: 1, weights: only("vacuum") });
    expect(vacuum!.kind).toBe("vacuum");
    expect(pages()).toBeLessThan(grown);
    expect(db.pragma("freelist_count", { simple: true })).toBe(0);

    const schema = await runWorkload(db, {
      transactions: 30,
      seed: 8,
      weights: only("createTable", "addColumn", "createIndex"),
    });
    const count = (sql: string): number => db.prepare(sql).pluck().get() as number;
    const created = schema.filter((r) => r.kind === "createTable").length;
    expect(count("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name GLOB 'wl_t[0-9]*'")).toBe(created);
    expect(count("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name GLOB 'wl_i[0-9]*'")).toBe(
      schema.filter((r) => r.kind === "createIndex").length,
    );
    const drops = await runWorkload(db, { transactions: created, weights: only("dropTable") });
    expect(drops.every((r) => r.kind === "dropTable")).toBe(true);
    expect(count("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name GLOB 'wl_t[0-9]*'")).toBe(0);
    db.close();
  });

  it("rejects bad options before touching the database", async () => {
    const db = new Database(":memory:");
    for (const options of [
      { transactions: 1, weights: { explode: 1 } as WorkloadWeights },
      { transactions: 1, weights: only() },
      { transactions: -1 },
      { transactions: 1, blobBytes: 0 },
    ]) {
      const error = await runWorkload(db, options).catch((e: unknown) => e);
      expect(isLifeboatError(error, "INVALID_ARGUMENT"), String(error)).toBe(true);
    }
    expect(db.prepare("SELECT count(*) FROM sqlite_schema").pluck().get()).toBe(0);
    db.close();
  });
});

describe("writer process", () => {
  it("writes continuously until stopped; records are contiguous and match the database", async () => {
    const path = join(freshDir(), "live.db");
    const writer = await startWriterProcess({ path, seed: 7, blobBytes: 8 * 1024 });
    expect(writer.firstTxn).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const exit = await writer.stop();
    expect(exit.code).toBe(0);
    const records = writer.records;
    expect(records.length).toBeGreaterThan(20);
    expectContiguous(records, 1);
    for (let i = 1; i < records.length; i++) expect(records[i]!.t).toBeGreaterThanOrEqual(records[i - 1]!.t);
    expect(loggedTxns(path)).toEqual(records.map((r) => ({ txn: r.txn, kind: r.kind })));
    expect(tableRowCounts(path).wl_log).toBe(records.length);
    // The iterator replays everything and ends with the process.
    const replayed: WriterRecord[] = [];
    for await (const record of writer) replayed.push(record);
    expect(replayed).toEqual(records);
  });

  it("runs the same engine as runWorkload: equal seeds give equal hashes, and it stops after N transactions", async () => {
    const weights: WorkloadWeights = { vacuum: 2, dropTable: 3 };
    const path = join(freshDir(), "hashed.db");
    const writer = await startWriterProcess({ path, seed: 12, transactions: 40, hash: true, weights, blobBytes: 4096 });
    const streamed: WriterRecord[] = [];
    for await (const record of writer) streamed.push(record);
    expect((await writer.exited).code).toBe(0);
    expect(streamed.length).toBe(40);
    expectContiguous(streamed, 1);
    expect(streamed.at(-1)!.hash).toBe(databaseContentHash(path));

    const db = openWal(join(freshDir(), "inprocess.db"));
    const local = await runWorkload(db, { transactions: 40, seed: 12, hashEachCommit: true, weights, blobBytes: 4096 });
    db.close();
    expect(streamed.map((r) => [r.kind, r.hash])).toEqual(local.map((r) => [r.kind, r.contentHash]));
  });

  it("survives SIGKILL mid-stream: the database is intact and holds every reported transaction", async () => {
    const path = join(freshDir(), "crash.db");
    const writer = await startWriterProcess({ path, seed: 5, ratePerSecond: 400, blobBytes: 32 * 1024 });
    await writer.waitForRecords(30);
    const exit = await writer.kill("SIGKILL");
    expect(exit.signal).toBe("SIGKILL");
    const last = writer.records.at(-1)!.txn;
    const logged = loggedTxns(path);
    // A commit can land just before the kill, ahead of its stdout line.
    expect([last, last + 1]).toContain(logged.at(-1)!.txn);
    expectContiguous(logged, 1);
    const db = new Database(path);
    expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    db.close();

    // A restarted writer continues the numbering.
    const next = await startWriterProcess({ path, seed: 5, transactions: 3 });
    await next.exited;
    expect(next.firstTxn).toBe(logged.at(-1)!.txn + 1);
    expectContiguous(next.records, next.firstTxn);
  });

  it("the script runs standalone with node, given better-sqlite3's path", () => {
    const dir = freshDir();
    const script = join(dir, "writer.mjs");
    writeFileSync(script, writerProcessScript());
    const config = {
      path: join(dir, "standalone.db"),
      betterSqlite3: createRequire(import.meta.url).resolve("better-sqlite3"),
      seed: 1,
      weights: only("insert", "update"),
      maxRowsPerTransaction: 5,
      blobBytes: 1024,
      transactions: 5,
      ratePerSecond: null,
      hash: false,
      busyTimeoutMs: 1000,
      stopOnStdinEnd: false,
    };
    const result = spawnSync(process.execPath, [script, JSON.stringify(config)], { cwd: dir, encoding: "utf8" });
    expect(result.stderr).toBe("");
    expect(result.status).toBe(0);
    const lines = result.stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    expect(lines[0]).toMatchObject({ ready: true, nextTxn: 1 });
    expect(lines.slice(1).map((l) => l.txn)).toEqual([1, 2, 3, 4, 5]);
    expect(tableRowCounts(config.path).wl_log).toBe(5);
  });

  it("reports a writer that cannot open its database", async () => {
    const error = await startWriterProcess({ path: join(freshDir(), "no", "such", "dir.db") }).catch((e: unknown) => e);
    expect(isLifeboatError(error, "INTERNAL"), String(error)).toBe(true);
    expect(String((error as Error).message)).toMatch(/exited before it was ready/);
  });
});
