/**
 * Workload generators for replication tests and benchmarks: a seeded mix of transactions applied
 * in-process (`runWorkload`) or from a separate writer process (`startWriterProcess`).
 *
 * The writer process runs plain JavaScript that needs no build step: `writerProcessScript()`
 * embeds the source text of the self-contained functions below (`createRandom`,
 * `hashDatabaseContent`, `createWorkloadEngine`) via `Function.prototype.toString`, so the child
 * and `runWorkload` execute the very same code. Those three functions must therefore reference
 * nothing but their parameters and JavaScript/Node globals (no imports, no module-level values).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import type Database from "better-sqlite3";

/** The kinds of transaction a workload applies. */
export const WORKLOAD_KINDS = [
  "insert",
  "update",
  "delete",
  "blob",
  "createTable",
  "addColumn",
  "createIndex",
  "dropTable",
  "vacuum",
] as const;

export type WorkloadKind = (typeof WORKLOAD_KINDS)[number];

/** Relative weight of each transaction kind; a kind with weight 0 (or left out of a full map) never runs. */
export type WorkloadWeights = Partial<Record<WorkloadKind, number>>;

/** Default mix: mostly row changes, some large BLOBs, rare schema changes, DROP TABLE and VACUUM. */
export const DEFAULT_WORKLOAD_WEIGHTS: Readonly<Record<WorkloadKind, number>> = {
  insert: 30,
  update: 25,
  delete: 10,
  blob: 10,
  createTable: 3,
  addColumn: 3,
  createIndex: 3,
  dropTable: 2,
  vacuum: 1,
};

/** A seeded pseudo-random number generator (sfc32, state expanded from the seed by splitmix32). */
export interface Random {
  /** The next unsigned 32-bit integer. */
  uint32(): number;
  /** A float uniformly distributed in [0, 1). */
  float(): number;
  /** An integer uniformly distributed in [min, max] (both inclusive). */
  int(min: number, max: number): number;
  /** True with probability `p`. */
  chance(p: number): boolean;
  /** One element of a non-empty array. */
  pick<T>(items: readonly T[]): T;
  /** Fills `target` with pseudo-random bytes and returns it. */
  fill<T extends Uint8Array>(target: T): T;
}

/**
 * A deterministic PRNG: the same `seed` and `stream` always give the same sequence, on every
 * platform. `stream` selects an independent sequence for the same seed. Not cryptographic.
 */
export function createRandom(seed: number, stream = 0): Random {
  // Self-contained: embedded by source text into the writer process script.
  let x =
    ((seed >>> 0) ^ Math.imul(Math.floor(seed / 4294967296) >>> 0, 0x85ebca6b) ^ Math.imul(stream >>> 0, 0xc2b2ae35)) |
    0;
  const splitmix = (): number => {
    x = (x + 0x9e3779b9) | 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const uint32 = (): number => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return t >>> 0;
  };
  for (let i = 0; i < 12; i++) uint32();
  const float = (): number => uint32() / 4294967296;
  return {
    uint32,
    float,
    int: (min, max) => min + Math.floor(float() * (max - min + 1)),
    chance: (p) => float() < p,
    pick: (items) => items[Math.floor(float() * items.length)] as (typeof items)[number],
    fill: (target) => {
      let i = 0;
      for (; i + 4 <= target.length; i += 4) {
        const v = uint32();
        target[i] = v & 0xff;
        target[i + 1] = (v >>> 8) & 0xff;
        target[i + 2] = (v >>> 16) & 0xff;
        target[i + 3] = v >>> 24;
      }
      for (; i < target.length; i++) target[i] = uint32() & 0xff;
      return target;
    },
  };
}

type CreateHashFn = (algorithm: string) => {
  update(data: Uint8Array): unknown;
  digest(encoding: "hex"): string;
};

/**
 * The logical-content hash behind `databaseContentHash` (see fixtures.ts for the contract). Works
 * on an open connection; reads inside one read transaction unless the caller already holds one.
 * @internal Exported for fixtures.ts and the writer script; not re-exported from the package.
 */
export function hashDatabaseContent(db: Database.Database, createHashFn: CreateHashFn): string {
  // Self-contained: embedded by source text into the writer process script.
  const hash = createHashFn("sha256");
  const chunk = Buffer.allocUnsafe(1 << 16);
  let pos = 0;
  const flush = (): void => {
    if (pos > 0) hash.update(chunk.subarray(0, pos));
    pos = 0;
  };
  const room = (n: number): void => {
    if (pos + n > chunk.length) flush();
  };
  const putTag = (tag: string): void => {
    room(1);
    chunk[pos++] = tag.charCodeAt(0);
  };
  const putLength = (n: number): void => {
    room(4);
    chunk.writeUInt32BE(n, pos);
    pos += 4;
  };
  const putText = (text: string): void => {
    const n = Buffer.byteLength(text, "utf8");
    putLength(n);
    if (n > chunk.length - pos) {
      flush();
      hash.update(Buffer.from(text, "utf8"));
    } else {
      pos += chunk.write(text, pos, "utf8");
    }
  };
  const putBytes = (bytes: Uint8Array): void => {
    putLength(bytes.length);
    if (bytes.length > chunk.length - pos) {
      flush();
      hash.update(bytes);
    } else {
      chunk.set(bytes, pos);
      pos += bytes.length;
    }
  };
  // Every value carries its SQLite storage class, so NULL, '', 0, 0.0 and x'' all differ.
  const putValue = (value: unknown): void => {
    if (value === null) {
      putTag("N");
    } else if (typeof value === "bigint") {
      room(9);
      chunk[pos++] = 0x49; // I
      chunk.writeBigInt64BE(value, pos);
      pos += 8;
    } else if (typeof value === "number") {
      room(9);
      chunk[pos++] = 0x52; // R
      chunk.writeDoubleBE(value, pos);
      pos += 8;
    } else if (typeof value === "string") {
      putTag("T");
      putText(value);
    } else if (value instanceof Uint8Array) {
      putTag("B");
      putBytes(value);
    } else {
      throw new TypeError(`hashDatabaseContent: unexpected SQLite value of type ${typeof value}`);
    }
  };
  const quote = (name: string): string => `"${name.replaceAll('"', '""')}"`;

  const ownTransaction = !db.inTransaction;
  if (ownTransaction) db.exec("BEGIN");
  try {
    putTag("H");
    for (const pragma of ["user_version", "application_id"]) {
      putValue(db.prepare(`PRAGMA ${pragma}`).pluck().safeIntegers(true).get() as bigint);
    }
    // rootpage is left out: it is page layout, not content.
    const schema = db
      .prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")
      .raw(true)
      .safeIntegers(true);
    for (const row of schema.iterate() as Iterable<unknown[]>) {
      putTag("S");
      for (const value of row) putValue(value);
    }
    // Virtual tables are skipped: their shadow tables hold the content and are hashed.
    const tables = db
      .prepare(
        "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type IN ('table', 'shadow') " +
          "AND name NOT IN ('sqlite_schema', 'sqlite_master') ORDER BY name",
      )
      .all() as Array<{ name: string; wr: number }>;
    for (const table of tables) {
      const columns = db.prepare("SELECT name, pk FROM pragma_table_info(?)").all(table.name) as Array<{
        name: string;
        pk: number;
      }>;
      let sql: string;
      if (table.wr) {
        const key = columns
          .filter((c) => c.pk > 0)
          .sort((l, r) => l.pk - r.pk)
          .map((c) => quote(c.name));
        sql = `SELECT * FROM ${quote(table.name)} ORDER BY ${key.join(", ")}`;
      } else {
        const taken = new Set(columns.map((c) => c.name.toLowerCase()));
        const rowid = ["rowid", "_rowid_", "oid"].find((n) => !taken.has(n));
        sql =
          rowid === undefined
            ? `SELECT * FROM ${quote(table.name)} ORDER BY ${columns.map((_, i) => i + 1).join(", ")}`
            : `SELECT ${rowid}, * FROM ${quote(table.name)} ORDER BY ${rowid}`;
      }
      const statement = db.prepare(sql).raw(true).safeIntegers(true);
      putTag("t");
      putText(table.name);
      const names = statement.columns().map((c) => c.name);
      putLength(names.length);
      for (const name of names) putText(name);
      let rows = 0n;
      for (const row of statement.iterate() as Iterable<unknown[]>) {
        putTag("r");
        for (const value of row) putValue(value);
        rows++;
      }
      putTag("e");
      putValue(rows);
    }
  } finally {
    if (ownTransaction && db.inTransaction) db.exec("COMMIT");
  }
  flush();
  return hash.digest("hex");
}

/** Settings the workload engine needs; validated by the callers before they get here. */
interface EngineConfig {
  seed: number;
  weights: Record<string, number>;
  maxRowsPerTransaction: number;
  blobBytes: number;
}

interface EngineDeps {
  createRandom: typeof createRandom;
}

interface WorkloadEngine {
  /** The number the next transaction will get. */
  readonly nextTxn: number;
  /** Applies and commits one transaction; returns its number and the kind that actually ran. */
  step(): { txn: number; kind: WorkloadKind };
}

/**
 * Applies numbered transactions to tables named `wl_*`. Every transaction inserts its number into
 * `wl_log(txn, kind)` in the same commit, so a database (or a restore of it) says exactly which
 * transactions it holds. Numbering continues from `max(txn)` when the tables already exist.
 * Content depends only on the seed and the starting database (no clocks), so two runs with the
 * same seed on equal databases produce equal content after every transaction.
 */
function createWorkloadEngine(db: Database.Database, config: EngineConfig, deps: EngineDeps): WorkloadEngine {
  // Self-contained: embedded by source text into the writer process script.
  const quote = (name: string): string => `"${name.replaceAll('"', '""')}"`;
  const exists = (name: string): boolean =>
    db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?").get(name) !== undefined;
  let nextTxn = exists("wl_log") ? Number(db.prepare("SELECT coalesce(max(txn), 0) FROM wl_log").pluck().get()) + 1 : 1;
  let ready = exists("wl_log") && exists("wl_items") && exists("wl_blobs");
  const random = deps.createRandom(config.seed, nextTxn);
  const kinds = Object.keys(config.weights).filter((k) => (config.weights[k] ?? 0) > 0);
  const totalWeight = kinds.reduce((sum, k) => sum + (config.weights[k] ?? 0), 0);
  const words = ["alpha", "bravo", "café", "delta", "écho", "fjörd", "gamma", "日本", "θήτα", "🚀", "kilo", "lima"];

  const pickKind = (): WorkloadKind => {
    let r = random.float() * totalWeight;
    for (const k of kinds) {
      r -= config.weights[k] ?? 0;
      if (r < 0) return k as WorkloadKind;
    }
    return kinds[kinds.length - 1] as WorkloadKind;
  };
  const rows = (): number => random.int(1, config.maxRowsPerTransaction);
  const text = (): string => {
    const n = random.int(1, 12);
    const parts: string[] = [];
    for (let i = 0; i < n; i++) parts.push(random.pick(words));
    return parts.join(random.chance(0.1) ? ", " : " ");
  };
  const blob = (n: number): Buffer => random.fill(Buffer.allocUnsafe(n));
  const extraTables = (): string[] =>
    db
      .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name GLOB 'wl_t[0-9]*' ORDER BY name")
      .pluck()
      .all() as string[];
  const maxId = (table: string): number =>
    Number(
      db
        .prepare(`SELECT coalesce(max(rowid), 0) FROM ${quote(table)}`)
        .pluck()
        .get(),
    );

  const setup = (): void => {
    db.exec(
      "CREATE TABLE IF NOT EXISTS wl_log (txn INTEGER PRIMARY KEY, kind TEXT NOT NULL);" +
        "CREATE TABLE IF NOT EXISTS wl_items (id INTEGER PRIMARY KEY, k TEXT NOT NULL, n INTEGER NOT NULL, " +
        "r REAL, note TEXT, b BLOB);" +
        "CREATE TABLE IF NOT EXISTS wl_blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL);",
    );
  };
  const insertItems = (count: number): void => {
    const insert = db.prepare("INSERT INTO wl_items (k, n, r, note, b) VALUES (?, ?, ?, ?, ?)");
    for (let i = 0; i < count; i++) {
      const note = random.chance(0.2) ? null : random.chance(0.1) ? "" : text();
      insert.run(text(), random.int(-1000, 1000000), random.float() * 1000, note, random.chance(0.3) ? blob(64) : null);
    }
  };
  const createTable = (txn: number): void => {
    const name = `wl_t${txn}`;
    db.exec(`CREATE TABLE ${name} (id INTEGER PRIMARY KEY, v TEXT, n INTEGER, data BLOB)`);
    const insert = db.prepare(`INSERT INTO ${name} (v, n, data) VALUES (?, ?, ?)`);
    const count = rows() * 4;
    for (let i = 0; i < count; i++) insert.run(text(), random.int(0, 1 << 30), blob(random.int(16, 2048)));
  };

  const apply = (txn: number, wanted: WorkloadKind): WorkloadKind => {
    switch (wanted) {
      case "insert": {
        insertItems(rows());
        const tables = extraTables();
        if (tables.length > 0 && random.chance(0.3)) {
          const table = random.pick(tables);
          db.prepare(`INSERT INTO ${quote(table)} (v, n) VALUES (?, ?)`).run(text(), random.int(0, 1000));
        }
        return "insert";
      }
      case "update": {
        const top = maxId("wl_items");
        const update = db.prepare("UPDATE wl_items SET n = n + 1, r = ?, note = ? WHERE id = ?");
        const count = rows();
        for (let i = 0; i < count && top > 0; i++) update.run(random.float(), text(), random.int(1, top));
        return "update";
      }
      case "delete": {
        const top = maxId("wl_items");
        if (top > 0) {
          if (random.chance(0.2)) {
            const from = random.int(1, top);
            db.prepare("DELETE FROM wl_items WHERE id BETWEEN ? AND ?").run(from, from + random.int(1, 50));
          } else {
            const remove = db.prepare("DELETE FROM wl_items WHERE id = ?");
            const count = rows();
            for (let i = 0; i < count; i++) remove.run(random.int(1, top));
          }
        }
        return "delete";
      }
      case "blob": {
        const size = Math.max(1, Math.round(config.blobBytes * (0.5 + random.float())));
        const top = maxId("wl_blobs");
        if (top > 0 && random.chance(0.4)) {
          db.prepare("UPDATE wl_blobs SET data = ? WHERE id = ?").run(blob(size), random.int(1, top));
        } else {
          db.prepare("INSERT INTO wl_blobs (data) VALUES (?)").run(blob(size));
        }
        if (top > 0 && random.chance(0.15)) db.prepare("DELETE FROM wl_blobs WHERE id = ?").run(random.int(1, top));
        return "blob";
      }
      case "createTable":
        createTable(txn);
        return "createTable";
      case "addColumn": {
        const table = random.pick(["wl_items", ...extraTables()]);
        const width = Number(db.prepare("SELECT count(*) FROM pragma_table_info(?)").pluck().get(table));
        if (width >= 64) return apply(txn, "insert");
        const type = random.pick(["TEXT DEFAULT 'new'", "INTEGER DEFAULT 0", "REAL", "BLOB"]);
        db.exec(`ALTER TABLE ${quote(table)} ADD COLUMN c${txn} ${type}`);
        db.prepare(`UPDATE ${quote(table)} SET c${txn} = ? WHERE rowid = ?`).run(text(), random.int(1, maxId(table)));
        return "addColumn";
      }
      case "createIndex": {
        const indexes = Number(
          db
            .prepare("SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name GLOB 'wl_i[0-9]*'")
            .pluck()
            .get(),
        );
        if (indexes >= 24) return apply(txn, "insert");
        const table = random.pick(["wl_items", ...extraTables()]);
        const columns = db.prepare("SELECT name FROM pragma_table_info(?) WHERE pk = 0").pluck().all(table) as string[];
        const first = random.pick(columns);
        const second = random.chance(0.3) ? random.pick(columns) : undefined;
        const list = second === undefined || second === first ? quote(first) : `${quote(first)}, ${quote(second)}`;
        db.exec(`CREATE INDEX wl_i${txn} ON ${quote(table)} (${list})`);
        return "createIndex";
      }
      case "dropTable": {
        const tables = extraTables();
        if (tables.length === 0) {
          createTable(txn);
          return "createTable";
        }
        db.exec(`DROP TABLE ${quote(random.pick(tables))}`);
        // With auto_vacuum=INCREMENTAL the freed pages are given back in the same commit.
        if (Number(db.pragma("auto_vacuum", { simple: true })) === 2) db.pragma("incremental_vacuum");
        return "dropTable";
      }
      case "vacuum": {
        // Free some pages first so the VACUUM that follows has something to give back.
        const blobs = maxId("wl_blobs");
        if (blobs > 0) db.prepare("DELETE FROM wl_blobs WHERE id <= ?").run(random.int(1, blobs));
        return "vacuum";
      }
    }
  };

  const begin = db.prepare("BEGIN IMMEDIATE");
  const commit = db.prepare("COMMIT");
  return {
    get nextTxn() {
      return nextTxn;
    },
    step() {
      const txn = nextTxn;
      let kind = pickKind();
      begin.run();
      try {
        if (!ready) setup();
        kind = apply(txn, kind);
        db.prepare("INSERT INTO wl_log (txn, kind) VALUES (?, ?)").run(txn, kind);
        commit.run();
      } catch (error) {
        if (db.inTransaction) db.exec("ROLLBACK");
        throw error;
      }
      ready = true;
      nextTxn = txn + 1;
      // VACUUM cannot run inside a transaction: it is a second commit that changes no content.
      if (kind === "vacuum") db.exec("VACUUM");
      return { txn, kind };
    },
  };
}

/** One committed workload transaction. */
export interface WorkloadRecord {
  /** Transaction number (also stored in `wl_log.txn` by the same commit). */
  txn: number;
  /** The kind that ran (a kind can fall back to another, e.g. dropTable with nothing to drop). */
  kind: WorkloadKind;
  /** `Date.now()` right after COMMIT (after the VACUUM for "vacuum"). */
  committedAt: number;
  /** `databaseContentHash` of the database right after the commit, when `hashEachCommit` is set. */
  contentHash?: string;
}

export interface WorkloadOptions {
  /** How many transactions to commit. */
  transactions: number;
  /** PRNG seed (default 1). */
  seed?: number;
  /** Kind weights; kinds left out keep their default weight. Set a kind to 0 to exclude it. */
  weights?: WorkloadWeights;
  /** Upper bound on rows touched by one row-level transaction (default 20). */
  maxRowsPerTransaction?: number;
  /** Typical size of a large BLOB write; actual sizes vary from 0.5x to 1.5x (default 128 KiB). */
  blobBytes?: number;
  /** Hash the whole database after every commit (slow: for small databases). */
  hashEachCommit?: boolean;
  /** Target commit rate in transactions per second (default: as fast as possible). */
  ratePerSecond?: number;
  /** Called after every commit (and hash) with its record. */
  onCommit?: (record: WorkloadRecord) => void;
}

function validateWorkloadOptions(options: {
  seed?: number | undefined;
  weights?: WorkloadWeights | undefined;
  maxRowsPerTransaction?: number | undefined;
  blobBytes?: number | undefined;
  ratePerSecond?: number | undefined;
}): EngineConfig {
  const invalid = (message: string): LifeboatError =>
    new LifeboatError(ErrorCodes.INVALID_ARGUMENT, message, {
      plugin: "testkit",
      operation: "workload",
      hint: "Fix the workload options; see the @lifeboat/testkit README for their meaning.",
    });
  const seed = options.seed ?? 1;
  if (!Number.isSafeInteger(seed)) throw invalid(`Workload seed must be a safe integer, got ${seed}.`);
  const weights: Record<string, number> = { ...DEFAULT_WORKLOAD_WEIGHTS };
  for (const [kind, weight] of Object.entries(options.weights ?? {})) {
    if (!(WORKLOAD_KINDS as readonly string[]).includes(kind)) {
      throw invalid(`Unknown workload kind "${kind}"; known kinds: ${WORKLOAD_KINDS.join(", ")}.`);
    }
    if (typeof weight !== "number" || !Number.isFinite(weight) || weight < 0) {
      throw invalid(`Workload weight for "${kind}" must be a finite number >= 0, got ${String(weight)}.`);
    }
    weights[kind] = weight;
  }
  if (!Object.values(weights).some((w) => w > 0)) throw invalid("At least one workload kind needs a weight above 0.");
  const maxRowsPerTransaction = options.maxRowsPerTransaction ?? 20;
  if (!Number.isSafeInteger(maxRowsPerTransaction) || maxRowsPerTransaction < 1) {
    throw invalid(`maxRowsPerTransaction must be an integer >= 1, got ${maxRowsPerTransaction}.`);
  }
  const blobBytes = options.blobBytes ?? 128 * 1024;
  if (!Number.isSafeInteger(blobBytes) || blobBytes < 1 || blobBytes > 256 * 1024 * 1024) {
    throw invalid(`blobBytes must be an integer between 1 and 268435456, got ${blobBytes}.`);
  }
  if (options.ratePerSecond !== undefined && !(options.ratePerSecond > 0 && Number.isFinite(options.ratePerSecond))) {
    throw invalid(`ratePerSecond must be a finite number above 0, got ${options.ratePerSecond}.`);
  }
  return { seed, weights, maxRowsPerTransaction, blobBytes };
}

function sqliteFailure(error: unknown, what: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  const message = error instanceof Error ? error.message : String(error);
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return new LifeboatError(ErrorCodes.DATABASE_LOCKED, `${what}: the database stayed locked (${message}).`, {
      plugin: "testkit",
      operation: "workload",
      cause: error,
      hint: "Another connection held the write lock too long; raise busy_timeout or stop the other writer.",
    });
  }
  if (code.startsWith("SQLITE_FULL")) {
    return new LifeboatError(ErrorCodes.DISK_FULL, `${what}: the disk is full (${message}).`, {
      plugin: "testkit",
      operation: "workload",
      cause: error,
      hint: "Free some space or use a smaller workload (fewer transactions, smaller blobBytes).",
    });
  }
  return new LifeboatError(ErrorCodes.INTERNAL, `${what}: ${message}`, {
    plugin: "testkit",
    operation: "workload",
    cause: error,
    hint: "Check that the database is writable and not corrupt (PRAGMA integrity_check).",
  });
}

/**
 * Applies `options.transactions` seeded transactions to `db` (an open better-sqlite3 connection;
 * WAL or rollback journal, as the caller set it up) and returns one record per transaction in
 * commit order. Transactions start with BEGIN IMMEDIATE and touch only tables named `wl_*`
 * (created on first use); `wl_log` records every transaction number. Kinds: row
 * inserts/updates/deletes, large BLOB writes, CREATE TABLE, ALTER TABLE ADD COLUMN, CREATE INDEX,
 * DROP TABLE (frees pages; the file shrinks only under auto_vacuum) and VACUUM (a delete commit
 * followed by a VACUUM commit, so the file shrinks). Yields to the event loop between
 * transactions, so in-process replicators keep running. Same seed + equal starting database =>
 * equal content after every transaction. Throws LifeboatError (DATABASE_LOCKED, DISK_FULL,
 * INTERNAL) if a transaction fails; earlier transactions stay committed.
 */
export async function runWorkload(db: Database.Database, options: WorkloadOptions): Promise<WorkloadRecord[]> {
  const config = validateWorkloadOptions(options);
  if (!Number.isSafeInteger(options.transactions) || options.transactions < 0) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `Workload transactions must be an integer >= 0, got ${options.transactions}.`,
      { plugin: "testkit", operation: "workload", hint: "Pass how many transactions to commit." },
    );
  }
  let engine: WorkloadEngine;
  try {
    engine = createWorkloadEngine(db, config, { createRandom });
  } catch (error) {
    throw sqliteFailure(error, `Workload could not start on ${db.name}`);
  }
  const records: WorkloadRecord[] = [];
  const started = Date.now();
  for (let i = 0; i < options.transactions; i++) {
    if (options.ratePerSecond !== undefined) {
      const wait = started + (i * 1000) / options.ratePerSecond - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      else await yieldToEventLoop();
    } else {
      await yieldToEventLoop();
    }
    let step: { txn: number; kind: WorkloadKind };
    try {
      step = engine.step();
    } catch (error) {
      throw sqliteFailure(error, `Workload transaction ${engine.nextTxn} on ${db.name} failed`);
    }
    const record: WorkloadRecord = { txn: step.txn, kind: step.kind, committedAt: Date.now() };
    if (options.hashEachCommit) record.contentHash = hashDatabaseContent(db, createHash);
    records.push(record);
    options.onCommit?.(record);
  }
  return records;
}

/** Options of the writer process script, passed to it as one JSON argument. */
interface WriterScriptConfig extends EngineConfig {
  path: string;
  betterSqlite3: string;
  transactions: number | null;
  ratePerSecond: number | null;
  hash: boolean;
  busyTimeoutMs: number;
  stopOnStdinEnd: boolean;
}

/**
 * Returns the source of a standalone ESM script (write it to a `.mjs` file and run it with
 * `node`). Usage: `node writer.mjs '<json>'` where the JSON holds `path` (database),
 * `betterSqlite3` (absolute path of better-sqlite3's entry file, so the script needs no
 * node_modules of its own), `seed`, `weights` (a full kind→weight map), `maxRowsPerTransaction`,
 * `blobBytes`, `transactions` (stop after that many, or null for "until stopped"),
 * `ratePerSecond` (null: as fast as possible), `hash` (hash after each commit) and
 * `busyTimeoutMs`, and `stopOnStdinEnd` (stop when stdin closes). It sets WAL mode and
 * busy_timeout, then prints one JSON line
 * `{"ready":true,"pid":…,"nextTxn":…}`, and after each COMMIT one line
 * `{"txn":…,"t":<Date.now()>,"kind":…,"hash"?:…}` (pipes to stdout are synchronous on Linux, so a
 * line printed is a line sent). SIGTERM, SIGINT (or the end of stdin) stop it after the current
 * transaction with exit code 0; any failure prints to stderr and exits 1. It runs the same engine
 * as `runWorkload`, so equal seeds give equal content.
 */
export function writerProcessScript(): string {
  return `// Lifeboat workload writer, generated by @lifeboat/testkit writerProcessScript().
import { createHash } from "node:crypto";
import { createRequire } from "node:module";

const createRandom = (${createRandom.toString()});
const hashDatabaseContent = (${hashDatabaseContent.toString()});
const createWorkloadEngine = (${createWorkloadEngine.toString()});

const config = JSON.parse(process.argv[2] ?? "{}");
const Database = createRequire(import.meta.url)(config.betterSqlite3);
let stopping = false;
const stop = () => { stopping = true; };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
if (config.stopOnStdinEnd) {
  // The parent holds stdin open; if it dies, stdin ends and the writer stops instead of running on.
  process.stdin.on("end", stop);
  process.stdin.on("error", stop);
  process.stdin.resume();
}
const emit = (value) => { process.stdout.write(JSON.stringify(value) + "\\n"); };

let db;
try {
  db = new Database(config.path);
  db.pragma("busy_timeout = " + Number(config.busyTimeoutMs));
  const mode = db.pragma("journal_mode = WAL", { simple: true });
  if (String(mode).toLowerCase() !== "wal") throw new Error("could not switch " + config.path + " to WAL (journal_mode is " + mode + ")");
  const engine = createWorkloadEngine(db, config, { createRandom });
  emit({ ready: true, pid: process.pid, nextTxn: engine.nextTxn });
  const started = Date.now();
  for (let done = 0; !stopping && (config.transactions === null || done < config.transactions); done++) {
    if (config.ratePerSecond !== null) {
      const wait = started + (done * 1000) / config.ratePerSecond - Date.now();
      await new Promise((resolve) => (wait > 0 ? setTimeout(resolve, wait) : setImmediate(resolve)));
    } else {
      await new Promise((resolve) => setImmediate(resolve));
    }
    if (stopping) break;
    const { txn, kind } = engine.step();
    const record = { txn, t: Date.now(), kind };
    if (config.hash) record.hash = hashDatabaseContent(db, createHash);
    emit(record);
  }
  db.close();
  process.exit(0);
} catch (error) {
  process.stderr.write("lifeboat workload writer failed on " + config.path + ": " + (error && error.stack ? error.stack : String(error)) + "\\n");
  try { db?.close(); } catch {}
  process.exit(1);
}
`;
}

/** One commit reported by a writer process. */
export interface WriterRecord {
  /** Transaction number (also in `wl_log.txn`). */
  txn: number;
  /** `Date.now()` in the writer right after COMMIT. */
  t: number;
  kind: WorkloadKind;
  /** Content hash after the commit, when the writer was started with `hash: true`. */
  hash?: string;
}

/** How a writer process ended. */
export interface WriterExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Everything the writer printed to stderr. */
  stderr: string;
}

export interface WriterProcessOptions {
  /** Database file; created if missing. The writer switches it to WAL mode. */
  path: string;
  seed?: number;
  weights?: WorkloadWeights;
  maxRowsPerTransaction?: number;
  blobBytes?: number;
  /** Stop (exit 0) after this many transactions (default: run until stopped). */
  transactions?: number;
  /** Target commits per second (default: as fast as possible). */
  ratePerSecond?: number;
  /** Hash the database after each commit and report it (slow: small databases only). */
  hash?: boolean;
  /** SQLite busy_timeout in the writer (default 10000 ms). */
  busyTimeoutMs?: number;
  /** How long to wait for the writer to open the database (default 30000 ms). */
  startTimeoutMs?: number;
}

/** A running writer process. Iterating it yields every record (from the first) until it exits. */
export interface WriterProcess extends AsyncIterable<WriterRecord> {
  readonly pid: number;
  /** The number the writer's first transaction got. */
  readonly firstTxn: number;
  /** Records received so far, in commit order (a live array). */
  readonly records: readonly WriterRecord[];
  /** Settles when the process has exited and its output is fully read. */
  readonly exited: Promise<WriterExit>;
  /** Resolves once at least `count` records arrived; rejects if the writer exits first or on timeout. */
  waitForRecords(count: number, timeoutMs?: number): Promise<void>;
  /**
   * Asks the writer to stop after its current transaction (SIGTERM) and waits for it to exit.
   * Throws LifeboatError INTERNAL if it exited with a failure or had to be killed after `timeoutMs`.
   */
  stop(timeoutMs?: number): Promise<WriterExit>;
  /** Sends `signal` (default SIGKILL: a crash) and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<WriterExit>;
}

/**
 * Spawns a workload writer (`writerProcessScript()` run by the current `node`) on `options.path`
 * and resolves once it has opened the database in WAL mode. The script is written to a private
 * temp directory that is removed when the process exits. After SIGKILL the database may hold one
 * transaction more than `records` (committed, but killed before its line was printed); `wl_log`
 * in the database is the truth.
 */
export async function startWriterProcess(options: WriterProcessOptions): Promise<WriterProcess> {
  const engine = validateWorkloadOptions(options);
  const invalid = (message: string): LifeboatError =>
    new LifeboatError(ErrorCodes.INVALID_ARGUMENT, message, {
      plugin: "testkit",
      operation: "writer",
      hint: "Fix the writer process options.",
    });
  if (
    options.transactions !== undefined &&
    !(Number.isSafeInteger(options.transactions) && options.transactions >= 0)
  ) {
    throw invalid(`transactions must be an integer >= 0, got ${options.transactions}.`);
  }
  const busyTimeoutMs = options.busyTimeoutMs ?? 10_000;
  if (!Number.isSafeInteger(busyTimeoutMs) || busyTimeoutMs < 0) {
    throw invalid(`busyTimeoutMs must be an integer >= 0, got ${busyTimeoutMs}.`);
  }
  const config: WriterScriptConfig = {
    ...engine,
    path: options.path,
    betterSqlite3: createRequire(import.meta.url).resolve("better-sqlite3"),
    transactions: options.transactions ?? null,
    ratePerSecond: options.ratePerSecond ?? null,
    hash: options.hash ?? false,
    busyTimeoutMs,
    stopOnStdinEnd: true,
  };
  const dir = mkdtempSync(join(tmpdir(), "lifeboat-writer-"));
  const script = join(dir, "writer.mjs");
  writeFileSync(script, writerProcessScript());
  let child: ChildProcess;
  try {
    child = spawn(process.execPath, [script, JSON.stringify(config)], { stdio: ["pipe", "pipe", "pipe"] });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw new LifeboatError(ErrorCodes.INTERNAL, `Could not start the workload writer for ${options.path}.`, {
      plugin: "testkit",
      operation: "writer",
      cause: error,
      hint: "Check that node can spawn child processes here.",
    });
  }

  const records: WriterRecord[] = [];
  let stderr = "";
  let pending = "";
  let firstTxn: number | undefined;
  let exit: WriterExit | undefined;
  let wake: Array<() => void> = [];
  const notify = (): void => {
    const waiting = wake;
    wake = [];
    for (const resolve of waiting) resolve();
  };
  const changed = (): Promise<void> => new Promise((resolve) => wake.push(resolve));

  child.stdout?.setEncoding("utf8");
  child.stdout?.on("data", (data: string) => {
    pending += data;
    let newline = pending.indexOf("\n");
    while (newline >= 0) {
      const line = pending.slice(0, newline);
      pending = pending.slice(newline + 1);
      newline = pending.indexOf("\n");
      if (line.trim() === "") continue;
      let message: WriterRecord & { ready?: boolean; nextTxn?: number };
      try {
        message = JSON.parse(line) as WriterRecord & { ready?: boolean; nextTxn?: number };
      } catch {
        stderr += `unparseable stdout line: ${line}\n`;
        continue;
      }
      if (message.ready) firstTxn = message.nextTxn;
      else records.push(message);
    }
    notify();
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (data: string) => {
    stderr += data;
  });
  // The writer stops when stdin ends; ignore EPIPE if it is already gone.
  child.stdin?.on("error", () => {});
  const exited = new Promise<WriterExit>((resolve) => {
    child.on("close", (code, signal) => {
      exit = { code, signal, stderr };
      rmSync(dir, { recursive: true, force: true });
      notify();
      resolve(exit);
    });
  });

  const failure = (what: string, result: WriterExit): LifeboatError =>
    new LifeboatError(
      ErrorCodes.INTERNAL,
      `Workload writer on ${options.path} ${what} (exit code ${result.code}, signal ${result.signal}): ${result.stderr.trim()}`,
      {
        plugin: "testkit",
        operation: "writer",
        hint: "Read the writer's stderr above; the database path must be writable.",
      },
    );

  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const startDeadline = Date.now() + startTimeoutMs;
  while (firstTxn === undefined) {
    if (exit !== undefined) throw failure("exited before it was ready", exit);
    const left = startDeadline - Date.now();
    if (left <= 0) {
      child.kill("SIGKILL");
      throw failure(`was not ready within ${startTimeoutMs} ms`, await exited);
    }
    await Promise.race([changed(), new Promise((resolve) => setTimeout(resolve, left))]);
  }
  const startedAt = firstTxn;
  const pid = child.pid ?? -1;

  const kill = async (signal: NodeJS.Signals = "SIGKILL"): Promise<WriterExit> => {
    if (exit === undefined) child.kill(signal);
    return exited;
  };

  return {
    pid,
    firstTxn: startedAt,
    records,
    exited,
    async waitForRecords(count, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (records.length < count) {
        if (exit !== undefined) throw failure(`exited after ${records.length} of ${count} awaited records`, exit);
        const left = deadline - Date.now();
        if (left <= 0) {
          throw new LifeboatError(
            ErrorCodes.INTERNAL,
            `Workload writer on ${options.path} produced ${records.length} of ${count} records within ${timeoutMs} ms.`,
            { plugin: "testkit", operation: "writer", hint: "Lower the awaited count or raise the rate." },
          );
        }
        await Promise.race([changed(), new Promise((resolve) => setTimeout(resolve, left))]);
      }
    },
    async stop(timeoutMs = 10_000) {
      if (exit === undefined) {
        child.kill("SIGTERM");
        child.stdin?.end();
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          exited.then(() => false),
          new Promise<boolean>((resolve) => {
            timer = setTimeout(() => resolve(true), timeoutMs);
          }),
        ]);
        clearTimeout(timer);
        if (timedOut) throw failure(`did not stop within ${timeoutMs} ms and was killed`, await kill("SIGKILL"));
      }
      const result = await exited;
      if (result.code !== 0) throw failure("failed", result);
      return result;
    },
    kill,
    async *[Symbol.asyncIterator]() {
      let next = 0;
      for (;;) {
        while (next < records.length) yield records[next++] as WriterRecord;
        if (exit !== undefined) {
          if (exit.code !== 0 && exit.signal === null) throw failure("failed", exit);
          return;
        }
        await changed();
      }
    },
  };
}
