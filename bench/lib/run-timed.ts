/**
 * Runs one command the way a benchmark needs it: wall time measured from spawn to exit by this
 * process, and the peak RSS of the command measured by GNU time (`/usr/bin/time -f %M`, which
 * reads `ru_maxrss` from wait4 on the command it started: the measured process itself, not this
 * launcher). Also drops the page cache between runs when the machine allows it.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const GNU_TIME = "/usr/bin/time";

export interface TimedRun {
  /** Wall time from spawn to exit, milliseconds. */
  readonly wallMs: number;
  /** Peak resident set size of the command, bytes (GNU time's %M). */
  readonly maxRssBytes: number;
  /** CPU seconds in user and kernel mode (GNU time's %U and %S). */
  readonly userS: number;
  readonly sysS: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  readonly cwd?: string;
  readonly env?: NodeJS.ProcessEnv;
}

/** Runs `command args` under GNU time; rejects with its stderr when it exits non-zero. */
export async function runTimed(command: string, args: readonly string[], options: RunOptions = {}): Promise<TimedRun> {
  if (!existsSync(GNU_TIME)) {
    throw new Error(`${GNU_TIME} is missing: install GNU time (apt-get install -y time) to measure peak RSS.`);
  }
  const report = join(tmpdir(), `lifeboat-bench-time-${process.pid}-${Math.random().toString(16).slice(2)}.txt`);
  const child = spawn(GNU_TIME, ["-f", "%M %U %S", "-o", report, command, ...args], {
    cwd: options.cwd,
    env: options.env ?? process.env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const started = process.hrtime.bigint();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on("data", (d: Buffer) => out.push(d));
  child.stderr.on("data", (d: Buffer) => err.push(d));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (c) => resolve(c));
  });
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  const stdout = Buffer.concat(out).toString("utf8");
  const stderr = Buffer.concat(err).toString("utf8");
  let line = "";
  try {
    line = readFileSync(report, "utf8").trim().split("\n").at(-1) ?? "";
  } finally {
    rmSync(report, { force: true });
  }
  if (code !== 0) {
    throw new Error(`${command} ${args.join(" ")} exited with ${code}:\n${stderr || stdout}`);
  }
  const [rssKiB, user, sys] = line.split(" ").map(Number);
  if (rssKiB === undefined || !Number.isFinite(rssKiB)) throw new Error(`Unexpected GNU time output: "${line}"`);
  return { wallMs, maxRssBytes: rssKiB * 1024, userS: user ?? Number.NaN, sysS: sys ?? Number.NaN, stdout, stderr };
}

/**
 * Flushes dirty pages (sync) and drops the page cache, so the next run reads its input from disk.
 * Returns false (and changes nothing but the sync) when this process may not drop caches.
 */
export function dropCaches(): boolean {
  spawnSync("sync", { stdio: "ignore" });
  try {
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
    return true;
  } catch {
    return false;
  }
}

/** Sleeps `ms` milliseconds (lets writeback and discards of the previous run settle). */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Fraction of CPU time the whole machine spent idle (idle + iowait) over the next `ms`, from /proc/stat. */
export async function idleFraction(ms: number): Promise<number> {
  const sample = () => {
    const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { idle: (fields[3] ?? 0) + (fields[4] ?? 0), total };
  };
  const a = sample();
  await pause(ms);
  const b = sample();
  return b.total === a.total ? 1 : (b.idle - a.idle) / (b.total - a.total);
}

/**
 * Waits until the machine is at least `minIdle` idle over a 1 s window, for at most `maxWaitMs`.
 * Returns the idle fraction of the last window (so a caller can report runs on a busy machine).
 */
export async function waitForQuiet(minIdle: number, maxWaitMs: number): Promise<number> {
  const deadline = Date.now() + maxWaitMs;
  let idle = await idleFraction(1000);
  while (idle < minIdle && Date.now() < deadline) idle = await idleFraction(1000);
  return idle;
}
