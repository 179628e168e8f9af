import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ChainSegment,
  type ChainSnapshot,
  chainProtectedSnapshots,
  planRetention,
  pointInTimeProtected,
  type RetentionItem,
  reachFrom,
  removableSegments,
} from "./retention.js";

const DAY = 86_400_000;
const now = Date.UTC(2026, 10, 22, 12);

describe("retention", () => {
  it("keeps the newest N and everything within the window", () => {
    const items: RetentionItem[] = Array.from({ length: 10 }, (_, i) => ({
      id: `b${i}`,
      createdAt: now - i * DAY,
      ok: true,
    }));
    const plan = planRetention(items, { keepLast: 2, keepWithinMs: 4.5 * DAY }, now);
    expect(plan.keep.map((k) => k.id)).toEqual(["b0", "b1", "b2", "b3", "b4"]);
    expect(plan.remove).toEqual(["b5", "b6", "b7", "b8", "b9"]);
  });

  it("keeps one backup per day, week and month", () => {
    const items: RetentionItem[] = Array.from({ length: 60 }, (_, i) => ({
      id: `h${i}`,
      createdAt: now - i * 12 * 3_600_000,
      ok: true,
    }));
    const plan = planRetention(items, { keepDaily: 3 }, now);
    expect(plan.keep.map((k) => k.id)).toEqual(["h0", "h2", "h4"]);
    expect(planRetention(items, { keepMonthly: 12 }, now).keep.length).toBe(2);
  });

  it("never removes the newest good backup, whatever the policy", () => {
    const item = fc.record({ createdAt: fc.integer({ min: now - 400 * DAY, max: now }), ok: fc.boolean() });
    const policy = fc.record(
      {
        keepLast: fc.integer({ min: 1, max: 5 }),
        keepWithinMs: fc.integer({ min: 0, max: 30 * DAY }),
        keepDaily: fc.integer({ min: 1, max: 10 }),
        keepWeekly: fc.integer({ min: 1, max: 5 }),
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(fc.array(item, { maxLength: 40 }), policy, (raw, p) => {
        if (Object.keys(p).length === 0) return;
        const items = raw.map((r, i) => ({ ...r, id: `id${i}` }));
        const plan = planRetention(items, p, now);
        expect(plan.keep.length + plan.remove.length).toBe(items.length);
        const newestGood = [...items]
          .filter((i) => i.ok)
          .sort((a, b) => b.createdAt - a.createdAt || b.id.localeCompare(a.id))[0];
        if (newestGood) expect(plan.remove).not.toContain(newestGood.id);
        if (p.keepLast) expect(plan.keep.length).toBeGreaterThanOrEqual(Math.min(p.keepLast, items.length));
      }),
    );
  });

  it("refuses an empty policy instead of deleting everything", () => {
    expect(() => planRetention([{ id: "a", createdAt: now, ok: true }], {}, now)).toThrow(/No retention policy/);
  });
});

describe("keepPointInTime", () => {
  const HOUR = 3_600_000;

  /** A random history: generations one after another, each with transactions and snapshots over time. */
  const history = fc
    .array(
      fc.record({
        txns: fc.integer({ min: 0, max: 30 }),
        snapshotAt: fc.uniqueArray(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 4 }),
        segmentSize: fc.integer({ min: 1, max: 5 }),
        damaged: fc.array(fc.boolean(), { minLength: 4, maxLength: 4 }),
        // Segments a target lost (an outage longer than the queue): gaps in the archive.
        lost: fc.array(fc.boolean(), { maxLength: 8 }),
      }),
      { minLength: 1, maxLength: 5 },
    )
    .map((gens) => {
      let clock = now - 60 * HOUR;
      const snapshots: (ChainSnapshot & { createdAt: number })[] = [];
      const segments: (ChainSegment & { lastObservedAt: number })[] = [];
      const txnTimes = new Map<string, number[]>(); // generation -> time of txn k at index k (0: start)
      gens.forEach((g, gi) => {
        const generation = `g${gi}`;
        const times = [clock];
        for (let k = 1; k <= g.txns; k++) times.push(clock + k * HOUR);
        txnTimes.set(generation, times);
        g.snapshotAt
          .map((p) => Math.min(p, g.txns))
          .filter((p, i, all) => all.indexOf(p) === i)
          .forEach((position, i) => {
            snapshots.push({
              id: `${generation}-${position}`,
              generation,
              position,
              createdAt: times[position]!,
              ok: i === 0 ? true : !g.damaged[i],
            });
          });
        for (let first = 1, j = 0; first <= g.txns; first += g.segmentSize, j++) {
          const last = Math.min(g.txns, first + g.segmentSize - 1);
          if (g.lost[j]) continue;
          segments.push({ generation, firstTxn: first, lastTxn: last, lastObservedAt: times[last]! });
        }
        clock = times.at(-1)! + HOUR / 2;
      });
      return { snapshots, segments, txnTimes };
    });

  /** Whether the state at time `t` restores from these snapshots and segments (the rule of point-in-time restore). */
  function restorable(
    t: number,
    snapshots: readonly (ChainSnapshot & { createdAt: number })[],
    segments: readonly ChainSegment[],
    txnTimes: Map<string, number[]>,
  ): boolean {
    // The generation current at t: the newest one begun at or before t.
    const current = [...txnTimes].filter(([, times]) => times[0]! <= t).at(-1);
    if (!current) return false;
    const [generation, times] = current;
    const k = times.filter((time) => time <= t).length - 1;
    const mine = segments.filter((s) => s.generation === generation);
    return snapshots.some(
      (s) => s.generation === generation && s.ok && s.position <= k && reachFrom(s.position, mine) >= k,
    );
  }

  it("keeps every moment of the window restorable that was restorable before, and drops only what no kept snapshot needs", () => {
    fc.assert(
      fc.property(history, fc.integer({ min: 1, max: 80 }), ({ snapshots, segments, txnTimes }, windowHours) => {
        const windowMs = windowHours * HOUR;
        const kept = new Set([
          ...pointInTimeProtected(snapshots, windowMs, now, segments).keys(),
          ...chainProtectedSnapshots(snapshots, segments).keys(),
        ]);
        const keptSnapshots = snapshots.filter((s) => kept.has(s.id));
        const gone = new Set(removableSegments(segments, keptSnapshots));
        const keptSegments = segments.filter((s) => !gone.has(s));
        for (const times of txnTimes.values()) {
          for (const t of [...times, now - windowMs, now]) {
            if (t < now - windowMs || t > now) continue;
            if (restorable(t, snapshots, segments, txnTimes)) {
              expect(restorable(t, keptSnapshots, keptSegments, txnTimes), `moment ${t}`).toBe(true);
            }
          }
        }
        // A removed segment is never needed by a kept snapshot.
        for (const s of gone) {
          expect(keptSnapshots.some((k) => k.generation === s.generation && k.position < s.lastTxn)).toBe(false);
        }
      }),
      { numRuns: 300 },
    );
  });

  it("keeps the snapshot at or before the window's start and each later generation's first", () => {
    const snap = (generation: string, position: number, hoursAgo: number) => ({
      id: `${generation}-${position}`,
      generation,
      position,
      ok: true,
      createdAt: now - hoursAgo * HOUR,
    });
    const snapshots = [snap("a", 0, 50), snap("a", 10, 30), snap("a", 20, 20), snap("b", 0, 5), snap("b", 3, 2)];
    const contiguous = [
      { generation: "a", firstTxn: 1, lastTxn: 25 },
      { generation: "b", firstTxn: 1, lastTxn: 4 },
    ];
    expect([...pointInTimeProtected(snapshots, 24 * HOUR, now, contiguous).keys()]).toEqual(["a-10", "b-0"]);
    expect(pointInTimeProtected(snapshots, 24 * HOUR, now, contiguous).get("a-10")).toMatch(/last 1d/);
    // Transactions 13-19 of "a" were lost: the moments from 20 on restore only from a-20, so it stays too.
    const gap = [
      { generation: "a", firstTxn: 1, lastTxn: 12 },
      { generation: "a", firstTxn: 20, lastTxn: 25 },
      { generation: "b", firstTxn: 1, lastTxn: 4 },
    ];
    const kept = pointInTimeProtected(snapshots, 24 * HOUR, now, gap);
    expect([...kept.keys()].sort()).toEqual(["a-10", "a-20", "b-0"]);
    expect(kept.get("a-20")).toMatch(/first snapshot after a gap/);
    // A window that starts before the window's start needs nothing more.
    expect([...pointInTimeProtected(snapshots, 10 * HOUR, now, gap).keys()].sort()).toEqual(["a-20", "b-0"]);
    expect(
      removableSegments(
        [
          { generation: "a", firstTxn: 1, lastTxn: 10 },
          { generation: "a", firstTxn: 11, lastTxn: 12 },
          { generation: "c", firstTxn: 1, lastTxn: 2 },
        ],
        [{ generation: "a", position: 10 }],
      ),
    ).toEqual([
      { generation: "a", firstTxn: 1, lastTxn: 10 },
      { generation: "c", firstTxn: 1, lastTxn: 2 },
    ]);
  });
});
