/**
 * Continuous archiving benchmark: Lifeboat (`lifeboat replicate`) vs Litestream 0.3.13
 * (`litestream replicate`), both to the same kind of target (a local directory, or an S3 bucket on
 * a real radosgw started from @lifeboat/testkit), same workload, same machine, side by side in one
 * run. Writes bench/results/replication.md, or replication-s3.md with `--target s3` (and the raw
 * numbers as .json).
 *
 *   node --import tsx bench/replication.ts            # full run (~30 min)
 *   node --import tsx bench/replication.ts --quick    # short end-to-end check
 *   options: --target local|s3   --only lag,throughput,restore,requests   --out FILE.md
 *            --keep (keep the work dir)
 *
 * What is measured and how is written into the results file itself (see `method()`).
 */

import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { createFixtureDatabase, databaseContentHash, type S3Server, tableRowCounts } from "@lifeboat/testkit";
import { type PollStats, S3Remote, S3Watcher, startGateway } from "./lib/replication-s3.js";
import {
  createSeqTable,
  LIFEBOAT,
  LIFEBOAT_BATCHED,
  LITESTREAM_DEFAULT,
  LITESTREAM_FAST,
  LITESTREAM_SYNC100,
  type ReplicatorSpec,
  Session,
} from "./lib/replication-session.js";
import {
  type Coverage,
  fmt,
  type LagSummary,
  lagsFromCoverage,
  median,
  percentile,
  summarize,
  table,
} from "./lib/replication-stats.js";
import {
  eventTime,
  LITESTREAM,
  MAIN,
  ProcSampler,
  type ProcStats,
  runWriter,
  timeCommand,
} from "./lib/replication-tools.js";

const { values: args } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    out: { type: "string" },
    keep: { type: "boolean", default: false },
    rounds: { type: "string" },
    "cpu-prof": { type: "boolean", default: false },
    /** Only these replicators in the lag scenario (spec ids, comma-separated), e.g. lifeboat,litestream-100ms. */
    replicators: { type: "string" },
    target: { type: "string", default: "local" },
    /** S3 only: keep radosgw's default (Nagle on: ~40 ms per response with a body) instead of tcp_nodelay=1. */
    "rgw-nagle": { type: "boolean", default: false },
  },
});
if (args.target !== "local" && args.target !== "s3") {
  console.error(`--target must be local or s3, got ${JSON.stringify(args.target)}`);
  process.exit(2);
}
const S3 = args.target === "s3";

const Q = args.quick;
const P = {
  lagSeconds: Q ? 6 : 30,
  rates: [100, 1000],
  lagRounds: Number(args.rounds ?? (Q ? 1 : 2)),
  throughputSeconds: Q ? 3 : 10,
  throughputRounds: Number(args.rounds ?? (Q ? 1 : 3)),
  restoreTxns: Q ? 5_000 : 100_000,
  fixtureMB: Q ? 10 : 100,
  restoreRepeats: Q ? 1 : 3,
  busySeconds: Q ? 10 : 60,
  busyRate: 10,
  idleSeconds: Q ? 10 : 120,
  synchronous: "NORMAL" as const,
};
const only = new Set((args.only ?? "lag,throughput,restore,requests").split(","));
const outFile = args.out ?? join(MAIN, "bench/results", `replication${S3 ? "-s3" : ""}${Q ? ".quick" : ""}.md`);
const work = mkdtempSync(join(tmpdir(), "lifeboat-bench-replication-"));
const log = (msg: string) => process.stderr.write(`${new Date().toISOString().slice(11, 23)} ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The radosgw of an S3 run (one for the whole run; every session gets its own bucket). */
let remote: S3Remote | undefined;
/** Describes the gateway of an S3 run (for the report). */
const s3Env = { gateway: "radosgw" };
/** Every S3 session's poll statistics, by tool (for the method notes). */
const pollStats: { tool: string; stats: PollStats }[] = [];

/** A session on the run's kind of target. */
function newSession(spec: ReplicatorSpec, dir: string, db: string): Session {
  const s = new Session(spec, dir, db, remote);
  if (s.watcher instanceof S3Watcher) pollStats.push({ tool: spec.tool, stats: s.watcher.stats });
  return s;
}

function runDir(name: string): string {
  const dir = join(work, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

// ------------------------------------------------------------------ Lifeboat's own events

interface LifeboatEvents {
  generations: number;
  checkpoints: number;
  /** Emergency checkpoints: these hold the write lock while they ship the last transactions and checkpoint. */
  lockedCheckpoints: number;
  maxWriteLockMs: number;
  targetErrors: string[];
  errors: string[];
  /** Shipped events: durable-at (event time), generation and last transaction, mapped to writer seq. */
  shipped: { at: number; generation: string; lastTxn: number; lastSeq: number; lagMs: number }[];
  /** Spooled event time by writer seq of the segment's last transaction. */
  spooled: Map<number, number>;
}

/**
 * Writer seq = transaction number + base, per generation. Only the writer writes, so each
 * generation's earliest snapshot (at position P, holding R writer rows) gives base = R - P.
 */
function generationBases(s: Session): Map<string, number> {
  const bases = new Map<string, number>();
  const earliest = new Map<string, { position: number; rows: number }>();
  for (const snap of s.snapshots()) {
    const e = earliest.get(snap.generation);
    if (!e || snap.position < e.position) earliest.set(snap.generation, { position: snap.position, rows: snap.maxSeq });
  }
  for (const [gen, e] of earliest) bases.set(gen, e.rows - e.position);
  return bases;
}

function generationOf(path: string): string {
  return /generations\/([^/]+)\//.exec(path)?.[1] ?? "";
}

function lifeboatEvents(s: Session): LifeboatEvents {
  const json = s.child.lines.map((l) => ({ l, j: l.json })).filter((x) => x.j);
  const bases = generationBases(s);
  const out: LifeboatEvents = {
    generations: 0,
    checkpoints: 0,
    lockedCheckpoints: 0,
    maxWriteLockMs: 0,
    targetErrors: [],
    errors: [],
    shipped: [],
    spooled: new Map(),
  };
  for (const { l, j } of json) {
    const base = bases.get(String(j!.generation));
    switch (j!.type) {
      case "generation":
        out.generations++;
        break;
      case "checkpoint":
        out.checkpoints++;
        if (j!.mode === "LOCKED") out.lockedCheckpoints++;
        out.maxWriteLockMs = Math.max(out.maxWriteLockMs, Number(j!.writeLockMs));
        break;
      case "target-error":
        out.targetErrors.push(l.line);
        break;
      case "error":
        out.errors.push(l.line);
        break;
      case "spooled":
        if (base !== undefined) out.spooled.set(base + Number(j!.lastTxn), eventTime(l));
        break;
      case "shipped":
        if (base !== undefined)
          out.shipped.push({
            at: eventTime(l),
            generation: String(j!.generation),
            lastTxn: Number(j!.lastTxn),
            lastSeq: base + Number(j!.lastTxn),
            lagMs: Number(j!.lagMs),
          });
        break;
    }
  }
  return out;
}

/** Per-writer-seq observed times from the segments' headers (Lifeboat stamps each transaction when it sees it). */
function lifeboatObserved(s: Session): Map<number, { observedAt: number; path: string }> {
  const bases = generationBases(s);
  const map = new Map<number, { observedAt: number; path: string }>();
  for (const path of s.segmentPaths()) {
    const base = bases.get(generationOf(path));
    if (base === undefined) continue;
    const raw = readFileSync(join(s.target, path));
    const hlen = raw.readUInt32BE(12);
    const header = JSON.parse(raw.toString("utf8", 16, 16 + hlen)) as {
      transactions: { txn: number; observedAt: number }[];
    };
    for (const t of header.transactions) map.set(base + t.txn, { observedAt: t.observedAt, path });
  }
  return map;
}

// ------------------------------------------------------------------ 1. lag (+ 5. RSS)

interface LagRun {
  spec: string;
  label: string;
  rate: number;
  round: number;
  writer: {
    transactions: number;
    txPerSec: number;
    maxStatementMs: number;
    p99StatementMs: number;
    p50StatementMs: number;
    p999StatementMs: number;
  };
  lagTarget: LagSummary;
  lagEvents?: LagSummary;
  /** Pooled raw lags are kept out of the JSON; these are the per-run summaries. */
  objects: number;
  objectBytes: number;
  txPerObject: number;
  proc: ProcStats;
  lifeboat?: {
    generations: number;
    checkpoints: number;
    lockedCheckpoints: number;
    maxWriteLockMs: number;
    errors: string[];
    markerMismatches: number;
    eventMinusSeenMs: { median: number; max: number; min: number };
    seenMinusMtimeMs: { median: number; max: number };
    phases: {
      detectP50: number;
      detectP99: number;
      spoolP50: number;
      spoolP99: number;
      uploadP50: number;
      uploadP99: number;
    };
  };
  restore: { ms: number; ok: boolean; rows: number; maxSeq: number; detail?: string };
}

const pooled = new Map<string, { target: number[]; events: number[] }>();

function writerSummary(w: Awaited<ReturnType<typeof runWriter>>): LagRun["writer"] {
  return {
    transactions: w.result.transactions,
    txPerSec: w.result.txPerSec,
    maxStatementMs: w.result.maxStatementMs,
    p99StatementMs: percentile(w.durations, 99),
    p50StatementMs: percentile(w.durations, 50),
    p999StatementMs: percentile(w.durations, 99.9),
  };
}

/** The lag runs' writer: `rate` transactions a second for the lag scenario's duration. */
function pacedWriter(dir: string, db: string, rate: number): ReturnType<typeof runWriter> {
  return runWriter({ db, rate, durationMs: P.lagSeconds * 1000, synchronous: P.synchronous, out: join(dir, "writer") });
}

/** The paced writer with no replicator: what its statements cost without one, at the lag runs' rates. */
interface PacedBaseline {
  rate: number;
  round: number;
  writer: LagRun["writer"];
}

async function pacedBaseline(rate: number, round: number): Promise<PacedBaseline> {
  const dir = runDir(`paced-none-${rate}-r${round}`);
  const db = join(dir, "app.db");
  createSeqTable(db);
  const w = await pacedWriter(dir, db, rate);
  rmSync(dir, { recursive: true, force: true });
  return {
    rate,
    round,
    writer: writerSummary(w),
  };
}
const paced: PacedBaseline[] = [];

async function lagRun(spec: ReplicatorSpec, rate: number, round: number): Promise<LagRun> {
  const dir = runDir(`lag-${spec.id}-${rate}-r${round}`);
  const db = join(dir, "app.db");
  createSeqTable(db);
  const s = newSession(spec, dir, db);
  await s.start(args["cpu-prof"] && spec.tool === "lifeboat" ? ["--cpu-prof", `--cpu-prof-dir=${dir}/prof`] : []);
  await sleep(500);
  const sampler = new ProcSampler(s.child.pid);
  const w = await pacedWriter(dir, db, rate);
  await sleep(spec.tool === "litestream" ? 2500 : 300); // let the tail arrive before the bench starts decoding
  const covered = await s.waitCovered(w.result.lastSeq, 120_000);
  const proc = sampler.finish();
  await s.stop();
  if (!covered.covered) log(`  ! ${spec.id}: transaction ${w.result.lastSeq} never reached the target`);

  const objects = s.objects();
  const snapshots = s.snapshots().filter((x) => x.maxSeq > 0); // mid-run generations
  const coverage: Coverage[] = [
    ...objects.map((o) => ({ at: o.seenAt ?? o.mtimeMs, maxSeq: o.maxSeq })),
    ...snapshots.map((x) => ({ at: x.at, maxSeq: x.maxSeq })),
  ];
  const lags = lagsFromCoverage(w.times, w.result.firstSeq, coverage);
  const key = `${spec.id}@${rate}`;
  const pool = pooled.get(key) ?? { target: [], events: [] };
  pool.target.push(...lags);
  const run: LagRun = {
    spec: spec.id,
    label: spec.label,
    rate,
    round,
    writer: writerSummary(w),
    lagTarget: summarize(lags),
    objects: objects.filter((o) => o.maxSeq > 0).length,
    objectBytes: objects.reduce((n, o) => n + o.bytes, 0),
    txPerObject: w.result.transactions / Math.max(1, objects.filter((o) => o.maxSeq > 0).length),
    proc,
    restore: { ms: 0, ok: false, rows: 0, maxSeq: 0 },
  };
  if (spec.tool === "lifeboat") {
    const ev = lifeboatEvents(s);
    const evLags = lagsFromCoverage(w.times, w.result.firstSeq, [
      ...ev.shipped.map((e) => ({ at: e.at, maxSeq: e.lastSeq })),
      ...snapshots.map((x) => ({ at: x.at, maxSeq: x.maxSeq })),
    ]);
    pool.events.push(...evLags);
    run.lagEvents = summarize(evLags);
    const bases = generationBases(s);
    const seqOf = (o: (typeof objects)[number]) =>
      (bases.get(generationOf(o.path)) ?? Number.NaN) + (o.lastTxn ?? Number.NaN);
    const byLast = new Map(objects.filter((o) => o.lastTxn !== undefined).map((o) => [seqOf(o), o]));
    const diffs: number[] = [];
    const mdiffs: number[] = [];
    for (const e of ev.shipped) {
      const o = byLast.get(e.lastSeq);
      if (o?.seenAt !== undefined) {
        diffs.push(e.at - o.seenAt);
        mdiffs.push(o.seenAt - o.mtimeMs);
      }
    }
    const observed = lifeboatObserved(s);
    const detect: number[] = [];
    for (let k = 0; k < w.times.length; k++) {
      const o = observed.get(w.result.firstSeq + k);
      if (o) detect.push(o.observedAt - w.times[k]!);
    }
    const spool: number[] = [];
    const upload: number[] = [];
    for (const e of ev.shipped) {
      const spooledAt = ev.spooled.get(e.lastSeq);
      const obs = observed.get(e.lastSeq);
      if (spooledAt !== undefined && obs) {
        spool.push(spooledAt - obs.observedAt);
        upload.push(e.at - spooledAt);
      }
    }
    run.lifeboat = {
      generations: ev.generations,
      checkpoints: ev.checkpoints,
      lockedCheckpoints: ev.lockedCheckpoints,
      maxWriteLockMs: ev.maxWriteLockMs,
      errors: [...ev.errors, ...ev.targetErrors],
      markerMismatches: objects.filter((o) => o.lastTxn !== undefined && o.maxSeq !== seqOf(o)).length,
      eventMinusSeenMs: { median: median(diffs), max: Math.max(...diffs), min: Math.min(...diffs) },
      seenMinusMtimeMs: { median: median(mdiffs), max: Math.max(...mdiffs) },
      phases: {
        detectP50: percentile(detect, 50),
        detectP99: percentile(detect, 99),
        spoolP50: percentile(spool, 50),
        spoolP99: percentile(spool, 99),
        uploadP50: percentile(upload, 50),
        uploadP99: percentile(upload, 99),
      },
    };
  }
  pooled.set(key, pool);
  const r = await s.restore(join(dir, "restored.db"));
  run.restore = {
    ms: r.ms,
    ok: r.code === 0 && r.rows === w.result.transactions && r.maxSeq === w.result.lastSeq,
    rows: r.rows,
    maxSeq: r.maxSeq,
    ...(r.code !== 0 ? { detail: r.out.slice(-500) } : {}),
  };
  log(
    `  ${spec.id} @${rate}/s r${round}: ${w.result.transactions} tx (${fmt(w.result.txPerSec)}/s); lag p50 ${fmt(run.lagTarget.p50)} p99 ${fmt(run.lagTarget.p99)} max ${fmt(run.lagTarget.max)} ms` +
      (run.lagEvents ? ` (events p50 ${fmt(run.lagEvents.p50)} p99 ${fmt(run.lagEvents.p99)})` : "") +
      `; RSS ${fmt(proc.hwmMB, 1)} MB; CPU ${fmt(proc.cpuPercent)}%; restore ${run.restore.ok ? "ok" : `FAILED rows=${r.rows} max=${r.maxSeq}`}`,
  );
  return run;
}

// ------------------------------------------------------------------ 2. writer overhead

interface ThroughputRun {
  spec: string;
  synchronous: "NORMAL" | "FULL";
  round: number;
  txPerSec: number;
  transactions: number;
  maxStatementMs: number;
  p99StatementMs: number;
  busyRetries: number;
  /** From the writer's end until its last transaction was durable on the target. */
  catchUpMs?: number;
  covered?: boolean;
  proc?: ProcStats;
  maxWriteLockMs?: number;
  checkpoints?: number;
  lockedCheckpoints?: number;
  generations?: number;
  restore?: { ok: boolean; rows: number; maxSeq: number; detail?: string };
}

async function throughputRun(
  spec: ReplicatorSpec | null,
  synchronous: "NORMAL" | "FULL",
  round: number,
): Promise<ThroughputRun> {
  const id = spec?.id ?? "none";
  const dir = runDir(`throughput-${id}-${synchronous}-r${round}`);
  const db = join(dir, "app.db");
  createSeqTable(db);
  let s: Session | null = null;
  let sampler: ProcSampler | null = null;
  if (spec) {
    s = newSession(spec, dir, db);
    await s.start();
    await sleep(500);
    sampler = new ProcSampler(s.child.pid);
  }
  const w = await runWriter({
    db,
    rate: 0,
    durationMs: P.throughputSeconds * 1000,
    synchronous,
    out: join(dir, "writer"),
  });
  const run: ThroughputRun = {
    spec: id,
    synchronous,
    round,
    txPerSec: w.result.txPerSec,
    transactions: w.result.transactions,
    maxStatementMs: w.result.maxStatementMs,
    p99StatementMs: percentile(w.durations, 99),
    busyRetries: w.result.busyRetries,
  };
  if (s && sampler) {
    const covered = await s.waitCovered(w.result.lastSeq, 600_000);
    run.proc = sampler.finish();
    await s.stop();
    run.covered = covered.covered;
    if (covered.at !== undefined) run.catchUpMs = covered.at - w.result.endedAt;
    if (spec?.tool === "lifeboat") {
      const ev = lifeboatEvents(s);
      run.maxWriteLockMs = ev.maxWriteLockMs;
      run.checkpoints = ev.checkpoints;
      run.lockedCheckpoints = ev.lockedCheckpoints;
      run.generations = ev.generations;
    }
    const r = await s.restore(join(dir, "restored.db"));
    run.restore = {
      ok: r.code === 0 && r.rows === w.result.transactions && r.maxSeq === w.result.lastSeq,
      rows: r.rows,
      maxSeq: r.maxSeq,
      ...(r.code !== 0 ? { detail: r.out.slice(-500) } : {}),
    };
  }
  log(
    `  ${id} ${synchronous} r${round}: ${fmt(run.txPerSec)} tx/s, max statement ${fmt(run.maxStatementMs, 1)} ms` +
      (run.catchUpMs !== undefined ? `, caught up ${fmt(run.catchUpMs)} ms after the writer stopped` : "") +
      (run.maxWriteLockMs !== undefined ? `, max write lock ${fmt(run.maxWriteLockMs, 1)} ms` : "") +
      (run.restore ? `, restore ${run.restore.ok ? "ok" : `FAILED rows=${run.restore.rows}/${run.transactions}`}` : ""),
  );
  rmSync(dir, { recursive: true, force: true }); // large WAL copies; keep the disk free
  return run;
}

// ------------------------------------------------------------------ 3. restore

interface RestoreResult {
  fixtureMB: number;
  transactions: number;
  load: Record<
    string,
    {
      txPerSec: number;
      catchUpMs?: number;
      snapshotMB: number;
      targetMB: number;
      objects: number;
      proc: ProcStats;
      maxWriteLockMs?: number;
      /** Generations (snapshots taken) during the run: more than 1 means a full re-snapshot mid-run. */
      generations: number;
    }
  >;
  timings: Record<string, number[]>;
  checks: Record<string, { ok: boolean; detail: string }>;
}

async function restoreScenario(): Promise<RestoreResult> {
  const base = runDir("restore");
  const fixture = join(base, "fixture.db");
  log(`  creating a ${P.fixtureMB} MB fixture`);
  const made = await createFixtureDatabase({ path: fixture, sizeMB: P.fixtureMB, seed: 1, journalMode: "wal" });
  createSeqTable(fixture);
  log(`  fixture ready: ${JSON.stringify(made).slice(0, 200)}`);
  const result: RestoreResult = {
    fixtureMB: P.fixtureMB,
    transactions: P.restoreTxns,
    load: {},
    timings: {},
    checks: {},
  };
  const sessions: Session[] = [];
  const sources: Record<string, { counts: Record<string, number>; hash: string }> = {};
  for (const spec of [LIFEBOAT, LITESTREAM_DEFAULT]) {
    const dir = runDir(`restore/${spec.id}`);
    const db = join(dir, "app.db");
    copyFileSync(fixture, db);
    const s = newSession(spec, dir, db);
    await s.start();
    await sleep(500);
    const sampler = new ProcSampler(s.child.pid);
    const w = await runWriter({
      db,
      rate: 0,
      count: P.restoreTxns,
      synchronous: P.synchronous,
      out: join(dir, "writer"),
    });
    const covered = await s.waitCovered(w.result.lastSeq, 600_000);
    const proc = sampler.finish();
    await s.stop();
    const objects = s.watcher.present();
    const targetBytes = objects.reduce((n, p) => n + statSync(join(s.target, p)).size, 0);
    const snapshotBytes = objects
      .filter((p) => /snapshots\/.*\.(snap|snapshot\.lz4)$/.test(p))
      .reduce((n, p) => n + statSync(join(s.target, p)).size, 0);
    result.load[spec.id] = {
      txPerSec: w.result.txPerSec,
      ...(covered.at !== undefined ? { catchUpMs: covered.at - w.result.endedAt } : {}),
      snapshotMB: snapshotBytes / 1024 / 1024,
      targetMB: targetBytes / 1024 / 1024,
      objects: objects.length,
      proc,
      ...(spec.tool === "lifeboat" ? { maxWriteLockMs: lifeboatEvents(s).maxWriteLockMs } : {}),
      generations: new Set(s.snapshots().map((x) => x.generation)).size,
    };
    log(
      `  ${spec.id}: ${P.restoreTxns} tx at ${fmt(w.result.txPerSec)}/s; on target after ${fmt(result.load[spec.id]!.catchUpMs)} ms; ${objects.length} objects, ${fmt(targetBytes / 1048576, 1)} MB; RSS ${fmt(proc.hwmMB, 1)} MB`,
    );
    // The source as the restores should reproduce it (read after the replicator stopped).
    sources[spec.id] = { counts: tableRowCounts(db), hash: databaseContentHash(db) };
    sessions.push(s);
  }
  // --to-txn is generation-relative: in the newest generation, writer row N is transaction N - base.
  const bases = generationBases(sessions[0]!);
  const newest = [...sessions[0]!.snapshots()].sort((a, b) => a.at - b.at).at(-1)!.generation;
  const toTxn = P.restoreTxns - (bases.get(newest) ?? 0);
  const kinds: { name: string; session: Session; extra: string[] }[] = [
    { name: "lifeboat restore (latest)", session: sessions[0]!, extra: [] },
    {
      name: `lifeboat restore --to-txn ${toTxn}${toTxn !== P.restoreTxns ? ` (= writer row ${P.restoreTxns}, generation ${newest})` : ""}`,
      session: sessions[0]!,
      extra: ["--to-txn", String(toTxn)],
    },
    { name: "litestream restore (latest)", session: sessions[1]!, extra: [] },
  ];
  for (let rep = 0; rep < P.restoreRepeats; rep++) {
    for (const k of kinds) {
      const output = join(k.session.dir, `restored-${rep}.db`);
      const r = await k.session.restore(output, k.extra);
      const timings = result.timings[k.name] ?? [];
      timings.push(r.ms);
      result.timings[k.name] = timings;
      const expected = sources[k.session.spec.id]!;
      let ok = r.code === 0 && r.rows === P.restoreTxns && r.maxSeq === P.restoreTxns;
      let detail = `exit ${r.code}, bench_seq rows ${r.rows}, max(seq) ${r.maxSeq}`;
      if (r.code === 0) {
        const counts = tableRowCounts(output);
        const same = JSON.stringify(counts) === JSON.stringify(expected.counts);
        ok &&= same;
        detail += `, row counts of all ${Object.keys(counts).length} tables ${same ? "match" : "DIFFER"}`;
        if (rep === 0) {
          const hash = databaseContentHash(output);
          ok &&= hash === expected.hash;
          detail += `, content hash ${hash === expected.hash ? "matches" : "DIFFERS"}`;
        }
      } else detail += `: ${r.out.slice(-300)}`;
      if (rep === 0 || !ok) result.checks[k.name] = { ok, detail };
      log(`  ${k.name} #${rep + 1}: ${fmt(r.ms)} ms, ${ok ? "ok" : "FAILED"} (${detail})`);
      for (const suffix of ["", "-wal", "-shm"]) rmSync(output + suffix, { force: true });
    }
  }
  return result;
}

// ------------------------------------------------------------------ 4. storage requests

interface RequestCounts {
  busy: Record<string, { seconds: number; puts: number; deletes: number; byKind: Record<string, number> }>;
  idle: Record<string, { seconds: number; puts: number; deletes: number; byKind: Record<string, number> }>;
}

function kindOf(path: string): string {
  if (/\/wal\//.test(path)) return "WAL segment";
  if (/snapshots\//.test(path)) return "snapshot";
  if (/locks\//.test(path)) return "lease";
  return "other";
}

async function requestsScenario(): Promise<RequestCounts> {
  const specs = [LIFEBOAT, LIFEBOAT_BATCHED, LITESTREAM_DEFAULT];
  const sessions = await Promise.all(
    specs.map(async (spec) => {
      const dir = runDir(`requests-${spec.id}`);
      const db = join(dir, "app.db");
      createSeqTable(db);
      const s = newSession(spec, dir, db);
      await s.start();
      return s;
    }),
  );
  await sleep(3000);
  const busyFrom = Date.now();
  await Promise.all(
    sessions.map((s) =>
      runWriter({
        db: s.db,
        rate: P.busyRate,
        durationMs: P.busySeconds * 1000,
        synchronous: P.synchronous,
        out: join(s.dir, "writer"),
      }),
    ),
  );
  const busyTo = Date.now();
  await sleep(5000); // the tail of the busy phase ships
  const idleFrom = Date.now();
  await sleep(P.idleSeconds * 1000);
  const idleTo = Date.now();
  const out: RequestCounts = { busy: {}, idle: {} };
  for (const s of sessions) {
    const count = (from: number, to: number) => {
      const c = s.watcher.count(from, to);
      const byKind: Record<string, number> = {};
      for (const e of s.watcher.events)
        if (e.at >= from && e.at < to)
          byKind[`${kindOf(e.path)} ${e.kind}`] = (byKind[`${kindOf(e.path)} ${e.kind}`] ?? 0) + 1;
      return { seconds: (to - from) / 1000, ...c, byKind };
    };
    out.busy[s.spec.id] = count(busyFrom, busyTo);
    out.idle[s.spec.id] = count(idleFrom, idleTo);
    log(`  ${s.spec.id}: busy ${JSON.stringify(out.busy[s.spec.id])}; idle ${JSON.stringify(out.idle[s.spec.id])}`);
  }
  await Promise.all(sessions.map((s) => s.stop()));
  return out;
}

// ------------------------------------------------------------------ report

function perHour(n: number, seconds: number): string {
  return fmt((n * 3600) / seconds);
}

function report(
  env: Record<string, string>,
  lag: LagRun[],
  tput: ThroughputRun[],
  restore: RestoreResult | null,
  requests: RequestCounts | null,
): string {
  const parts: string[] = [];
  parts.push(
    `# Continuous archiving${S3 ? " to S3 (radosgw)" : ""}: Lifeboat vs Litestream 0.3.13${Q ? " (QUICK VALIDATION RUN: short durations, not the published numbers)" : ""}`,
  );
  parts.push("");
  parts.push(
    `Run ${env.date} on ${env.machine}. Command: \`${env.command}\` (from /work/main). Lifeboat ${env.lifeboat} (\`apps/cli/dist/bin.js replicate DB --to ${S3 ? "s3://BUCKET/replica?endpoint=…" : "DIR"} --json\`), Litestream ${env.litestream} (\`litestream replicate -config FILE\`, ${S3 ? "s3 replica" : "file replica"}).${S3 ? ` Target: S3 on ${s3Env.gateway}, one bucket per replicator session.` : ""} Node ${env.node}, better-sqlite3 (SQLite ${env.sqlite}). Load average before / after: ${env.loadBefore} / ${env.loadAfter}. Lifeboat build benchmarked: ${env.dist}.`,
  );
  parts.push("");
  parts.push(
    "**The machine is shared and noisy** (2 cores; other builds and test suites ran during this benchmark). Every comparison below was measured side by side in the same run, with the tools alternating run by run; read the ratios and medians, not single figures.",
  );
  parts.push("");
  parts.push(method());

  if (lag.length > 0) {
    parts.push("## 1. Replication lag (writer COMMIT → transaction durable on the target)");
    parts.push("");
    const rows: (string | number)[][] = [];
    for (const rate of P.rates) {
      for (const id of [...new Set(lag.map((r) => r.spec))]) {
        const runs = lag.filter((r) => r.spec === id && r.rate === rate);
        if (runs.length === 0) continue;
        const pool = pooled.get(`${id}@${rate}`)!;
        const t = summarize(pool.target);
        rows.push([
          `${fmt(rate)} tx/s`,
          runs[0]!.label,
          fmt(t.n - t.uncovered),
          fmt(t.p50),
          fmt(t.p90),
          fmt(t.p99),
          fmt(t.max),
          runs.map((r) => fmt(r.lagTarget.p99)).join(" / "),
          fmt(median(runs.map((r) => r.txPerObject)), 1),
          fmt(Math.max(...runs.map((r) => r.writer.maxStatementMs)), 1),
          fmt(median(runs.map((r) => r.proc.cpuPercent))),
          runs.every((r) => r.restore.ok) ? "yes" : "**NO**",
        ]);
      }
    }
    parts.push(
      table(
        [
          "load",
          "replicator",
          "transactions",
          "p50 ms",
          "p90 ms",
          "p99 ms",
          "max ms",
          "p99 per run",
          "tx per WAL object",
          "writer's longest statement ms",
          "replicator CPU % of a core",
          "restore has every tx",
        ],
        rows,
      ),
    );
    parts.push("");
    if (paced.length > 0) {
      parts.push(
        "The writer's statements at these rates (each INSERT's own time, measured by the writer; medians over rounds of each run's percentile), with no replicator in runs of their own right before each rate's replicated runs:",
      );
      parts.push("");
      const latencyRows: (string | number)[][] = [];
      for (const rate of P.rates) {
        const sets: { label: string; writers: LagRun["writer"][] }[] = [
          { label: "none", writers: paced.filter((b) => b.rate === rate).map((b) => b.writer) },
          ...[...new Set(lag.map((r) => r.spec))].map((id) => ({
            label: lag.find((r) => r.spec === id)!.label,
            writers: lag.filter((r) => r.spec === id && r.rate === rate).map((r) => r.writer),
          })),
        ];
        const base = median(sets[0]!.writers.map((w) => w.p50StatementMs));
        for (const set of sets.filter((x) => x.writers.length > 0)) {
          const p50 = median(set.writers.map((w) => w.p50StatementMs));
          latencyRows.push([
            `${fmt(rate)} tx/s`,
            set.label,
            fmt(p50 * 1000),
            fmt(median(set.writers.map((w) => w.p99StatementMs)) * 1000),
            fmt(median(set.writers.map((w) => w.p999StatementMs)) * 1000),
            fmt(Math.max(...set.writers.map((w) => w.maxStatementMs)), 1),
            base > 0 ? `${fmt((p50 / base) * 100)}%` : "-",
          ]);
        }
      }
      parts.push(table(["load", "replicator", "p50 us", "p99 us", "p99.9 us", "max ms", "p50 vs none"], latencyRows));
      parts.push("");
    }
    const lb = lag.filter((r) => r.lifeboat);
    if (lb.length > 0) {
      parts.push("Lifeboat cross-checks (same runs):");
      parts.push("");
      parts.push(
        table(
          [
            "load",
            "lag from `shipped` events p50 / p99 ms",
            "event time − object first seen (median, min..max ms)",
            "object first seen − file mtime (median, max ms)",
            "segments whose marker ≠ header lastTxn",
            "detect (commit→observed) p50 / p99",
            "encode+compress+spool fsync p50 / p99",
            "upload (put, fsync, rename) p50 / p99",
            "checkpoints (longest writeLockMs)",
            "generations",
          ],
          lb.map((r) => [
            `${fmt(r.rate)} tx/s r${r.round}`,
            `${fmt(r.lagEvents!.p50)} / ${fmt(r.lagEvents!.p99)}`,
            `${fmt(r.lifeboat!.eventMinusSeenMs.median, 1)} (${fmt(r.lifeboat!.eventMinusSeenMs.min)}..${fmt(r.lifeboat!.eventMinusSeenMs.max)})`,
            `${fmt(r.lifeboat!.seenMinusMtimeMs.median, 1)}, ${fmt(r.lifeboat!.seenMinusMtimeMs.max)}`,
            r.lifeboat!.markerMismatches,
            `${fmt(r.lifeboat!.phases.detectP50)} / ${fmt(r.lifeboat!.phases.detectP99)}`,
            `${fmt(r.lifeboat!.phases.spoolP50)} / ${fmt(r.lifeboat!.phases.spoolP99)}`,
            `${fmt(r.lifeboat!.phases.uploadP50)} / ${fmt(r.lifeboat!.phases.uploadP99)}`,
            `${r.lifeboat!.checkpoints}, ${r.lifeboat!.lockedCheckpoints} locked (${fmt(r.lifeboat!.maxWriteLockMs, 1)})`,
            r.lifeboat!.generations,
          ]),
        ),
      );
      parts.push("");
    }
  }

  if (tput.length > 0) {
    parts.push(`## 2. Writer overhead (as many transactions as possible for ${P.throughputSeconds} s)`);
    parts.push("");
    /** A run's tx/s over the mean of the unreplicated runs of its setting right before and after it. */
    const bracketed = (run: (typeof tput)[number]): number => {
      const at = tput.indexOf(run);
      const same = (r: (typeof tput)[number]) => r.spec === "none" && r.synchronous === run.synchronous;
      const before = tput.slice(0, at).findLast(same);
      const after = tput.slice(at + 1).find(same);
      const bases = [before, after].filter((r) => r !== undefined).map((r) => r.txPerSec);
      return bases.length ? run.txPerSec / (bases.reduce((a, b) => a + b, 0) / bases.length) : Number.NaN;
    };
    const rows: (string | number)[][] = [];
    for (const sync of ["NORMAL", "FULL"] as const) {
      const none = median(tput.filter((r) => r.spec === "none" && r.synchronous === sync).map((r) => r.txPerSec));
      for (const id of ["none", "lifeboat", "litestream"]) {
        const runs = tput.filter((r) => r.spec === id && r.synchronous === sync);
        if (runs.length === 0) continue;
        const med = median(runs.map((r) => r.txPerSec));
        rows.push([
          `synchronous=${sync}`,
          id === "none" ? "no replication" : id === "lifeboat" ? LIFEBOAT.label : LITESTREAM_DEFAULT.label,
          fmt(med),
          runs.map((r) => fmt(r.txPerSec)).join(" / "),
          `${fmt((100 * med) / none, 1)}%`,
          id === "none"
            ? "-"
            : `${fmt(
                100 *
                  median(
                    runs.map((r) => {
                      const base = tput.find((b) => b.spec === "none" && b.synchronous === sync && b.round === r.round);
                      return base ? r.txPerSec / base.txPerSec : Number.NaN;
                    }),
                  ),
                1,
              )}%`,
          id === "none" ? "-" : `${fmt(100 * median(runs.map((r) => bracketed(r))), 1)}%`,
          fmt(Math.max(...runs.map((r) => r.maxStatementMs)), 1),
          fmt(median(runs.map((r) => r.p99StatementMs)), 2),
          id === "none"
            ? "-"
            : runs.map((r) => (r.catchUpMs === undefined ? "never" : fmt(r.catchUpMs / 1000, 1))).join(" / "),
          id === "none" ? "-" : `${fmt(Math.max(...runs.map((r) => r.proc?.hwmMB ?? 0)), 1)} MB`,
          id === "none" ? "-" : fmt(median(runs.map((r) => r.proc?.cpuPercent ?? 0))),
          id === "lifeboat" ? runs.map((r) => `${r.generations} (${r.lockedCheckpoints} locked)`).join(" / ") : "-",
          id === "none" ? "-" : runs.every((r) => r.restore?.ok) ? "yes" : "**NO**",
        ]);
      }
    }
    parts.push(
      table(
        [
          "writer",
          "replicator",
          "median tx/s",
          "per run",
          "% of unreplicated (medians)",
          "median of per-round ratios",
          "median of bracketed ratios",
          "longest statement ms",
          "p99 statement ms",
          "target caught up s after writer stopped",
          "replicator peak RSS",
          "replicator CPU % of a core",
          "Lifeboat generations per run",
          "restore has every tx",
        ],
        rows,
      ),
    );
    parts.push("");
    const lbRuns = tput.filter((r) => r.spec === "lifeboat");
    const lagLock = lag.filter((r) => r.lifeboat).map((r) => r.lifeboat!.maxWriteLockMs);
    parts.push(
      `Lifeboat's longest write-lock stall (max \`writeLockMs\` of its checkpoint events): ${fmt(Math.max(...lbRuns.map((r) => r.maxWriteLockMs ?? 0)), 1)} ms in the max-throughput runs (${lbRuns.map((r) => `${r.checkpoints} checkpoints, ${r.lockedCheckpoints} locked`).join("; ")})${lagLock.length ? `, ${fmt(Math.max(...lagLock), 1)} ms in the lag runs` : ""}${restore?.load.lifeboat?.maxWriteLockMs !== undefined ? `, ${fmt(restore.load.lifeboat.maxWriteLockMs, 1)} ms while writing ${fmt(P.restoreTxns)} transactions into the ${P.fixtureMB} MB database` : ""}.`,
    );
    parts.push("");
  }

  if (restore) {
    parts.push(`## 3. Restore after ${fmt(restore.transactions)} transactions on a ${restore.fixtureMB} MB database`);
    parts.push("");
    const litestreamMedian = median(restore.timings["litestream restore (latest)"] ?? []);
    parts.push(
      table(
        ["command", "median s", "per run s", "vs Litestream", "check"],
        Object.entries(restore.timings).map(([name, ms]) => [
          name,
          fmt(median(ms) / 1000, 2),
          ms.map((m) => fmt(m / 1000, 2)).join(" / "),
          `${fmt(median(ms) / litestreamMedian, 2)}×`,
          `${restore.checks[name]?.ok ? "ok" : "**FAILED**"}: ${restore.checks[name]?.detail ?? ""}`,
        ]),
      ),
    );
    parts.push("");
    parts.push(
      table(
        [
          "replicator",
          "generations",
          "writer tx/s during load",
          "on target s after writer stopped",
          "snapshot object MB",
          "target total MB",
          "objects",
          "replicator peak RSS",
        ],
        Object.entries(restore.load).map(([id, l]) => [
          id,
          l.generations,
          fmt(l.txPerSec),
          fmt((l.catchUpMs ?? Number.NaN) / 1000, 1),
          fmt(l.snapshotMB, 1),
          fmt(l.targetMB, 1),
          l.objects,
          `${fmt(l.proc.hwmMB, 1)} MB`,
        ]),
      ),
    );
    parts.push("");
  }

  if (requests) {
    parts.push("## 4. Storage requests per hour (writes and deletes on the target)");
    parts.push("");
    const rows: (string | number)[][] = [];
    for (const [phase, data] of [
      [`${P.busyRate} tx/s`, requests.busy],
      ["idle", requests.idle],
    ] as const) {
      for (const [id, c] of Object.entries(data)) {
        rows.push([
          phase,
          id,
          `${c.puts} puts, ${c.deletes} deletes in ${fmt(c.seconds)} s`,
          perHour(c.puts, c.seconds),
          perHour(c.deletes, c.seconds),
          Object.entries(c.byKind)
            .map(([k, v]) => `${k}: ${v}`)
            .join(", ") || "none",
        ]);
      }
    }
    parts.push(table(["phase", "replicator", "counted", "puts / hour", "deletes / hour", "by kind"], rows));
    parts.push("");
  }

  if (lag.length > 0) {
    parts.push("## 5. Replicator memory under the 1,000 tx/s load");
    parts.push("");
    parts.push(
      table(
        ["replicator", "peak RSS (VmHWM) per run", "peak sampled VmRSS", "CPU % of a core (median)"],
        [...new Set(lag.map((r) => r.spec))].map((id) => {
          const runs = lag.filter((r) => r.spec === id && r.rate === 1000);
          return [
            runs[0]?.label ?? id,
            runs.map((r) => `${fmt(r.proc.hwmMB, 1)} MB`).join(" / "),
            `${fmt(Math.max(...runs.map((r) => r.proc.peakRssMB)), 1)} MB`,
            fmt(median(runs.map((r) => r.proc.cpuPercent))),
          ];
        }),
      ),
    );
    parts.push("");
  }
  return parts.join("\n");
}

function method(): string {
  const local = localMethod();
  if (!S3) return local;
  // The S3 leg differs only in the target: rewrite the parts of the text that name the directory.
  const edits: [string, string][] = [
    ["Each run uses a fresh database and target directory;", "Each run uses a fresh database and a fresh bucket;"],
    [
      "Both tools write each object to a temp file, fsync it and rename it into place, so an object is durable when it appears under its final name. The bench watches the whole target tree with inotify (`fs.watch` per directory, added as directories appear, plus a scan of each new directory) and records when each object first appears.",
      `Every replicator session gets its own bucket on one radosgw (${s3Env.gateway}; a single-node Ceph cluster with an in-memory object store, on 127.0.0.1, started by \`startS3Server\` from @lifeboat/testkit). ${args["rgw-nagle"] ? "The gateway runs with radosgw's default, Nagle's algorithm on: each response with a body (ListObjectsV2, GetObject) then waits ~40 ms for the client's delayed ACK, for the bench's poller and for both tools' restores alike." : "The gateway's beast frontend runs with `tcp_nodelay=1`: with radosgw's default (Nagle on) each response with a body (ListObjectsV2, GetObject) waits ~40 ms for the client's delayed ACK (measured on this machine: list 48 ms, get 45 ms, put 4 ms; with tcp_nodelay: 3, 2, 3 ms), which would swamp a 20 ms poll and inflate both tools' restores (`--rgw-nagle` keeps the default)."} Lifeboat writes through its built-in s3 target (\`--to s3://BUCKET/replica?endpoint=…&region=…&pathStyle=true&accessKeyIdEnv=…&secretAccessKeyEnv=…\`), Litestream through an \`s3\` replica (\`bucket\`, \`path: replica\`, \`endpoint\`, \`region\`, \`force-path-style: true\`, \`access-key-id\`, \`secret-access-key\`). An object appears in a listing only once its upload (PutObject, or CompleteMultipartUpload for a large snapshot) has completed. The bench polls each bucket with ListObjectsV2 (Lifeboat's S3 target's \`list\`, run in the bench process), GETs every new object in full into a local mirror, and records for each object the time the listing that first showed it returned; an object counts only once its GET succeeded, so "durable on the target" = listable and readable. One loop lists the whole bucket once a second (new, changed and deleted keys; the next listing starts 1 s after the previous one returned); beside it, another lists every 20 ms (after the previous listing returned) only each WAL directory (keys under \`…/wal/\`) after the newest key seen there (\`StartAfter\`): both tools name WAL objects so that newer ones sort later, so these listings see every new WAL object and cost the same however many objects the bucket already holds. (Until session 6 every poll listed the whole bucket, and Lifeboat's buckets, with 10 to 50 times as many WAL objects, took longer to list: round trip p50 28 ms vs 7 ms for Litestream's in session 4, which made Lifeboat's objects appear about 50 ms late.) Per WAL object: it is recorded between part of a listing round trip and one whole poll period (20 ms sleep + one WAL-directory listing round trip) after its upload completed, about half a period on average (${pollNote()}); Lifeboat's cross-check below (its \`shipped\` event time − first seen) measures this delay directly for its objects. The poller also uses CPU on the same 2 cores as the replicators and the writer.`,
    ],
    [
      "(stamped after the target's put resolved: fsynced, renamed, directory fsynced)",
      "(stamped after the target's PutObject resolved)",
    ],
    [
      "Event time − first-seen time and first-seen − file mtime show the watcher's view agrees to a few ms.",
      "Event time − first-seen time is what the polling adds to Lifeboat's own figure (negative: the listing came first); first-seen − mtime is listing time − the object's S3 LastModified (the mirror file's mtime is set to it; a server-side stamp whose moment within the upload S3 does not specify, so it is only a rough check).",
    ],
    [
      "(`lifeboat restore DB --to DIR --output X --yes`, `litestream restore -config F -o X DB`)",
      "(`lifeboat restore DB --to s3://BUCKET/replica?… --output X --yes`, `litestream restore -config F -o X DB` with the s3 replica in F)",
    ],
    ["page cache warm for both)", "objects served by the radosgw's in-memory store over loopback)"],
    [
      "writes (a new object, or an object whose inode/size/mtime changed) and deletes seen by the inotify watcher",
      "writes (a new key, or a key whose ETag/size/LastModified changed between two listings: overwrites within one poll period count once) and deletes (a key no longer listed) seen by the poller",
    ],
    [
      "Reads (GET/HEAD/LIST) are not visible on a file system and are not counted; from the code, each Lifeboat lease renewal is a GET + PUT, and Litestream's file replica lists directories on start-up and on retention checks.",
      "Reads (GET/HEAD/LIST) are not visible to the poller and are not counted; from the code, each Lifeboat lease renewal is a GET + PUT.",
    ],
  ];
  let text = local;
  for (const [from, to] of edits) {
    if (!text.includes(from)) throw new Error(`method text changed; cannot adapt it for S3: ${from.slice(0, 60)}…`);
    text = text.replace(from, to);
  }
  return text;
}

/** Poll statistics per tool for the JSON (no raw samples). */
function pollSummary(): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const tool of ["lifeboat", "litestream"]) {
    const all = pollStats.filter((p) => p.tool === tool).map((p) => p.stats);
    const list = all.flatMap((p) => p.listMs);
    const incremental = all.flatMap((p) => p.incrementalMs);
    const fetch = all.flatMap((p) => p.fetchMs);
    out[tool] = {
      sessions: all.length,
      polls: all.reduce((n, p) => n + p.polls, 0),
      listP50: percentile(list, 50),
      listP99: percentile(list, 99),
      incrementalListings: incremental.length,
      incrementalP50: percentile(incremental, 50),
      incrementalP99: percentile(incremental, 99),
      fetches: fetch.length,
      fetchP50: percentile(fetch, 50),
      fetchP99: percentile(fetch, 99),
      errors: all.flatMap((p) => p.errors),
    };
  }
  return out;
}

/** What the S3 poller saw: listing round trips and object fetches, per tool. */
function pollNote(): string {
  if (pollStats.length === 0) return "no polls recorded";
  return ["lifeboat", "litestream"]
    .map((tool) => {
      const all = pollStats.filter((p) => p.tool === tool).map((p) => p.stats);
      if (all.length === 0) return "";
      const list = all.flatMap((p) => p.listMs);
      const incremental = all.flatMap((p) => p.incrementalMs);
      const fetch = all.flatMap((p) => p.fetchMs);
      const errors = all.flatMap((p) => p.errors);
      return `${tool === "lifeboat" ? "Lifeboat" : "Litestream"} buckets: ${fmt(all.reduce((n, p) => n + p.polls, 0))} polls; ${fmt(list.length)} full listings, round trip p50 ${fmt(percentile(list, 50), 1)} ms, p99 ${fmt(percentile(list, 99), 1)} ms; ${fmt(incremental.length)} WAL-directory listings, p50 ${fmt(percentile(incremental, 50), 1)} ms, p99 ${fmt(percentile(incremental, 99), 1)} ms; ${fmt(fetch.length)} GETs, p50 ${fmt(percentile(fetch, 50), 1)} ms, p99 ${fmt(percentile(fetch, 99), 1)} ms; ${errors.length} poll errors${errors.length ? ` (first: ${errors[0]})` : ""}`;
    })
    .filter(Boolean)
    .join("; ");
}

function localMethod(): string {
  return `## Method

- **Workload.** A writer in its own Node process (better-sqlite3, WAL mode, \`synchronous=${P.synchronous}\` unless a row says otherwise, default \`wal_autocheckpoint\`, \`busy_timeout\` 10 s) runs autocommit \`INSERT INTO bench_seq (seq, written_at, marker)\` statements; row *k* has \`seq = k\` and the text \`SEQ:<k, 10 digits>;\`. It records \`Date.now()\` right after each COMMIT returns. Paced runs sleep with \`Atomics.wait\` until transaction *k*'s due time (open loop: a stall is followed by a catch-up burst). Each run uses a fresh database and target directory; the writer starts only after the replicator has finished its start-up snapshot (Lifeboat: its \`snapshot\` event; Litestream: its "snapshot written" and first "wal segment written" log lines), and nothing else writes to the database except Litestream itself (its \`_litestream_seq\` bookkeeping).
- **"Durable on the target".** Both tools write each object to a temp file, fsync it and rename it into place, so an object is durable when it appears under its final name. The bench watches the whole target tree with inotify (\`fs.watch\` per directory, added as directories appear, plus a scan of each new directory) and records when each object first appears. After the run it decodes every WAL object (Lifeboat: \`.seg\` = JSON header + zstd body (gzip before session 4); Litestream: \`.wal.lz4\` = LZ4 frames of raw WAL frames, decoded by a small built-in LZ4 decoder checked against the \`lz4\` CLI) and takes the highest \`SEQ:\` marker in its page images. That is exactly the last writer transaction the object holds: a page image with row *k* exists only after transaction *k* committed, both tools ship only committed frames, and the page written by transaction *k* contains row *k*. The lag of transaction *k* = (first time an object holding a marker ≥ *k* appeared) − (its commit time). Both tools are measured by this same method. All processes read the same clock.
- **Lifeboat cross-checks.** Lifeboat's \`shipped\` events (\`lastTxn\` is generation-relative; with the snapshot at transaction 0 and only the writer writing, transaction *k* is writer row *k*, verified per segment: marker = header \`lastTxn\`) give a second lag figure from the event's \`time\` (stamped after the target's put resolved: fsynced, renamed, directory fsynced). Event time − first-seen time and first-seen − file mtime show the watcher's view agrees to a few ms. Each segment header's per-transaction \`observedAt\` and the \`spooled\`/\`shipped\` event times split Lifeboat's lag into detection (commit → observed), encode + compress + spool fsync, and upload.
- **Correctness.** After each run the replicator is stopped (SIGTERM) and the target is restored with the tool's own command (\`lifeboat restore DB --to DIR --output X --yes\`, \`litestream restore -config F -o X DB\`); the restored \`bench_seq\` must have exactly the writer's rows and max(seq). In the restore test every table's row count and the whole database's content hash (\`databaseContentHash\` from @lifeboat/testkit) must equal the source's.
- **Writer overhead.** The same writer with \`rate = 0\` for ${P.throughputSeconds} s: no replication, Lifeboat, Litestream (defaults), ${P.throughputRounds} rounds, each replicated run between two unreplicated ones of the same setting (one more unreplicated run per setting closes the last round; "bracketed ratio" = a run's tx/s over the mean of those two, which cancels the machine's drift within a round), both \`synchronous=NORMAL\` (what Litestream's docs recommend; CPU-bound, ~1 page per transaction) and \`FULL\` (SQLite's default; fsync per commit). "Caught up" is when the last transaction was durable on the target. "Longest statement" is measured by the writer itself (any stall a replicator causes shows there, whatever the replicator reports); Lifeboat's own \`writeLockMs\` is reported next to it.
- **Restore.** \`createFixtureDatabase({ sizeMB: ${P.fixtureMB}, seed: 1, journalMode: "wal" })\` plus the \`bench_seq\` table, copied for each tool; replication started (snapshot), ${fmt(P.restoreTxns)} writer transactions as fast as possible, wait until on the target, stop. Then each restore command is timed as a whole process (spawn to exit, ${P.restoreRepeats} repeats interleaved, page cache warm for both): Lifeboat latest, Lifeboat \`--to-txn ${P.restoreTxns}\` (writer row *k* = transaction *k*), Litestream latest (its default \`-parallelism 8\`). Lifeboat restores run its default \`--integrity quick\` check before the rename; Litestream's restore runs no integrity check.
- **Storage requests.** Both tools at once, each on its own database and target: writes (a new object, or an object whose inode/size/mtime changed) and deletes seen by the inotify watcher over ${P.busySeconds} s at ${P.busyRate} tx/s, then (after 5 s for the tail) over ${P.idleSeconds} s idle; × 3600 / window. Reads (GET/HEAD/LIST) are not visible on a file system and are not counted; from the code, each Lifeboat lease renewal is a GET + PUT, and Litestream's file replica lists directories on start-up and on retention checks.
- **Memory/CPU.** The replicator process's VmRSS is sampled every 100 ms from /proc/PID/status and VmHWM read just before stopping it; CPU = utime + stime over the sampled window. Lifeboat's process is \`apps/cli/dist/bin.js\` run as a user runs \`lifeboat\` (through its shebang, \`env -S node --max-semi-space-size=4\`; \`env\` execs node, so the pid is the replicator's); Litestream's is the Go binary (not the npm \`.bin\` wrapper).
`;
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  const Database = (await import("better-sqlite3")).default;
  const mem = new Database(":memory:");
  const sqlite = String(mem.prepare("select sqlite_version()").pluck().get());
  mem.close();
  const lsVersion = (await timeCommand(LITESTREAM, ["version"], work)).out.trim();
  const lbPkg = JSON.parse(readFileSync(join(MAIN, "apps/cli/package.json"), "utf8")) as { version: string };
  const env: Record<string, string> = {
    date: new Date().toISOString(),
    machine: `${cpus().length} × ${cpus()[0]?.model ?? "cpu"}`,
    command: `node --import tsx bench/replication.ts${process.argv.slice(2).length ? ` ${process.argv.slice(2).join(" ")}` : ""}`,
    lifeboat: lbPkg.version,
    litestream: lsVersion,
    node: process.version,
    sqlite,
    loadBefore: loadavg()
      .map((l) => l.toFixed(2))
      .join(" "),
    loadAfter: "",
    dist: [
      "packages/wal/dist/replicator.js",
      "packages/wal/dist/point-in-time.js",
      "packages/wal/dist/segment-format.js",
    ]
      .map((f) => {
        const full = join(MAIN, f);
        const hash = createHash("sha256").update(readFileSync(full)).digest("hex").slice(0, 12);
        return `${f.split("/").pop()} ${statSync(full).mtime.toISOString().slice(0, 19)}Z sha256:${hash}`;
      })
      .join(", "),
  };
  log(`work dir ${work}`);
  const lag: LagRun[] = [];
  const tput: ThroughputRun[] = [];
  let restore: RestoreResult | null = null;
  let requests: RequestCounts | null = null;
  let server: S3Server | undefined;
  try {
    if (S3) {
      // The endpoint is plain http on loopback: no CA bundle is needed, and Go's AWS SDK (Litestream)
      // refuses a custom bundle with its own transport. Both tools run with the same environment.
      delete process.env.AWS_CA_BUNDLE;
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = "true";
      log("starting radosgw");
      server = await startGateway(!args["rgw-nagle"]);
      remote = new S3Remote(server);
      const version = (await timeCommand("radosgw", ["--version"], work)).out.trim();
      s3Env.gateway = `radosgw ${/ceph version (\S+)/.exec(version)?.[1] ?? version} at ${server.endpoint}, beast frontend ${args["rgw-nagle"] ? "with its default Nagle's algorithm (no tcp_nodelay)" : "with tcp_nodelay=1"}`;
      env.target = s3Env.gateway;
      log(`  ${s3Env.gateway}`);
    }
    if (only.has("lag")) {
      for (let round = 1; round <= P.lagRounds; round++) {
        for (const rate of P.rates) {
          log(`lag: no replicator at ${rate} tx/s (the writer's baseline), round ${round}`);
          paced.push(await pacedBaseline(rate, round));
          for (const spec of [
            LIFEBOAT,
            LIFEBOAT_BATCHED,
            LITESTREAM_DEFAULT,
            LITESTREAM_SYNC100,
            LITESTREAM_FAST,
          ].filter((s) => !args.replicators || args.replicators.split(",").includes(s.id))) {
            log(`lag: ${spec.id} at ${rate} tx/s, round ${round}`);
            lag.push(await lagRun(spec, rate, round));
            rmSync(runDir(`lag-${spec.id}-${rate}-r${round}`), { recursive: true, force: true });
          }
        }
      }
    }
    if (only.has("throughput")) {
      // Each replicated run sits between two unreplicated ones of the same setting (bracketed):
      // the machine's speed drifts within a round, so its ratio uses the mean of both.
      for (let round = 1; round <= P.throughputRounds; round++) {
        for (const sync of ["NORMAL", "FULL"] as const) {
          for (const spec of [null, LIFEBOAT, null, LITESTREAM_DEFAULT]) {
            log(`throughput: ${spec?.id ?? "none"} ${sync}, round ${round}`);
            tput.push(await throughputRun(spec, sync, round));
          }
        }
      }
      for (const sync of ["NORMAL", "FULL"] as const) {
        log(`throughput: none ${sync}, closing bracket`);
        tput.push(await throughputRun(null, sync, P.throughputRounds + 1));
      }
    }
    if (only.has("restore")) {
      log("restore");
      restore = await restoreScenario();
    }
    if (only.has("requests")) {
      log("requests");
      requests = await requestsScenario();
    }
  } finally {
    await server?.stop();
    env.loadAfter = loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
    mkdirSync(dirname(outFile), { recursive: true });
    writeFileSync(
      outFile.replace(/\.md$/, ".json"),
      `${JSON.stringify({ env, params: P, target: args.target, lag, paced, tput, restore, requests, ...(S3 ? { polls: pollSummary() } : {}) }, null, 2)}\n`,
    );
    writeFileSync(outFile, `${report(env, lag, tput, restore, requests)}\n`);
    log(`wrote ${outFile}`);
    if (!args.keep) rmSync(work, { recursive: true, force: true });
    else log(`kept ${work}`);
  }
}

await main();
