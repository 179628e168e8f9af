/**
 * What "healthy" means, as data. The daemon gathers facts per database (`DatabaseFacts`); this
 * module turns them into a verdict with reasons a person can act on. A database is unhealthy
 * when a target is unreachable, replication lags past its limit, the newest good snapshot is
 * older than its limit, the last restore drill failed, or the last scheduled snapshot failed.
 */
import { type DatabaseDescription, formatDuration, parseDuration } from "@lifeboat/core";
import type { NewestBackup } from "./backup-freshness.js";
import type { DrillResult } from "./drill.js";
import type { JobStatus } from "./schedule.js";

/** A duration as written in a config (`90s`, `1h`) or milliseconds. */
export type DurationInput = string | number;

export interface HealthThresholds {
  /** Replication lag (time since the oldest unshipped transaction was committed) allowed per target. Default 60s. */
  readonly maxReplicationLag?: DurationInput;
  /**
   * Age the newest good snapshot on each target may reach. Default: twice the snapshot
   * schedule's period plus 10 minutes (or twice `snapshot.interval`); no limit without either.
   */
  readonly maxSnapshotAge?: DurationInput;
}

export const DEFAULT_MAX_REPLICATION_LAG_MS = 60_000;

export function toMs(value: DurationInput, where: string): number {
  return typeof value === "number" ? value : parseDuration(value, where);
}

export interface TargetFacts {
  readonly name: string;
  readonly location: string;
  /** Null before the first probe. */
  readonly reachable: boolean | null;
  readonly error: string | null;
  readonly checkedAt: number | null;
  readonly newestBackup: NewestBackup | null;
  readonly snapshots: number | null;
  readonly generations: number | null;
  readonly segments: number | null;
  readonly storedBytes: number | null;
  readonly lastSegmentAt: number | null;
  /** Set when a replicator archives this database in this process. */
  readonly replication: {
    readonly generation: string | null;
    readonly shippedTxn: number;
    readonly lagMs: number;
    readonly lastShippedLagMs: number | null;
    readonly lastShippedAt: number | null;
  } | null;
  /** From the target's `requestCounts()`, when it has one. */
  readonly requests: Readonly<Record<string, number>> | null;
}

export interface DatabaseFacts {
  readonly name: string;
  readonly path: string;
  readonly declaredEnvironment: string | null;
  readonly description: DatabaseDescription | null;
  readonly descriptionError: string | null;
  readonly describedAt: number | null;
  readonly walBytes: number | null;
  readonly targets: readonly TargetFacts[];
  readonly replication: {
    readonly generation: string | null;
    readonly txn: number;
    readonly queueBytes: number;
    readonly maxWriteLockMs: number;
    readonly lastError: { readonly message: string; readonly at: number } | null;
  } | null;
  readonly drill: DrillResult | null;
  readonly jobs: readonly JobStatus[];
  readonly maxReplicationLagMs: number;
  readonly maxSnapshotAgeMs: number | null;
}

export interface TargetHealth {
  readonly name: string;
  readonly location: string;
  readonly reachable: boolean | null;
  readonly error: string | null;
  readonly checkedAt: string | null;
  readonly newestBackup: (NewestBackup & { readonly ageSeconds: number }) | null;
  readonly snapshots: number | null;
  readonly generations: number | null;
  readonly segments: number | null;
  readonly storedBytes: number | null;
  readonly lastSegmentAt: string | null;
  readonly replication: {
    readonly generation: string | null;
    readonly shippedTxn: number;
    readonly lagSeconds: number;
    readonly lastShippedLagSeconds: number | null;
    readonly lastShippedAt: string | null;
  } | null;
  readonly requests: Readonly<Record<string, number>> | null;
}

export interface JobHealth {
  readonly name: string;
  readonly schedule: string;
  readonly running: boolean;
  readonly runs: number;
  readonly failures: number;
  readonly lastRunAt: string | null;
  readonly lastDurationMs: number | null;
  readonly lastOk: boolean | null;
  readonly lastError: { readonly code: string; readonly message: string; readonly hint?: string } | null;
  readonly lastDetail: string | null;
  readonly nextRunAt: string | null;
}

export interface DatabaseHealth {
  readonly name: string;
  readonly path: string;
  readonly healthy: boolean;
  /** Why it is unhealthy (empty when healthy). */
  readonly reasons: readonly string[];
  /** Worth a look, but not unhealthy. */
  readonly warnings: readonly string[];
  readonly database: {
    readonly sizeBytes: number;
    readonly walBytes: number | null;
    readonly pageSize: number;
    readonly pageCount: number;
    readonly journalMode: string;
    readonly userVersion: number;
    readonly environment: string | null;
    readonly declaredEnvironment: string | null;
    readonly engineVersion: string;
    readonly tables: readonly { readonly name: string; readonly rows: number }[];
    readonly checkedAt: string;
  } | null;
  readonly databaseError: string | null;
  readonly lastBackup: (NewestBackup & { readonly ageSeconds: number }) | null;
  readonly replication: {
    readonly generation: string | null;
    readonly txn: number;
    /** The largest lag over the targets. */
    readonly lagSeconds: number;
    readonly queueBytes: number;
    readonly maxWriteLockMs: number;
  } | null;
  readonly targets: readonly TargetHealth[];
  readonly drill: DrillResult | null;
  readonly jobs: readonly JobHealth[];
  readonly thresholds: { readonly maxReplicationLagSeconds: number; readonly maxSnapshotAgeSeconds: number | null };
}

export interface HealthReport {
  readonly status: "ok" | "unhealthy";
  readonly healthy: boolean;
  readonly checkedAt: string;
  /** Every database's reasons, prefixed with its name. */
  readonly reasons: readonly string[];
  readonly warnings: readonly string[];
  readonly databases: readonly DatabaseHealth[];
}

const iso = (t: number | null): string | null => (t === null ? null : new Date(t).toISOString());
const seconds = (ms: number): number => Math.round(ms) / 1000;

/** The verdict for one database. Pure. */
export function evaluateDatabase(facts: DatabaseFacts, now: number): DatabaseHealth {
  const reasons: string[] = [];
  const warnings: string[] = [];
  if (facts.descriptionError) reasons.push(`cannot read the database: ${facts.descriptionError}`);
  for (const t of facts.targets) {
    if (t.reachable === false)
      reasons.push(`target ${t.name} (${t.location}) is unreachable: ${t.error ?? "unknown error"}`);
    if (t.replication && t.replication.lagMs > facts.maxReplicationLagMs) {
      reasons.push(
        `replication to ${t.name} is ${formatDuration(t.replication.lagMs)} behind (limit ${formatDuration(facts.maxReplicationLagMs)})`,
      );
    }
    if (t.reachable === false) continue; // its backups are unknown, and it is already a reason
    if (t.reachable === null) continue;
    if (!t.newestBackup) {
      if (facts.maxSnapshotAgeMs !== null) reasons.push(`no good snapshot of ${facts.name} on ${t.name}`);
      else warnings.push(`no snapshot of ${facts.name} on ${t.name} yet`);
    } else if (facts.maxSnapshotAgeMs !== null) {
      const age = now - Date.parse(t.newestBackup.createdAt);
      if (age > facts.maxSnapshotAgeMs) {
        reasons.push(
          `the newest good snapshot on ${t.name} (${t.newestBackup.id}) is ${formatDuration(age)} old (limit ${formatDuration(facts.maxSnapshotAgeMs)})`,
        );
      }
    }
  }
  if (facts.drill && !facts.drill.ok) {
    reasons.push(
      `the last restore drill (${facts.drill.startedAt}) failed: ${facts.drill.problems.slice(0, 3).join("; ")}`,
    );
  }
  // The newest finished snapshot run (scheduled or at start-up) decides; a later success clears an earlier failure.
  const snapshotRuns = facts.jobs
    .filter((j) => (j.name.endsWith("/snapshot") || j.name.endsWith("/startup-backup")) && j.lastFinishedAt !== null)
    .sort((a, b) => b.lastFinishedAt! - a.lastFinishedAt!);
  const lastSnapshotRun = snapshotRuns[0];
  if (lastSnapshotRun?.lastOk === false && lastSnapshotRun.lastError) {
    reasons.push(
      `the ${lastSnapshotRun.name.endsWith("/snapshot") ? "scheduled snapshot" : "start-up backup"} at ${iso(lastSnapshotRun.lastFinishedAt)} failed: ${lastSnapshotRun.lastError.message}`,
    );
  }
  for (const job of facts.jobs) {
    if (!job.name.endsWith("/prune") || job.lastOk !== false || !job.lastError) continue;
    warnings.push(`the scheduled prune at ${iso(job.lastFinishedAt)} failed: ${job.lastError.message}`);
  }
  if (facts.replication?.lastError) {
    warnings.push(`replicator (${iso(facts.replication.lastError.at)}): ${facts.replication.lastError.message}`);
  }
  if (facts.description && facts.declaredEnvironment && facts.description.environment !== null) {
    if (facts.description.environment !== facts.declaredEnvironment) {
      warnings.push(
        `the config says environment ${facts.declaredEnvironment}, the database's marker says ${facts.description.environment}`,
      );
    }
  }
  const targets: TargetHealth[] = facts.targets.map((t) => ({
    name: t.name,
    location: t.location,
    reachable: t.reachable,
    error: t.error,
    checkedAt: iso(t.checkedAt),
    newestBackup: t.newestBackup
      ? { ...t.newestBackup, ageSeconds: seconds(now - Date.parse(t.newestBackup.createdAt)) }
      : null,
    snapshots: t.snapshots,
    generations: t.generations,
    segments: t.segments,
    storedBytes: t.storedBytes,
    lastSegmentAt: iso(t.lastSegmentAt),
    replication: t.replication
      ? {
          generation: t.replication.generation,
          shippedTxn: t.replication.shippedTxn,
          lagSeconds: seconds(t.replication.lagMs),
          lastShippedLagSeconds:
            t.replication.lastShippedLagMs === null ? null : seconds(t.replication.lastShippedLagMs),
          lastShippedAt: iso(t.replication.lastShippedAt),
        }
      : null,
    requests: t.requests,
  }));
  const newest = targets
    .map((t) => t.newestBackup)
    .filter((b) => b !== null)
    .sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
  const d = facts.description;
  return {
    name: facts.name,
    path: facts.path,
    healthy: reasons.length === 0,
    reasons,
    warnings,
    database: d
      ? {
          sizeBytes: d.sizeBytes,
          walBytes: facts.walBytes,
          pageSize: d.pageSize,
          pageCount: d.pageCount,
          journalMode: d.journalMode,
          userVersion: d.userVersion,
          environment: d.environment,
          declaredEnvironment: facts.declaredEnvironment,
          engineVersion: d.engineVersion,
          tables: d.tables.map((t) => ({ name: t.name, rows: t.rows })),
          checkedAt: iso(facts.describedAt)!,
        }
      : null,
    databaseError: facts.descriptionError,
    lastBackup: newest ?? null,
    replication: facts.replication
      ? {
          generation: facts.replication.generation,
          txn: facts.replication.txn,
          lagSeconds: Math.max(0, ...targets.map((t) => t.replication?.lagSeconds ?? 0)),
          queueBytes: facts.replication.queueBytes,
          maxWriteLockMs: facts.replication.maxWriteLockMs,
        }
      : null,
    targets,
    drill: facts.drill,
    jobs: facts.jobs.map(jobHealth),
    thresholds: {
      maxReplicationLagSeconds: seconds(facts.maxReplicationLagMs),
      maxSnapshotAgeSeconds: facts.maxSnapshotAgeMs === null ? null : seconds(facts.maxSnapshotAgeMs),
    },
  };
}

function jobHealth(job: JobStatus): JobHealth {
  return {
    name: job.name,
    schedule: job.schedule,
    running: job.running,
    runs: job.runs,
    failures: job.failures,
    lastRunAt: iso(job.lastStartedAt),
    lastDurationMs: job.lastDurationMs,
    lastOk: job.lastOk,
    lastError: job.lastError
      ? {
          code: job.lastError.code,
          message: job.lastError.message,
          ...(job.lastError.hint ? { hint: job.lastError.hint } : {}),
        }
      : null,
    lastDetail: job.lastDetail,
    nextRunAt: iso(job.nextRunAt),
  };
}

/** The verdict over several databases: healthy when every one is. */
export function combineHealth(databases: readonly DatabaseHealth[], now: number): HealthReport {
  const healthy = databases.every((d) => d.healthy);
  return {
    status: healthy ? "ok" : "unhealthy",
    healthy,
    checkedAt: new Date(now).toISOString(),
    reasons: databases.flatMap((d) => d.reasons.map((r) => `${d.name}: ${r}`)),
    warnings: databases.flatMap((d) => d.warnings.map((w) => `${d.name}: ${w}`)),
    databases,
  };
}
