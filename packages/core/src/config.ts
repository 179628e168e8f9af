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
  /** Continuous archiving (`lifeboat replicate`). */
  replication: z
    .strictObject({
      /** Poll at least this often; changes to the -wal file wake the replicator sooner. */
      syncInterval: duration.default("1s"),
      /** PASSIVE checkpoint when the WAL has more pages than this. */
      checkpointPages: z.number().int().min(1).default(1000),
      /** Emergency TRUNCATE checkpoint above this many pages. */
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
