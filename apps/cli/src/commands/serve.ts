/**
 * `lifeboat serve`: the daemon without replication. Scheduled snapshots, retention and restore
 * drills (from each database's `schedule:` in lifeboat.yml, or flags), and /health and /metrics.
 * `addDaemonOptions` and `daemonOptionsFrom` are shared with `lifeboat replicate --serve`.
 */
import { readFileSync } from "node:fs";
import { ErrorCodes, type Lifeboat, LifeboatError } from "@lifeboat/core";
import {
  type DaemonLogEntry,
  type DaemonOptions,
  type DatabaseSchedule,
  DEFAULT_HOST,
  DEFAULT_PORT,
  daemonSettingsFrom,
  startDaemon,
} from "@lifeboat/daemon";
import { type Command, Option } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";

/** Environment variable holding the bearer token (never a flag: flags show in `ps`). */
export const TOKEN_ENV = "LIFEBOAT_TOKEN";

export interface DaemonFlags extends CommonFlags {
  readonly host?: string;
  readonly port?: string;
  readonly tokenFile?: string;
  readonly snapshot?: string;
  readonly prune?: string;
  readonly verify?: string;
  readonly startupBackup?: string;
  readonly maxLag?: string;
  readonly maxSnapshotAge?: string;
  readonly refresh?: string;
  readonly probe?: "write" | "read";
  readonly drillDir?: string;
}

/** The daemon's flags (serve address, schedules, limits); for `serve` and `replicate --serve`. */
export function addDaemonOptions(command: Command): Command {
  return command
    .option("--host <address>", `address to serve /health and /metrics on (${DEFAULT_HOST}: this host only)`)
    .option("--port <port>", `port to serve on (0: any free port)`, String(DEFAULT_PORT))
    .option("--token-file <file>", `file holding the bearer token (or set ${TOKEN_ENV})`)
    .option("--snapshot <schedule>", "snapshot schedule for every database: a duration (6h) or cron (0 */6 * * *)")
    .option("--prune <schedule>", "apply the retention policy on this schedule")
    .option("--verify <schedule>", "run a restore drill on this schedule")
    .option("--startup-backup <duration>", "at start, back up unless a good backup younger than this exists")
    .option("--max-lag <duration>", "replication lag before /health turns 503 (default 1m)")
    .option("--max-snapshot-age <duration>", "age of the newest snapshot before /health turns 503")
    .option("--refresh <duration>", "how often targets are probed and listed", "30s")
    .addOption(
      new Option("--probe <mode>", "probe targets with a small write, or only list them")
        .choices(["write", "read"])
        .default("write"),
    )
    .option("--drill-dir <dir>", "where restore drills write their trial restores (default: the temp dir)");
}

/** The bearer token from --token-file or LIFEBOAT_TOKEN; undefined when neither is set. */
export function tokenFrom(flags: Pick<DaemonFlags, "tokenFile">): string | undefined {
  if (flags.tokenFile) {
    let token: string;
    try {
      token = readFileSync(flags.tokenFile, "utf8").trim();
    } catch (error) {
      throw new LifeboatError(
        ErrorCodes.CONFIG_INVALID,
        `Cannot read the token file ${flags.tokenFile}: ${String(error)}`,
        {
          hint: "Give a readable file holding the token on one line.",
        },
      );
    }
    if (!token) {
      throw new LifeboatError(ErrorCodes.CONFIG_INVALID, `The token file ${flags.tokenFile} is empty.`, {
        hint: "Write a long random token into it (openssl rand -hex 32).",
      });
    }
    return token;
  }
  return process.env[TOKEN_ENV]?.trim() || undefined;
}

/**
 * Daemon options for `names` from the config (`schedule:`/`health:` per database, else
 * `snapshot.interval`) with the flags on top (a flag applies to every database).
 */
export function daemonOptionsFrom(
  lb: Lifeboat,
  names: readonly string[],
  flags: DaemonFlags,
  options: { readonly serve: boolean; readonly onLog: (entry: DaemonLogEntry) => void },
): DaemonOptions {
  const settings = daemonSettingsFrom(lb.config, names);
  const fromFlags: DatabaseSchedule = {
    ...(flags.snapshot ? { snapshot: flags.snapshot } : {}),
    ...(flags.prune ? { prune: flags.prune } : {}),
    ...(flags.verify ? { verify: flags.verify } : {}),
    ...(flags.startupBackup ? { startupBackup: flags.startupBackup } : {}),
  };
  const schedules: Record<string, DatabaseSchedule> = {};
  for (const name of names) schedules[name] = { ...settings.schedules[name], ...fromFlags };
  const port = Number(flags.port ?? DEFAULT_PORT);
  if (!Number.isInteger(port) || port < 0 || port > 65_535) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `--port ${flags.port} is not a port number.`, {
      hint: "Give a number from 0 to 65535 (0: any free port).",
    });
  }
  const token = tokenFrom(flags);
  return {
    lifeboat: lb,
    databases: names,
    schedules,
    databaseThresholds: settings.databaseThresholds,
    thresholds: {
      ...(flags.maxLag ? { maxReplicationLag: flags.maxLag } : {}),
      ...(flags.maxSnapshotAge ? { maxSnapshotAge: flags.maxSnapshotAge } : {}),
    },
    serve: options.serve ? { host: flags.host ?? DEFAULT_HOST, port, ...(token ? { token } : {}) } : false,
    ...(flags.refresh ? { refreshInterval: flags.refresh } : {}),
    ...(flags.probe ? { probe: flags.probe } : {}),
    ...(flags.drillDir ? { drill: { workDir: flags.drillDir } } : {}),
    onLog: options.onLog,
  };
}

/** Prints daemon log entries as timestamped lines, or JSON lines with --json. */
export function daemonLogPrinter(json: boolean): (entry: DaemonLogEntry) => void {
  return (entry) => {
    const time = new Date().toISOString();
    if (json) {
      process.stdout.write(
        `${JSON.stringify({ time, type: "daemon", level: entry.level, database: entry.database, message: entry.message, ...(entry.error ? { error: entry.error.toJSON() } : {}) })}\n`,
      );
      return;
    }
    const line = `${time} ${entry.database ? `${entry.database}: ` : ""}${entry.message}${entry.error?.hint ? ` (${entry.error.hint})` : ""}\n`;
    (entry.level === "info" ? process.stdout : process.stderr).write(line);
  };
}

export function registerServe(program: Command): void {
  addDaemonOptions(
    withCommon(program.command("serve"))
      .description(
        "run schedules (snapshots, retention, restore drills) and serve /health and /metrics, without replication",
      )
      .argument("[db]", "database name or path; default: every database in the config"),
  ).action(async (db: string | undefined, flags: DaemonFlags) => {
    const lb = await loadLifeboat(db, flags);
    const names = db === undefined ? lb.databases : [(await lb.database(db)).name];
    const log = daemonLogPrinter(flags.json);
    let daemon: Awaited<ReturnType<typeof startDaemon>>;
    try {
      daemon = await startDaemon(daemonOptionsFrom(lb, names, flags, { serve: true, onLog: log }));
    } catch (error) {
      await lb.close();
      throw error;
    }
    for (const status of daemon.scheduler.statuses()) {
      if (status.schedule === "off" || status.name.startsWith("daemon/")) continue;
      log({ level: "info", database: null, message: `${status.name}: ${status.schedule}` });
    }
    log({
      level: "info",
      database: null,
      message: `serving /health and /metrics on ${daemon.url} for ${names.join(", ")}${tokenFrom(flags) ? " (bearer token required)" : ""}`,
    });
    let stopping = false;
    const stop = async (signal: string) => {
      if (stopping) {
        process.stderr.write(`lifeboat: ${signal} again, exiting without waiting\n`);
        process.exit(1);
      }
      stopping = true;
      log({ level: "info", database: null, message: `${signal}: finishing running jobs and stopping` });
      await daemon.stop();
      await lb.close();
      process.exit(0);
    };
    process.on("SIGINT", () => void stop("SIGINT"));
    process.on("SIGTERM", () => void stop("SIGTERM"));
    await new Promise(() => {}); // runs until a signal
  });
}
