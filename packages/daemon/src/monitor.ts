/**
 * One database as the daemon watches it: probes of its targets (a small write and a listing),
 * its description (cached: counting rows reads every table), what an attached replicator reports
 * (events and its `progress`), and the last restore drill. `facts()` assembles all of it for
 * `evaluateDatabase`.
 */
import { stat } from "node:fs/promises";
import { hostname } from "node:os";
import type { DatabaseContext, DatabaseDescription, NamedTarget } from "@lifeboat/core";
import type { Replicator, ReplicatorEvent } from "@lifeboat/wal";
import { listTargetBackups, type ManifestCache, type NewestBackup } from "./backup-freshness.js";
import type { DrillResult } from "./drill.js";
import type { DatabaseFacts, TargetFacts } from "./health.js";
import type { JobStatus } from "./schedule.js";

export type ProbeMode = "write" | "read";

/** Where the write probe goes: beside the replicator lease, one small object per host, overwritten each time. */
export function probeKey(database: string): string {
  return `${database}/locks/health-${hostname().replace(/[^A-Za-z0-9._-]/g, "_") || "host"}.json`;
}

interface TargetState {
  readonly named: NamedTarget;
  readonly cache: ManifestCache;
  reachable: boolean | null;
  error: string | null;
  checkedAt: number | null;
  newest: NewestBackup | null;
  snapshots: number | null;
  generations: number | null;
  segments: number | null;
  storedBytes: number | null;
  lastSegmentAt: number | null;
  lastShippedLagMs: number | null;
  lastShippedAt: number | null;
  /** From `target-error` / `target-recovered` events (a replicator in another object than ours). */
  replicatorError: string | null;
  /** Since when the target is known to be behind the replicator (for the lag of a target without queued segments). */
  behindSince: number | null;
  lagHigh: boolean;
}

/** `requestCounts()` as a target may offer it: type -> count since the target was created. */
export function requestCountsOf(target: unknown): Record<string, number> | null {
  const fn = (target as { requestCounts?: unknown } | null)?.requestCounts;
  if (typeof fn !== "function") return null;
  try {
    const value = (fn as () => unknown).call(target);
    const entries = value instanceof Map ? [...value.entries()] : Object.entries((value ?? {}) as object);
    const counts: Record<string, number> = {};
    for (const [type, count] of entries)
      if (typeof count === "number" && Number.isFinite(count)) counts[String(type)] = count;
    return counts;
  } catch {
    return null;
  }
}

export interface MonitorOptions {
  readonly probe: ProbeMode;
  /** Describe the database at most this often (ms). */
  readonly describeEveryMs: number;
  readonly maxReplicationLagMs: number;
  readonly maxSnapshotAgeMs: number | null;
  readonly now: () => number;
}

export class DatabaseMonitor {
  readonly db: DatabaseContext;
  replicator: Replicator | null = null;
  drill: DrillResult | null = null;
  readonly #targets: TargetState[];
  readonly #options: MonitorOptions;
  #description: DatabaseDescription | null = null;
  #descriptionError: string | null = null;
  #describedAt: number | null = null;
  #describing: Promise<void> | null = null;
  #replicatorError: { message: string; at: number } | null = null;
  #refreshing: Promise<void> | null = null;

  constructor(db: DatabaseContext, options: MonitorOptions) {
    this.db = db;
    this.#options = options;
    this.#targets = db.targets.map((named) => ({
      named,
      cache: new Map(),
      reachable: null,
      error: null,
      checkedAt: null,
      newest: null,
      snapshots: null,
      generations: null,
      segments: null,
      storedBytes: null,
      lastSegmentAt: null,
      lastShippedLagMs: null,
      lastShippedAt: null,
      replicatorError: null,
      behindSince: null,
      lagHigh: false,
    }));
  }

  get name(): string {
    return this.db.name;
  }

  get thresholds(): { maxReplicationLagMs: number; maxSnapshotAgeMs: number | null } {
    return { maxReplicationLagMs: this.#options.maxReplicationLagMs, maxSnapshotAgeMs: this.#options.maxSnapshotAgeMs };
  }

  /** Takes in a replicator event of this database. */
  observe(event: ReplicatorEvent): void {
    const now = this.#options.now();
    switch (event.type) {
      case "shipped": {
        const t = this.#target(event.target);
        if (t) {
          t.lastShippedLagMs = event.lagMs;
          t.lastShippedAt = now;
        }
        break;
      }
      case "target-error": {
        const t = this.#target(event.target);
        if (t) t.replicatorError = event.error.message;
        break;
      }
      case "target-recovered": {
        const t = this.#target(event.target);
        if (t) t.replicatorError = null;
        break;
      }
      case "error":
        this.#replicatorError = { message: event.error.message, at: now };
        break;
      case "generation":
        this.#replicatorError = null;
        break;
      default:
        break;
    }
  }

  #target(name: string): TargetState | undefined {
    return this.#targets.find((t) => t.named.name === name);
  }

  /** Probes every target and re-describes the database if its description is due. One refresh at a time. */
  refresh(options: { readonly describe?: boolean } = {}): Promise<void> {
    if (this.#refreshing) return this.#refreshing;
    this.#refreshing = (async () => {
      try {
        await Promise.all([...this.#targets.map((t) => this.#probe(t)), this.#describe(options.describe ?? false)]);
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  /** Re-lists one target's backups now (after a snapshot or prune). */
  async relist(): Promise<void> {
    await Promise.all(this.#targets.map((t) => this.#list(t).catch(() => {})));
  }

  async #probe(t: TargetState): Promise<void> {
    const now = this.#options.now();
    try {
      if (this.#options.probe === "write") {
        const body = Buffer.from(
          `${JSON.stringify({ format: "lifeboat.health-probe", host: hostname(), pid: process.pid, at: new Date(now).toISOString() })}\n`,
        );
        await t.named.target.put(probeKey(this.db.name), body, { contentLength: body.byteLength });
      }
      await this.#list(t);
      t.reachable = true;
      t.error = null;
    } catch (error) {
      t.reachable = false;
      t.error = `${this.#options.probe === "write" ? "cannot write" : "cannot list"}: ${error instanceof Error ? error.message : String(error)}`;
    }
    t.checkedAt = now;
  }

  async #list(t: TargetState): Promise<void> {
    const listing = await listTargetBackups(t.named, this.db.name, { cache: t.cache });
    t.newest = listing.newest;
    t.snapshots = listing.snapshots;
    t.generations = listing.generations;
    t.segments = listing.segments;
    t.storedBytes = listing.storedBytes;
    t.lastSegmentAt = listing.lastSegmentAt;
  }

  #describe(force: boolean): Promise<void> {
    const due =
      force || this.#describedAt === null || this.#options.now() - this.#describedAt >= this.#options.describeEveryMs;
    if (!due) return Promise.resolve();
    if (this.#describing) return this.#describing;
    this.#describing = (async () => {
      try {
        this.#description = await this.db.driver.describe(this.db.path);
        this.#descriptionError = null;
      } catch (error) {
        this.#description = null;
        this.#descriptionError = error instanceof Error ? error.message : String(error);
      } finally {
        this.#describedAt = this.#options.now();
        this.#describing = null;
      }
    })();
    return this.#describing;
  }

  /**
   * Targets whose lag crossed the limit since the last call (for `onLagHigh`). A target is
   * reported once per episode: again only after it caught up.
   */
  lagCrossings(facts: DatabaseFacts): { target: string; lagMs: number }[] {
    const crossed: { target: string; lagMs: number }[] = [];
    for (const f of facts.targets) {
      const t = this.#target(f.name);
      if (!t || !f.replication) continue;
      const high = f.replication.lagMs > facts.maxReplicationLagMs;
      if (high && !t.lagHigh) crossed.push({ target: f.name, lagMs: f.replication.lagMs });
      t.lagHigh = high;
    }
    return crossed;
  }

  /** Everything known now; reads the replicator's live progress and queue. */
  async facts(jobs: readonly JobStatus[]): Promise<DatabaseFacts> {
    const now = this.#options.now();
    const r = this.replicator;
    const walBytes = await stat(`${this.db.path}-wal`).then(
      (s) => s.size,
      () => (this.#description?.journalMode === "wal" ? 0 : null),
    );
    let pending: { lastTxn: number; lastObservedAt: number }[] = [];
    let queueBytes = 0;
    if (r?.generation) {
      const segments = await r.spool.list(r.generation).catch(() => []);
      pending = [...segments].sort((a, b) => a.firstTxn - b.firstTxn);
      queueBytes = segments.reduce((n, s) => n + s.size, 0);
    }
    const progress = r ? r.progress : [];
    const targets: TargetFacts[] = this.#targets.map((t) => {
      const p = progress.find((x) => x.target === t.named.name);
      let replication: TargetFacts["replication"] = null;
      let replicationError: string | null = null;
      if (r && p) {
        replicationError = p.error;
        const current = p.generation !== null && p.generation === r.generation;
        const behind = !current || p.shipped < r.txn;
        if (!behind) t.behindSince = null;
        else t.behindSince ??= now;
        const firstUnshipped = pending.find((s) => s.lastTxn > (current ? p.shipped : 0));
        const lagMs = !behind ? 0 : firstUnshipped ? now - firstUnshipped.lastObservedAt : now - t.behindSince!;
        replication = {
          generation: p.generation,
          shippedTxn: p.shipped,
          lagMs: Math.max(0, lagMs),
          lastShippedLagMs: t.lastShippedLagMs,
          lastShippedAt: t.lastShippedAt,
        };
      } else {
        replicationError = t.replicatorError;
      }
      const error = t.error ?? (replicationError ? `replication: ${replicationError}` : null);
      return {
        name: t.named.name,
        location: t.named.target.location,
        reachable: t.reachable === false || replicationError ? false : t.reachable,
        error,
        checkedAt: t.checkedAt,
        newestBackup: t.newest,
        snapshots: t.snapshots,
        generations: t.generations,
        segments: t.segments,
        storedBytes: t.storedBytes,
        lastSegmentAt: t.lastSegmentAt,
        replication,
        requests: requestCountsOf(t.named.target),
      };
    });
    return {
      name: this.db.name,
      path: this.db.path,
      declaredEnvironment: this.db.declaredEnvironment,
      description: this.#description,
      descriptionError: this.#descriptionError,
      describedAt: this.#describedAt,
      walBytes,
      targets,
      replication: r
        ? {
            generation: r.generation,
            txn: r.txn,
            queueBytes,
            maxWriteLockMs: r.maxWriteLockMs,
            lastError: this.#replicatorError,
          }
        : null,
      drill: this.drill,
      jobs,
      maxReplicationLagMs: this.#options.maxReplicationLagMs,
      maxSnapshotAgeMs: this.#options.maxSnapshotAgeMs,
    };
  }
}
