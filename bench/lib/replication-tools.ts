/**
 * The two replicators as child processes (Lifeboat's CLI and the Litestream 0.3.13 binary), the
 * writer process, RSS/CPU sampling from /proc, and decoding of replica files into "which writer
 * transactions does this object hold" (the highest `SEQ:` marker in its page images).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { gunzipSync, constants as zlibConstants } from "node:zlib";
import { decompress as zstdDecompress } from "zstd-napi";
import { decodeLz4Frames } from "./replication-lz4.js";
import type { WriterConfig, WriterResult } from "./replication-writer.js";

export const MAIN = fileURLToPath(new URL("../../", import.meta.url));
export const LIFEBOAT_CLI = join(MAIN, "apps/cli/dist/bin.js");
export const LITESTREAM = join(
  MAIN,
  "node_modules/.pnpm/@flydotio+litestream-linux-x64@1.0.1/node_modules/@flydotio/litestream-linux-x64/litestream",
);
const WRITER = fileURLToPath(new URL("./replication-writer.ts", import.meta.url));

export type ToolName = "lifeboat" | "litestream";

export interface LineEvent {
  /** When the bench read the line. */
  readonly receivedAt: number;
  readonly line: string;
  readonly json?: Record<string, unknown> & { type?: string; time?: string };
}

/** A long-running child whose stdout/stderr lines are kept and can be waited for. */
export class Child {
  readonly proc: ChildProcess;
  readonly lines: LineEvent[] = [];
  readonly exited: Promise<number | null>;
  #waiters: { pred: (e: LineEvent) => boolean; resolve: (e: LineEvent) => void }[] = [];

  constructor(command: string, args: string[], cwd: string) {
    this.proc = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
    this.exited = new Promise((resolve) => this.proc.on("exit", (code) => resolve(code)));
    for (const stream of [this.proc.stdout!, this.proc.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        const receivedAt = Date.now();
        let json: LineEvent["json"];
        if (line.startsWith("{")) {
          try {
            json = JSON.parse(line) as LineEvent["json"];
          } catch {
            json = undefined;
          }
        }
        const event: LineEvent = { receivedAt, line, ...(json ? { json } : {}) };
        this.lines.push(event);
        this.#waiters = this.#waiters.filter((w) => {
          if (!w.pred(event)) return true;
          w.resolve(event);
          return false;
        });
      });
    }
  }

  get pid(): number {
    return this.proc.pid!;
  }

  /** Resolves with the first line (already seen or future) matching `pred`. */
  waitFor(pred: (e: LineEvent) => boolean, timeoutMs: number, what: string): Promise<LineEvent> {
    const seen = this.lines.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n${this.tail()}`));
      }, timeoutMs);
      this.#waiters.push({
        pred,
        resolve: (e) => {
          clearTimeout(timer);
          resolve(e);
        },
      });
      void this.exited.then((code) => {
        clearTimeout(timer);
        reject(new Error(`process exited (${code}) while waiting for ${what}; last lines:\n${this.tail()}`));
      });
    });
  }

  tail(n = 15): string {
    return this.lines
      .slice(-n)
      .map((l) => l.line)
      .join("\n");
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs = 60_000): Promise<number | null> {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return this.proc.exitCode;
    this.proc.kill("SIGTERM");
    const timer = setTimeout(() => this.proc.kill("SIGKILL"), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }
}

export interface LitestreamSettings {
  /** `monitor-interval` of the db (Litestream default 1s). */
  readonly monitorInterval?: string;
  /** `sync-interval` of the replica (Litestream default 1s). */
  readonly syncInterval?: string;
}

/**
 * Writes a Litestream config for one database with one replica: a directory (`replica` is its
 * path: a file replica) or any other replica given as its YAML lines (an s3 replica, see
 * replication-s3.ts).
 */
export function writeLitestreamConfig(
  file: string,
  db: string,
  replica: string | readonly string[],
  s: LitestreamSettings = {},
): void {
  const yaml = [
    "dbs:",
    `  - path: ${db}`,
    ...(s.monitorInterval ? [`    monitor-interval: ${s.monitorInterval}`] : []),
    "    replicas:",
    ...(typeof replica === "string" ? ["      - type: file", `        path: ${replica}`] : replica),
    ...(s.syncInterval ? [`        sync-interval: ${s.syncInterval}`] : []),
    "",
  ].join("\n");
  writeFileSync(file, yaml);
}

export function startLifeboat(
  db: string,
  target: string,
  cwd: string,
  nodeArgs: string[] = [],
  extra: readonly string[] = [],
): Child {
  const args = ["replicate", db, "--to", target, "--json", ...extra];
  // As a user runs it: the bin itself, so its shebang's Node flags apply (`env` execs node, so
  // the pid sampled is the replicator's). With extra Node flags (--cpu-prof): node explicitly.
  return nodeArgs.length > 0
    ? new Child(process.execPath, [...nodeArgs, "--max-semi-space-size=4", LIFEBOAT_CLI, ...args], cwd)
    : new Child(LIFEBOAT_CLI, args, cwd);
}

export async function lifeboatReady(child: Child): Promise<void> {
  await child.waitFor((e) => e.json?.type === "snapshot", 180_000, "Lifeboat's first snapshot");
}

export function startLitestream(config: string, cwd: string): Child {
  return new Child(LITESTREAM, ["replicate", "-config", config], cwd);
}

export async function litestreamReady(child: Child): Promise<void> {
  // The generation's snapshot, then the first WAL segment (offset 0): from here on it tracks the WAL.
  await child.waitFor((e) => e.line.includes("snapshot written"), 180_000, "Litestream's snapshot");
  await child.waitFor((e) => e.line.includes("wal segment written"), 30_000, "Litestream's first WAL segment");
}

/** Event time of a Lifeboat JSON line (its `time` field: stamped in the replicator when emitted). */
export function eventTime(e: LineEvent): number {
  return e.json?.time ? Date.parse(e.json.time) : e.receivedAt;
}

// ---------------------------------------------------------------- the writer

export async function runWriter(
  config: WriterConfig,
): Promise<{ result: WriterResult; times: Float64Array; durations: Float32Array }> {
  const child = spawn(process.execPath, ["--import", "tsx", WRITER, JSON.stringify(config)], {
    cwd: MAIN,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    err += d;
  });
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`writer failed (${code}): ${err || out}`);
  const result = JSON.parse(out.trim().split("\n").at(-1)!) as WriterResult;
  const t = readFileSync(`${config.out}.times`);
  const d = readFileSync(`${config.out}.durations`);
  return {
    result,
    times: new Float64Array(t.buffer, t.byteOffset, t.byteLength / 8),
    durations: new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4),
  };
}

// ---------------------------------------------------------------- /proc sampling

export interface ProcStats {
  readonly peakRssMB: number;
  /** VmHWM read just before the process was stopped. */
  readonly hwmMB: number;
  readonly samples: number;
  /** CPU time (user+system) used over the sampled window, as % of one core. */
  readonly cpuPercent: number;
}

function readStatus(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/status`, "utf8");
    const rss = Number(/VmRSS:\s+(\d+)/.exec(text)?.[1] ?? 0) / 1024;
    const hwm = Number(/VmHWM:\s+(\d+)/.exec(text)?.[1] ?? 0) / 1024;
    return { rss, hwm };
  } catch {
    return undefined;
  }
}

function readCpuTicks(pid: number): number | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
    return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14, 15)
  } catch {
    return undefined;
  }
}

const TICKS_PER_SECOND = 100; // getconf CLK_TCK on Linux

export class ProcSampler {
  #timer: NodeJS.Timeout;
  #peak = 0;
  #samples = 0;
  readonly #startTicks: number;
  readonly #startAt = performance.now();

  constructor(
    readonly pid: number,
    everyMs = 100,
  ) {
    this.#startTicks = readCpuTicks(pid) ?? 0;
    this.#timer = setInterval(() => this.#sample(), everyMs);
    this.#sample();
  }

  #sample(): void {
    const s = readStatus(this.pid);
    if (!s) return;
    this.#samples++;
    if (s.rss > this.#peak) this.#peak = s.rss;
  }

  /** Call before the process is stopped. */
  finish(): ProcStats {
    clearInterval(this.#timer);
    this.#sample();
    const s = readStatus(this.pid);
    const ticks = (readCpuTicks(this.pid) ?? this.#startTicks) - this.#startTicks;
    const seconds = (performance.now() - this.#startAt) / 1000;
    return {
      peakRssMB: this.#peak,
      hwmMB: s?.hwm ?? 0,
      samples: this.#samples,
      cpuPercent: seconds > 0 ? (100 * ticks) / TICKS_PER_SECOND / seconds : 0,
    };
  }
}

// ---------------------------------------------------------------- what a replica file holds

const MARKER = Buffer.from("SEQ:", "latin1");

/** Highest `SEQ:nnnnnnnnnn;` marker in `bytes` (0 when none). Compares the digits as bytes: no parsing per hit. */
export function maxMarker(bytes: Buffer): number {
  let best = -1;
  let i = bytes.indexOf(MARKER);
  while (i !== -1) {
    if (i + 15 <= bytes.length && bytes[i + 14] === 0x3b) {
      if (best === -1 || bytes.compare(bytes, best + 4, best + 14, i + 4, i + 14) > 0) best = i;
    }
    i = bytes.indexOf(MARKER, i + 4);
  }
  return best === -1 ? 0 : Number(bytes.toString("latin1", best + 4, best + 14));
}

export interface ReplicaObject {
  readonly path: string;
  readonly seenAt: number | undefined;
  readonly mtimeMs: number;
  /** Highest writer sequence number in its pages. */
  readonly maxSeq: number;
  /** Lifeboat: the segment header's last transaction number. */
  readonly lastTxn?: number;
  readonly bytes: number;
  readonly plainBytes: number;
}

/** Decodes a Lifeboat segment (`LBWALSEG`, JSON header, zstd or gzip body, sha256 trailer). */
export function decodeLifeboatSegment(file: Buffer): { lastTxn: number; plain: Buffer } {
  if (file.toString("latin1", 0, 8) !== "LBWALSEG") throw new Error("not a Lifeboat segment");
  const hlen = file.readUInt32BE(12);
  const header = JSON.parse(file.toString("utf8", 16, 16 + hlen)) as { lastTxn: number; compression: string };
  const body = file.subarray(16 + hlen, file.length - 32);
  const plain =
    header.compression === "zstd"
      ? zstdDecompress(body)
      : header.compression === "gzip"
        ? gunzipSync(body, { finishFlush: zlibConstants.Z_SYNC_FLUSH })
        : body;
  return { lastTxn: header.lastTxn, plain };
}

export function isSegmentPath(tool: ToolName, path: string): boolean {
  return tool === "lifeboat" ? /\/wal\/[^/]+\.seg$/.test(path) : /\/wal\/[^/]+\.wal\.lz4$/.test(path);
}

/** Reads and decodes one replica WAL object. */
export function readReplicaObject(
  tool: ToolName,
  root: string,
  path: string,
  seenAt: number | undefined,
): ReplicaObject {
  const full = join(root, path);
  const raw = readFileSync(full);
  const mtimeMs = statSync(full).mtimeMs;
  if (tool === "lifeboat") {
    const { lastTxn, plain } = decodeLifeboatSegment(raw);
    return { path, seenAt, mtimeMs, maxSeq: maxMarker(plain), lastTxn, bytes: raw.length, plainBytes: plain.length };
  }
  const plain = decodeLz4Frames(raw);
  return { path, seenAt, mtimeMs, maxSeq: maxMarker(plain), bytes: raw.length, plainBytes: plain.length };
}

/** Runs a command to completion; returns wall time (ms), exit code and output. */
export async function timeCommand(
  command: string,
  args: string[],
  cwd: string,
): Promise<{ ms: number; code: number | null; out: string }> {
  const started = performance.now();
  const child = spawn(command, args, { cwd, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  child.stderr.on("data", (d) => {
    out += d;
  });
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  return { ms: performance.now() - started, code, out };
}

export function fileExists(path: string): boolean {
  return existsSync(path);
}
