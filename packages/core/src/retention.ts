/**
 * Retention planning: pure logic, no I/O. Given the backups that exist and a policy, decides what
 * stays and why. Invariant: the newest good backup is always kept, whatever the policy says.
 */
import type { RetentionConfig } from "./config.js";
import { parseDuration } from "./duration.js";
import { ErrorCodes, LifeboatError } from "./errors.js";

export interface RetentionPolicy {
  readonly keepLast?: number;
  readonly keepWithinMs?: number;
  readonly keepDaily?: number;
  readonly keepWeekly?: number;
  readonly keepMonthly?: number;
  /** Keep every moment of the last this-many ms restorable (snapshot plus WAL segments). */
  readonly keepPointInTimeMs?: number;
}

export interface RetentionItem {
  readonly id: string;
  /** Epoch ms. */
  readonly createdAt: number;
  /** Restorable: integrity passed and not known to be damaged. */
  readonly ok: boolean;
}

export interface RetentionPlan {
  readonly keep: readonly { readonly id: string; readonly reasons: readonly string[] }[];
  readonly remove: readonly string[];
}

export function policyFromConfig(config: RetentionConfig | undefined): RetentionPolicy {
  if (!config) return {};
  return {
    ...(config.keepLast !== undefined ? { keepLast: config.keepLast } : {}),
    ...(config.keepWithin !== undefined ? { keepWithinMs: parseDuration(config.keepWithin) } : {}),
    ...(config.keepDaily !== undefined ? { keepDaily: config.keepDaily } : {}),
    ...(config.keepWeekly !== undefined ? { keepWeekly: config.keepWeekly } : {}),
    ...(config.keepMonthly !== undefined ? { keepMonthly: config.keepMonthly } : {}),
    ...(config.keepPointInTime !== undefined ? { keepPointInTimeMs: parseDuration(config.keepPointInTime) } : {}),
  };
}

export function isEmptyPolicy(policy: RetentionPolicy): boolean {
  return Object.values(policy).every((v) => v === undefined);
}

export function planRetention(
  items: readonly RetentionItem[],
  policy: RetentionPolicy,
  now = Date.now(),
): RetentionPlan {
  if (isEmptyPolicy(policy)) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "No retention policy: nothing says what to keep.", {
      hint: "Pass --keep-last N, --keep-within DURATION or --keep-point-in-time DURATION, or set `retention:` for the database in lifeboat.yml.",
    });
  }
  const newestFirst = [...items].sort((a, b) => b.createdAt - a.createdAt || b.id.localeCompare(a.id));
  const reasons = new Map<string, string[]>();
  const keep = (id: string, reason: string) => {
    const list = reasons.get(id) ?? [];
    list.push(reason);
    reasons.set(id, list);
  };
  const newestGood = newestFirst.find((i) => i.ok);
  if (newestGood) keep(newestGood.id, "newest good backup");
  if (policy.keepLast !== undefined) {
    for (const i of newestFirst.slice(0, policy.keepLast)) keep(i.id, `last ${policy.keepLast}`);
  }
  if (policy.keepWithinMs !== undefined) {
    for (const i of newestFirst) if (i.createdAt >= now - policy.keepWithinMs) keep(i.id, "within window");
  }
  const buckets: [number | undefined, string, (t: number) => string][] = [
    [policy.keepDaily, "daily", (t) => new Date(t).toISOString().slice(0, 10)],
    [policy.keepWeekly, "weekly", isoWeek],
    [policy.keepMonthly, "monthly", (t) => new Date(t).toISOString().slice(0, 7)],
  ];
  for (const [count, label, bucketOf] of buckets) {
    if (count === undefined) continue;
    const seen = new Set<string>();
    for (const i of newestFirst) {
      if (!i.ok) continue;
      const bucket = bucketOf(i.createdAt);
      if (seen.has(bucket)) continue;
      if (seen.size >= count) break;
      seen.add(bucket);
      keep(i.id, `${label} ${bucket}`);
    }
  }
  return {
    keep: newestFirst.filter((i) => reasons.has(i.id)).map((i) => ({ id: i.id, reasons: reasons.get(i.id)! })),
    remove: newestFirst.filter((i) => !reasons.has(i.id)).map((i) => i.id),
  };
}

function isoWeek(t: number): string {
  const d = new Date(t);
  const day = (d.getUTCDay() + 6) % 7;
  d.setUTCDate(d.getUTCDate() - day + 3);
  const firstThursday = new Date(Date.UTC(d.getUTCFullYear(), 0, 4));
  const week =
    1 +
    Math.round(((d.getTime() - firstThursday.getTime()) / 86_400_000 - 3 + ((firstThursday.getUTCDay() + 6) % 7)) / 7);
  return `${d.getUTCFullYear()}-W${String(week).padStart(2, "0")}`;
}

export interface ChainSnapshot {
  readonly id: string;
  readonly generation: string;
  readonly position: number;
  /** Restorable: integrity ok and not marked damaged. */
  readonly ok: boolean;
  /** Epoch ms (needed by `pointInTimeProtected`). */
  readonly createdAt?: number;
}

export interface ChainSegment {
  readonly generation: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
}

/**
 * `keepPointInTime`: the snapshots that keep every moment since `now - windowMs` restorable. The
 * generation that was current at the window's start keeps its newest good snapshot taken at or
 * before that moment; every generation begun since keeps its earliest good snapshot. With the
 * segments after them (see `removableSegments`), every moment of the window restores.
 *
 * A generation's archive can have gaps (a target that was down longer than the replicator's
 * queue lost segments, and got a new snapshot when it came back): the moments after a gap restore
 * only from a snapshot taken after it. So, given the `segments`, each restorable window that
 * starts after the window's start also keeps the snapshot it starts from.
 */
export function pointInTimeProtected(
  snapshots: readonly ChainSnapshot[],
  windowMs: number,
  now: number,
  /** Without them, every snapshot counts as a window of its own (keeps more, never less). */
  segments: readonly ChainSegment[] = [],
): Map<string, string> {
  const start = now - windowMs;
  const reason = (generation: string) =>
    `point-in-time recovery for the last ${formatWindow(windowMs)} (generation ${generation})`;
  const byGeneration = new Map<string, ChainSnapshot[]>();
  for (const s of snapshots) {
    if (!s.ok) continue;
    byGeneration.set(s.generation, [...(byGeneration.get(s.generation) ?? []), s]);
  }
  const generations = [...byGeneration.entries()]
    .map(([generation, list]) => ({ generation, list: [...list].sort((a, b) => a.position - b.position) }))
    .sort(
      (a, b) => (a.list[0]!.createdAt ?? 0) - (b.list[0]!.createdAt ?? 0) || a.generation.localeCompare(b.generation),
    );
  const protect = new Map<string, string>();
  const current = generations.filter((g) => (g.list[0]!.createdAt ?? 0) <= start).at(-1);
  if (current) {
    const base = [...current.list].reverse().find((s) => (s.createdAt ?? 0) <= start)!;
    protect.set(base.id, reason(current.generation));
  }
  for (const g of generations) {
    if ((g.list[0]!.createdAt ?? 0) > start) protect.set(g.list[0]!.id, reason(g.generation));
    // A snapshot no earlier one reaches (through contiguous segments) starts a restorable window.
    const segs = segments.filter((s) => s.generation === g.generation);
    let reach = Number.NEGATIVE_INFINITY;
    for (const s of g.list) {
      if (s.position > reach && (s.createdAt ?? 0) > start && !protect.has(s.id)) {
        protect.set(s.id, `${reason(g.generation)}: the first snapshot after a gap in the archive`);
      }
      reach = Math.max(reach, reachFrom(s.position, segs));
    }
  }
  return protect;
}

/**
 * Segments no kept snapshot needs: in a generation, those ending at or before the earliest kept
 * snapshot's position (a restore starts from a snapshot and applies only later transactions);
 * in a generation with no kept snapshot, all of them.
 */
export function removableSegments<S extends ChainSegment>(
  segments: readonly S[],
  kept: readonly Pick<ChainSnapshot, "generation" | "position">[],
): S[] {
  const earliest = new Map<string, number>();
  for (const s of kept) earliest.set(s.generation, Math.min(earliest.get(s.generation) ?? Infinity, s.position));
  return segments.filter((s) => {
    const from = earliest.get(s.generation);
    return from === undefined || s.lastTxn <= from;
  });
}

function formatWindow(ms: number): string {
  for (const [unit, size] of [
    ["d", 86_400_000],
    ["h", 3_600_000],
    ["m", 60_000],
    ["s", 1000],
  ] as const) {
    if (ms >= size && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms} ms`;
}

/** Last transaction restorable without a gap when starting from `position` (the rule of `listGenerations`). */
export function reachFrom(position: number, segments: readonly ChainSegment[]): number {
  let reach = position;
  for (const s of [...segments].sort((a, b) => a.firstTxn - b.firstTxn || a.lastTxn - b.lastTxn)) {
    if (s.firstTxn <= reach + 1 && s.lastTxn > reach) reach = s.lastTxn;
  }
  return reach;
}

/**
 * The snapshots retention must keep whatever the policy says, with the reason. Pure: generation
 * ids sort by creation time (they start with it), positions by transaction.
 */
export function chainProtectedSnapshots(
  snapshots: readonly ChainSnapshot[],
  segments: readonly ChainSegment[],
): Map<string, string> {
  const good = new Map<string, ChainSnapshot[]>();
  for (const s of snapshots) {
    if (!s.ok) continue;
    const list = good.get(s.generation) ?? [];
    list.push(s);
    good.set(s.generation, list);
  }
  const segmentsOf = (generation: string) => segments.filter((s) => s.generation === generation);
  const withSnapshots = [...good.keys()].sort();
  const newest = withSnapshots.at(-1);
  const newestChain = withSnapshots.filter((g) => segmentsOf(g).length > 0).at(-1);
  const protect = new Map<string, string>();
  for (const [generation, label] of [
    [newestChain, "the live WAL chain"],
    [newest, "the newest generation"],
  ] as const) {
    if (generation === undefined) continue;
    const ordered = [...good.get(generation)!].sort((a, b) => a.position - b.position);
    const segs = segmentsOf(generation);
    const reaches = ordered.map((s) => reachFrom(s.position, segs));
    const best = Math.max(...reaches);
    const tail = ordered[reaches.lastIndexOf(best)]!; // the newest one: fewest segments to apply
    if (!protect.has(tail.id)) protect.set(tail.id, `base of the latest restorable state of ${label} (${generation})`);
  }
  return protect;
}
