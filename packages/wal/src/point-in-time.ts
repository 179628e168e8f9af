/**
 * Point-in-time restore: the best snapshot of the right generation, then every transaction after
 * it, in order, up to the target (a time, a transaction number, or the end), applied to a temp
 * file; then the integrity check and the same safe swap as a snapshot restore.
 */

import { createHash } from "node:crypto";
import { constants, createReadStream, createWriteStream, ftruncateSync, writevSync } from "node:fs";
import { mkdtemp, open, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import {
  type Codec,
  type ConfirmOptions,
  checkRestoredFile,
  confirmRestore,
  type DatabaseContext,
  type DatabaseDescription,
  decodeChain,
  download,
  ErrorCodes,
  fsError,
  type IntegrityMode,
  type IntegrityResult,
  installRestoredFile,
  keys,
  LifeboatError,
  type OperationOptions,
  planRestore,
  Repository,
  type RestorePlan,
  removeQuietly,
  type SnapshotManifest,
  tableDiffs,
  tempPathFor,
  whileSyncing,
} from "@lifeboat/core";
import {
  decodeSegment,
  decompressSegment,
  type ParsedSegment,
  parseSegment,
  readSegmentHeader,
  type SegmentHeader,
  type SegmentTransaction,
} from "./segment-format.js";
import { parseSegmentKey, type SegmentKeyInfo } from "./segment-keys.js";

/** Page images held before they are written during a point-in-time restore. */
const APPLY_BATCH_BYTES = 64 * 1024 * 1024;

export interface GenerationInfo {
  readonly generation: string;
  readonly snapshots: readonly SnapshotManifest[];
  readonly segments: readonly SegmentKeyInfo[];
  /** First restorable moment: the earliest snapshot's time. */
  readonly from: string | null;
  /** Last restorable moment: the end of the newest window (see `windows`). */
  readonly to: string | null;
  /** Last transaction number on the target (0: snapshots only), restorable or not. */
  readonly lastTxn: number;
  /** Transactions that are restorable without a gap after the earliest good snapshot (the first window's end). */
  readonly continuousTo: number;
  /** The newest restorable transaction: what a restore without a point reaches. */
  readonly restorableTo: number;
  /**
   * The stretches a restore can reach, oldest first: each starts at a good snapshot and runs
   * through the segments that follow it without a gap. More than one only when transactions are
   * missing in between (a target that was down longer than the local queue could hold); two
   * windows can also touch (a snapshot right after the last archived transaction).
   */
  readonly windows: readonly RestoreWindow[];
  /** Transactions archived after the newest window that no restore can reach (see `strandedTxns`). */
  readonly stranded: StrandedTxns | null;
}

export interface RestoreWindow {
  readonly fromTxn: number;
  readonly toTxn: number;
  /** The window's first snapshot's time. */
  readonly from: string;
  /** The observed time of its last archived transaction (its first snapshot's time if it has none). */
  readonly to: string;
}

/** Every generation on a target with its snapshots and segments, oldest first. */
export async function listGenerations(repo: Repository, options: OperationOptions = {}): Promise<GenerationInfo[]> {
  // Segments first: a snapshot is stored before the segments that follow it, so a replicator
  // writing meanwhile cannot make a listing show segments without their snapshot.
  const segmentsByGen = new Map<string, SegmentKeyInfo[]>();
  for await (const info of repo.target.list(keys.generations(repo.database), options)) {
    const seg = parseSegmentKey(info.key);
    if (!seg) continue;
    const list = segmentsByGen.get(seg.generation) ?? [];
    list.push(seg);
    segmentsByGen.set(seg.generation, list);
  }
  const { snapshots } = await repo.listSnapshots(options);
  const generations = new Set([...snapshots.map((s) => s.manifest.generation), ...segmentsByGen.keys()]);
  return [...generations].sort().map((generation) => {
    const snaps = snapshots
      .map((s) => s.manifest)
      .filter((m) => m.generation === generation)
      .sort((a, b) => a.position - b.position);
    const segments = (segmentsByGen.get(generation) ?? []).sort(
      (a, b) => a.firstTxn - b.firstTxn || a.lastTxn - b.lastTxn,
    );
    const windows = restoreWindows(
      snaps.filter((m) => m.integrity.ok),
      segments,
    );
    const newest = windows.at(-1);
    const newestSnap = snaps.at(-1);
    return {
      generation,
      snapshots: snaps,
      segments,
      from: windows[0]?.from ?? snaps[0]?.createdAt ?? null,
      to: newest?.to ?? newestSnap?.createdAt ?? null,
      lastTxn: segments.at(-1)?.lastTxn ?? newestSnap?.position ?? 0,
      continuousTo: windows[0]?.toTxn ?? 0,
      restorableTo: newest?.toTxn ?? 0,
      windows,
      stranded: strandedTxns(windows, segments),
    };
  });
}

/**
 * One pass over snapshots and segments, both in transaction order. A window's end time is its
 * last transaction's observed time (a snapshot's `createdAt` is later than its content: it is set
 * after the upload), or its first snapshot's time when no segment follows it. A snapshot extends
 * a window only when its position is inside it; one just past the end starts the next window, as
 * no time of the transaction between is archived.
 */
export function restoreWindows(
  snaps: readonly SnapshotManifest[],
  segments: readonly SegmentKeyInfo[],
): RestoreWindow[] {
  const windows: { fromTxn: number; toTxn: number; from: string; to: number }[] = [];
  let j = 0;
  for (const snap of snaps) {
    let w = windows.at(-1);
    if (!w || snap.position > w.toTxn) {
      w = { fromTxn: snap.position, toTxn: snap.position, from: snap.createdAt, to: Date.parse(snap.createdAt) };
      windows.push(w);
    }
    for (; j < segments.length && segments[j]!.firstTxn <= w.toTxn + 1; j++) {
      const seg = segments[j]!;
      if (seg.lastTxn <= w.toTxn) continue;
      w.toTxn = seg.lastTxn;
      w.to = seg.lastObservedAt;
    }
  }
  return windows.map((w) => ({ ...w, to: new Date(w.to).toISOString() }));
}

export interface StrandedTxns {
  readonly fromTxn: number;
  readonly toTxn: number;
  /** Transactions `missingFrom` to `fromTxn - 1` are missing (or unreadable) on the target. */
  readonly missingFrom: number;
}

/**
 * Segments after the newest window that no restore can reach (they follow a missing one, and no
 * good snapshot lies past the gap), or null. Also null without any window: then no segment is
 * reachable, which callers report on its own.
 */
export function strandedTxns(
  windows: readonly RestoreWindow[],
  segments: readonly SegmentKeyInfo[],
): StrandedTxns | null {
  const last = windows.at(-1);
  const lastTxn = segments.at(-1)?.lastTxn ?? 0;
  const beyond = last && segments.find((s) => s.firstTxn > last.toTxn + 1);
  return last && beyond && lastTxn > last.toTxn
    ? { fromTxn: beyond.firstTxn, toTxn: lastTxn, missingFrom: last.toTxn + 1 }
    : null;
}

/** The generation with the greatest `score` (null: not a candidate); the newer one of a tie. */
function newestBy(
  generations: readonly GenerationInfo[],
  score: (g: GenerationInfo) => number | null,
): GenerationInfo | undefined {
  let best: GenerationInfo | undefined;
  let bestScore = Number.NEGATIVE_INFINITY;
  for (const g of generations) {
    const s = score(g);
    if (s !== null && s >= bestScore) {
      best = g;
      bestScore = s;
    }
  }
  return best;
}

/** The newest restorable moment of `g` at or before `t` (ms), or null when it has none that early. */
function latestAtOrBefore(g: GenerationInfo, t: number): number | null {
  let latest: number | null = null;
  for (const w of g.windows) {
    if (Date.parse(w.from) <= t) latest = Math.min(Date.parse(w.to), t);
  }
  return latest;
}

/** "0-1 (… to …), 32-40 (… to …)": the windows, for messages. */
function describeWindows(windows: readonly RestoreWindow[]): string {
  return windows.map((w) => `transactions ${w.fromTxn}-${w.toTxn} (${w.from} to ${w.to})`).join(", ");
}

export interface PointInTimeOptions extends OperationOptions, ConfirmOptions {
  /** Restore the state as of this moment (ms since the epoch): every transaction observed at or before it. */
  readonly toTime?: number;
  /** Restore up to and including this transaction of the generation. */
  readonly toTxn?: number;
  /** The generation (default: the newest one covering the target). */
  readonly generation?: string;
  readonly output?: string;
  readonly from?: string;
  readonly dryRun?: boolean;
  readonly integrity?: IntegrityMode;
  /** Segments fetched ahead while applying. Default 8. */
  readonly prefetch?: number;
}

export interface PointInTimeResult extends RestorePlan {
  readonly dryRun: boolean;
  readonly generation: string;
  readonly snapshotPosition: number;
  readonly txn: number;
  /** Observed time of the last applied transaction (or the snapshot's time). */
  readonly restoredTo: string;
  readonly segmentsApplied: number;
  readonly safetyCopy: string | null;
  readonly integrity: IntegrityResult | null;
  readonly durationMs: number;
  /**
   * Facts about the point reached that the user should know: with `toTime`, a moment the archive
   * cannot place exactly (transactions a restarted replicator found already committed, or a
   * stretch between two generations that nothing archived).
   */
  readonly warnings: readonly string[];
}

interface Choice {
  readonly repo: Repository;
  readonly generation: GenerationInfo;
  readonly snapshot: SnapshotManifest;
  readonly segments: readonly SegmentKeyInfo[];
  /** Apply up to this transaction (inclusive). */
  readonly txn: number;
  /** Inside the last segment, stop at this time (else by txn only). */
  readonly toTime: number | undefined;
  /** What the user should know about the point reached (see PointInTimeResult.warnings). */
  readonly warnings: readonly string[];
}

async function choose(db: DatabaseContext, options: PointInTimeOptions): Promise<Choice> {
  const candidates = options.from ? db.targets.filter((t) => t.name === options.from) : db.targets;
  if (candidates.length === 0) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `No target named "${options.from}" for ${db.name}.`, {
      hint: `Targets: ${db.targets.map((t) => t.name).join(", ")}.`,
    });
  }
  const failures: string[] = [];
  const warnings: string[] = [];
  for (const named of candidates) {
    const repo = new Repository(named, db.name, db);
    await repo.checkOwner(options);
    let generations: GenerationInfo[];
    try {
      generations = (await listGenerations(repo, options)).filter((g) => g.snapshots.some((s) => s.integrity.ok));
    } catch (error) {
      failures.push(`${named.name}: ${(error as Error).message}`);
      continue;
    }
    if (options.generation) generations = generations.filter((g) => g.generation.startsWith(options.generation!));
    if (generations.length === 0) {
      failures.push(`${named.name}: ${options.generation ? `no generation ${options.generation}` : "no backups"}`);
      continue;
    }
    let generation: GenerationInfo | undefined;
    if (options.toTime !== undefined) {
      const t = new Date(options.toTime).toISOString();
      // The generation holding the newest state at or before T: a one-off backup taken while a
      // replicator archived the database is a generation of its own, newer, but with an older
      // state than the archive holds for T.
      generation = newestBy(generations, (g) => latestAtOrBefore(g, options.toTime!));
      if (!generation) {
        throw new LifeboatError(
          ErrorCodes.NO_RESTORE_POINT,
          `Nothing of ${db.name} on ${named.name} is as old as ${t}: the earliest restorable moment is ${generations[0]!.from}.`,
          {
            hint: "Pick a later time (lifeboat list shows each generation's window).",
          },
        );
      }
    } else if (options.toTxn !== undefined) {
      // Transaction numbers restart with each generation: without --generation, the newest one
      // that can restore exactly this transaction.
      const n = options.toTxn;
      generation =
        [...generations].reverse().find((g) => g.windows.some((w) => w.fromTxn <= n && n <= w.toTxn)) ??
        generations.at(-1)!;
    } else {
      generation = newestBy(generations, (g) => (g.to === null ? null : Date.parse(g.to)))!;
    }
    const g = generation;
    let window: RestoreWindow | undefined;
    let txn: number;
    if (options.toTxn !== undefined) {
      const n = options.toTxn;
      window = g.windows.find((w) => w.fromTxn <= n && n <= w.toTxn);
      if (!window) {
        throw new LifeboatError(
          ErrorCodes.NO_RESTORE_POINT,
          `Transaction ${n} of generation ${g.generation} is not restorable from ${named.name}: it holds ${describeWindows(g.windows)}.`,
          { hint: "Pick a transaction in a window `lifeboat list` shows, or restore from another target (--from)." },
        );
      }
      txn = n;
    } else if (options.toTime !== undefined) {
      const t = options.toTime;
      const at = g.windows.findLastIndex((w) => Date.parse(w.from) <= t);
      window = g.windows[at]!;
      const next = g.windows[at + 1];
      if (next && t > Date.parse(window.to)) {
        // Between two windows: the transactions of that stretch are missing on this target.
        throw new LifeboatError(
          ErrorCodes.NO_RESTORE_POINT,
          `${new Date(t).toISOString()} is not restorable from ${named.name}: generation ${g.generation} lacks the transactions after ${window.toTxn} up to its snapshot at ${next.fromTxn} there (committed between ${window.to} and ${next.from}).`,
          {
            hint: `Restore to ${window.to} or earlier, or ${next.from} or later, or from another target (--from). Windows: ${describeWindows(g.windows)}.`,
          },
        );
      }
      if (!next && g.stranded && t > Date.parse(window.to)) {
        // After the last window, with later transactions archived beyond missing ones: the state
        // at that moment is unknown here (restoring the window's end would silently drop them).
        throw new LifeboatError(
          ErrorCodes.NO_RESTORE_POINT,
          `${new Date(t).toISOString()} is not restorable from ${named.name}: generation ${g.generation} lacks transactions ${g.stranded.missingFrom}-${g.stranded.fromTxn - 1} there (committed after ${window.to}), so its archived transactions ${g.stranded.fromTxn}-${g.stranded.toTxn} cannot be applied.`,
          {
            hint: `Restore to ${window.to} or earlier (the last restorable moment), or from another target (--from); \`lifeboat verify\` checks the archive. Windows: ${describeWindows(g.windows)}.`,
          },
        );
      }
      const w = window;
      const inWindow = g.segments.filter((s) => s.lastTxn > w.fromTxn && s.lastTxn <= w.toTxn);
      const after = inWindow.find((s) => s.lastObservedAt > t);
      txn = w.toTxn;
      if (after) {
        // The segment holding the moment: its header's per-transaction times say where to stop.
        const header = await readSegmentHeader(
          decodeChain(
            segmentCodecs(db, after),
            (await repo.target.get(after.key, { signal: options.signal })).body,
            after.key,
          ),
          after.key,
        );
        const first = header.transactions.find((x) => x.observedAt > t);
        txn = first ? first.txn - 1 : after.lastTxn;
        if (first?.committedAfter !== undefined && first.committedAfter < t) {
          const unknown = header.transactions.filter((x) => x.committedAfter === first.committedAfter);
          warnings.push(
            `Transactions ${first.txn}-${unknown.at(-1)!.txn} were committed at unknown times between ${iso(first.committedAfter)} and ${iso(first.observedAt)}, while no replicator was watching the database; the restore stops before them, at transaction ${first.txn - 1}, the last one known to be committed by ${iso(t)}. To include some of them, restore with --to-txn (up to ${unknown.at(-1)!.txn}) --generation ${g.generation}.`,
          );
        }
      } else if (t > Date.parse(w.to)) {
        const next = generations[generations.indexOf(g) + 1];
        if (next?.from && Date.parse(next.from) > t && !options.generation) {
          warnings.push(
            `Nothing was archived between ${w.to} (the end of generation ${g.generation}) and ${next.from} (the start of generation ${next.generation}), and ${iso(t)} lies between them: the restore gives the state as of ${w.to}. Anything committed after that and before ${next.from} is not in it; restore to ${next.from} or later to get it.`,
          );
        }
      }
    } else {
      window = g.windows.at(-1);
      txn = g.restorableTo;
      if (g.lastTxn > txn) {
        warnings.push(
          `Generation ${g.generation} on ${named.name} has segments up to transaction ${g.lastTxn}, but transaction ${txn + 1} is missing there, so the restore stops at ${txn}. Windows: ${describeWindows(g.windows)}.`,
        );
      }
    }
    const w = window;
    const good = g.snapshots.filter((s) => s.integrity.ok && w && s.position >= w.fromTxn);
    const snapshot = [...good]
      .reverse()
      .find(
        (s) =>
          s.position <= txn &&
          (options.toTime === undefined ||
            Date.parse(s.createdAt) <= options.toTime ||
            s.position === good[0]!.position),
      );
    if (!snapshot) {
      throw new LifeboatError(
        ErrorCodes.NO_RESTORE_POINT,
        `No snapshot of generation ${g.generation} is at or before transaction ${txn}.`,
        {
          hint: "Pick a later point (lifeboat list).",
        },
      );
    }
    const segments = generation.segments.filter((s) => s.lastTxn > snapshot.position && s.firstTxn <= txn);
    return { repo, generation, snapshot, segments, txn, toTime: options.toTime, warnings };
  }
  throw new LifeboatError(ErrorCodes.NOT_FOUND, `No backup of ${db.name} to restore (${failures.join("; ")}).`, {
    hint: "Run `lifeboat list` to see what each target holds.",
  });
}

/** Restores the database to a point in time (or the latest archived state). */
export async function restoreToPoint(
  db: DatabaseContext,
  options: PointInTimeOptions = {},
): Promise<PointInTimeResult> {
  const started = Date.now();
  const output = resolve(options.output ?? db.path);
  const choice = await choose(db, options);
  const { repo, snapshot } = choice;
  const plan = await planRestore(db, snapshot, repo.named.name, output);
  const base = {
    ...plan,
    generation: choice.generation.generation,
    snapshotPosition: snapshot.position,
  };
  if (options.dryRun) {
    return {
      ...base,
      dryRun: true,
      txn: choice.txn,
      restoredTo: choice.segments.at(-1)
        ? new Date(
            Math.min(choice.segments.at(-1)!.lastObservedAt, options.toTime ?? Number.POSITIVE_INFINITY),
          ).toISOString()
        : snapshot.createdAt,
      segmentsApplied: choice.segments.length,
      safetyCopy: null,
      integrity: null,
      durationMs: Date.now() - started,
      warnings: choice.warnings,
    };
  }
  await confirmRestore(db, plan, options, snapshot.source.environment);
  const temp = tempPathFor(output, "restore");
  let applied: { txn: number; observedAt: number | null; segments: number };
  let integrity: IntegrityResult;
  let restored = null as DatabaseDescription | null;
  // Segments are fetched and decoded while the snapshot downloads.
  const fetcher = await SegmentFetcher.start(db, choice, temp, options);
  try {
    // One fsync at the end (it covers the snapshot's pages too), while the integrity check runs.
    let result: Awaited<ReturnType<typeof applySegments>>;
    try {
      await download(db, repo, snapshot, temp, options, "none");
      result = await applySegments(choice, temp, fetcher, options);
    } finally {
      await fetcher.close();
    }
    applied = result;
    integrity = await whileSyncing(result.durable, async () => {
      const checked = await checkRestoredFile(
        db,
        temp,
        options.integrity ?? db.integrity,
        `The restore of ${db.name} to transaction ${result.txn} of generation ${choice.generation.generation}`,
      );
      // The row counts of what is about to be installed, also while the fsync runs.
      restored = await db.driver.describe(temp).catch(() => null);
      return checked;
    });
  } catch (error) {
    await removeQuietly(temp);
    throw error;
  }
  const safetyCopy = await installRestoredFile(db, temp, output, plan.outputExists);
  await db.hooks.run("afterRestore", {
    database: { name: db.name, path: db.path },
    backupId: `${choice.generation.generation}@${applied.txn}`,
    output,
  });
  return {
    ...base,
    tables: restored
      ? tableDiffs(
          plan.tables.flatMap((p) => (p.currentRows === null ? [] : [{ name: p.name, rows: p.currentRows }])),
          restored.tables,
        )
      : plan.tables,
    userVersion: { current: plan.userVersion.current, backup: restored?.userVersion ?? plan.userVersion.backup },
    dryRun: false,
    txn: applied.txn,
    restoredTo: applied.observedAt ? new Date(applied.observedAt).toISOString() : snapshot.createdAt,
    segmentsApplied: applied.segments,
    safetyCopy,
    integrity,
    durationMs: Date.now() - started,
    warnings: choice.warnings,
  };
}

/** Segments up to this size as stored (after their codecs) are fetched whole into memory. */
const IN_MEMORY_STORED_BYTES = 16 * 1024 * 1024;
/** Segments up to this size decompressed are decompressed in one piece; larger ones are streamed. */
const IN_MEMORY_PLAIN_BYTES = 64 * 1024 * 1024;
/** gzip bodies up to this size decompressed are inflated ahead, on libuv's thread pool. */
const AHEAD_PLAIN_BYTES = 16 * 1024 * 1024;
/** Bytes held ahead of the segment being applied; fetching pauses above it. */
const AHEAD_BYTES = 64 * 1024 * 1024;

/** A fetched segment, checked (sha256 trailer): in memory, or spilled to a file when large. */
type Fetched =
  | { readonly kind: "memory"; readonly parsed: ParsedSegment; readonly plain: Promise<Buffer> | null }
  | { readonly kind: "file"; readonly file: string; readonly codecs: Codec[] };

/**
 * Fetches and checks the chosen segments ahead of the one being applied, `prefetch` at a time
 * and at most AHEAD_BYTES of them: downloads, decryption, sha256 (and gunzip, on libuv's thread
 * pool) overlap the snapshot download and the page writes. Segments too large to hold spill to
 * temp files next to the output and are streamed (constant memory, whatever a segment's size).
 */
class SegmentFetcher {
  readonly #fetched = new Map<number, Promise<Fetched>>();
  readonly #held = new Map<number, number>();
  #next = 0;
  #closed = false;

  private constructor(
    private readonly db: DatabaseContext,
    private readonly choice: Choice,
    private readonly spill: string,
    private readonly options: PointInTimeOptions,
  ) {}

  static async start(db: DatabaseContext, choice: Choice, near: string, options: PointInTimeOptions) {
    const spill = await mkdtemp(join(dirname(near), ".lifeboat-segments-"));
    const fetcher = new SegmentFetcher(db, choice, spill, options);
    fetcher.#fill();
    return fetcher;
  }

  /** Segment `i` (in order: each is taken once). */
  async take(i: number): Promise<Fetched> {
    this.#next = i;
    this.#fill();
    const fetched = await this.#fetched.get(i)!;
    this.#fetched.delete(i);
    this.#held.delete(i);
    this.#next = i + 1;
    this.#fill();
    return fetched;
  }

  async close(): Promise<void> {
    this.#closed = true;
    await Promise.allSettled(this.#fetched.values());
    await removeQuietly(this.spill);
  }

  #fill(): void {
    const prefetch = Math.max(1, this.options.prefetch ?? 8);
    let held = 0;
    for (const bytes of this.#held.values()) held += bytes;
    for (let k = this.#next; k < this.#next + prefetch && k < this.choice.segments.length; k++) {
      if (this.#fetched.has(k)) continue;
      if (k > this.#next && held >= AHEAD_BYTES) return;
      this.#fetch(k);
    }
  }

  #fetch(i: number): void {
    const seg = this.choice.segments[i]!;
    const file = join(this.spill, `${i}.seg`);
    const fetching = (async (): Promise<Fetched> => {
      const codecs = segmentCodecs(this.db, seg);
      const object = await this.choice.repo.target.get(seg.key, { signal: this.options.signal });
      // The object as stored: decrypted data never reaches a temp file.
      const stored = await readUpTo(object.body, IN_MEMORY_STORED_BYTES, file);
      if (stored) {
        const content =
          codecs.length === 0
            ? stored
            : await readUpTo(decodeChain(codecs, Readable.from([stored]), seg.key), IN_MEMORY_STORED_BYTES);
        if (content) {
          // Checked whole before any of it is applied: a restore may stop inside a segment.
          const parsed = parseSegment(content, seg.key);
          if (parsed.plainBytes <= IN_MEMORY_PLAIN_BYTES) {
            const ahead = parsed.header.compression === "gzip" && parsed.plainBytes <= AHEAD_PLAIN_BYTES;
            const plain = ahead ? decompressSegment(parsed, seg.key) : null;
            plain?.catch(() => {}); // reported when the segment is taken
            return { kind: "memory", parsed, plain };
          }
        }
        await writeFile(file, stored, { mode: 0o600 });
      }
      // Large: checked whole from its file, then streamed (decoded twice with codecs).
      await verifySegmentTrailer(decodeChain(codecs, createReadStream(file), seg.key), seg.key);
      return { kind: "file", file, codecs };
    })();
    this.#fetched.set(i, fetching);
    fetching.then(
      (fetched) => {
        if (fetched.kind === "memory" && this.#fetched.has(i))
          this.#held.set(i, fetched.parsed.body.length + (fetched.plain ? fetched.parsed.plainBytes : 0));
        if (!this.#closed) this.#fill();
      },
      () => {},
    );
  }
}

/** The codecs a segment was stored with, from its key's extensions. */
export function segmentCodecs(db: DatabaseContext, seg: SegmentKeyInfo): Codec[] {
  const codecs: Codec[] = [];
  for (const ext of seg.extensions.split(".").filter(Boolean)) {
    const codec = db.codecs.find((c) => c.extension === `.${ext}`);
    if (!codec) {
      throw new LifeboatError(
        ErrorCodes.CONFIG_INVALID,
        `Segment ${seg.key} was written with the .${ext} codec, which this config does not have.`,
        { hint: "Add the codec (and its keys) to the database's codecs in lifeboat.yml." },
      );
    }
    codecs.push(codec);
  }
  return codecs;
}

/** An ISO 8601 time, for messages. */
function iso(ms: number): string {
  return new Date(ms).toISOString();
}

/**
 * The whole stream in one buffer if it has at most `limit` bytes. Past that: null, after writing
 * all of it to `spillTo` when given (else the rest is left unread).
 */
async function readUpTo(source: AsyncIterable<Uint8Array>, limit: number, spillTo?: string): Promise<Buffer | null> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  const iterator = source[Symbol.asyncIterator]();
  for (;;) {
    const next = await iterator.next();
    if (next.done) return Buffer.concat(chunks, size);
    chunks.push(next.value);
    size += next.value.byteLength;
    if (size > limit) break;
  }
  if (!spillTo) {
    await iterator.return?.();
    return null;
  }
  const rest = (async function* () {
    yield* chunks;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  })();
  await pipeline(rest, createWriteStream(spillTo, { mode: 0o600 }));
  return null;
}

/**
 * Applies the chosen segments to the snapshot in `file`: page images written in place, the file
 * truncated to each commit's size. Segments come from `fetcher`, checked, in order.
 */
async function applySegments(
  choice: Choice,
  file: string,
  fetcher: SegmentFetcher,
  options: PointInTimeOptions,
): Promise<{ txn: number; observedAt: number | null; segments: number; durable: Promise<void> }> {
  const pageSize = choice.snapshot.source.pageSize;
  const recordSize = 4 + pageSize;
  const handle = await open(file, constants.O_RDWR);
  let txn = choice.snapshot.position;
  let observedAt: number | null = null;
  let applied = 0;
  let size = (await handle.stat()).size;
  // Within a batch only each page's last image matters, and the last commit's size: collect them,
  // then write in page order, consecutive pages in one call, and truncate once (a page past a
  // later shrink is cut off by it). An image is a view into a decoded segment (no copy): a batch
  // holds those segments until it is written.
  const pending = new Map<number, Buffer>();
  let pendingBytes = 0;
  let commitSize = size / pageSize;
  let stop = false;
  const flush = () => {
    const pgnos = [...pending.keys()].sort((a, b) => a - b);
    for (let i = 0; i < pgnos.length && pgnos[i]! <= commitSize; ) {
      const first = pgnos[i]!;
      const run = [pending.get(first)!];
      for (
        i++;
        i < pgnos.length && pgnos[i] === first + run.length && pgnos[i]! <= commitSize && run.length < 1024;
        i++
      )
        run.push(pending.get(pgnos[i]!)!);
      writeAll(handle.fd, run, (first - 1) * pageSize, file);
    }
    pending.clear();
    pendingBytes = 0;
    const commitBytes = commitSize * pageSize;
    if (commitBytes !== size) {
      try {
        ftruncateSync(handle.fd, commitBytes);
      } catch (error) {
        throw fsError(error, "truncate", file);
      }
    }
    size = commitBytes;
  };
  /** False when `t` is past the target (the restore stops before it). */
  const admit = (t: SegmentTransaction, key: string): boolean => {
    if (t.txn !== txn + 1) {
      throw new LifeboatError(
        ErrorCodes.CORRUPT_BACKUP,
        `Transaction ${txn + 1} of generation ${choice.generation.generation} is missing (segment ${key} starts at ${t.txn}).`,
        { hint: "Restore to a point before the gap (lifeboat list shows the restorable window)." },
      );
    }
    return !(t.txn > choice.txn || (choice.toTime !== undefined && t.observedAt > choice.toTime));
  };
  const committed = (t: SegmentTransaction) => {
    commitSize = t.commitSize;
    txn = t.txn;
    observedAt = t.observedAt;
  };
  const checkPageSize = (header: SegmentHeader, key: string) => {
    if (header.pageSize !== pageSize) {
      throw new LifeboatError(
        ErrorCodes.CORRUPT_BACKUP,
        `Segment ${key} has page size ${header.pageSize}, the snapshot ${pageSize}.`,
        { hint: "Restore from another generation." },
      );
    }
  };
  try {
    for (let i = 0; i < choice.segments.length && !stop; i++) {
      const seg = choice.segments[i]!;
      const fetched = await fetcher.take(i);
      if (fetched.kind === "memory") {
        const { header } = fetched.parsed;
        checkPageSize(header, seg.key);
        const plain = await (fetched.plain ?? decompressSegment(fetched.parsed, seg.key));
        let offset = 0;
        let used = false;
        for (const t of header.transactions) {
          const end = offset + t.pages * recordSize;
          if (t.txn > txn) {
            if (!admit(t, seg.key)) {
              stop = true;
              break;
            }
            for (; offset < end; offset += recordSize)
              pending.set(plain.readUInt32BE(offset), plain.subarray(offset + 4, offset + recordSize));
            used = true;
            committed(t);
          }
          offset = end;
        }
        if (used) pendingBytes += plain.length;
      } else {
        const decoded = await decodeSegment(
          decodeChain(fetched.codecs, createReadStream(fetched.file), seg.key),
          seg.key,
        );
        checkPageSize(decoded.header, seg.key);
        for await (const { txn: t, pages } of decoded.transactions()) {
          if (t.txn <= txn) continue; // already in the snapshot (the decoder skips unread pages)
          if (!admit(t, seg.key)) {
            stop = true;
            break;
          }
          for await (const batch of pages) {
            for (const page of batch) {
              // Our own copy: a view would pin the decoder's whole chunk.
              if (!pending.has(page.pgno)) pendingBytes += pageSize;
              pending.set(page.pgno, Buffer.from(page.data));
            }
          }
          committed(t);
          if (pendingBytes >= APPLY_BATCH_BYTES) flush();
        }
      }
      if (pendingBytes >= APPLY_BATCH_BYTES) flush();
      applied++;
      options.onProgress?.({
        phase: "download",
        bytes: txn - choice.snapshot.position,
        total: choice.txn - choice.snapshot.position,
        label: "transactions",
      });
    }
    flush();
    // Page 1 from the WAL says "WAL mode" (bytes 18-19 = 2): the restored file is a plain rollback-journal database.
    writeAll(handle.fd, [Buffer.from([1, 1])], 18, file);
  } catch (error) {
    await handle.close();
    throw error;
  }
  // The caller checks the file while the fsync runs (whileSyncing).
  const durable = handle.sync().finally(() => handle.close());
  durable.catch(() => {});
  return { txn, observedAt, segments: applied, durable };
}

/** Writes `buffers` back to back at `position`, whatever the kernel takes per call. */
function writeAll(fd: number, buffers: Buffer[], position: number, file: string): void {
  let rest = buffers;
  let at = position;
  try {
    while (rest.length > 0) {
      let written = writevSync(fd, rest, at);
      at += written;
      const left: Buffer[] = [];
      for (const b of rest) {
        if (written >= b.length) written -= b.length;
        else {
          left.push(written > 0 ? b.subarray(written) : b);
          written = 0;
        }
      }
      rest = left;
    }
  } catch (error) {
    throw fsError(error, "write", file);
  }
}
/** Checks a segment file's sha256 trailer (the last 32 bytes cover everything before them). */
async function verifySegmentTrailer(source: AsyncIterable<Uint8Array>, name: string): Promise<void> {
  // Everything but the last 32 bytes is hashed; those 32 are the trailer.
  const hash = createHash("sha256");
  let tail: Buffer = Buffer.alloc(0);
  let size = 0;
  for await (const chunk of source) {
    size += chunk.byteLength;
    if (chunk.byteLength >= 32) {
      hash.update(tail);
      hash.update(chunk.subarray(0, chunk.byteLength - 32));
      tail = Buffer.from(chunk.subarray(chunk.byteLength - 32));
    } else {
      const joined = Buffer.concat([tail, chunk]);
      const keep = Math.min(32, joined.byteLength);
      hash.update(joined.subarray(0, joined.byteLength - keep));
      tail = joined.subarray(joined.byteLength - keep);
    }
  }
  if (size <= 32 || !tail.equals(hash.digest())) {
    throw new LifeboatError(
      ErrorCodes.CORRUPT_BACKUP,
      `WAL segment ${name} is corrupt: its sha256 trailer does not match.`,
      {
        plugin: "wal",
        hint: "Nothing was changed. Restore to a point before this segment, or from another target (--from NAME); run `lifeboat verify`.",
      },
    );
  }
}
