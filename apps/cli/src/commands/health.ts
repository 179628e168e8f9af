/**
 * `lifeboat health`: the facts /health/database serves, as a table. Without --url it checks
 * here and now (probes the targets, lists the backups, describes the databases); with --url it
 * asks a running daemon, which also knows replication lag, restore drills and job runs.
 * Exit status: 0 healthy, 1 unhealthy (or the check failed), 2 bad usage or config.
 */
import { ErrorCodes, formatDuration, LifeboatError } from "@lifeboat/core";
import { checkHealth, type DatabaseHealth, daemonSettingsFrom, type HealthReport } from "@lifeboat/daemon";
import { type Command, Option } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { ago, createOutput, formatBytes, type Output, table } from "../output.js";
import { TOKEN_ENV, tokenFrom } from "./serve.js";

interface Flags extends CommonFlags {
  readonly url?: string;
  readonly tokenFile?: string;
  readonly maxLag?: string;
  readonly maxSnapshotAge?: string;
  readonly probe: "write" | "read";
}

export function registerHealth(program: Command): void {
  withCommon(program.command("health"))
    .description("check the databases, their targets and backups; exits 1 when unhealthy (for cron and monitoring)")
    .argument("[db]", "database name or path; default: every database")
    .option("--url <url>", "ask a running daemon (lifeboat serve / replicate --serve), e.g. http://127.0.0.1:9391")
    .option("--token-file <file>", `file holding the daemon's bearer token (or set ${TOKEN_ENV})`)
    .option("--max-lag <duration>", "replication lag allowed (default 1m)")
    .option("--max-snapshot-age <duration>", "age of the newest snapshot allowed (default: from the schedule)")
    .addOption(
      new Option("--probe <mode>", "probe targets with a small write, or only list them")
        .choices(["write", "read"])
        .default("write"),
    )
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const report = flags.url ? await fromDaemon(flags.url, db, flags) : await checkHere(db, flags);
      for (const d of report.databases) render(out, d);
      out.line(report.healthy ? "Healthy." : `Unhealthy: ${report.reasons.length} problem(s), listed above.`);
      out.result({ ok: report.healthy, ...report });
      if (!report.healthy) process.exitCode = 1;
    });
}

async function checkHere(db: string | undefined, flags: Flags): Promise<HealthReport> {
  const lb = await loadLifeboat(db, flags);
  try {
    const names = db === undefined ? lb.databases : [(await lb.database(db)).name];
    const settings = daemonSettingsFrom(lb.config, names);
    return await checkHealth({
      lifeboat: lb,
      databases: names,
      schedules: Object.fromEntries(
        names.map((n) => {
          const { startupBackup: _ignored, ...schedule } = settings.schedules[n] ?? {};
          return [n, schedule];
        }),
      ),
      databaseThresholds: settings.databaseThresholds,
      thresholds: {
        ...(flags.maxLag ? { maxReplicationLag: flags.maxLag } : {}),
        ...(flags.maxSnapshotAge ? { maxSnapshotAge: flags.maxSnapshotAge } : {}),
      },
      probe: flags.probe,
      describeInterval: 0,
    });
  } finally {
    await lb.close();
  }
}

async function fromDaemon(url: string, db: string | undefined, flags: Flags): Promise<HealthReport> {
  const base = url.replace(/\/+$/, "");
  const token = tokenFrom(flags);
  let response: Response;
  try {
    response = await fetch(`${base}/health/database${db ? `/${encodeURIComponent(db)}` : ""}`, {
      headers: token ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(30_000),
    });
  } catch (error) {
    throw new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `Cannot reach the Lifeboat daemon at ${base}: ${(error as Error).message}`,
      {
        hint: "Check that `lifeboat serve` (or `lifeboat replicate --serve`) runs and listens there (--host, --port).",
      },
    );
  }
  if (response.status === 401) {
    throw new LifeboatError(
      ErrorCodes.PERMISSION_DENIED,
      `The daemon at ${base} wants a bearer token${token ? " (the one given was refused)" : ""}.`,
      {
        hint: `Pass --token-file FILE or set ${TOKEN_ENV} to the daemon's token.`,
      },
    );
  }
  if (response.status === 404 && db) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `The daemon at ${base} does not watch a database named ${db}.`,
      {
        hint: "Run `lifeboat health --url URL` without a name to see its databases.",
      },
    );
  }
  if (response.status !== 200 && response.status !== 503) {
    throw new LifeboatError(ErrorCodes.STORAGE_ERROR, `The daemon at ${base} answered HTTP ${response.status}.`, {
      hint: "Is that a Lifeboat daemon? Check --url.",
    });
  }
  const body = (await response.json()) as { checkedAt: string; databases?: DatabaseHealth[] } & Partial<DatabaseHealth>;
  const databases = body.databases ?? [body as DatabaseHealth];
  const healthy = databases.every((d) => d.healthy);
  return {
    status: healthy ? "ok" : "unhealthy",
    healthy,
    checkedAt: body.checkedAt,
    reasons: databases.flatMap((d) => d.reasons.map((r) => `${d.name}: ${r}`)),
    warnings: databases.flatMap((d) => d.warnings.map((w) => `${d.name}: ${w}`)),
    databases,
  };
}

function render(out: Output, d: DatabaseHealth): void {
  out.line(`${d.name} (${d.path}): ${d.healthy ? "healthy" : "UNHEALTHY"}`);
  if (d.database) {
    const x = d.database;
    const rows = x.tables.reduce((n, t) => n + t.rows, 0);
    const env = x.environment ?? "no marker";
    out.line(
      `  database: ${formatBytes(x.sizeBytes)}${x.walBytes !== null ? ` (+${formatBytes(x.walBytes)} WAL)` : ""}, ${x.journalMode} mode, user_version ${x.userVersion}, environment ${env}${x.declaredEnvironment && x.declaredEnvironment !== x.environment ? ` (config: ${x.declaredEnvironment})` : ""}, ${x.tables.length} tables, ${rows} rows`,
    );
  } else if (d.databaseError) out.line(`  database: cannot read it: ${d.databaseError}`);
  out.line(
    table(
      ["target", "reachable", "newest good snapshot", "age", "snapshots", "segments", "last segment", "lag"],
      d.targets.map((t) => [
        t.name,
        t.reachable === null ? "?" : t.reachable ? "yes" : "NO",
        t.newestBackup?.id ?? "none",
        t.newestBackup ? formatDuration(t.newestBackup.ageSeconds * 1000) : "-",
        t.snapshots ?? "-",
        t.segments ?? "-",
        t.lastSegmentAt ? ago(t.lastSegmentAt) : "-",
        t.replication ? formatDuration(t.replication.lagSeconds * 1000) : "-",
      ]),
    )
      .split("\n")
      .map((l) => `  ${l}`)
      .join("\n"),
  );
  for (const t of d.targets) if (t.error) out.line(`  ${t.name}: ${t.error}`);
  if (d.replication) {
    out.line(
      `  replication: generation ${d.replication.generation ?? "-"}, transaction ${d.replication.txn}, lag ${formatDuration(d.replication.lagSeconds * 1000)}, queue ${formatBytes(d.replication.queueBytes)}`,
    );
  }
  if (d.drill) {
    out.line(
      `  restore drill ${ago(d.drill.startedAt)}: ${d.drill.ok ? "passed" : "FAILED"} (${d.drill.checks.map((c) => `${c.target} ${c.kind}${c.txn !== null ? ` txn ${c.txn}` : ""} ${c.ok ? "ok" : "failed"}`).join(", ")})`,
    );
  }
  for (const job of d.jobs) {
    if (job.schedule === "off" && job.runs === 0) continue;
    const last = job.lastRunAt
      ? `last ${ago(job.lastRunAt)} ${job.lastOk ? "ok" : `FAILED: ${job.lastError?.message}`}`
      : "not run yet";
    const next = job.nextRunAt ? `, next ${job.nextRunAt}` : "";
    out.line(`  ${job.name.split("/").pop()}: ${job.schedule}, ${last}${next}`);
  }
  for (const w of d.warnings) out.line(`  warning: ${w}`);
  for (const r of d.reasons) out.line(`  unhealthy: ${r}`);
  out.line();
}
