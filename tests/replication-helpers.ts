/**
 * Helpers for the end-to-end replication tests: the built `lifeboat replicate` as a real process
 * (its `--json` events parsed as they arrive), restores as real CLI processes (run a few at a
 * time), the list of states a writer process committed, the segment headers on a local target,
 * and tmpfs mounts for outages and read-only file systems.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  writeFileSync,
} from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { databaseContentHash, type WriterRecord } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { BIN } from "./helpers.js";

const require = createRequire(import.meta.url);
export const BETTER_SQLITE3 = require.resolve("better-sqlite3");

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** One line of `lifeboat replicate --json`. */
export interface ReplicatorJsonEvent {
  readonly time: string;
  readonly type:
    | "generation"
    | "snapshot"
    | "spooled"
    | "shipped"
    | "checkpoint"
    | "target-error"
    | "target-recovered"
    | "error"
    // the CLI's own: archiving started; a database it waits for; archiving of it started later
    | "started"
    | "waiting"
    | "archiving";
  readonly database: string;
  readonly generation?: string;
  readonly reason?: string;
  readonly position?: number;
  readonly firstTxn?: number;
  readonly lastTxn?: number;
  readonly target?: string;
  readonly targets?: string[];
  readonly error?: { code: string; message: string; hint?: string; details?: unknown };
  readonly [key: string]: unknown;
}

export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running `lifeboat replicate` process. */
export interface ReplicatorProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /** Every JSON event so far (a live array). */
  readonly events: ReplicatorJsonEvent[];
  /** stdout lines that were not JSON events (e.g. the pretty-printed error of a failed start). */
  readonly stdout: () => string;
  readonly stderr: () => string;
  readonly exited: Promise<ProcessExit>;
  /** The exit, once the process has ended (undefined while it runs). */
  exit(): ProcessExit | undefined;
  /** Resolves with the first event (from the start) matching `predicate`; rejects on exit or timeout. */
  waitFor(
    predicate: (e: ReplicatorJsonEvent) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<ReplicatorJsonEvent>;
  /** Sends `signal` and waits for the exit. */
  kill(signal?: NodeJS.Signals): Promise<ProcessExit>;
}

/** Starts `lifeboat replicate ...args --json`. */
export function startReplicator(args: readonly string[], options: { cwd?: string } = {}): ReplicatorProcess {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build first (pnpm build).`);
  const child = spawn(process.execPath, [BIN, "replicate", ...args, "--json"], {
    cwd: options.cwd,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const events: ReplicatorJsonEvent[] = [];
  let other = "";
  let stderr = "";
  let pending = "";
  let exit: ProcessExit | undefined;
  let waiters: (() => void)[] = [];
  const notify = () => {
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  child.stdout!.setEncoding("utf8");
  child.stdout!.on("data", (data: string) => {
    pending += data;
    for (let nl = pending.indexOf("\n"); nl >= 0; nl = pending.indexOf("\n")) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      try {
        const value = JSON.parse(line) as ReplicatorJsonEvent;
        if (value && typeof value === "object" && typeof value.type === "string") {
          events.push(value);
          continue;
        }
      } catch {
        // not an event line
      }
      other += `${line}\n`;
    }
    notify();
  });
  child.stderr!.setEncoding("utf8");
  child.stderr!.on("data", (data: string) => {
    stderr += data;
  });
  const exited = new Promise<ProcessExit>((resolve) => {
    child.on("close", (code, signal) => {
      other += pending;
      exit = { code, signal };
      notify();
      resolve(exit);
    });
  });
  const describe = () =>
    `replicator pid ${child.pid} (${exit ? `exited ${exit.code ?? exit.signal}` : "running"})\nstderr:\n${stderr}\nother stdout:\n${other}\nlast events:\n${events
      .slice(-8)
      .map((e) => JSON.stringify(e))
      .join("\n")}`;
  return {
    pid: child.pid ?? -1,
    child,
    events,
    stdout: () => other,
    stderr: () => stderr,
    exited,
    exit: () => exit,
    async waitFor(predicate, what, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = events.find(predicate);
        if (found) return found;
        if (exit) throw new Error(`waiting for ${what}: ${describe()}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${describe()}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(left, 250));
          waiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
    },
    async kill(signal = "SIGKILL") {
      if (!exit) child.kill(signal);
      return exited;
    },
  };
}

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `lifeboat ...args` asynchronously (so several can run at once). */
export function runCli(args: readonly string[], options: { cwd?: string; timeoutMs?: number } = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding("utf8").on("data", (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 120_000);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr });
    });
  });
}

/** Runs `tasks` with at most `limit` running at once; results in input order. */
export async function inParallel<T>(tasks: readonly (() => Promise<T>)[], limit: number): Promise<T[]> {
  const results: T[] = new Array(tasks.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < tasks.length; i = next++) results[i] = await tasks[i]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
  return results;
}

export interface RestorePoint {
  readonly toTime?: number;
  readonly toTxn?: number;
  readonly generation?: string;
}

export interface RestoreOutcome {
  readonly run: CliRun;
  readonly ok: boolean;
  /** The `restore` object of the JSON result (txn, generation, restoredTo, ...). */
  readonly result: { txn: number; generation: string; restoredTo: string; snapshotPosition: number } | undefined;
  readonly hash: string | undefined;
  /** Highest `wl_log.txn` in the restored file (0: none). */
  readonly writerTxn: number | undefined;
  readonly output: string;
}

/** `lifeboat restore <db> --to <target> --output <output> [--to-time|--to-txn|--generation] --json`. */
export async function restoreWithCli(
  db: string,
  target: string,
  output: string,
  point: RestorePoint = {},
): Promise<RestoreOutcome> {
  const args = ["restore", db, "--to", target, "--output", output, "--yes", "--json"];
  if (point.toTime !== undefined) args.push("--to-time", new Date(point.toTime).toISOString());
  if (point.toTxn !== undefined) args.push("--to-txn", String(point.toTxn));
  if (point.generation !== undefined) args.push("--generation", point.generation);
  const run = await runCli(args);
  let parsed: { ok?: boolean; restore?: RestoreOutcome["result"] } | undefined;
  try {
    parsed = JSON.parse(run.stdout);
  } catch {
    parsed = undefined;
  }
  const ok = run.code === 0 && parsed?.ok === true && existsSync(output);
  return {
    run,
    ok,
    result: parsed?.restore,
    hash: ok ? databaseContentHash(output) : undefined,
    writerTxn: ok ? maxWriterTxn(output) : undefined,
    output,
  };
}

/** Highest transaction number the workload wrote into `wl_log` (0 when it has none yet). */
export function maxWriterTxn(path: string): number {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE name = 'wl_log'").get();
    if (!exists) return 0;
    return Number(db.prepare("SELECT coalesce(max(txn), 0) FROM wl_log").pluck().get());
  } finally {
    db.close();
  }
}

/** A committed state of the database, in commit order. */
export interface CommitState {
  readonly hash: string;
  /** Writer transaction whose commit produced it (0: the state before the writer started). */
  readonly writerTxn: number;
  /** Upper bound of the commit time: the writer's clock right after it (after the VACUUM for "vacuum"). */
  readonly t: number;
  /** Lower bound of the commit time: the writer's clock after the previous commit. */
  readonly after: number;
  /** "delete" and "vacuum": the two commits of a "vacuum" step (equal content). */
  readonly part: "initial" | "commit" | "delete" | "vacuum";
}

/**
 * Every SQLite commit the writer made, in order: one per record, two for "vacuum" records (a
 * delete commit, then the VACUUM commit: same content). Index 0 is the state before the writer.
 */
export function commitStates(initialHash: string, records: readonly WriterRecord[]): CommitState[] {
  const states: CommitState[] = [
    { hash: initialHash, writerTxn: 0, t: Number.NEGATIVE_INFINITY, after: Number.NEGATIVE_INFINITY, part: "initial" },
  ];
  let previous = Number.NEGATIVE_INFINITY;
  for (const r of records) {
    if (r.hash === undefined) throw new Error(`writer record ${r.txn} has no hash: start the writer with hash: true`);
    if (r.kind === "vacuum") {
      states.push({ hash: r.hash, writerTxn: r.txn, t: r.t, after: previous, part: "delete" });
      states.push({ hash: r.hash, writerTxn: r.txn, t: r.t, after: previous, part: "vacuum" });
    } else {
      states.push({ hash: r.hash, writerTxn: r.txn, t: r.t, after: previous, part: "commit" });
    }
    previous = r.t;
  }
  return states;
}

/**
 * Where transaction 0 of a generation sits in `states`: the indexes p with states[p] equal to the
 * state at --to-txn 0 and states[p + 1] to the one at --to-txn 1 (when given).
 */
export function alignments(states: readonly CommitState[], atTxn0: string, atTxn1?: string): number[] {
  const out: number[] = [];
  states.forEach((s, p) => {
    if (s.hash !== atTxn0) return;
    if (atTxn1 !== undefined && states[p + 1]?.hash !== atTxn1) return;
    out.push(p);
  });
  return out;
}

/** A transaction in a segment header: its number and the time the replicator observed it. */
export interface SegmentTxn {
  readonly txn: number;
  readonly observedAt: number;
  readonly commitSize: number;
}

export interface StoredSegment {
  readonly key: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
  readonly transactions: readonly SegmentTxn[];
}

/**
 * The segments of one generation on a local target, read the way a third party would: the key
 * names `<first>-<last>-<observed>.seg`, the file starts with "LBWALSEG", u32 version, u32 header
 * length, then the JSON header listing every transaction.
 */
export function storedSegments(targetDir: string, database: string, generation: string): StoredSegment[] {
  const dir = join(targetDir, database, "generations", generation, "wal");
  if (!existsSync(dir)) return [];
  const out: StoredSegment[] = [];
  for (const name of readdirSync(dir)) {
    if (!/^[0-9a-f]{16}-[0-9a-f]{16}-[0-9a-f]{12}\.seg$/.test(name)) continue;
    const file = join(dir, name);
    const fd = openSync(file, "r");
    try {
      const prefix = Buffer.alloc(16);
      readSync(fd, prefix, 0, 16, 0);
      if (prefix.subarray(0, 8).toString("latin1") !== "LBWALSEG") throw new Error(`${file}: not a segment`);
      const length = prefix.readUInt32BE(12);
      const json = Buffer.alloc(length);
      readSync(fd, json, 0, length, 16);
      const header = JSON.parse(json.toString("utf8")) as {
        firstTxn: number;
        lastTxn: number;
        transactions: SegmentTxn[];
      };
      out.push({ key: name, firstTxn: header.firstTxn, lastTxn: header.lastTxn, transactions: header.transactions });
    } finally {
      closeSync(fd);
    }
  }
  return out.sort((a, b) => a.firstTxn - b.firstTxn);
}

/** Generation ids on a local target (oldest first). */
export function storedGenerations(targetDir: string, database: string): string[] {
  const dir = join(targetDir, database, "generations");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((n) => /^[0-9a-f]{16}$/.test(n))
    .sort();
}

/** Transaction -> observed time over a generation's stored segments (each transaction once). */
export function observedTimes(segments: readonly StoredSegment[]): Map<number, number> {
  const times = new Map<number, number>();
  for (const s of segments) for (const t of s.transactions) if (!times.has(t.txn)) times.set(t.txn, t.observedAt);
  return times;
}

/**
 * Writes `<dir>/lifeboat.yml` for one database `path` archived to the local directory `target`,
 * with the given `replication` settings (JSON is valid YAML). Returns the config's path.
 */
export function writeConfig(
  dir: string,
  path: string,
  target: string,
  replication: Record<string, unknown> = {},
): string {
  const file = join(dir, "lifeboat.yml");
  const config = { databases: [{ path, targets: [{ type: "local", path: target }], replication }] };
  writeFileSync(file, `${JSON.stringify(config, null, 2)}\n`);
  return file;
}

/** Polls `check` until it returns a value other than undefined; throws `what` on timeout. */
export async function waitUntil<T>(
  check: () => T | undefined | Promise<T | undefined>,
  what: string,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Creates a database in WAL mode with `auto_vacuum = INCREMENTAL` (DROP TABLE then shrinks the file) and a seed table. */
export function createDatabase(path: string, options: { journalMode?: "wal" | "delete"; rows?: number } = {}): string {
  const db = new Database(path);
  try {
    db.pragma("auto_vacuum = INCREMENTAL");
    db.pragma(`journal_mode = ${options.journalMode ?? "wal"}`);
    db.exec("CREATE TABLE seed (id INTEGER PRIMARY KEY, v TEXT)");
    const insert = db.prepare("INSERT INTO seed (v) VALUES (?)");
    db.transaction(() => {
      for (let i = 0; i < (options.rows ?? 200); i++) insert.run(`seed row ${i} ${"x".repeat(i % 50)}`);
    })();
    return databaseContentHash(db);
  } finally {
    db.close();
  }
}

/** Runs a small script in a separate node process with better-sqlite3 available as `Database`. */
export function sqliteProcess(script: string, timeoutMs = 60_000): CliRun {
  const child = spawnSync(
    process.execPath,
    ["-e", `const Database = require(${JSON.stringify(BETTER_SQLITE3)});\n${script}`],
    { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: timeoutMs },
  );
  return { code: child.status ?? -1, stdout: child.stdout, stderr: child.stderr };
}

/** CPU time (user + system, ms) a process has used so far, from /proc. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15)
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/** Mounts a tmpfs for the test (unmounted afterwards); fails clearly where mounting is not allowed. */
export function tmpfs(dir: string, cleanups: (() => unknown)[]): string {
  if (!canMount(join(dir, "probe"))) throw new Error("these tests mount a tmpfs: run them as root (CAP_SYS_ADMIN)");
  const mnt = join(dir, "mnt");
  mountTmpfs(mnt);
  cleanups.push(() => unmount(mnt));
  return mnt;
}

/** Mounts a fresh tmpfs at `dir` (created if missing). Needs root. */
export function mountTmpfs(dir: string, sizeMb = 256): void {
  mkdirSync(dir, { recursive: true });
  run("mount", ["-t", "tmpfs", "-o", `size=${sizeMb}m`, "tmpfs", dir]);
}

export function remount(dir: string, mode: "ro" | "rw"): void {
  // Remounting read-only fails ("busy") while a file on it is open for writing: an upload in
  // flight at that instant. Try again briefly, as an operator would.
  for (let attempt = 1; ; attempt++) {
    const result = spawnSync("mount", ["-o", `remount,${mode}`, dir], { encoding: "utf8" });
    if (result.status === 0) return;
    if (attempt >= 40 || !/busy/.test(result.stderr)) {
      throw new Error(`mount -o remount,${mode} ${dir} failed: ${result.stderr}`);
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 25);
  }
}

export function unmount(dir: string): void {
  spawnSync("umount", ["-l", dir], { stdio: "ignore" });
}

/** True when this process may mount file systems (root with CAP_SYS_ADMIN). */
export function canMount(probeDir: string): boolean {
  mkdirSync(probeDir, { recursive: true });
  const ok = spawnSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probeDir], { stdio: "ignore" }).status === 0;
  if (ok) unmount(probeDir);
  return ok;
}

function run(command: string, args: string[]): void {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")} failed: ${result.stderr || result.error}`);
}

export interface WalSummary {
  /** Frames that validate (salts and the running checksum) from the start of the WAL. */
  readonly validFrames: number;
  /** The last valid commit frame (0: none): frames after it are not committed. */
  readonly lastCommitFrame: number;
}

/** Reads a `-wal` file the way SQLite recovers it (fileformat2.html §4): valid frames and the last commit. */
export function summarizeWal(path: string): WalSummary {
  const wal = readFileSync(path);
  if (wal.length < 32) return { validFrames: 0, lastCommitFrame: 0 };
  const magic = wal.readUInt32BE(0);
  if (magic !== 0x377f0682 && magic !== 0x377f0683) return { validFrames: 0, lastCommitFrame: 0 };
  const bigEndian = magic === 0x377f0683;
  const word = (offset: number) => (bigEndian ? wal.readUInt32BE(offset) : wal.readUInt32LE(offset));
  const pageSize = wal.readUInt32BE(8);
  const salt1 = wal.readUInt32BE(16);
  const salt2 = wal.readUInt32BE(20);
  let s0 = 0;
  let s1 = 0;
  const add = (from: number, to: number) => {
    for (let i = from; i < to; i += 8) {
      s0 = (s0 + word(i) + s1) >>> 0;
      s1 = (s1 + word(i + 4) + s0) >>> 0;
    }
  };
  add(0, 24);
  if (s0 !== wal.readUInt32BE(24) || s1 !== wal.readUInt32BE(28)) return { validFrames: 0, lastCommitFrame: 0 };
  let frame = 0;
  let lastCommitFrame = 0;
  for (let at = 32; at + 24 + pageSize <= wal.length; at += 24 + pageSize) {
    if (wal.readUInt32BE(at + 8) !== salt1 || wal.readUInt32BE(at + 12) !== salt2) break;
    add(at, at + 8);
    add(at + 24, at + 24 + pageSize);
    if (s0 !== wal.readUInt32BE(at + 16) || s1 !== wal.readUInt32BE(at + 20)) break;
    frame++;
    if (wal.readUInt32BE(at + 4) !== 0) lastCommitFrame = frame;
  }
  return { validFrames: frame, lastCommitFrame };
}

/**
 * Cleanups for one test, run in reverse order when it finishes (pass the test context's
 * `onTestFinished`): concurrent tests cannot share an afterEach list.
 */
export function cleanupList(onTestFinished: (fn: () => Promise<void>) => void): (() => unknown)[] {
  const list: (() => unknown)[] = [];
  onTestFinished(async () => {
    for (const cleanup of list.splice(0).reverse()) await cleanup();
  });
  return list;
}
