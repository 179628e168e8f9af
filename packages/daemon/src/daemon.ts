/**
 * The daemon: scheduled snapshots, retention and restore drills for the databases of a
 * `Lifeboat`, their health, and the HTTP endpoints that report it. It does not own the
 * replicators or the `Lifeboat`: `lifeboat replicate` passes its replicators in (and routes their
 * events to `observe`); `lifeboat serve` runs it without any, for health, metrics and schedules.
 */
import {
  type DatabaseContext,
  ErrorCodes,
  formatDuration,
  type Lifeboat,
  LifeboatError,
  snapshotId,
} from "@lifeboat/core";
import { type Replicator, type ReplicatorEvent, requestSnapshot } from "@lifeboat/wal";
import { newestBackup } from "./backup-freshness.js";
import { type DrillOptions, type DrillResult, runRestoreDrill } from "./drill.js";
import {
  combineHealth,
  DEFAULT_MAX_REPLICATION_LAG_MS,
  type DurationInput,
  evaluateDatabase,
  type HealthReport,
  type HealthThresholds,
  toMs,
} from "./health.js";
import { DaemonMetrics } from "./metrics.js";
import { DatabaseMonitor, type ProbeMode } from "./monitor.js";
import { pruneKeepingChains } from "./retention-chains.js";
import { type JobOutcome, type JobStatus, offSchedule, parseSchedule, type Schedule, Scheduler } from "./schedule.js";
import { type RunningServer, type ServeOptions, startServer } from "./server.js";

export type JobKind = "snapshot" | "prune" | "verify" | "startup-backup";

export interface DatabaseSchedule {
  /** Snapshot schedule: a duration (`6h`) or a cron expression (`0 *\/6 * * *`). */
  readonly snapshot?: string;
  /** Retention schedule (the database's `retention` policy, applied for real). */
  readonly prune?: string;
  /** Restore drill schedule. */
  readonly verify?: string;
  /** At start, take a snapshot unless a good one younger than this exists (`1h`). */
  readonly startupBackup?: DurationInput;
  /** IANA time zone for this database's cron expressions. Default: the process's. */
  readonly timezone?: string;
}

export interface DaemonLogEntry {
  readonly level: "info" | "warn" | "error";
  readonly database: string | null;
  readonly message: string;
  readonly error?: LifeboatError;
}

export interface DaemonOptions {
  readonly lifeboat: Lifeboat;
  /** Database names to watch. Default: every database of the config. */
  readonly databases?: readonly string[];
  /** Schedules by database name. A database without an entry gets no scheduled jobs. */
  readonly schedules?: Readonly<Record<string, DatabaseSchedule>>;
  /** Replicators running in this process (their events must also reach `observe`). */
  readonly replicators?: Iterable<Replicator>;
  /** Serve /health and /metrics. Default: not served (`false`). */
  readonly serve?: ServeOptions | false;
  /** Limits for every database. */
  readonly thresholds?: HealthThresholds;
  /** Limits for one database (override `thresholds`). */
  readonly databaseThresholds?: Readonly<Record<string, HealthThresholds>>;
  /** How often targets are probed and listed. Default 30s. */
  readonly refreshInterval?: DurationInput;
  /** How often the database is described (tables, row counts: reads every table). Default 5m. */
  readonly describeInterval?: DurationInput;
  /** `write` (default): probe each target with a small put (an unwritable target is unhealthy); `read`: list only. */
  readonly probe?: ProbeMode;
  /** Heavy jobs (snapshots, prunes, drills) running at once, over all databases. Default 1. */
  readonly concurrency?: number;
  readonly drill?: Omit<DrillOptions, "signal" | "targets">;
  /** Node process metrics (CPU, memory, event loop) in /metrics. Default true. */
  readonly processMetrics?: boolean;
  /** Run the schedules and start-up backups. Default true; false for a one-off health check. */
  readonly runJobs?: boolean;
  readonly onLog?: (entry: DaemonLogEntry) => void;
  readonly now?: () => number;
}

const DEFAULT_REFRESH_MS = 30_000;
const DEFAULT_DESCRIBE_MS = 300_000;

interface Plan {
  readonly name: string;
  readonly schedules: Record<Exclude<JobKind, "startup-backup">, Schedule>;
  readonly startupBackupMs: number | null;
  readonly thresholds: HealthThresholds;
}

/**
 * Creates a daemon without starting it: `observe` and `attachReplicator` work at once (events
 * before `start` are kept and replayed). Throws `INVALID_ARGUMENT` for a bad schedule or an
 * unknown database.
 */
export function createDaemon(options: DaemonOptions): Daemon {
  return new Daemon(options);
}

/**
 * A one-off health check (what `lifeboat health` prints without a running daemon): probes every
 * target once, describes the databases, evaluates, and stops. Runs no jobs and serves nothing.
 */
export async function checkHealth(options: Omit<DaemonOptions, "serve" | "runJobs">): Promise<HealthReport> {
  const daemon = new Daemon({ ...options, serve: false, runJobs: false, processMetrics: false });
  try {
    await daemon.start();
    return await daemon.report();
  } finally {
    await daemon.stop();
  }
}

/** Creates and starts a daemon (see `Daemon.start`). */
export async function startDaemon(options: DaemonOptions): Promise<Daemon> {
  const daemon = new Daemon(options);
  await daemon.start();
  return daemon;
}

export class Daemon {
  readonly lifeboat: Lifeboat;
  readonly scheduler: Scheduler;
  readonly metrics: DaemonMetrics;
  /** Settles when the start-up backups are done (immediately when there are none). */
  startupBackups: Promise<void> = Promise.resolve();
  readonly #options: DaemonOptions;
  readonly #plans: Plan[];
  readonly #monitors = new Map<string, DatabaseMonitor>();
  readonly #replicators = new Map<string, Replicator>();
  readonly #early: ReplicatorEvent[] = [];
  readonly #now: () => number;
  readonly #log: (entry: DaemonLogEntry) => void;
  #server: RunningServer | null = null;
  #started = false;
  #stopped = false;
  #lastReport: HealthReport | null = null;

  constructor(options: DaemonOptions) {
    this.lifeboat = options.lifeboat;
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#log = options.onLog ?? (() => {});
    const names = options.databases ?? options.lifeboat.databases;
    for (const name of [...Object.keys(options.schedules ?? {}), ...Object.keys(options.databaseThresholds ?? {})]) {
      if (!names.includes(name)) {
        throw new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `A schedule or threshold names database "${name}", which the daemon does not watch.`,
          {
            hint: `Databases: ${names.join(", ")}.`,
          },
        );
      }
    }
    this.#plans = names.map((name) => {
      const s = options.schedules?.[name] ?? {};
      const tz = s.timezone ? { timezone: s.timezone } : {};
      const parse = (kind: string, spec: string | undefined) =>
        spec ? parseSchedule(spec, `schedule.${kind} of ${name}`, tz) : offSchedule();
      return {
        name,
        schedules: {
          snapshot: parse("snapshot", s.snapshot),
          prune: parse("prune", s.prune),
          verify: parse("verify", s.verify),
        },
        startupBackupMs:
          s.startupBackup === undefined ? null : toMs(s.startupBackup, `schedule.startupBackup of ${name}`),
        thresholds: { ...options.thresholds, ...options.databaseThresholds?.[name] },
      };
    });
    this.metrics = new DaemonMetrics({
      ...(options.processMetrics === undefined ? {} : { processMetrics: options.processMetrics }),
      targetsOf: (database) => this.#monitors.get(database)?.db.targets.length ?? 1,
    });
    this.scheduler = new Scheduler({
      concurrency: options.concurrency ?? 1,
      now: this.#now,
      onRun: (job, outcome, durationMs) => this.#ran(job, outcome, durationMs),
    });
    for (const r of options.replicators ?? []) this.attachReplicator(r);
  }

  /** The address of the HTTP server (`http://127.0.0.1:9391`), or null when not serving. */
  get url(): string | null {
    return this.#server?.url ?? null;
  }

  /** The last health report computed (by a refresh, a request or `report()`); null before the first. */
  get state(): HealthReport | null {
    return this.#lastReport;
  }

  /** Names of the watched databases. */
  get databases(): string[] {
    return this.#plans.map((p) => p.name);
  }

  /** A replicator event (route every replicator's `onEvent` here). */
  observe(event: ReplicatorEvent): void {
    this.metrics.observe(event);
    const monitor = this.#monitors.get(event.database);
    if (monitor) monitor.observe(event);
    else if (!this.#started) this.#early.push(event);
  }

  /** A replicator of one of the databases, running in this process: its progress feeds lag and reachability. */
  attachReplicator(replicator: Replicator): void {
    const name = replicator.db.name;
    if (!this.databases.includes(name)) {
      throw new LifeboatError(
        ErrorCodes.INVALID_ARGUMENT,
        `The replicator of "${name}" is not for a database this daemon watches.`,
        {
          hint: `Databases: ${this.databases.join(", ")}.`,
        },
      );
    }
    this.#replicators.set(name, replicator);
    const monitor = this.#monitors.get(name);
    if (monitor) monitor.replicator = replicator;
  }

  detachReplicator(name: string): void {
    this.#replicators.delete(name);
    const monitor = this.#monitors.get(name);
    if (monitor) monitor.replicator = null;
  }

  /**
   * Resolves the databases, probes every target once, starts the HTTP server (if asked) and the
   * schedules, then starts the start-up backups in the background (`startupBackups`).
   */
  async start(): Promise<void> {
    if (this.#started) return;
    this.#started = true;
    const refreshMs = toMs(this.#options.refreshInterval ?? DEFAULT_REFRESH_MS, "refreshInterval");
    const describeMs = toMs(this.#options.describeInterval ?? DEFAULT_DESCRIBE_MS, "describeInterval");
    for (const plan of this.#plans) {
      const db = await this.lifeboat.database(plan.name);
      if (plan.schedules.prune.kind !== "off" && !db.retention) {
        throw new LifeboatError(
          ErrorCodes.CONFIG_INVALID,
          `${plan.name} has a prune schedule but no retention policy.`,
          {
            hint: "Set `retention:` for the database (keepLast, keepWithin, keepDaily, ...) or drop the prune schedule.",
          },
        );
      }
      const monitor = new DatabaseMonitor(db, {
        probe: this.#options.probe ?? "write",
        describeEveryMs: describeMs,
        maxReplicationLagMs:
          plan.thresholds.maxReplicationLag === undefined
            ? DEFAULT_MAX_REPLICATION_LAG_MS
            : toMs(plan.thresholds.maxReplicationLag, `maxReplicationLag of ${plan.name}`),
        maxSnapshotAgeMs: snapshotAgeLimit(plan, db),
        now: this.#now,
      });
      monitor.replicator = this.#replicators.get(plan.name) ?? null;
      this.#monitors.set(plan.name, monitor);
    }
    for (const event of this.#early.splice(0)) this.#monitors.get(event.database)?.observe(event);
    await Promise.all([...this.#monitors.values()].map((m) => m.refresh({ describe: true })));
    for (const plan of this.#plans) {
      const monitor = this.#monitors.get(plan.name)!;
      for (const kind of ["snapshot", "prune", "verify"] as const) {
        this.scheduler.add({
          name: `${plan.name}/${kind}`,
          schedule: plan.schedules[kind],
          heavy: true,
          run: (signal) => this.#job(monitor, kind, signal),
        });
      }
      if (plan.startupBackupMs !== null) {
        this.scheduler.add({
          name: `${plan.name}/startup-backup`,
          schedule: offSchedule("at start"),
          heavy: true,
          run: () => this.#startupBackup(monitor, plan.startupBackupMs!),
        });
      }
    }
    this.scheduler.add({
      name: "daemon/refresh",
      schedule: parseSchedule(`${refreshMs}ms`, "refreshInterval"),
      run: () => this.refresh().then(() => undefined),
    });
    if (this.#options.serve) {
      this.#server = await startServer(
        {
          report: () => this.report(),
          metrics: async (report) => ({
            body: await this.metrics.render(report),
            contentType: this.metrics.contentType,
          }),
        },
        this.#options.serve,
      );
      const host = this.#options.serve.host ?? "127.0.0.1";
      if (!this.#options.serve.token && !isLoopback(host)) {
        this.#log({
          level: "warn",
          database: null,
          message: `serving health and metrics on ${this.#server.url} without a token: anyone who can reach it sees table names and row counts`,
        });
      }
    }
    if (this.#options.runJobs === false) return;
    this.scheduler.start();
    const startups = this.#plans.filter((p) => p.startupBackupMs !== null);
    this.startupBackups = Promise.all(
      startups.map((p) => this.scheduler.runNow(`${p.name}/startup-backup`).catch(() => undefined)),
    ).then(() => undefined);
  }

  /** Stops the schedules (waiting for running jobs) and the HTTP server. Replicators and the Lifeboat stay open. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    await this.scheduler.stop();
    await this.#server?.close();
    this.#server = null;
  }

  /** Runs a job of `database` now (waiting for a free slot); the same as its scheduled run. */
  runJob(database: string, kind: JobKind): Promise<JobOutcome> {
    return this.scheduler.runNow(`${database}/${kind}`);
  }

  /** Probes every target and re-lists the backups now; fires `onLagHigh` for targets whose lag crossed its limit. */
  async refresh(): Promise<HealthReport> {
    await Promise.all(
      [...this.#monitors.values()].map(async (m) => {
        await m.refresh();
        const facts = await m.facts(this.#jobsOf(m.name));
        for (const t of facts.targets) if (t.reachable === false) this.metrics.probeFailed(m.name);
        for (const crossing of m.lagCrossings(facts)) {
          this.#log({
            level: "warn",
            database: m.name,
            message: `replication to ${crossing.target} is ${formatDuration(crossing.lagMs)} behind`,
          });
          await m.db.hooks.run("onLagHigh", {
            database: { name: m.name, path: m.db.path },
            target: crossing.target,
            lagSeconds: Math.round(crossing.lagMs / 1000),
          });
        }
      }),
    );
    return this.report();
  }

  /** The health of every database, from what is known now (probes as of the last refresh; replication live). */
  async report(): Promise<HealthReport> {
    const now = this.#now();
    const databases = await Promise.all(
      [...this.#monitors.values()].map(async (m) => evaluateDatabase(await m.facts(this.#jobsOf(m.name)), now)),
    );
    this.#lastReport = combineHealth(databases, now);
    return this.#lastReport;
  }

  /** The last restore drill of `database`, or null. */
  lastDrill(database: string): DrillResult | null {
    return this.#monitors.get(database)?.drill ?? null;
  }

  #jobsOf(database: string): JobStatus[] {
    return this.scheduler.statuses().filter((s) => s.name.startsWith(`${database}/`));
  }

  async #job(monitor: DatabaseMonitor, kind: "snapshot" | "prune" | "verify", signal: AbortSignal): Promise<string> {
    switch (kind) {
      case "snapshot":
        return this.#snapshot(monitor, "scheduled");
      case "prune": {
        const result = await pruneKeepingChains(monitor.db, { apply: true, signal });
        await monitor.relist();
        const removed = result.targets.reduce((n, t) => n + t.remove.length, 0);
        const kept = result.targets.reduce((n, t) => n + t.keep.length, 0);
        const guarded = result.targets.reduce((n, t) => n + t.protected.length, 0);
        return `removed ${removed} snapshots, kept ${kept}${guarded ? ` (${guarded} kept as WAL chain bases)` : ""}`;
      }
      case "verify":
        return this.#drill(monitor, signal);
    }
  }

  /** In the replicator's generation when one runs here or on this host; else a standalone backup. */
  async #snapshot(monitor: DatabaseMonitor, reason: string): Promise<string> {
    let id: string;
    const replicator = monitor.replicator;
    if (replicator) {
      const position = await replicator.snapshot(reason);
      id = snapshotId(replicator.generation!, position);
    } else {
      const response = await requestSnapshot(monitor.db, reason);
      id = response?.id ?? (await this.lifeboat.backup(monitor.name, { reason })).id;
    }
    await monitor.relist();
    return `snapshot ${id}`;
  }

  async #startupBackup(monitor: DatabaseMonitor, maxAgeMs: number): Promise<string> {
    const found = await newestBackup(monitor.db).catch(() => null);
    const newest = found?.newest;
    if (newest) {
      const age = this.#now() - Date.parse(newest.createdAt);
      if (age < maxAgeMs) return `not needed: ${newest.id} on ${newest.target} is ${formatDuration(age)} old`;
    }
    return this.#snapshot(monitor, "startup");
  }

  async #drill(monitor: DatabaseMonitor, signal: AbortSignal): Promise<string> {
    let result: DrillResult;
    try {
      result = await runRestoreDrill(monitor.db, { ...this.#options.drill, signal });
    } catch (error) {
      // Only the temp directory can fail this way; it is a failed drill all the same.
      const message = error instanceof Error ? error.message : String(error);
      result = {
        database: monitor.name,
        ok: false,
        startedAt: new Date(this.#now()).toISOString(),
        durationMs: 0,
        checks: [],
        problems: [`the drill could not run: ${message}`],
      };
      await monitor.db.hooks.run("onVerifyFailed", {
        database: { name: monitor.name, path: monitor.db.path },
        backupId: "none",
        problems: result.problems,
      });
    }
    monitor.drill = result;
    this.metrics.drillRan(result);
    if (!result.ok) {
      const storageOnly =
        result.checks.length > 0 &&
        result.checks.every((c) => c.ok || c.problems.every((p) => p.startsWith("cannot list")));
      throw new LifeboatError(
        storageOnly ? ErrorCodes.STORAGE_ERROR : ErrorCodes.CORRUPT_BACKUP,
        `The restore drill of ${monitor.name} failed: ${result.problems.slice(0, 3).join("; ")}`,
        {
          hint: "Run `lifeboat verify` and `lifeboat list` to see which backups are affected, fix the target, and take a fresh backup (lifeboat backup).",
          details: { drill: result },
          operation: "verify",
        },
      );
    }
    const restores = result.checks.map((c) => `${c.target} ${c.kind} txn ${c.txn}`).join(", ");
    return `restore drill passed (${restores})`;
  }

  #ran(job: string, outcome: JobOutcome, durationMs: number): void {
    const [database, kind] = job.split("/") as [string, string];
    if (database === "daemon") {
      if (!outcome.ok)
        this.#log({
          level: "error",
          database: null,
          message: `${kind}: ${outcome.error.message}`,
          error: outcome.error,
        });
      return;
    }
    this.metrics.jobRan(database, kind, outcome);
    if (outcome.ok) {
      this.#log({
        level: "info",
        database,
        message: `${kind}: ${outcome.detail ?? "done"} (${formatDuration(durationMs)})`,
      });
      return;
    }
    this.#log({ level: "error", database, message: `${kind} failed: ${outcome.error.message}`, error: outcome.error });
    const monitor = this.#monitors.get(database);
    if (monitor && kind !== "verify" && outcome.error.code !== ErrorCodes.ABORTED) {
      void monitor.db.hooks.run("onError", {
        database: { name: database, path: monitor.db.path },
        operation: `scheduled ${kind}`,
        error: outcome.error,
      });
    }
  }
}

/** Twice the snapshot period plus 10 minutes (a late or one failed run is no alarm yet), if snapshots are scheduled. */
function snapshotAgeLimit(plan: Plan, db: DatabaseContext): number | null {
  if (plan.thresholds.maxSnapshotAge !== undefined)
    return toMs(plan.thresholds.maxSnapshotAge, `maxSnapshotAge of ${plan.name}`);
  const period =
    plan.schedules.snapshot.kind !== "off" && Number.isFinite(plan.schedules.snapshot.periodMs)
      ? plan.schedules.snapshot.periodMs
      : db.snapshotIntervalMs;
  return period === undefined ? null : 2 * period + 600_000;
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\./.test(host);
}
