import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLifeboat, type HookConfig, type Lifeboat } from "@lifeboat/core";
import { execSql, sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { Replicator } from "@lifeboat/wal";
import { afterEach, describe, expect, it } from "vitest";
import { type Daemon, startDaemon } from "./daemon.js";
import { pickDrillMoment, runRestoreDrill } from "./drill.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(hooks: HookConfig[] = []): { dir: string; path: string; backups: string; lb: Lifeboat } {
  const dir = mkdtempSync(join(tmpdir(), "lifeboat-drill-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "app.db");
  execSql(
    path,
    "PRAGMA journal_mode=WAL; CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO users (name) VALUES ('ada'), ('grace'), ('linus');",
  );
  const backups = join(dir, "backups");
  const lb = createLifeboat({
    config: { databases: [{ name: "app", path, targets: [{ type: "local", path: backups }], hooks }] },
    plugins: [sqliteSourcePlugin, localStoragePlugin],
    onHookError: () => {},
  });
  cleanups.push(() => lb.close());
  return { dir, path, backups, lb };
}

async function daemonFor(lb: Lifeboat): Promise<Daemon> {
  const daemon = await startDaemon({
    lifeboat: lb,
    serve: { port: 0 },
    schedules: { app: { verify: "1d" } },
    processMetrics: false,
    drill: { random: () => 0.5 },
  });
  cleanups.push(() => daemon.stop());
  return daemon;
}

async function health(daemon: Daemon): Promise<{ status: number; json: any }> {
  const response = await fetch(`${daemon.url}/health`);
  return { status: response.status, json: await response.json() };
}

/** The stored snapshot objects (`.snap` files) of the database, oldest generation first. */
function snapshotFiles(backups: string): string[] {
  const root = join(backups, "app", "generations");
  return readdirSync(root)
    .sort()
    .flatMap((g) =>
      readdirSync(join(root, g, "snapshots"))
        .filter((f) => f.endsWith(".snap"))
        .map((f) => join(root, g, "snapshots", f)),
    );
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

describe("restore drills", () => {
  it("restore the latest state and a random point in time of the newest generation", async () => {
    const { lb, path, dir } = setup();
    const db = await lb.database("app");
    const replicator = new Replicator(db, { syncIntervalMs: 50 });
    await replicator.start();
    cleanups.push(async () => {
      await replicator.stop(2000);
    });
    for (let i = 0; i < 6; i++) {
      execSql(path, `INSERT INTO users (name) VALUES ('user ${i}')`);
      await replicator.sync();
      await new Promise((r) => setTimeout(r, 20));
    }
    await replicator.stop();

    const workDir = join(dir, "work");
    mkdirSync(workDir);
    const result = await runRestoreDrill(db, { random: () => 0.5, workDir });
    expect(result.problems).toEqual([]);
    expect(result.ok).toBe(true);
    const latest = result.checks.find((c) => c.kind === "latest")!;
    expect(latest).toMatchObject({ target: "local", ok: true, generation: replicator.generation, txn: replicator.txn });
    expect(latest.integrity).toMatchObject({ check: "integrity_check", ok: true });
    const point = result.checks.find((c) => c.kind === "point")!;
    expect(point.ok).toBe(true);
    expect(point.txn).toBeGreaterThanOrEqual(0);
    expect(point.txn).toBeLessThanOrEqual(replicator.txn);
    expect(Date.parse(point.restoredTo!)).toBeLessThanOrEqual(Date.parse(point.pointInTime!));
    expect(readdirSync(workDir)).toEqual([]); // nothing left behind
  });

  it("a corrupted stored snapshot fails the drill, turns /health 503 and fires onVerifyFailed", async () => {
    const dir = mkdtempSync(join(tmpdir(), "lifeboat-drill-hook-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const log = join(dir, "verify-failed.log");
    const { lb, backups } = setup([
      { on: "onVerifyFailed", exec: `echo "$LIFEBOAT_BACKUP_ID $LIFEBOAT_EVENT_JSON" >> ${log}`, timeout: "10s" },
    ]);
    const first = await lb.backup("app");
    const daemon = await daemonFor(lb);
    expect((await daemon.runJob("app", "verify")).ok).toBe(true);
    expect((await health(daemon)).status).toBe(200);

    const [file] = snapshotFiles(backups);
    const bytes = readFileSync(file!);
    bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
    writeFileSync(file!, bytes);

    const outcome = await daemon.runJob("app", "verify");
    expect(outcome.ok).toBe(false);
    if (!outcome.ok) expect(outcome.error.code).toBe("CORRUPT_BACKUP");
    const down = await health(daemon);
    expect(down.status).toBe(503);
    expect(down.json.reasons.join("\n")).toMatch(/app: the last restore drill .* failed: local \(latest\): .*corrupt/i);
    const hooked = readText(log);
    expect(hooked).toContain(first.id);
    expect(hooked).toContain("restore drill (latest) on local");
    expect(daemon.lastDrill("app")!.ok).toBe(false);

    // A fresh good backup and a passing drill make it healthy again.
    await lb.backup("app");
    expect((await daemon.runJob("app", "verify")).ok).toBe(true);
    expect((await health(daemon)).status).toBe(200);
  });

  it("compares a snapshot-only restore with its manifest's row counts", async () => {
    const { lb, backups } = setup();
    await lb.backup("app");
    const manifestFile = snapshotFiles(backups)[0]!.replace(/\.snap$/, ".json");
    const manifest = JSON.parse(readFileSync(manifestFile, "utf8"));
    manifest.source.tables = [{ name: "users", rows: 99 }];
    writeFileSync(manifestFile, JSON.stringify(manifest));

    const result = await runRestoreDrill(await lb.database("app"));
    expect(result.ok).toBe(false);
    expect(result.problems).toEqual([
      expect.stringMatching(/local \(latest\): table users: 3 rows, the manifest of .* says 99/),
    ]);
  });

  it("a target without any backup fails the drill", async () => {
    const { lb } = setup();
    const result = await runRestoreDrill(await lb.database("app"));
    expect(result.ok).toBe(false);
    expect(result.problems).toEqual(["local (latest): no restorable backup on this target"]);
  });
});

describe("the drill's random moment", () => {
  const at = (iso: string) => Date.parse(iso);
  // Two windows, 10 s and 30 s long, with a 60 s gap between them (transactions a target lost).
  const windows = [
    { from: "2026-11-22T10:00:00.000Z", to: "2026-11-22T10:00:10.000Z" },
    { from: "2026-11-22T10:01:10.000Z", to: "2026-11-22T10:01:40.000Z" },
  ];

  it("lands inside a window, never in the gap, weighted by the windows' lengths", () => {
    const inFirst = (t: number) => t >= at(windows[0]!.from) && t <= at(windows[0]!.to);
    const inSecond = (t: number) => t >= at(windows[1]!.from) && t <= at(windows[1]!.to);
    let first = 0;
    for (let i = 0; i < 400; i++) {
      const t = pickDrillMoment(windows, () => i / 400)!;
      expect(inFirst(t) || inSecond(t), new Date(t).toISOString()).toBe(true);
      if (inFirst(t)) first++;
    }
    expect(first).toBe(100); // 10 s of 40 s
    expect(pickDrillMoment(windows, () => 0)).toBe(at(windows[0]!.from));
    expect(pickDrillMoment(windows, () => 0.25)).toBe(at(windows[1]!.from)); // just past the first window
    expect(pickDrillMoment(windows, () => 1)).toBe(at(windows[1]!.to));
  });

  it("skips windows that span no time, and returns null when none does", () => {
    const point = { from: "2026-11-22T09:00:00.000Z", to: "2026-11-22T09:00:00.000Z" };
    expect(pickDrillMoment([point, windows[1]!], () => 0)).toBe(at(windows[1]!.from));
    expect(pickDrillMoment([point], () => 0.5)).toBeNull();
    expect(pickDrillMoment([], () => 0.5)).toBeNull();
  });
});
