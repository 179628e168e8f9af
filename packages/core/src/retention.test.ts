import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { planRetention, type RetentionItem } from "./retention.js";

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
