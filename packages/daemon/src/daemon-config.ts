/**
 * The daemon's part of lifeboat.yml, as proposed for core's schema: per database a `schedule:`
 * and a `health:` section. Until core's schema has them, `daemonSettingsFrom` finds nothing there
 * and falls back to `snapshot.interval`; the CLI may add flags on top. The zod here is the same
 * as the proposal, plus the full cron check (core stays free of croner).
 */
import {
  type DatabaseConfig,
  databaseNameOf,
  ErrorCodes,
  formatIssuePath,
  LifeboatError,
  type ParsedConfig,
  parseDuration,
} from "@lifeboat/core";
import { z } from "zod";
import type { DatabaseSchedule } from "./daemon.js";
import type { HealthThresholds } from "./health.js";
import { parseSchedule } from "./schedule.js";

const duration = z.string().superRefine((value, ctx) => {
  try {
    parseDuration(value);
  } catch {
    ctx.addIssue({ code: "custom", message: `"${value}" is not a duration (use 90s, 15m, 1h, 7d)` });
  }
});

const scheduleSpec = z
  .string()
  .trim()
  .min(1)
  .superRefine((value, ctx) => {
    try {
      parseSchedule(value);
    } catch {
      ctx.addIssue({
        code: "custom",
        message: `"${value}" is neither a duration (6h, 1d) nor a cron expression ("0 */6 * * *")`,
      });
    }
  });

/** `databases[].schedule` */
export const scheduleConfigSchema = z.strictObject({
  /** Snapshots: a duration (`6h`) or a cron expression (`0 *\/6 * * *`). Supersedes `snapshot.interval`. */
  snapshot: scheduleSpec.optional(),
  /** Retention (`retention:` applied for real; WAL chain bases are always kept). */
  prune: scheduleSpec.optional(),
  /** Restore drills: latest state and a random point in time, restored and integrity-checked. */
  verify: scheduleSpec.optional(),
  /** At start: a snapshot unless a good one younger than this exists. */
  startupBackup: duration.optional(),
  /** IANA time zone for the cron expressions (default: the host's). */
  timezone: z.string().min(1).optional(),
});

/** `databases[].health` */
export const healthConfigSchema = z.strictObject({
  /** Replication lag allowed before /health turns 503 (default 1m). */
  maxReplicationLag: duration.optional(),
  /** Age of the newest good snapshot allowed (default: twice the snapshot period + 10m). */
  maxSnapshotAge: duration.optional(),
});

export type ScheduleConfig = z.output<typeof scheduleConfigSchema>;
export type HealthConfig = z.output<typeof healthConfigSchema>;

export interface DaemonSettings {
  readonly schedules: Record<string, DatabaseSchedule>;
  readonly databaseThresholds: Record<string, HealthThresholds>;
}

/**
 * Schedules and thresholds from a parsed config: each database's `schedule` and `health`
 * sections when present (validated here with their paths in the message), else a snapshot
 * schedule from `snapshot.interval`.
 */
export function daemonSettingsFrom(config: ParsedConfig, databases?: readonly string[]): DaemonSettings {
  const schedules: Record<string, DatabaseSchedule> = {};
  const databaseThresholds: Record<string, HealthThresholds> = {};
  config.databases.forEach((db: DatabaseConfig, i) => {
    const name = databaseNameOf(db);
    if (databases && !databases.includes(name)) return;
    const raw = db as DatabaseConfig & { schedule?: unknown; health?: unknown };
    const schedule: ScheduleConfig =
      raw.schedule === undefined ? {} : validate(scheduleConfigSchema, raw.schedule, `databases[${i}].schedule`);
    const health: HealthConfig =
      raw.health === undefined ? {} : validate(healthConfigSchema, raw.health, `databases[${i}].health`);
    const snapshot = schedule.snapshot ?? db.snapshot.interval;
    const entry: DatabaseSchedule = {
      ...(snapshot ? { snapshot } : {}),
      ...(schedule.prune ? { prune: schedule.prune } : {}),
      ...(schedule.verify ? { verify: schedule.verify } : {}),
      ...(schedule.startupBackup ? { startupBackup: schedule.startupBackup } : {}),
      ...(schedule.timezone ? { timezone: schedule.timezone } : {}),
    };
    if (Object.keys(entry).length > 0) schedules[name] = entry;
    if (Object.keys(health).length > 0) databaseThresholds[name] = health;
  });
  return { schedules, databaseThresholds };
}

function validate<T>(schema: z.ZodType<T>, value: unknown, where: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => `${formatIssuePath(where, issue.path)}: ${issue.message}`);
  throw new LifeboatError(ErrorCodes.CONFIG_INVALID, `The config is not valid:\n  ${lines.join("\n  ")}`, {
    hint: 'Fix the listed keys (durations such as 6h, or cron expressions such as "0 */6 * * *").',
    details: { problems: lines },
  });
}
