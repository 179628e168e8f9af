/**
 * Where the time of a Lifeboat backup and restore goes, measured piece by piece in this process
 * with the same packages the CLI runs (their built `dist`): start-up, inspection (row counts),
 * quick_check, reading the snapshot image, sha256, write + fsync through the local target; and
 * the CLI itself under `node --cpu-prof`, summarised by self time.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { createLifeboat, type Progress } from "@lifeboat/core";
import { checkIntegrity, describeDatabase, sqliteSource, sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStorage, localStoragePlugin } from "@lifeboat/storage-local";
import { restoreToPoint } from "@lifeboat/wal";
import { type ProfileSummary, summariseCpuProfile } from "./cpu-profile.js";
import { dropCaches, pause, runTimed } from "./run-timed.js";
import { median } from "./stats.js";

export interface PhaseTiming {
  readonly phase: string;
  readonly ms: number;
  /** CPU time of this process meanwhile, ms (process.cpuUsage: every thread). */
  readonly cpuMs: number;
  readonly note: string;
  /** The piece processes the whole image (so a throughput makes sense). */
  readonly wholeImage: boolean;
}

export interface PhaseInputs {
  /** The source database (WAL mode, idle). */
  readonly db: string;
  /** A backup object of it (the `.snap` file) and a repository directory holding it. */
  readonly snapFile: string;
  readonly repoDir: string;
  /** Bytes of the database image. */
  readonly sizeBytes: number;
  /** A scratch directory (emptied by the caller). */
  readonly work: string;
  /** `apps/cli/dist/bin.js`. */
  readonly cli: string;
}

const CHUNK = 4 * 1024 * 1024;

/** CPU time of this process (all threads: main, thread pool) during the last `timed` call, ms. */
let lastCpuMs = 0;

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const cpu = process.cpuUsage();
  const started = process.hrtime.bigint();
  await fn();
  const used = process.cpuUsage(cpu);
  lastCpuMs = (used.user + used.system) / 1000;
  return Number(process.hrtime.bigint() - started) / 1e6;
}

async function cold(fn: () => Promise<unknown> | unknown): Promise<number> {
  dropCaches();
  await pause(300);
  return timed(fn);
}

/** `bytes` of the same buffer in `CHUNK`-sized pieces (content does not matter to write or hash). */
async function* generated(bytes: number, chunk: Buffer): AsyncGenerator<Uint8Array> {
  for (let done = 0; done < bytes; done += chunk.byteLength) {
    yield done + chunk.byteLength <= bytes ? chunk : chunk.subarray(0, bytes - done);
  }
}

/** Measures each piece once (start-up: median of 3). Caches are dropped before the cold ones. */
export async function measurePhases(p: PhaseInputs): Promise<PhaseTiming[]> {
  const rows: PhaseTiming[] = [];
  const add = (phase: string, ms: number, wholeImage: boolean, note: string, cpuMs = lastCpuMs) =>
    rows.push({ phase, ms, cpuMs, wholeImage, note });

  const startups = [];
  for (let i = 0; i < 3; i++) startups.push(await runTimed(process.execPath, [p.cli, "--version"]));
  add(
    "CLI start-up (`lifeboat --version`)",
    median(startups.map((r) => r.wallMs)),
    false,
    "node + module loading, warm",
    median(startups.map((r) => (r.userS + r.sysS) * 1000)),
  );

  add(
    "inspect: open + schema + row counts",
    await cold(() => describeDatabase(p.db)),
    false,
    "cold cache; `count(*)` of every table",
  );
  add("inspect again", await timed(() => describeDatabase(p.db)), false, "warm cache");
  add("quick_check on the source", await cold(() => checkIntegrity(p.db, "quick")), true, "cold cache");
  add("quick_check again", await timed(() => checkIntegrity(p.db, "quick")), true, "warm cache: the CPU part");
  add(
    "sequential read of the database file",
    await cold(async () => {
      const handle = await open(p.db, "r");
      try {
        const buf = Buffer.allocUnsafe(CHUNK);
        while ((await handle.read(buf, 0, CHUNK, null)).bytesRead > 0);
      } finally {
        await handle.close();
      }
    }),
    true,
    "cold cache, 4 MiB reads: what warming the cache first would cost",
  );

  // The snapshot as backup takes it (integrity off): setup includes the row counts.
  dropCaches();
  await pause(300);
  let snapshot: Awaited<ReturnType<ReturnType<typeof sqliteSource>["snapshot"]>> | undefined;
  add(
    "snapshot setup (integrity off)",
    await timed(async () => {
      snapshot = await sqliteSource().snapshot(p.db, { integrity: "off" });
    }),
    false,
    "cold cache; pin + describe (row counts)",
  );
  let streamed = 0;
  add(
    "snapshot image read, discarded",
    await timed(async () => {
      try {
        for await (const chunk of snapshot!.body) streamed += chunk.byteLength;
      } finally {
        snapshot!.release();
      }
    }),
    true,
    "right after setup (cache as the CLI has it)",
  );
  if (streamed !== p.sizeBytes) throw new Error(`The snapshot streamed ${streamed} bytes, expected ${p.sizeBytes}.`);

  const buffer = randomBytes(CHUNK);
  add(
    "sha256 of the image size, one pass",
    await timed(async () => {
      const hash = createHash("sha256");
      for await (const chunk of generated(p.sizeBytes, buffer)) hash.update(chunk);
      hash.digest();
    }),
    true,
    "main thread; backup and restore each hash every byte twice when there are no codecs",
  );

  const rawFile = join(p.work, "phase-raw.bin");
  add(
    "write + fsync from memory, plain fs",
    await cold(async () => {
      const handle = await open(rawFile, "wx", 0o600);
      try {
        for await (const chunk of generated(p.sizeBytes, buffer)) await handle.write(chunk);
        await handle.sync();
      } finally {
        await handle.close();
      }
    }),
    true,
    "4 MiB writes, one fsync",
  );
  rmSync(rawFile, { force: true });

  const target = localStorage({ path: join(p.work, "phase-target") });
  await target.init?.();
  add(
    "write + fsync from memory, storage-local put",
    await cold(() => target.put("phase/object.snap", generated(p.sizeBytes, buffer), { contentLength: p.sizeBytes })),
    true,
    "temp file, fsync, rename, fsync dirs",
  );
  await target.close?.();
  rmSync(join(p.work, "phase-target"), { recursive: true, force: true });

  // After a restore's download the new file is in the page cache: its checks run warm.
  const restored = join(p.work, "phase-restored.db");
  await runTimed("cp", ["--", p.snapFile, restored]);
  add(
    "quick_check of a just-written restore",
    await timed(() => checkIntegrity(restored, "quick")),
    true,
    "warm cache, as restore runs it",
  );
  add(
    "inspect of a just-written restore",
    await timed(() => describeDatabase(restored)),
    false,
    "warm; restore describes the output after installing it",
  );
  rmSync(restored, { force: true });
  return rows;
}

export interface CliProfiles {
  readonly backup: ProfileSummary;
  readonly restore: ProfileSummary;
  readonly backupWallMs: number;
  readonly restoreWallMs: number;
}

/** One default backup and one default restore under `node --cpu-prof`, caches dropped before each. */
export async function profileCli(p: PhaseInputs): Promise<CliProfiles> {
  const run = async (name: string, args: string[]) => {
    const dir = join(p.work, `cpuprof-${name}`);
    mkdirSync(dir, { recursive: true });
    dropCaches();
    await pause(300);
    const result = await runTimed(process.execPath, ["--cpu-prof", "--cpu-prof-dir", dir, p.cli, ...args]);
    const file = readdirSync(dir).find((f) => f.endsWith(".cpuprofile"));
    if (!file) throw new Error(`node --cpu-prof wrote no profile into ${dir}`);
    return { summary: summariseCpuProfile(join(dir, file), 10), wallMs: result.wallMs };
  };
  const backupDir = join(p.work, "cpuprof-backup-repo");
  const backup = await run("backup", ["backup", p.db, "--to", backupDir, "--json"]);
  rmSync(backupDir, { recursive: true, force: true });
  const output = join(p.work, "cpuprof-restored.db");
  const restore = await run("restore", ["restore", p.db, "--to", p.repoDir, "--output", output, "--yes", "--json"]);
  rmSync(output, { force: true });
  return {
    backup: backup.summary,
    restore: restore.summary,
    backupWallMs: backup.wallMs,
    restoreWallMs: restore.wallMs,
  };
}

export interface Timeline {
  readonly operation: string;
  /** Start to the first byte written (backup: pin, row counts, integrity; restore: listing, first chunk). */
  readonly beforeFirstByteMs: number;
  /** First to last progress event: streaming the image. */
  readonly streamingMs: number;
  /** Last progress event to the end (fsync, rename, manifest; restore: fsync, integrity, swap, describe). */
  readonly afterLastByteMs: number;
  readonly totalMs: number;
}

/**
 * One backup and one restore in this process through the same API the CLI calls (core backup,
 * wal restoreToPoint), timestamped at their first and last progress events; caches dropped first.
 */
export async function operationTimelines(p: PhaseInputs): Promise<Timeline[]> {
  const out: Timeline[] = [];
  const track = () => {
    const marks: number[] = [];
    return {
      onProgress: (_: Progress) => marks.push(performance.now()),
      marks,
    };
  };
  const summarise = (operation: string, started: number, ended: number, marks: number[]): Timeline => {
    const first = marks[0] ?? ended;
    const last = marks.at(-1) ?? ended;
    return {
      operation,
      beforeFirstByteMs: first - started,
      streamingMs: last - first,
      afterLastByteMs: ended - last,
      totalMs: ended - started,
    };
  };
  for (const integrity of ["quick", "off"] as const) {
    const repo = join(p.work, `timeline-repo-${integrity}`);
    const lifeboat = createLifeboat({
      config: { databases: [{ path: p.db, targets: [{ type: "local", path: repo }], snapshot: { integrity } }] },
      plugins: [sqliteSourcePlugin, localStoragePlugin],
    });
    dropCaches();
    await pause(300);
    const t = track();
    const started = performance.now();
    await lifeboat.backup(undefined, { onProgress: t.onProgress });
    out.push(summarise(`backup, integrity ${integrity}`, started, performance.now(), t.marks));
    await lifeboat.close();
    rmSync(repo, { recursive: true, force: true });
  }
  for (const integrity of ["quick", "off"] as const) {
    const output = join(p.work, `timeline-restored-${integrity}.db`);
    const lifeboat = createLifeboat({
      config: { databases: [{ path: p.db, targets: [{ type: "local", path: p.repoDir }] }] },
      plugins: [sqliteSourcePlugin, localStoragePlugin],
    });
    dropCaches();
    await pause(300);
    const t = track();
    const started = performance.now();
    await restoreToPoint(await lifeboat.database(), { output, yes: true, integrity, onProgress: t.onProgress });
    out.push(summarise(`restore, integrity ${integrity}`, started, performance.now(), t.marks));
    await lifeboat.close();
    rmSync(output, { force: true });
  }
  return out;
}
