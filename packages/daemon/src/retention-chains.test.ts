import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import {
  createLifeboat,
  type DatabaseContext,
  keys,
  type Lifeboat,
  planRetention,
  Repository,
  type RetentionPolicy,
  type SnapshotManifest,
} from "@lifeboat/core";
import { execSql, queryRows, sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { databaseContentHash } from "@lifeboat/testkit";
import { listGenerations, parseSegmentKey, Replicator, restoreToPoint, segmentKey } from "@lifeboat/wal";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { type ChainSegment, chainProtectedSnapshots, pruneKeepingChains, reachFrom } from "./retention-chains.js";

const MINUTE = 60_000;
const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 5, 12);

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "lifeboat-daemon-retention-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// A backup history as the replicator and `lifeboat backup` leave it, written straight into a
// local target's directory (the layout of docs/FORMAT.md), then pruned through the real target.
type Step =
  | { readonly kind: "standalone"; readonly damaged: boolean; readonly after: number }
  | { readonly kind: "generation"; readonly after: number }
  | { readonly kind: "snapshot"; readonly damaged: boolean; readonly after: number }
  | { readonly kind: "segment"; readonly txns: number; readonly after: number }
  | { readonly kind: "gap"; readonly txns: number; readonly after: number };

interface ModelSnapshot {
  readonly id: string;
  readonly generation: string;
  readonly position: number;
  readonly createdAt: number;
  readonly ok: boolean;
}

interface Model {
  readonly snapshots: ModelSnapshot[];
  readonly segments: (ChainSegment & { key: string })[];
  end: number;
}

function generationId(time: number, n: number): string {
  return time.toString(16).padStart(12, "0") + n.toString(16).padStart(4, "0");
}

function buildHistory(steps: readonly Step[]): Model {
  const model: Model = { snapshots: [], segments: [], end: T0 };
  let now = T0;
  let n = 0;
  let live: { generation: string; txn: number } | null = null;
  const snapshot = (generation: string, position: number, ok: boolean) =>
    model.snapshots.push({
      id: `${generation}-${position.toString(16).padStart(16, "0")}`,
      generation,
      position,
      createdAt: now,
      ok,
    });
  for (const step of steps) {
    now += step.after;
    switch (step.kind) {
      case "standalone":
        snapshot(generationId(now, n++), 0, !step.damaged);
        break;
      case "generation":
        live = { generation: generationId(now, n++), txn: 0 };
        snapshot(live.generation, 0, true);
        break;
      case "snapshot":
        // One snapshot per position: a second at the same transaction would be the same object.
        if (live && !model.snapshots.some((s) => s.generation === live!.generation && s.position === live!.txn)) {
          snapshot(live.generation, live.txn, !step.damaged);
        }
        break;
      case "segment":
        if (live) {
          const first = live.txn + 1;
          live.txn += step.txns;
          model.segments.push({
            generation: live.generation,
            firstTxn: first,
            lastTxn: live.txn,
            key: segmentKey("app", live.generation, first, live.txn, now),
          });
        }
        break;
      case "gap":
        // The queue dropped segments the target never got; it caught up with a fresh snapshot.
        if (live) {
          live.txn += step.txns;
          snapshot(live.generation, live.txn, true);
        }
        break;
    }
  }
  model.end = now;
  return model;
}

function writeFile(root: string, key: string, body: string): void {
  const file = join(root, key);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, body);
}

function materialize(root: string, model: Model): void {
  for (const s of model.snapshots) {
    const objectKey = keys.snapshotObject("app", s.generation, s.position, "");
    const manifest: SnapshotManifest = {
      format: "lifeboat.snapshot",
      formatVersion: 1,
      id: s.id,
      generation: s.generation,
      position: s.position,
      database: { name: "app", path: "/srv/app.db" },
      createdAt: new Date(s.createdAt).toISOString(),
      reason: "test",
      tool: { name: "lifeboat", version: "0.0.0" },
      source: {
        type: "sqlite",
        engineVersion: "3.53.2",
        pageSize: 4096,
        pageCount: 1,
        journalMode: "wal",
        userVersion: 0,
        environment: null,
        tables: [],
      },
      integrity: { check: "quick_check", ok: true, messages: [] },
      content: { size: 4096, sha256: "0".repeat(64) },
      object: { key: objectKey, size: 4096, sha256: "0".repeat(64), codecs: [] },
    };
    writeFile(root, objectKey, "x");
    writeFile(root, keys.snapshotManifest("app", s.generation, s.position), JSON.stringify(manifest));
    if (!s.ok) {
      writeFile(
        root,
        keys.snapshotVerified("app", s.generation, s.position),
        JSON.stringify({
          format: "lifeboat.verification",
          formatVersion: 1,
          verifiedAt: "",
          ok: false,
          problems: ["bad"],
        }),
      );
    }
  }
  for (const seg of model.segments) writeFile(root, seg.key, "s");
}

async function stored(db: DatabaseContext): Promise<{ ids: Set<string>; segments: ChainSegment[]; keys: string[] }> {
  const target = db.targets[0]!.target;
  const all: string[] = [];
  for await (const info of target.list("app/")) all.push(info.key);
  const { snapshots } = await new Repository(db.targets[0]!, "app").listSnapshots();
  return {
    ids: new Set(snapshots.map((s) => s.manifest.id)),
    segments: all.map((k) => parseSegmentKey(k)).filter((s) => s !== undefined),
    keys: all,
  };
}

function lifeboatOn(root: string, dbPath = "/srv/app.db"): Lifeboat {
  return createLifeboat({
    config: { databases: [{ name: "app", path: dbPath, targets: [{ type: "local", path: root }] }] },
    plugins: [sqliteSourcePlugin, localStoragePlugin],
  });
}

/** The latest state a chain generation can restore: the furthest reach from any of its good snapshots. */
function latestReach(
  snapshots: readonly ModelSnapshot[],
  segments: readonly ChainSegment[],
  generation: string,
): number {
  const segs = segments.filter((s) => s.generation === generation);
  return Math.max(
    -1,
    ...snapshots.filter((s) => s.ok && s.generation === generation).map((s) => reachFrom(s.position, segs)),
  );
}

const rarely = fc.integer({ min: 0, max: 5 }).map((n) => n === 0);

const step: fc.Arbitrary<Step> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("standalone" as const),
      damaged: rarely,
      after: fc.integer({ min: MINUTE, max: 2 * DAY }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("generation" as const),
      after: fc.integer({ min: MINUTE, max: 3 * DAY }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("snapshot" as const),
      damaged: rarely,
      after: fc.integer({ min: MINUTE, max: DAY }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("segment" as const),
      txns: fc.integer({ min: 1, max: 5 }),
      after: fc.integer({ min: 1000, max: 6 * 3_600_000 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("gap" as const),
      txns: fc.integer({ min: 1, max: 5 }),
      after: fc.integer({ min: MINUTE, max: DAY }),
    }),
  },
);

const policy: fc.Arbitrary<RetentionPolicy> = fc
  .record(
    {
      keepLast: fc.integer({ min: 1, max: 4 }),
      keepWithinMs: fc.integer({ min: 0, max: 5 * DAY }),
      keepDaily: fc.integer({ min: 1, max: 5 }),
      keepWeekly: fc.integer({ min: 1, max: 3 }),
      keepMonthly: fc.integer({ min: 1, max: 2 }),
    },
    { requiredKeys: [] },
  )
  .filter((p) => Object.keys(p).length > 0);

describe("retention through the daemon's prune path", () => {
  it("never deletes the base of the newest WAL chain, whatever the history and the policy", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(step, { minLength: 1, maxLength: 25 }),
        policy,
        fc.integer({ min: 0, max: DAY }),
        async (steps, p, later) => {
          const model = buildHistory(steps);
          const root = mkdtempSync(join(tmpdir(), "lifeboat-daemon-prop-"));
          try {
            materialize(root, model);
            const lb = lifeboatOn(root);
            const db = await lb.database("app");
            const now = model.end + later;
            await pruneKeepingChains(db, { policy: p, apply: true, now });
            const after = await stored(db);

            const okGenerations = [...new Set(model.snapshots.filter((s) => s.ok).map((s) => s.generation))].sort();
            const chainGenerations = okGenerations.filter((g) => model.segments.some((s) => s.generation === g));
            for (const generation of [okGenerations.at(-1), chainGenerations.at(-1)]) {
              if (!generation) continue;
              // The latest state is as restorable as before: its base snapshot and every segment after it stay.
              const before = model.segments.filter((s) => s.generation === generation);
              const left = after.segments.filter((s) => s.generation === generation);
              const remaining = model.snapshots.filter((s) => after.ids.has(s.id));
              expect(latestReach(remaining, left, generation)).toBe(latestReach(model.snapshots, before, generation));
              // Only segments that end before every kept snapshot of the generation are gone.
              const from = Math.min(...remaining.filter((s) => s.generation === generation).map((s) => s.position));
              expect(left.length, `segments of ${generation} after ${from}`).toBe(
                before.filter((s) => s.lastTxn > from).length,
              );
            }

            // The daemon removes only what the policy removes, and keeps beyond it only chain bases.
            const plan = planRetention(
              model.snapshots.map((s) => ({ id: s.id, createdAt: s.createdAt, ok: s.ok })),
              p,
              now,
            );
            for (const k of plan.keep) expect(after.ids.has(k.id), `policy keeps ${k.id}`).toBe(true);
            const guarded = chainProtectedSnapshots(model.snapshots, model.segments);
            for (const id of plan.remove) expect(after.ids.has(id)).toBe(guarded.has(id));

            // No generation is left with segments but without any snapshot.
            const withSnapshot = new Set(model.snapshots.filter((s) => after.ids.has(s.id)).map((s) => s.generation));
            for (const s of after.segments) expect(withSnapshot.has(s.generation), s.generation).toBe(true);
            await lb.close();
          } finally {
            rmSync(root, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it("keeps the live chain when a later standalone backup is the only one keepLast: 1 would keep", async () => {
    // Core's plan alone removes both snapshots of the replicator's generation here, and core's
    // prune then deletes the generation's segments: the archive of every transaction is gone.
    const model = buildHistory([
      { kind: "generation", after: 0 },
      { kind: "segment", txns: 4, after: MINUTE },
      { kind: "snapshot", damaged: false, after: 3_600_000 },
      { kind: "segment", txns: 6, after: MINUTE },
      { kind: "standalone", damaged: false, after: 3_600_000 },
    ]);
    const root = tempDir();
    materialize(root, model);
    const lb = lifeboatOn(root);
    const db = await lb.database("app");
    const plan = planRetention(
      model.snapshots.map((s) => ({ id: s.id, createdAt: s.createdAt, ok: s.ok })),
      { keepLast: 1 },
      model.end,
    );
    expect(plan.remove).toHaveLength(2);

    const dry = await pruneKeepingChains(db, { policy: { keepLast: 1 }, now: model.end });
    expect(dry.dryRun).toBe(true);
    expect((await stored(db)).ids.size).toBe(3);

    const result = await pruneKeepingChains(db, { policy: { keepLast: 1 }, apply: true, now: model.end });
    // The chain's newest snapshot restores its latest state with the fewest segments: it stays;
    // the chain's first snapshot and the 4 transactions' segment before the kept one go.
    const chain = model.snapshots[1]!;
    expect(result.targets[0]!.protected).toEqual([{ id: chain.id, reason: expect.stringContaining("live WAL chain") }]);
    expect(result.targets[0]!.remove.map((r) => r.id)).toEqual([model.snapshots[0]!.id]);
    expect(result.targets[0]!.segments.remove).toBe(1);
    const generations = await listGenerations(new Repository(db.targets[0]!, "app"));
    const live = generations.find((g) => g.generation === chain.generation)!;
    expect(live.continuousTo).toBe(10);
    await lb.close();
  });

  it("a real replicated database stays restorable to its latest state after a scheduled-style prune", async () => {
    const dir = tempDir();
    const path = join(dir, "app.db");
    execSql(
      path,
      "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a');",
    );
    const lb = createLifeboat({
      config: {
        databases: [
          { name: "app", path, targets: [{ type: "local", path: join(dir, "backups") }], retention: { keepLast: 1 } },
        ],
      },
      plugins: [sqliteSourcePlugin, localStoragePlugin],
    });
    cleanups.push(() => lb.close());
    const db = await lb.database("app");
    const replicator = new Replicator(db, { syncIntervalMs: 50 });
    await replicator.start();
    for (let i = 0; i < 5; i++) {
      execSql(path, `INSERT INTO t (v) VALUES ('row ${i}')`);
      await replicator.sync();
    }
    await replicator.snapshot("scheduled");
    execSql(path, "INSERT INTO t (v) VALUES ('after the snapshot')");
    await replicator.sync();
    await replicator.stop();
    await lb.backup("app", { reason: "manual" }); // newer than every replicator snapshot

    const result = await pruneKeepingChains(db, { apply: true });
    expect(result.targets[0]!.protected.length).toBeGreaterThan(0);
    const output = join(dir, "restored.db");
    const restored = await restoreToPoint(db, { output, generation: replicator.generation! });
    expect(restored.txn).toBe(replicator.txn);
    expect(databaseContentHash(output)).toBe(databaseContentHash(path));
    expect(queryRows(output, "SELECT count(*) AS n FROM t")[0]!.n).toBe(7);
  });

  it("keepPointInTime keeps the window restorable and deletes the segments before it", async () => {
    const dir = tempDir();
    const path = join(dir, "app.db");
    execSql(path, "PRAGMA journal_mode=WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);");
    const lb = createLifeboat({
      config: { databases: [{ name: "app", path, targets: [{ type: "local", path: join(dir, "backups") }] }] },
      plugins: [sqliteSourcePlugin, localStoragePlugin],
    });
    cleanups.push(() => lb.close());
    const db = await lb.database("app");
    const replicator = new Replicator(db, { syncIntervalMs: 50 });
    await replicator.start();
    const write = async (n: number) => {
      for (let i = 0; i < n; i++) {
        execSql(path, `INSERT INTO t (v) VALUES ('row ${i}')`);
        await replicator.sync();
      }
    };
    await write(5);
    await new Promise((r) => setTimeout(r, 20));
    const second = await replicator.snapshot("scheduled"); // at transaction 5
    await new Promise((r) => setTimeout(r, 20));
    const windowStart = Date.now();
    await write(5);
    await replicator.stop();
    const inWindow = Date.now();
    const repo = new Repository(db.targets[0]!, "app");
    const segmentsBefore = [];
    for await (const info of repo.target.list(keys.generations("app")))
      if (parseSegmentKey(info.key)) segmentsBefore.push(info.key);

    const now = windowStart + 10 * MINUTE;
    const policy = { keepPointInTimeMs: 10 * MINUTE };
    const dry = await pruneKeepingChains(db, { policy, now });
    expect(dry.targets[0]!.segments.remove, "the segments before the window's base").toBeGreaterThan(0);
    const result = await pruneKeepingChains(db, { policy, apply: true, now });
    const t = result.targets[0]!;
    expect(
      t.remove.map((r) => r.id),
      "the generation's first snapshot goes",
    ).toHaveLength(1);
    expect(t.keep.map((k) => k.id)).toEqual([
      expect.stringMatching(new RegExp(`-${second.toString(16).padStart(16, "0")}$`)),
    ]);
    const segmentsAfter = [];
    for await (const info of repo.target.list(keys.generations("app"))) {
      const segment = parseSegmentKey(info.key);
      if (segment) segmentsAfter.push(segment);
    }
    expect(segmentsAfter.length).toBe(segmentsBefore.length - t.segments.remove);
    expect(segmentsAfter.every((s) => s.lastTxn > second)).toBe(true);
    // Every moment of the window still restores; the latest state too.
    for (const toTime of [windowStart, inWindow]) {
      const output = join(dir, `at-${toTime}.db`);
      const restored = await restoreToPoint(db, { output, toTime });
      expect(restored.txn).toBeGreaterThanOrEqual(second);
    }
    const latest = join(dir, "latest.db");
    await restoreToPoint(db, { output: latest });
    expect(databaseContentHash(latest)).toBe(databaseContentHash(path));
  });
});
