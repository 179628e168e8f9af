/**
 * The benchmark's application: a writer in its own process (better-sqlite3, WAL mode). Each
 * transaction is one autocommit INSERT of a sequence number into `bench_seq`; the row carries a
 * marker `SEQ:<10 digits>;` so a replica file's page images tell which transactions they hold.
 * After each COMMIT it records Date.now() (the lag's start) and how long the statement took.
 *
 * Usage: node --import tsx replication-writer.ts '<json WriterConfig>'
 * Writes commit times (Float64, ms since the epoch) and statement durations (Float32, ms) to
 * `<out>.times` / `<out>.durations`, and prints a WriterResult as JSON on stdout.
 */
import { writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import Database from "better-sqlite3";

export interface WriterConfig {
  readonly db: string;
  /** Transactions per second; 0 = as fast as possible. */
  readonly rate: number;
  /** Stop after this long (ms), if given. */
  readonly durationMs?: number;
  /** Stop after this many transactions, if given. */
  readonly count?: number;
  readonly synchronous: "NORMAL" | "FULL";
  /** The writer's `wal_autocheckpoint` (default: SQLite's, 1000 frames; 0 turns its own checkpoints off). */
  readonly walAutocheckpoint?: number;
  /** First sequence number (default 1). */
  readonly startSeq?: number;
  /** Prefix of the output files. */
  readonly out: string;
}

export interface WriterResult {
  readonly transactions: number;
  readonly firstSeq: number;
  readonly lastSeq: number;
  readonly elapsedMs: number;
  readonly txPerSec: number;
  readonly startedAt: number;
  readonly endedAt: number;
  readonly maxStatementMs: number;
  readonly busyRetries: number;
}

/** The marker a row carries; `replication-markers.ts` finds these in page images. */
function marker(seq: number): string {
  return `SEQ:${String(seq).padStart(10, "0")};`;
}

function main(): void {
  const cfg = JSON.parse(process.argv[2] ?? "{}") as WriterConfig;
  const db = new Database(cfg.db, { fileMustExist: true });
  db.pragma("busy_timeout = 10000");
  const mode = String(db.pragma("journal_mode = WAL", { simple: true }));
  if (mode !== "wal") throw new Error(`writer: ${cfg.db} is in ${mode} mode, expected wal`);
  db.pragma(`synchronous = ${cfg.synchronous}`);
  if (cfg.walAutocheckpoint !== undefined) db.pragma(`wal_autocheckpoint = ${cfg.walAutocheckpoint}`);
  const insert = db.prepare("INSERT INTO bench_seq (seq, written_at, marker) VALUES (?, ?, ?)");
  const limit = cfg.count ?? Number.POSITIVE_INFINITY;
  const capacity = Math.min(limit, cfg.rate > 0 ? Math.ceil(((cfg.durationMs ?? 0) / 1000) * cfg.rate) + 16 : 1 << 20);
  let times = new Float64Array(Math.max(16, Number.isFinite(capacity) ? capacity : 1 << 20));
  let durations = new Float32Array(times.length);
  const sleeper = new Int32Array(new SharedArrayBuffer(4));
  const firstSeq = cfg.startSeq ?? 1;
  let n = 0;
  let busyRetries = 0;
  let maxStatementMs = 0;
  const startedAt = Date.now();
  const t0 = performance.now();
  const deadline = cfg.durationMs === undefined ? Number.POSITIVE_INFINITY : t0 + cfg.durationMs;
  while (n < limit) {
    if (cfg.rate > 0) {
      const due = t0 + (n * 1000) / cfg.rate;
      const wait = due - performance.now();
      if (wait > 0) Atomics.wait(sleeper, 0, 0, wait); // precise sleep; this process has nothing else to do
    }
    const before = performance.now();
    if (before >= deadline) break;
    const seq = firstSeq + n;
    for (;;) {
      try {
        insert.run(seq, Date.now(), marker(seq));
        break;
      } catch (error) {
        if ((error as { code?: string }).code !== "SQLITE_BUSY") throw error;
        busyRetries++;
      }
    }
    const committed = Date.now();
    const took = performance.now() - before;
    if (n === times.length) {
      const t = new Float64Array(times.length * 2);
      t.set(times);
      times = t;
      const d = new Float32Array(times.length);
      d.set(durations);
      durations = d;
    }
    times[n] = committed;
    durations[n] = took;
    if (took > maxStatementMs) maxStatementMs = took;
    n++;
  }
  const elapsedMs = performance.now() - t0;
  const endedAt = Date.now();
  db.close();
  writeFileSync(`${cfg.out}.times`, Buffer.from(times.buffer, 0, n * 8));
  writeFileSync(`${cfg.out}.durations`, Buffer.from(durations.buffer, 0, n * 4));
  const result: WriterResult = {
    transactions: n,
    firstSeq,
    lastSeq: firstSeq + n - 1,
    elapsedMs,
    txPerSec: (n * 1000) / elapsedMs,
    startedAt,
    endedAt,
    maxStatementMs,
    busyRetries,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

main();
