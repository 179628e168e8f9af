import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  createLifeboat,
  defineStoragePlugin,
  type HookConfig,
  type Lifeboat,
  type LifeboatConfig,
  type StorageTarget,
} from "@lifeboat/core";
import { execSql, sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { Replicator } from "@lifeboat/wal";
import { afterEach, describe, expect, it } from "vitest";
import { createDaemon, type Daemon, type DaemonOptions, startDaemon } from "./daemon.js";
import type { DatabaseHealth } from "./health.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A local target that counts its requests, as an S3 target would expose them. */
const countingLocal = defineStoragePlugin({
  name: "counting-local",
  optionsSchema: localStoragePlugin.optionsSchema,
  create(options, context) {
    const inner = localStoragePlugin.create(options, context);
    const counts: Record<string, number> = {};
    const counted =
      <A extends unknown[], R>(type: string, fn: (...args: A) => R) =>
      (...args: A): R => {
        counts[type] = (counts[type] ?? 0) + 1;
        return fn(...args);
      };
    const target: StorageTarget & { requestCounts(): Record<string, number> } = {
      apiVersion: inner.apiVersion,
      type: inner.type,
      location: inner.location,
      capabilities: inner.capabilities,
      init: (o) => inner.init?.(o) ?? Promise.resolve(),
      close: () => inner.close?.() ?? Promise.resolve(),
      put: counted("put", inner.put.bind(inner)),
      get: counted("get", inner.get.bind(inner)),
      head: counted("head", inner.head.bind(inner)),
      list: counted("list", inner.list.bind(inner)),
      delete: counted("delete", inner.delete.bind(inner)),
      requestCounts: () => ({ ...counts }),
    };
    return target;
  },
});

interface Setup {
  readonly dir: string;
  readonly path: string;
  readonly backups: string;
  readonly lb: Lifeboat;
}

function setup(
  options: { backups?: string; hooks?: HookConfig[]; counting?: boolean; retention?: object } = {},
): Setup {
  const dir = mkdtempSync(join(tmpdir(), "lifeboat-daemon-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "app.db");
  execSql(
    path,
    "PRAGMA journal_mode=WAL; CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada'), ('grace'), ('linus');",
  );
  const backups = options.backups ?? join(dir, "backups");
  const config: LifeboatConfig = {
    databases: [
      {
        name: "app",
        path,
        environment: "test",
        targets: [{ type: options.counting ? "counting-local" : "local", name: "local", path: backups }],
        ...(options.hooks ? { hooks: options.hooks } : {}),
        ...(options.retention ? { retention: options.retention } : {}),
      },
    ],
  };
  const lb = createLifeboat({
    config,
    plugins: [sqliteSourcePlugin, localStoragePlugin, countingLocal],
    onHookError: () => {},
  });
  cleanups.push(() => lb.close());
  return { dir, path, backups, lb };
}

async function daemonFor(options: DaemonOptions): Promise<Daemon> {
  const daemon = await startDaemon({ processMetrics: false, ...options });
  cleanups.push(() => daemon.stop());
  return daemon;
}

async function get(
  daemon: Daemon,
  path: string,
  token?: string,
): Promise<{ status: number; text: string; json: any; headers: Headers }> {
  const response = await fetch(`${daemon.url}${path}`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const text = await response.text();
  let json: unknown = null;
  try {
    json = JSON.parse(text);
  } catch {
    json = null;
  }
  return { status: response.status, text, json, headers: response.headers };
}

async function until<T>(what: string, fn: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await fn();
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(last)}`);
    await sleep(50);
    last = await fn();
  }
  return last;
}

/**
 * Makes a directory unwritable the way a failing disk does: a tmpfs mounted there and remounted
 * read-only (we run as root). Where mounting is not allowed, the directory is swapped for a file.
 */
function unwritableDirectory(dir: string): { breakIt(): Promise<void>; fixIt(): Promise<void> } {
  mkdirSync(dir, { recursive: true });
  let mounted = false;
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", dir], { stdio: "pipe" });
    mounted = true;
    cleanups.push(() => {
      execFileSync("umount", ["-l", dir], { stdio: "pipe" });
    });
  } catch {
    mounted = false;
  }
  // A remount to read-only fails while a put has a file open for writing: try again shortly.
  const remount = async (mode: "ro" | "rw") => {
    for (let attempt = 0; ; attempt++) {
      try {
        execFileSync("mount", ["-o", `remount,${mode}`, dir], { stdio: "pipe" });
        return;
      } catch (error) {
        if (attempt >= 100) throw error;
        await sleep(20);
      }
    }
  };
  return {
    async breakIt() {
      if (mounted) await remount("ro");
      else {
        renameSync(dir, `${dir}.away`);
        writeFileSync(dir, "not a directory");
      }
    },
    async fixIt() {
      if (mounted) await remount("rw");
      else {
        rmSync(dir);
        renameSync(`${dir}.away`, dir);
      }
    },
  };
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** The Prometheus text format (0.0.4), strictly: HELP and TYPE before samples, every sample parsed. */
function parsePrometheus(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  const familyOf = (name: string) => {
    for (const suffix of ["_bucket", "_sum", "_count", ""]) {
      const base = suffix ? name.replace(new RegExp(`${suffix}$`), "") : name;
      if (types.has(base)) return base;
    }
    return undefined;
  };
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (comment) {
      if (comment[1] === "TYPE") {
        expect(["counter", "gauge", "histogram", "summary", "untyped"]).toContain(comment[3]);
        types.set(comment[2]!, comment[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (-?[0-9.e+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    expect(m, `not a sample line: ${line}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const pair of (m![2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[pair[1]!] = pair[2]!;
    expect(familyOf(m![1]!), `${m![1]} has no TYPE`).toBeDefined();
    samples.push({ name: m![1]!, labels, value: Number(m![3]) });
  }
  return { types, samples };
}

function sample(samples: readonly Sample[], name: string, labels: Record<string, string> = {}): Sample | undefined {
  return samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

describe("health endpoint", () => {
  it("turns 503 while a target is unwritable and 200 again when it is back", async () => {
    const base = mkdtempSync(join(tmpdir(), "lifeboat-daemon-mnt-"));
    cleanups.push(() => rmSync(base, { recursive: true, force: true }));
    const backups = join(base, "backups");
    const disk = unwritableDirectory(backups);
    const { lb } = setup({ backups });
    await lb.backup("app");
    const daemon = await daemonFor({ lifeboat: lb, serve: { port: 0 }, refreshInterval: "100ms" });
    expect(daemon.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect((await get(daemon, "/health")).status).toBe(200);

    await disk.breakIt();
    const down = await until(
      "503",
      () => get(daemon, "/health"),
      (r) => r.status === 503,
    );
    expect(down.json.status).toBe("unhealthy");
    expect(down.json.reasons.join("\n")).toMatch(/app: target local \(.*backups\) is unreachable: cannot write/);
    const detail = await get(daemon, "/health/database/app");
    expect(detail.status).toBe(503);
    expect(detail.json.targets[0].reachable).toBe(false);

    await disk.fixIt();
    const up = await until(
      "200",
      () => get(daemon, "/health"),
      (r) => r.status === 200,
    );
    expect(up.json).toMatchObject({ status: "ok", healthy: true, reasons: [] });
  });

  it("/health/database tells size, tables, row counts, environment, journal mode, last backup and lag", async () => {
    const { lb, path } = setup();
    const backup = await lb.backup("app");
    const daemon = await daemonFor({ lifeboat: lb, serve: { port: 0 } });
    const all = await get(daemon, "/health/database");
    expect(all.status).toBe(200);
    const app = all.json.databases[0] as DatabaseHealth;
    expect(app.name).toBe("app");
    expect(app.path).toBe(path);
    expect(app.database).toMatchObject({
      journalMode: "wal",
      declaredEnvironment: "test",
      tables: [{ name: "users", rows: 3 }],
    });
    expect(app.database!.sizeBytes).toBeGreaterThan(0);
    expect(app.lastBackup).toMatchObject({ id: backup.id, target: "local" });
    expect(app.lastBackup!.ageSeconds).toBeLessThan(60);
    expect(app.replication).toBeNull(); // no replicator in this process
    expect((await get(daemon, "/health/database/nope")).status).toBe(404);
    expect((await get(daemon, "/health/ping")).text).toBe("ok\n");
    expect((await get(daemon, "/nope")).status).toBe(404);
  });

  it("turns 503 when the newest snapshot is older than its limit", async () => {
    const { lb } = setup();
    await lb.backup("app");
    await sleep(50);
    const daemon = await daemonFor({ lifeboat: lb, serve: { port: 0 }, thresholds: { maxSnapshotAge: "20ms" } });
    const r = await get(daemon, "/health");
    expect(r.status).toBe(503);
    expect(r.json.reasons[0]).toMatch(/newest good snapshot on local .* old \(limit 20ms\)/);
  });

  it("enforces the bearer token on everything but /health/ping", async () => {
    const { lb } = setup();
    await lb.backup("app");
    const daemon = await daemonFor({ lifeboat: lb, serve: { port: 0, token: "s3cret-token" } });
    for (const path of ["/health", "/health/database", "/health/database/app", "/metrics"]) {
      const none = await get(daemon, path);
      expect(none.status, path).toBe(401);
      expect(none.headers.get("www-authenticate")).toContain("Bearer");
      expect((await get(daemon, path, "wrong")).status, path).toBe(401);
      expect((await get(daemon, path, "s3cret-token")).status, path).toBe(200);
    }
    expect((await get(daemon, "/health/ping")).status).toBe(200);
    const post = await fetch(`${daemon.url}/health`, { method: "POST" });
    expect(post.status).toBe(405);
  });
});

describe("metrics endpoint", () => {
  it("serves Prometheus text with backup, replication, storage and drill metrics", async () => {
    const { lb, path } = setup({ counting: true });
    const daemon = createDaemon({ lifeboat: lb, serve: { port: 0 }, processMetrics: true, describeInterval: 0 });
    cleanups.push(() => daemon.stop());
    const db = await lb.database("app");
    const replicator = new Replicator(db, {
      syncIntervalMs: 50,
      checkpointPages: 4,
      onEvent: (e) => daemon.observe(e),
    });
    await replicator.start();
    cleanups.push(async () => {
      await replicator.stop(2000);
    });
    daemon.attachReplicator(replicator);
    await daemon.start();
    for (let i = 0; i < 20; i++) execSql(path, `INSERT INTO users (name) VALUES ('${"x".repeat(3000)}${i}')`);
    await replicator.sync();
    await until(
      "shipped",
      async () => replicator.progress[0]!.shipped,
      (n) => n === replicator.txn,
    );
    await daemon.runJob("app", "verify");
    await daemon.refresh(); // re-describes the database (row counts) and re-lists the target

    const response = await get(daemon, "/metrics");
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("text/plain");
    const { types, samples } = parsePrometheus(response.text);
    const app = { database: "app" };
    const target = { database: "app", target: "local" };
    expect(types.get("lifeboat_shipped_bytes_total")).toBe("counter");
    expect(types.get("lifeboat_replication_lag_seconds")).toBe("gauge");
    expect(sample(samples, "lifeboat_healthy", app)?.value).toBe(1);
    expect(sample(samples, "lifeboat_target_up", target)?.value).toBe(1);
    expect(sample(samples, "lifeboat_replication_lag_seconds", target)?.value).toBe(0);
    expect(sample(samples, "lifeboat_replication_txn", app)?.value).toBe(replicator.txn);
    expect(sample(samples, "lifeboat_shipped_objects_total", { ...target, kind: "segment" })!.value).toBeGreaterThan(0);
    expect(sample(samples, "lifeboat_shipped_objects_total", { ...target, kind: "snapshot" })!.value).toBe(1);
    // Every spooled segment reached the one target, and so did the generation's snapshot.
    const spooled = sample(samples, "lifeboat_spooled_bytes_total", app)!.value;
    expect(spooled).toBeGreaterThan(0);
    expect(sample(samples, "lifeboat_shipped_bytes_total", target)!.value).toBeGreaterThan(spooled);
    expect(sample(samples, "lifeboat_shipped_transactions_total", target)!.value).toBe(replicator.txn);
    expect(sample(samples, "lifeboat_checkpoints_total", { database: "app", mode: "PASSIVE" })!.value).toBeGreaterThan(
      0,
    );
    expect(sample(samples, "lifeboat_wal_size_bytes", app)).toBeDefined();
    expect(sample(samples, "lifeboat_database_rows", { database: "app", table: "users" })?.value).toBe(23);
    expect(sample(samples, "lifeboat_storage_requests_total", { ...target, type: "put" })!.value).toBeGreaterThan(3);
    expect(sample(samples, "lifeboat_last_restore_drill_success", app)?.value).toBe(1);
    expect(sample(samples, "lifeboat_restore_drills_total", { database: "app", result: "ok" })?.value).toBe(1);
    const lastBackup = sample(samples, "lifeboat_last_backup_timestamp_seconds", target)!.value;
    expect(Math.abs(lastBackup - Date.now() / 1000)).toBeLessThan(120);
    expect(sample(samples, "lifeboat_process_resident_memory_bytes")?.value).toBeGreaterThan(0);
  });
});

describe("replication lag", () => {
  it("over its limit turns /health 503 and fires onLagHigh once; catching up clears it", async () => {
    const base = mkdtempSync(join(tmpdir(), "lifeboat-daemon-mnt-"));
    cleanups.push(() => rmSync(base, { recursive: true, force: true }));
    const backups = join(base, "backups");
    const disk = unwritableDirectory(backups);
    const marker = join(base, "lag-high.log");
    const { lb, path } = setup({
      backups,
      hooks: [{ on: "onLagHigh", exec: `echo "$LIFEBOAT_DB" >> ${marker}`, timeout: "10s" }],
    });
    const daemon = createDaemon({
      lifeboat: lb,
      serve: { port: 0 },
      refreshInterval: "100ms",
      thresholds: { maxReplicationLag: "300ms" },
      processMetrics: false,
    });
    cleanups.push(() => daemon.stop());
    const db = await lb.database("app");
    const replicator = new Replicator(db, { syncIntervalMs: 50, onEvent: (e) => daemon.observe(e) });
    await replicator.start();
    cleanups.push(async () => {
      await replicator.stop(3000);
    });
    daemon.attachReplicator(replicator);
    await daemon.start();
    expect((await get(daemon, "/health")).status).toBe(200);

    await disk.breakIt();
    execSql(path, "INSERT INTO users (name) VALUES ('while the disk is gone')");
    await replicator.sync();
    const down = await until(
      "503",
      () => get(daemon, "/health"),
      (r) => r.status === 503 && /behind/.test(r.text),
    );
    expect(down.json.reasons.join("\n")).toMatch(/replication to local is .* behind \(limit 300ms\)/);
    await until(
      "the onLagHigh hook",
      async () => readText(marker),
      (t) => t.includes("app"),
    );

    await disk.fixIt();
    await until(
      "200",
      () => get(daemon, "/health"),
      (r) => r.status === 200,
      30_000,
    );
    expect(replicator.progress[0]!.shipped).toBe(replicator.txn);
    expect(readText(marker).trim().split("\n")).toEqual(["app"]);
  });
});

describe("schedules", () => {
  it("runs snapshots and prunes on their intervals and reports the runs", async () => {
    const { lb } = setup({ retention: { keepLast: 2 } });
    const daemon = await daemonFor({
      lifeboat: lb,
      serve: { port: 0 },
      schedules: { app: { snapshot: "150ms", prune: "400ms" } },
    });
    const health = await until(
      "four snapshots and a prune",
      async () => (await get(daemon, "/health/database/app")).json as DatabaseHealth,
      (h) =>
        h.jobs.some((j) => j.name === "app/snapshot" && j.runs >= 4) &&
        h.jobs.some((j) => j.name === "app/prune" && j.runs >= 1),
    );
    const snapshot = health.jobs.find((j) => j.name === "app/snapshot")!;
    const prune = health.jobs.find((j) => j.name === "app/prune")!;
    expect(snapshot.runs).toBeGreaterThanOrEqual(3);
    expect(snapshot.lastOk).toBe(true);
    expect(snapshot.nextRunAt).not.toBeNull();
    expect(prune.runs).toBeGreaterThanOrEqual(1);
    expect(prune.lastOk).toBe(true);
    expect(health.jobs.find((j) => j.name === "app/verify")!.schedule).toBe("off");
    // One more prune; heavy jobs take turns, so at most one snapshot can follow it before the stop.
    const pruned = await daemon.runJob("app", "prune");
    expect(pruned.ok).toBe(true);
    await daemon.stop();
    const listed = await lb.list("app");
    expect(listed[0]!.snapshots.length).toBeGreaterThanOrEqual(2);
    expect(listed[0]!.snapshots.length).toBeLessThanOrEqual(3);
    expect(daemon.scheduler.status("app/snapshot")!.runs).toBeGreaterThan(3);
    expect(health.healthy).toBe(true);
  });

  it("refuses a prune schedule without a retention policy, and a bad schedule, before starting", async () => {
    const { lb } = setup();
    await expect(startDaemon({ lifeboat: lb, schedules: { app: { prune: "1d" } } })).rejects.toMatchObject({
      code: "CONFIG_INVALID",
    });
    expect(() => createDaemon({ lifeboat: lb, schedules: { app: { verify: "every sunday" } } })).toThrow(
      /schedule.verify of app/,
    );
    expect(() => createDaemon({ lifeboat: lb, schedules: { other: { verify: "1d" } } })).toThrow(/"other"/);
  });
});
