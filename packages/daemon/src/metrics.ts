/**
 * Prometheus metrics, in a registry of their own (prom-client), so a host application's registry
 * is never touched. Counters follow replicator events and job runs as they happen; gauges are set
 * from a fresh health report at every scrape.
 */
import type { ReplicatorEvent } from "@lifeboat/wal";
import { Counter, collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { DrillResult } from "./drill.js";
import type { HealthReport } from "./health.js";
import type { JobOutcome } from "./schedule.js";

/** Segments seen spooled whose size is not yet counted for every target; bounded. */
const MAX_TRACKED_SEGMENTS = 10_000;

export class DaemonMetrics {
  readonly registry = new Registry();
  readonly #segmentBytes = new Map<string, { bytes: number; shippedTo: number }>();
  readonly #targetsOf: (database: string) => number;

  readonly #shippedBytes: Counter<"database" | "target">;
  readonly #shippedObjects: Counter<"database" | "target" | "kind">;
  readonly #shippedTransactions: Counter<"database" | "target">;
  readonly #spooledBytes: Counter<"database">;
  readonly #errors: Counter<"database" | "source">;
  readonly #checkpoints: Counter<"database" | "mode" | "result">;
  readonly #generations: Counter<"database">;
  readonly #drills: Counter<"database" | "result">;
  readonly #jobRuns: Counter<"database" | "job" | "result">;
  readonly #requests: Counter<"database" | "target" | "type">;

  readonly #healthy: Gauge<"database">;
  readonly #targetUp: Gauge<"database" | "target">;
  readonly #lastBackup: Gauge<"database" | "target">;
  readonly #storedBytes: Gauge<"database" | "target">;
  readonly #lag: Gauge<"database" | "target">;
  readonly #shippedTxn: Gauge<"database" | "target">;
  readonly #txn: Gauge<"database">;
  readonly #queueBytes: Gauge<"database">;
  readonly #writeLock: Gauge<"database">;
  readonly #dbSize: Gauge<"database">;
  readonly #walSize: Gauge<"database">;
  readonly #rows: Gauge<"database" | "table">;
  readonly #drillOk: Gauge<"database">;
  readonly #drillTime: Gauge<"database">;
  readonly #jobOk: Gauge<"database" | "job">;
  readonly #jobTime: Gauge<"database" | "job">;

  constructor(options: { readonly processMetrics?: boolean; readonly targetsOf: (database: string) => number }) {
    this.#targetsOf = options.targetsOf;
    const registers = [this.registry];
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
      new Counter<L>({ name, help, labelNames, registers });
    const gauge = <L extends string>(name: string, help: string, labelNames: readonly L[]) =>
      new Gauge<L>({ name, help, labelNames, registers });
    this.#shippedBytes = counter(
      "lifeboat_shipped_bytes_total",
      "Bytes shipped to a target (segments and snapshots).",
      ["database", "target"],
    );
    this.#shippedObjects = counter("lifeboat_shipped_objects_total", "Objects shipped to a target.", [
      "database",
      "target",
      "kind",
    ]);
    this.#shippedTransactions = counter(
      "lifeboat_shipped_transactions_total",
      "Transactions shipped to a target in segments.",
      ["database", "target"],
    );
    this.#spooledBytes = counter("lifeboat_spooled_bytes_total", "Bytes of segments written to the local queue.", [
      "database",
    ]);
    this.#errors = counter("lifeboat_errors_total", "Errors by where they came from.", ["database", "source"]);
    this.#checkpoints = counter("lifeboat_checkpoints_total", "WAL checkpoints run by the replicator.", [
      "database",
      "mode",
      "result",
    ]);
    this.#generations = counter("lifeboat_generations_total", "Generations started by the replicator.", ["database"]);
    this.#drills = counter("lifeboat_restore_drills_total", "Restore drills by result.", ["database", "result"]);
    this.#jobRuns = counter("lifeboat_job_runs_total", "Scheduled job runs by result.", ["database", "job", "result"]);
    this.#requests = counter(
      "lifeboat_storage_requests_total",
      "Requests made to a storage target, by type (targets that count them).",
      ["database", "target", "type"],
    );
    this.#healthy = gauge("lifeboat_healthy", "1 when the database is healthy (as /health says), else 0.", [
      "database",
    ]);
    this.#targetUp = gauge("lifeboat_target_up", "1 when the target answered the last probe and ships, else 0.", [
      "database",
      "target",
    ]);
    this.#lastBackup = gauge(
      "lifeboat_last_backup_timestamp_seconds",
      "Creation time of the newest good snapshot on the target.",
      ["database", "target"],
    );
    this.#storedBytes = gauge("lifeboat_stored_bytes", "Bytes of the database's backups on the target.", [
      "database",
      "target",
    ]);
    this.#lag = gauge(
      "lifeboat_replication_lag_seconds",
      "Time since the oldest transaction not yet on the target was committed (0 when caught up).",
      ["database", "target"],
    );
    this.#shippedTxn = gauge("lifeboat_replication_shipped_txn", "Last transaction shipped to the target.", [
      "database",
      "target",
    ]);
    this.#txn = gauge("lifeboat_replication_txn", "Last transaction archived in the current generation.", ["database"]);
    this.#queueBytes = gauge("lifeboat_queue_bytes", "Bytes waiting in the local segment queue.", ["database"]);
    this.#writeLock = gauge(
      "lifeboat_checkpoint_write_lock_max_seconds",
      "Longest time a checkpoint held the write lock (the worst stall caused to writers).",
      ["database"],
    );
    this.#dbSize = gauge("lifeboat_database_size_bytes", "Size of the database (page size x page count).", [
      "database",
    ]);
    this.#walSize = gauge("lifeboat_wal_size_bytes", "Size of the database's -wal file.", ["database"]);
    this.#rows = gauge("lifeboat_database_rows", "Rows per table (as of the last description).", ["database", "table"]);
    this.#drillOk = gauge("lifeboat_last_restore_drill_success", "1 when the last restore drill passed, else 0.", [
      "database",
    ]);
    this.#drillTime = gauge("lifeboat_last_restore_drill_timestamp_seconds", "When the last restore drill started.", [
      "database",
    ]);
    this.#jobOk = gauge("lifeboat_job_last_success", "1 when the job's last run succeeded, else 0.", [
      "database",
      "job",
    ]);
    this.#jobTime = gauge("lifeboat_job_last_run_timestamp_seconds", "When the job last started.", ["database", "job"]);
    if (options.processMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "lifeboat_" });
  }

  observe(event: ReplicatorEvent): void {
    const database = event.database;
    switch (event.type) {
      case "spooled": {
        this.#spooledBytes.inc({ database }, event.bytes);
        this.#segmentBytes.set(`${database}/${event.generation}/${event.firstTxn}`, {
          bytes: event.bytes,
          shippedTo: 0,
        });
        if (this.#segmentBytes.size > MAX_TRACKED_SEGMENTS) {
          this.#segmentBytes.delete(this.#segmentBytes.keys().next().value!);
        }
        break;
      }
      case "shipped": {
        const labels = { database, target: event.target };
        this.#shippedObjects.inc({ ...labels, kind: "segment" });
        this.#shippedTransactions.inc(labels, event.lastTxn - event.firstTxn + 1);
        const key = `${database}/${event.generation}/${event.firstTxn}`;
        const seen = this.#segmentBytes.get(key);
        if (seen) {
          this.#shippedBytes.inc(labels, seen.bytes);
          if (++seen.shippedTo >= this.#targetsOf(database)) this.#segmentBytes.delete(key);
        }
        break;
      }
      case "snapshot":
        for (const target of event.targets) {
          this.#shippedObjects.inc({ database, target, kind: "snapshot" });
          this.#shippedBytes.inc({ database, target }, event.bytes);
        }
        break;
      case "checkpoint":
        this.#checkpoints.inc({ database, mode: event.mode, result: event.complete ? "complete" : "partial" });
        break;
      case "generation":
        this.#generations.inc({ database });
        break;
      case "target-error":
        this.#errors.inc({ database, source: "target" });
        break;
      case "error":
        this.#errors.inc({ database, source: "replicator" });
        break;
      default:
        break;
    }
  }

  jobRan(database: string, job: string, outcome: JobOutcome): void {
    this.#jobRuns.inc({ database, job, result: outcome.ok ? "ok" : "failed" });
    if (!outcome.ok) this.#errors.inc({ database, source: `job:${job}` });
  }

  drillRan(result: DrillResult): void {
    this.#drills.inc({ database: result.database, result: result.ok ? "ok" : "failed" });
  }

  probeFailed(database: string): void {
    this.#errors.inc({ database, source: "probe" });
  }

  /** Sets every gauge from `report` and renders the registry in the Prometheus text format. */
  async render(report: HealthReport): Promise<string> {
    for (const g of [
      this.#healthy,
      this.#targetUp,
      this.#lastBackup,
      this.#storedBytes,
      this.#lag,
      this.#shippedTxn,
      this.#txn,
      this.#queueBytes,
      this.#writeLock,
      this.#dbSize,
      this.#walSize,
      this.#rows,
      this.#drillOk,
      this.#drillTime,
      this.#jobOk,
      this.#jobTime,
    ]) {
      g.reset(); // label sets that went away (a dropped table) disappear too
    }
    this.#requests.reset();
    for (const db of report.databases) {
      const database = db.name;
      this.#healthy.set({ database }, db.healthy ? 1 : 0);
      for (const t of db.targets) {
        const labels = { database, target: t.name };
        if (t.reachable !== null) this.#targetUp.set(labels, t.reachable ? 1 : 0);
        if (t.newestBackup) this.#lastBackup.set(labels, Date.parse(t.newestBackup.createdAt) / 1000);
        if (t.storedBytes !== null) this.#storedBytes.set(labels, t.storedBytes);
        if (t.replication) {
          this.#lag.set(labels, t.replication.lagSeconds);
          this.#shippedTxn.set(labels, t.replication.shippedTxn);
        }
        for (const [type, count] of Object.entries(t.requests ?? {})) this.#requests.inc({ ...labels, type }, count);
      }
      if (db.replication) {
        this.#txn.set({ database }, db.replication.txn);
        this.#queueBytes.set({ database }, db.replication.queueBytes);
        this.#writeLock.set({ database }, db.replication.maxWriteLockMs / 1000);
      }
      if (db.database) {
        this.#dbSize.set({ database }, db.database.sizeBytes);
        if (db.database.walBytes !== null) this.#walSize.set({ database }, db.database.walBytes);
        for (const table of db.database.tables) this.#rows.set({ database, table: table.name }, table.rows);
      }
      if (db.drill) {
        this.#drillOk.set({ database }, db.drill.ok ? 1 : 0);
        this.#drillTime.set({ database }, Date.parse(db.drill.startedAt) / 1000);
      }
      for (const job of db.jobs) {
        const kind = job.name.split("/").pop() ?? job.name;
        if (job.lastOk !== null) this.#jobOk.set({ database, job: kind }, job.lastOk ? 1 : 0);
        if (job.lastRunAt) this.#jobTime.set({ database, job: kind }, Date.parse(job.lastRunAt) / 1000);
      }
    }
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
