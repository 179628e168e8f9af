/**
 * Restore drills: proof that the backups restore, not just that their bytes are intact. On each
 * target the drill restores, into a temp directory, (1) the latest archived state and (2) a random
 * point in time of the newest generation, each with the full `integrity_check`, and compares the
 * result with what the manifests promise. The live database is never touched: guards and
 * restore hooks (which exist for restores over a database) are not consulted; `onVerifyFailed`
 * hooks hear about every failure.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type DatabaseContext,
  HookRunner,
  type IntegrityResult,
  Repository,
  removeQuietly,
  type SnapshotManifest,
} from "@lifeboat/core";
import { type GenerationInfo, listGenerations, type PointInTimeResult, restoreToPoint } from "@lifeboat/wal";

export interface DrillCheck {
  readonly target: string;
  /** `latest`: the newest restorable state; `point`: a random moment of the newest generation. */
  readonly kind: "latest" | "point";
  readonly ok: boolean;
  readonly generation: string | null;
  /** The snapshot the restore started from. */
  readonly snapshotId: string | null;
  /** Transactions applied up to (the snapshot's position when none were). */
  readonly txn: number | null;
  /** For `point`: the moment asked for (ISO). */
  readonly pointInTime: string | null;
  readonly restoredTo: string | null;
  readonly integrity: IntegrityResult | null;
  readonly problems: readonly string[];
  readonly durationMs: number;
}

export interface DrillResult {
  readonly database: string;
  readonly ok: boolean;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly checks: readonly DrillCheck[];
  /** Every problem, prefixed with its target. */
  readonly problems: readonly string[];
}

export interface DrillOptions {
  /** Where the trial restores are written (needs room for the database, twice). Default: the OS temp dir. */
  readonly workDir?: string;
  /** Only these targets. Default: every target. */
  readonly targets?: readonly string[];
  /** Picks the random point in time (returns [0, 1)). Default Math.random. */
  readonly random?: () => number;
  readonly signal?: AbortSignal;
}

/**
 * Runs a restore drill of `db` on every target (see the module comment). Never throws for a
 * failed restore: the result says what failed, and `onVerifyFailed` hooks are run for it.
 */
export async function runRestoreDrill(db: DatabaseContext, options: DrillOptions = {}): Promise<DrillResult> {
  const started = Date.now();
  const random = options.random ?? Math.random;
  // The drill writes only to its own temp files: restore guards and hooks are not for it.
  const quiet: DatabaseContext = { ...db, guards: [], hooks: new HookRunner() };
  const targets = options.targets ? db.targets.filter((t) => options.targets!.includes(t.name)) : db.targets;
  const checks: DrillCheck[] = [];
  const dir = await mkdtemp(join(options.workDir ?? tmpdir(), "lifeboat-drill-"));
  try {
    for (const named of targets) {
      const began = Date.now();
      let generations: GenerationInfo[];
      try {
        generations = await listGenerations(new Repository(named, db.name), { signal: options.signal });
      } catch (error) {
        checks.push(failed(named.name, "latest", [`cannot list the backups: ${messageOf(error)}`], began));
        continue;
      }
      const restorable = generations.filter((g) => g.snapshots.some((s) => s.integrity.ok));
      const newest = restorable.at(-1);
      if (!newest) {
        checks.push(failed(named.name, "latest", ["no restorable backup on this target"], began));
        continue;
      }
      checks.push(await drillLatest(quiet, named.name, newest, join(dir, `${named.name}-latest.db`), options));
      const at = newest.segments.length > 0 ? pickDrillMoment(newest.windows, random) : null;
      if (at !== null) {
        checks.push(await drillPoint(quiet, named.name, newest, at, join(dir, `${named.name}-point.db`), options));
      }
    }
  } finally {
    await removeQuietly(dir);
  }
  const problems = checks.flatMap((c) => c.problems.map((p) => `${c.target} (${c.kind}): ${p}`));
  const result: DrillResult = {
    database: db.name,
    ok: checks.length > 0 && checks.every((c) => c.ok),
    startedAt: new Date(started).toISOString(),
    durationMs: Date.now() - started,
    checks,
    problems: checks.length === 0 ? ["no target to drill"] : problems,
  };
  for (const check of checks.filter((c) => !c.ok)) {
    await db.hooks.run("onVerifyFailed", {
      database: { name: db.name, path: db.path },
      backupId: check.snapshotId ?? (check.generation ? `${check.generation}@${check.txn ?? "?"}` : "none"),
      problems: check.problems.map((p) => `restore drill (${check.kind}) on ${check.target}: ${p}`),
    });
  }
  return result;
}

/**
 * A random moment (epoch ms) inside one of a generation's restorable windows, weighted by their
 * length; null when none spans any time. A target that missed transactions (an outage longer than
 * the replicator's queue) has more than one window, and a moment in the gap between them is
 * refused by design: the drill must not pick one.
 */
export function pickDrillMoment(
  windows: readonly { readonly from: string; readonly to: string }[],
  random: () => number,
): number | null {
  const spans = windows.map((w) => ({ from: Date.parse(w.from), to: Date.parse(w.to) })).filter((w) => w.to > w.from);
  const total = spans.reduce((n, w) => n + (w.to - w.from), 0);
  if (total <= 0) return null;
  let offset = Math.min(Math.max(random(), 0), 1) * total;
  for (const w of spans) {
    if (offset < w.to - w.from) return Math.floor(w.from + offset);
    offset -= w.to - w.from;
  }
  return spans.at(-1)!.to; // random() returned 1 (or rounding): the last window's end
}

async function drillLatest(
  db: DatabaseContext,
  target: string,
  generation: GenerationInfo,
  output: string,
  options: DrillOptions,
): Promise<DrillCheck> {
  const began = Date.now();
  try {
    const result = await restoreToPoint(db, { from: target, output, integrity: "full", signal: options.signal });
    const problems = await compare(db, generation, result, output);
    if (result.generation !== generation.generation) {
      problems.push(`restored generation ${result.generation}, the newest is ${generation.generation}`);
    }
    if (result.txn < generation.restorableTo) {
      problems.push(`restored up to transaction ${result.txn}; the archive holds up to ${generation.restorableTo}`);
    }
    return checked(target, "latest", result, null, problems, began);
  } catch (error) {
    return { ...failed(target, "latest", [messageOf(error)], began), generation: generation.generation };
  } finally {
    await removeQuietly(output);
  }
}

async function drillPoint(
  db: DatabaseContext,
  target: string,
  generation: GenerationInfo,
  at: number,
  output: string,
  options: DrillOptions,
): Promise<DrillCheck> {
  const began = Date.now();
  try {
    const result = await restoreToPoint(db, {
      from: target,
      output,
      toTime: at,
      generation: generation.generation,
      integrity: "full",
      signal: options.signal,
    });
    const problems = await compare(db, generation, result, output);
    if (Date.parse(result.restoredTo) > at) {
      problems.push(`restored state from ${result.restoredTo}, after the moment asked for`);
    }
    return checked(target, "point", result, at, problems, began);
  } catch (error) {
    return {
      ...failed(target, "point", [messageOf(error)], began),
      generation: generation.generation,
      pointInTime: new Date(at).toISOString(),
    };
  } finally {
    await removeQuietly(output);
  }
}

/**
 * What can be compared without the live database: the integrity result, and when the restore
 * ended exactly at a snapshot (no transactions applied on top), the manifest's row counts and
 * user_version.
 */
async function compare(
  db: DatabaseContext,
  generation: GenerationInfo,
  result: PointInTimeResult,
  output: string,
): Promise<string[]> {
  const problems: string[] = [];
  if (!result.integrity?.ok) {
    problems.push(`integrity_check: ${result.integrity?.messages.slice(0, 3).join("; ") ?? "not run"}`);
  }
  const restored = await db.driver.describe(output);
  if (result.txn === result.snapshotPosition) {
    const manifest: SnapshotManifest | undefined = generation.snapshots.find(
      (s) => s.position === result.snapshotPosition,
    );
    if (manifest) {
      for (const table of manifest.source.tables) {
        const rows = restored.tables.find((t) => t.name === table.name)?.rows;
        if (rows !== table.rows) {
          problems.push(
            `table ${table.name}: ${rows ?? "missing"} rows, the manifest of ${manifest.id} says ${table.rows}`,
          );
        }
      }
      if (restored.userVersion !== manifest.source.userVersion) {
        problems.push(
          `user_version ${restored.userVersion}, the manifest of ${manifest.id} says ${manifest.source.userVersion}`,
        );
      }
    }
  }
  return problems;
}

function checked(
  target: string,
  kind: DrillCheck["kind"],
  result: PointInTimeResult,
  at: number | null,
  problems: string[],
  began: number,
): DrillCheck {
  return {
    target,
    kind,
    ok: problems.length === 0,
    generation: result.generation,
    snapshotId: result.backupId,
    txn: result.txn,
    pointInTime: at === null ? null : new Date(at).toISOString(),
    restoredTo: result.restoredTo,
    integrity: result.integrity,
    problems,
    durationMs: Date.now() - began,
  };
}

function failed(target: string, kind: DrillCheck["kind"], problems: string[], began: number): DrillCheck {
  return {
    target,
    kind,
    ok: false,
    generation: null,
    snapshotId: null,
    txn: null,
    pointInTime: null,
    restoredTo: null,
    integrity: null,
    problems,
    durationMs: Date.now() - began,
  };
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
