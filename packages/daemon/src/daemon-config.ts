/**
 * The daemon's part of lifeboat.yml: per database a `schedule:` and a `health:` section (core's
 * schema types and checks them; see `ScheduleConfig`, `HealthConfig`). Core checks a cron
 * expression's syntax and ranges; here croner evaluates it, so an expression that never fires
 * (`0 0 31 2 *`) or that croner reads differently is refused before the daemon starts.
 */
import {
  type DatabaseConfig,
  databaseNameOf,
  ErrorCodes,
  type HealthConfig,
  LifeboatError,
  type ParsedConfig,
  type ScheduleConfig,
} from "@lifeboat/core";
import type { DatabaseSchedule } from "./daemon.js";
import type { HealthThresholds } from "./health.js";
import { parseSchedule } from "./schedule.js";

export type { HealthConfig, ScheduleConfig };

export interface DaemonSettings {
  readonly schedules: Record<string, DatabaseSchedule>;
  readonly databaseThresholds: Record<string, HealthThresholds>;
}

const SCHEDULED = ["snapshot", "prune", "verify"] as const;

/**
 * Schedules and thresholds from a parsed config, for the databases named in `databases` (default
 * all): each database's `schedule` and `health` sections; without `schedule.snapshot`, a snapshot
 * schedule from `snapshot.interval`. Throws CONFIG_INVALID naming the key
 * (`databases[0].schedule.verify`) when croner cannot evaluate a schedule or it never fires.
 */
export function daemonSettingsFrom(config: ParsedConfig, databases?: readonly string[]): DaemonSettings {
  const schedules: Record<string, DatabaseSchedule> = {};
  const databaseThresholds: Record<string, HealthThresholds> = {};
  const problems: string[] = [];
  config.databases.forEach((db: DatabaseConfig, i) => {
    const name = databaseNameOf(db);
    if (databases && !databases.includes(name)) return;
    const schedule: ScheduleConfig = db.schedule ?? {};
    const health: HealthConfig = db.health ?? {};
    const snapshot = schedule.snapshot ?? db.snapshot.interval;
    const entry: DatabaseSchedule = {
      ...(snapshot ? { snapshot } : {}),
      ...(schedule.prune ? { prune: schedule.prune } : {}),
      ...(schedule.verify ? { verify: schedule.verify } : {}),
      ...(schedule.startupBackup ? { startupBackup: schedule.startupBackup } : {}),
      ...(schedule.timezone ? { timezone: schedule.timezone } : {}),
    };
    for (const job of SCHEDULED) {
      const spec = entry[job];
      if (spec === undefined) continue;
      const where =
        job === "snapshot" && schedule.snapshot === undefined
          ? `databases[${i}].snapshot.interval`
          : `databases[${i}].schedule.${job}`;
      const problem = scheduleProblem(spec, where, schedule.timezone);
      if (problem) problems.push(problem);
    }
    if (Object.keys(entry).length > 0) schedules[name] = entry;
    const thresholds: HealthThresholds = {
      ...(health.maxReplicationLag ? { maxReplicationLag: health.maxReplicationLag } : {}),
      ...(health.maxSnapshotAge ? { maxSnapshotAge: health.maxSnapshotAge } : {}),
    };
    if (Object.keys(thresholds).length > 0) databaseThresholds[name] = thresholds;
  });
  if (problems.length > 0) {
    throw new LifeboatError(
      ErrorCodes.CONFIG_INVALID,
      `The config's schedules are not valid:\n  ${problems.join("\n  ")}`,
      {
        hint: 'Use durations such as 6h, or cron expressions such as "0 */6 * * *" (minute hour day month weekday).',
        details: { problems },
      },
    );
  }
  return { schedules, databaseThresholds };
}

function scheduleProblem(spec: string, where: string, timezone: string | undefined): string | null {
  try {
    const parsed = parseSchedule(spec, where, timezone ? { timezone } : {});
    if (parsed.kind === "cron" && parsed.next(Date.now()) === null) return `${where}: "${spec}" never fires`;
    return null;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    return message.startsWith(`${where}:`) ? message : `${where}: ${message}`;
  }
}
