/**
 * The configuration schema (lifeboat.yml). One zod schema gives the TypeScript type and the error
 * messages; errors name the path (`databases[0].targets[1].path: required`). Unknown keys are
 * errors. Plugin entries (`targets`, `codecs`, `guards`) carry `type` (+ optional `name`) here and
 * are validated in full by their plugin's own schema when the config is resolved.
 */
import { readFileSync, statSync } from "node:fs";
import { basename, dirname, extname, resolve } from "node:path";
import { parseDocument } from "yaml";
import { z } from "zod";
import { parseDuration } from "./duration.js";
import { ErrorCodes, errnoCode, LifeboatError } from "./errors.js";
import { type HookName, hookKinds } from "./hooks.js";
import { formatIssuePath } from "./schema.js";

const duration = z.string().superRefine((value, ctx) => {
  try {
    parseDuration(value);
  } catch {
    ctx.addIssue({ code: "custom", message: `"${value}" is not a duration (use 90s, 15m, 1h, 7d)` });
  }
});

const pluginEntry = z.looseObject({
  type: z.string({ error: "required: the plugin name (e.g. local, s3, or a package name)" }).min(1),
  name: z.string().min(1).optional(),
});

const retention = z.strictObject({
  /** Keep the newest N snapshots. */
  keepLast: z.number().int().min(1).optional(),
  /** Keep every snapshot younger than this. */
  keepWithin: duration.optional(),
  /** Keep the newest snapshot of each of the last N days / weeks / months. */
  keepDaily: z.number().int().min(1).optional(),
  keepWeekly: z.number().int().min(1).optional(),
  keepMonthly: z.number().int().min(1).optional(),
  /** Keep every moment of this last duration restorable (snapshots plus WAL segments), e.g. 7d. */
  keepPointInTime: duration.optional(),
});

/** Allowed values of each cron field; `names` are the three-letter month and weekday names. */
const cronFields = [
  { name: "second", min: 0, max: 59 },
  { name: "minute", min: 0, max: 59 },
  { name: "hour", min: 0, max: 23 },
  { name: "day of month", min: 1, max: 31 },
  { name: "month", min: 1, max: 12, names: "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC" },
  { name: "weekday", min: 0, max: 7, names: "SUN MON TUE WED THU FRI SAT" },
  { name: "year", min: 1970, max: 9999 },
] as const;
const cronNicknames = new Set(["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]);

/**
 * Why `spec` is not a schedule, or null when it is one: a duration (`6h`) or a cron expression of
 * 5 fields (minute hour day month weekday), 6 (seconds first) or 7 (a year last), or `@daily` and
 * friends. A syntax and range check only: the daemon evaluates the expression (croner), and core
 * stays free of it.
 */
export function scheduleProblem(spec: string): string | null {
  const text = spec.trim();
  if (/^\d/.test(text) && !/\s/.test(text)) {
    try {
      return parseDuration(text) >= 10 ? null : "is too short an interval (in practice 15m, 6h, 1d)";
    } catch {
      // Not a duration; a one-field cron expression is wrong too, and says so below.
    }
  }
  if (text.startsWith("@")) {
    return cronNicknames.has(text.toLowerCase()) ? null : `is not a cron nickname (${[...cronNicknames].join(", ")})`;
  }
  const parts = text.split(/\s+/);
  if (parts.length < 5 || parts.length > 7) {
    return `is neither a duration (6h, 1d) nor a cron expression ("0 */6 * * *": minute hour day month weekday)`;
  }
  const fields = parts.length === 5 ? cronFields.slice(1, 6) : cronFields.slice(0, parts.length);
  for (const [i, part] of parts.entries()) {
    const problem = cronFieldProblem(part, fields[i]!);
    if (problem) return `is not a valid cron expression: ${problem}`;
  }
  return null;
}

function cronFieldProblem(part: string, field: (typeof cronFields)[number]): string | null {
  const names = "names" in field ? field.names.split(" ") : [];
  const value = (token: string): number | null => {
    const byName = names.indexOf(token.toUpperCase());
    if (byName >= 0) return byName + (field.name === "month" ? 1 : 0);
    return /^\d+$/.test(token) ? Number(token) : null;
  };
  for (const item of part.split(",")) {
    // Day-of-month and weekday extras as croner reads them: L (last), 15W, LW, 5L, 5#2, ?.
    if (field.name === "day of month" && /^(L|LW|\?|\d{1,2}W)$/i.test(item)) continue;
    if (field.name === "weekday" && /^(\?|[0-7]L|[0-7]#[1-5])$/i.test(item)) continue;
    const m = /^(\*|[^-/]+(?:-[^-/]+)?)(?:\/(\d+))?$/.exec(item);
    if (!m || (m[2] !== undefined && Number(m[2]) < 1)) return `${field.name} "${item}" is not a value, range or step`;
    if (m[1] === "*") continue;
    if (m[2] !== undefined && !m[1]!.includes("-")) {
      return `${field.name} "${item}": step a wildcard or a range (*/${m[2]}, ${m[1]}-${field.max}/${m[2]})`;
    }
    for (const token of m[1]!.split("-")) {
      const n = value(token);
      if (n === null || n < field.min || n > field.max) {
        return `${field.name} "${token}" is out of range ${field.min}-${field.max}${names.length ? ` (or ${names[0]}-${names.at(-1)})` : ""}`;
      }
    }
  }
  return null;
}

const scheduleSpec = z
  .string()
  .trim()
  .min(1, "give a duration (6h) or a cron expression")
  .superRefine((value, ctx) => {
    const problem = scheduleProblem(value);
    if (problem) ctx.addIssue({ code: "custom", message: `"${value}" ${problem}` });
  });

const timezone = z.string().superRefine((value, ctx) => {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: value });
  } catch {
    ctx.addIssue({ code: "custom", message: `"${value}" is not an IANA time zone (e.g. UTC, Europe/Berlin)` });
  }
});

/** `databases[].schedule`: what the daemon (`lifeboat serve`, `lifeboat replicate`) runs, and when. */
const schedule = z.strictObject({
  /** Snapshots: a duration (`6h`) or a cron expression (`0 *\/6 * * *`). Supersedes `snapshot.interval`. */
  snapshot: scheduleSpec.optional(),
  /** Applies `retention:` (the WAL chain of the latest state is always kept). */
  prune: scheduleSpec.optional(),
  /** Restore drills: the latest state and a random point in time, restored and integrity-checked. */
  verify: scheduleSpec.optional(),
  /** At start: a snapshot unless a good one younger than this exists. */
  startupBackup: duration.optional(),
  /** IANA time zone for the cron expressions (default: the host's). */
  timezone: timezone.optional(),
});

/** `databases[].health`: when `/health` turns 503 for this database. */
const health = z.strictObject({
  /** Replication lag allowed (default 1m). */
  maxReplicationLag: duration.optional(),
  /** Age of the newest good snapshot allowed (default: twice the snapshot period + 10m). */
  maxSnapshotAge: duration.optional(),
});

const hookNames = Object.keys(hookKinds) as [HookName, ...HookName[]];

const hook = z
  .strictObject({
    on: z.enum(hookNames, { error: `must be one of ${hookNames.join(", ")}` }),
    /** A shell command; the event arrives as LIFEBOAT_* environment variables. */
    exec: z.string().min(1).optional(),
    /** A URL that receives the event as a JSON POST. */
    webhook: z.url().optional(),
    timeout: duration.default("30s"),
  })
  .refine((h) => (h.exec === undefined) !== (h.webhook === undefined), {
    message: "give exactly one of exec or webhook",
  });

const databaseName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "use letters, digits, '.', '_' and '-' (it names a folder on every target)");

const database = z.strictObject({
  /** Names the database in commands and on storage. Default: the file name without extension. */
  name: databaseName.optional(),
  path: z.string({ error: "required: the path of the SQLite database file" }).min(1),
  /** What this database is. Guards compare it with the marker inside the database. */
  environment: z.string().min(1).optional(),
  targets: z.array(pluginEntry, { error: "required: at least one storage target" }).min(1, "give at least one target"),
  snapshot: z
    .strictObject({
      /** Integrity check inside the snapshot's transaction: full, quick or off. */
      integrity: z.enum(["full", "quick", "off"]).default("quick"),
      /** How often the daemon takes a snapshot. */
      interval: duration.optional(),
    })
    .default({ integrity: "quick" }),
  retention: retention.optional(),
  schedule: schedule.optional(),
  health: health.optional(),
  /** Continuous archiving (`lifeboat replicate`). */
  replication: z
    .strictObject({
      /** Poll at least this often; changes to the -wal file wake the replicator sooner. */
      syncInterval: duration.default("1s"),
      /**
       * Cut a segment at most this often ("0s": at every change, the lowest lag). Fewer storage
       * requests for more lag: "1s" means at most 3,600 segment uploads an hour per target.
       */
      segmentInterval: duration.default("0s"),
      /** PASSIVE checkpoint when the WAL has more pages than this. */
      checkpointPages: z.number().int().min(1).default(1000),
      /** Emergency checkpoint (ships the rest and checkpoints under a brief write lock) above this many pages. */
      emergencyCheckpointPages: z.number().int().min(1).default(20_000),
      /** Local queue directory (default: .<db file>.lifeboat next to the database). */
      queueDir: z.string().min(1).optional(),
      /** Bound of the local queue, e.g. 1GB, 500MB. */
      queueMaxSize: z
        .string()
        .regex(/^\d+(\.\d+)?\s*(B|KB|MB|GB|TB)$/i, "a size such as 500MB or 2GB")
        .default("1GB"),
      /** Switch a rollback-journal database to WAL mode (else refuse). */
      changeJournalMode: z.boolean().default(true),
      /** Lease time to live: how soon another replicator may take over after this one vanished. */
      leaseTtl: duration.default("30s"),
    })
    .optional(),
  codecs: z.array(pluginEntry).default([]),
  guards: z.array(pluginEntry).default([]),
  hooks: z.array(hook).default([]),
});

export const configSchema = z.strictObject({
  version: z.literal(1, { error: "must be 1 (the only config format version so far)" }).default(1),
  databases: z.array(database, { error: "required: a list of databases" }).min(1, "list at least one database"),
});

export type LifeboatConfig = z.input<typeof configSchema>;
export type ParsedConfig = z.output<typeof configSchema>;
export type DatabaseConfig = ParsedConfig["databases"][number];
export type PluginEntry = z.output<typeof pluginEntry>;
export type RetentionConfig = z.output<typeof retention>;
export type HookConfig = z.output<typeof hook>;
export type ScheduleConfig = z.output<typeof schedule>;
export type HealthConfig = z.output<typeof health>;
export type ReplicationConfig = NonNullable<DatabaseConfig["replication"]>;

/** `500MB` -> bytes (decimal units, as disks are sold). */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)$/i.exec(text.trim());
  if (!m)
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `"${text}" is not a size.`, {
      hint: "Use a number with B, KB, MB, GB or TB.",
    });
  const unit = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12 }[m[2]!.toUpperCase() as "B"]!;
  return Math.round(Number(m[1]) * unit);
}

/** For TypeScript users writing their config in code. */
export function defineConfig(config: LifeboatConfig): LifeboatConfig {
  return config;
}

/** Validates a config object; every problem is listed with its path. */
export function parseConfig(input: unknown, source = "config"): ParsedConfig {
  const result = configSchema.safeParse(input);
  if (result.success) {
    const names = new Set<string>();
    result.data.databases.forEach((db, i) => {
      const name = databaseNameOf(db);
      if (names.has(name)) {
        throw configError(source, [`databases[${i}].name: "${name}" is used twice; give each database a unique name`]);
      }
      names.add(name);
    });
    return result.data;
  }
  const lines = result.error.issues.map((issue) => {
    if (issue.code === "unrecognized_keys") {
      return issue.keys
        .map((key) => `${formatIssuePath("", [...issue.path, key])}: unknown key (check the spelling)`)
        .join("\n  ");
    }
    const missing = issue.code === "invalid_type" && issue.input === undefined;
    return `${formatIssuePath("", issue.path)}: ${missing && !issue.message.startsWith("required") ? "required" : issue.message}`;
  });
  throw configError(source, lines);
}

function configError(source: string, lines: string[]): LifeboatError {
  return new LifeboatError(
    ErrorCodes.CONFIG_INVALID,
    `${source} is not a valid Lifeboat config:\n  ${lines.join("\n  ")}`,
    {
      hint: "Fix the listed keys; `lifeboat init` writes a commented example.",
      details: { problems: lines },
    },
  );
}

/** Reads and validates a YAML (or JSON) config file. */
export function loadConfigFile(path: string): { config: ParsedConfig; path: string; baseDir: string } {
  const file = resolve(path);
  let text: string;
  try {
    if (statSync(file).isDirectory()) {
      throw new LifeboatError(ErrorCodes.CONFIG_INVALID, `${file} is a directory, not a config file.`, {
        hint: "Pass the YAML file itself with --config FILE.",
      });
    }
    text = readFileSync(file, "utf8");
  } catch (error) {
    if (error instanceof LifeboatError) throw error;
    const missing = errnoCode(error) === "ENOENT";
    throw new LifeboatError(
      ErrorCodes.CONFIG_INVALID,
      missing ? `No config file at ${file}.` : `Cannot read the config file ${file}: ${String(error)}`,
      {
        cause: error,
        hint: missing
          ? "Run `lifeboat init` to write one, pass --config FILE, or name the database and target on the command line (lifeboat backup app.db --to ./backups)."
          : "Check the file's permissions.",
      },
    );
  }
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!;
    const where = first.linePos?.[0]
      ? `line ${first.linePos[0].line}, column ${first.linePos[0].col}`
      : "unknown position";
    throw new LifeboatError(
      ErrorCodes.CONFIG_INVALID,
      `${file} is not valid YAML (${where}): ${first.message.split("\n")[0]}`,
      {
        hint: "Fix the YAML syntax at that position (indentation uses spaces; quote values containing ':' or '#').",
        details: { line: first.linePos?.[0]?.line, column: first.linePos?.[0]?.col },
      },
    );
  }
  const config = parseConfig(doc.toJS() ?? {}, file);
  return { config, path: file, baseDir: dirname(file) };
}

/** The name a database is known by: its `name`, else the file name without extension. */
export function databaseNameOf(db: { name?: string | undefined; path: string }): string {
  if (db.name) return db.name;
  const base = basename(db.path, extname(db.path));
  return base.replace(/[^A-Za-z0-9._-]/g, "_").replace(/^[._-]+/, "") || "database";
}
