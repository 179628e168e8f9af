/**
 * Verification of the continuous archive: every WAL segment on a target is read back in full
 * (its sha256 trailer, its body, its header against its key), and each generation's transactions
 * are checked for what a restore cannot reach (a missing segment). The trial restores that prove
 * the archive applies are the restore drills (`@lifeboat/daemon`); `lifeboat verify` runs both.
 */
import { type DatabaseContext, decodeChain, mapLimit, type OperationOptions, Repository } from "@lifeboat/core";
import {
  type GenerationInfo,
  listGenerations,
  type RestoreWindow,
  restoreWindows,
  segmentCodecs,
  strandedTxns,
} from "./point-in-time.js";
import { decodeSegment } from "./segment-format.js";
import type { SegmentKeyInfo } from "./segment-keys.js";

export interface SegmentProblem {
  readonly target: string;
  readonly generation: string;
  readonly key: string;
  readonly problem: string;
}

export interface ArchivedGeneration {
  readonly target: string;
  readonly generation: string;
  readonly segments: number;
  /** Segments read back without a problem. */
  readonly segmentsOk: number;
  /** Restorable transaction ranges (`fromTxn`-`toTxn`), oldest first. */
  readonly windows: readonly { readonly fromTxn: number; readonly toTxn: number }[];
  readonly problems: readonly string[];
}

export interface ArchiveCheck {
  readonly ok: boolean;
  /** Generations with WAL segments, per target. */
  readonly generations: readonly ArchivedGeneration[];
  /** One entry per segment that failed. */
  readonly failedSegments: readonly SegmentProblem[];
  /** Targets that could not be listed. */
  readonly problems: readonly string[];
}

export interface ArchiveCheckOptions extends OperationOptions {
  /** Only this target. */
  readonly from?: string;
  /** Segments read at once. Default 8. */
  readonly concurrency?: number;
}

/** Reads back every WAL segment of `db` on each target; never throws for what it finds. */
export async function verifyArchive(db: DatabaseContext, options: ArchiveCheckOptions = {}): Promise<ArchiveCheck> {
  const generations: ArchivedGeneration[] = [];
  const failedSegments: SegmentProblem[] = [];
  const problems: string[] = [];
  const targets = options.from ? db.targets.filter((t) => t.name === options.from) : db.targets;
  for (const named of targets) {
    let listed: GenerationInfo[];
    try {
      listed = await listGenerations(new Repository(named, db.name), options);
    } catch (error) {
      problems.push(`${named.name}: cannot list the archive: ${messageOf(error)}`);
      continue;
    }
    const archived = listed.filter((g) => g.segments.length > 0);
    const total = archived.reduce((n, g) => n + g.segments.length, 0);
    let read = 0;
    for (const g of archived) {
      const found = await mapLimit(g.segments, options.concurrency ?? 8, async (seg) => {
        const problem = await checkSegment(db, named.target, seg, options);
        read++;
        options.onProgress?.({ phase: "verify", bytes: read, total, label: `${named.name} segments` });
        return problem;
      });
      const bad = found.flatMap((problem, i) =>
        problem === null ? [] : [{ target: named.name, generation: g.generation, key: g.segments[i]!.key, problem }],
      );
      failedSegments.push(...bad);
      // What a restore can reach once the unreadable segments are counted out.
      const unreadable = new Set(bad.map((b) => b.key));
      const usable = g.segments.filter((s) => !unreadable.has(s.key));
      const bads = g.segments.filter((s) => unreadable.has(s.key));
      const windows =
        bad.length === 0
          ? g.windows
          : restoreWindows(
              g.snapshots.filter((s) => s.integrity.ok),
              usable,
            );
      generations.push({
        target: named.name,
        generation: g.generation,
        segments: g.segments.length,
        segmentsOk: g.segments.length - bad.length,
        windows: windows.map((w) => ({ fromTxn: w.fromTxn, toTxn: w.toTxn })),
        problems: [...gapProblems(windows, usable, bads), ...bad.map((b) => `segment ${b.key}: ${b.problem}`)],
      });
    }
  }
  const ok = problems.length === 0 && generations.every((g) => g.problems.length === 0);
  return { ok, generations, failedSegments, problems };
}

/** What no restore from this target can get back: transactions missing (or unreadable) between or after windows. */
function gapProblems(
  windows: readonly RestoreWindow[],
  segments: readonly SegmentKeyInfo[],
  unreadable: readonly SegmentKeyInfo[],
): string[] {
  const lost = (from: number, to: number) => {
    const bad = unreadable.filter((s) => s.firstTxn <= to && s.lastTxn >= from);
    if (bad.length === 0) return "missing";
    const covered = (t: number) => bad.some((s) => s.firstTxn <= t && s.lastTxn >= t);
    for (let t = from; t <= to; t++) if (!covered(t)) return "missing or unreadable";
    return "unreadable";
  };
  if (windows.length === 0) {
    let first = Number.POSITIVE_INFINITY;
    let last = 0;
    for (const s of [...segments, ...unreadable]) {
      first = Math.min(first, s.firstTxn);
      last = Math.max(last, s.lastTxn);
    }
    return [
      `no snapshot of this generation can start a restore (its manifest is missing or failed its integrity check): its transactions ${first}-${last} cannot be restored`,
    ];
  }
  const out: string[] = [];
  for (let i = 1; i < windows.length; i++) {
    const [a, b] = [windows[i - 1]!, windows[i]!];
    if (b.fromTxn > a.toTxn + 1) {
      out.push(
        `transactions ${a.toTxn + 1}-${b.fromTxn - 1} are ${lost(a.toTxn + 1, b.fromTxn - 1)} (committed between ${a.to} and ${b.from}): no restore to that stretch`,
      );
    }
  }
  const stranded = strandedTxns(windows, segments);
  if (stranded) {
    out.push(
      `transactions ${stranded.missingFrom}-${stranded.fromTxn - 1} are ${lost(stranded.missingFrom, stranded.fromTxn - 1)}, so the archived transactions ${stranded.fromTxn}-${stranded.toTxn} cannot be restored (a restore stops at ${windows.at(-1)!.toTxn})`,
    );
  }
  return out;
}

/** Reads one segment in full; null when it is sound, else what is wrong. */
async function checkSegment(
  db: DatabaseContext,
  target: DatabaseContext["targets"][number]["target"],
  seg: SegmentKeyInfo,
  options: OperationOptions,
): Promise<string | null> {
  try {
    const object = await target.get(seg.key, { signal: options.signal });
    const segment = await decodeSegment(decodeChain(segmentCodecs(db, seg), object.body, seg.key), seg.key);
    const { header } = segment;
    const problems: string[] = [];
    if (header.generation !== seg.generation) problems.push(`its header says generation ${header.generation}`);
    if (header.firstTxn !== seg.firstTxn || header.lastTxn !== seg.lastTxn) {
      problems.push(`its header holds transactions ${header.firstTxn}-${header.lastTxn}`);
    }
    const numbers = header.transactions.map((t) => t.txn);
    if (numbers.some((n, i) => n !== header.firstTxn + i) || numbers.at(-1) !== header.lastTxn) {
      problems.push("its transactions are not numbered first to last without a gap");
    }
    const observed = header.transactions.at(-1)?.observedAt;
    if (observed !== undefined && observed !== seg.lastObservedAt) {
      problems.push(
        `its last transaction was observed at ${new Date(observed).toISOString()}, its key says ${new Date(seg.lastObservedAt).toISOString()}`,
      );
    }
    // Reading every page is what checks the body and the sha256 trailer.
    for await (const { pages } of segment.transactions()) for await (const _ of pages);
    return problems.length > 0 ? problems.join("; ") : null;
  } catch (error) {
    return messageOf(error);
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
