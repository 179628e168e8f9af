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
      hint: "Pass --keep-last N and/or --keep-within DURATION, or set `retention:` for the database in lifeboat.yml.",
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
}

export interface ChainSegment {
  readonly generation: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
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
    const earliest = ordered[0]!;
    if (!protect.has(earliest.id)) protect.set(earliest.id, `earliest snapshot of ${label} (${generation})`);
    const reaches = ordered.map((s) => reachFrom(s.position, segs));
    const best = Math.max(...reaches);
    const tail = ordered[reaches.indexOf(best)]!;
    if (!protect.has(tail.id)) protect.set(tail.id, `base of the latest restorable state of ${label} (${generation})`);
  }
  return protect;
}
