/**
 * Layer 3, the environment marker: a value inside the database saying what it is (`production`,
 * `staging`, ...). Every operation compares it with the `environment:` the config declares, so a
 * development config pointed at the production file is refused before it changes anything.
 *
 * Reading follows `@lifeboat/sqlite`'s inspection (what backups record as the environment): the
 * configured table first, then `_lifeboat_environment`, `_environment` and Rails'
 * `ar_internal_metadata`. A table with a `key` (or `name`) and a `value` column gives the value of
 * the row whose key is `environment` (or `env`); any other table with exactly one row gives its
 * `environment` or `value` column, or its only column. Empty values count as absent.
 */
import { resolve } from "node:path";
import { type ConfirmOptions, defineGuardPlugin, ErrorCodes, type GuardDecision, LifeboatError } from "@lifeboat/core";
import { ENVIRONMENT_TABLES } from "@lifeboat/sqlite";
import type Database from "better-sqlite3";
import { z } from "zod";
import { requireConfirmation } from "./confirm.js";
import { affectedPath, DEFAULT_PRODUCTION_ENVIRONMENTS, LAYER, type LayerGuard, parseLayerOptions } from "./layer.js";
import { assertNotProtected } from "./protection-state.js";
import {
  assertDatabaseFile,
  closeQuietly,
  databaseError,
  openForWriting,
  pathExists,
  quoteIdentifier,
  withReadConnection,
} from "./sqlite-access.js";

/** Where `lifeboat mark` writes unless told otherwise. */
export const DEFAULT_MARKER_TABLE = "_lifeboat_environment";
const ENVIRONMENT_KEYS = ["environment", "env"];
const ENVIRONMENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface EnvironmentMarker {
  readonly environment: string;
  /** The table it was read from. */
  readonly table: string;
}

/** The tables tried, in order: `table` first, then the standard ones. */
export function markerTables(table: string = DEFAULT_MARKER_TABLE): string[] {
  return [...new Set([table, ...ENVIRONMENT_TABLES])];
}

/** The marker of the database `db` is connected to (see the module comment), or null. */
export function readMarker(db: Database.Database, table: string = DEFAULT_MARKER_TABLE): EnvironmentMarker | null {
  for (const name of markerTables(table)) {
    const environment = readTableMarker(db, name);
    if (environment !== null) return { environment, table: name };
  }
  return null;
}

/** Every table that holds a marker (to spot two tables that disagree). */
export function readAllMarkers(db: Database.Database, table: string = DEFAULT_MARKER_TABLE): EnvironmentMarker[] {
  const found: EnvironmentMarker[] = [];
  for (const name of markerTables(table)) {
    const environment = readTableMarker(db, name);
    if (environment !== null) found.push({ environment, table: name });
  }
  return found;
}

function readTableMarker(db: Database.Database, table: string): string | null {
  const shape = tableShape(db, table);
  if (!shape) return null;
  let value: unknown;
  if (shape.kind === "key-value") {
    value = db
      .prepare(
        `SELECT ${quoteIdentifier(shape.valueColumn)} FROM ${quoteIdentifier(table)} WHERE lower(${quoteIdentifier(shape.keyColumn)}) IN (${ENVIRONMENT_KEYS.map(() => "?").join(", ")}) LIMIT 1`,
      )
      .pluck()
      .get(...ENVIRONMENT_KEYS);
  } else if (shape.kind === "single") {
    const rows = db
      .prepare(`SELECT ${quoteIdentifier(shape.column)} FROM ${quoteIdentifier(table)} LIMIT 2`)
      .pluck()
      .all();
    if (rows.length === 1) value = rows[0];
  }
  if (value === null || value === undefined) return null;
  const text = (Buffer.isBuffer(value) ? value.toString("utf8") : String(value)).trim();
  return text === "" ? null : text;
}

type TableShape =
  | { kind: "key-value"; keyColumn: string; valueColumn: string; columns: string[] }
  | { kind: "single"; column: string; columns: string[] }
  | { kind: "unusable"; columns: string[] };

function tableShape(db: Database.Database, table: string): TableShape | null {
  const exists = db.prepare("SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?").get(table);
  if (!exists) return null;
  const columns = (db.prepare(`PRAGMA table_info(${quoteIdentifier(table)})`).all() as { name: string }[]).map(
    (c) => c.name,
  );
  const lower = columns.map((c) => c.toLowerCase());
  const column = (wanted: string) => columns[lower.indexOf(wanted)];
  const keyColumn = column("key") ?? column("name");
  const valueColumn = column("value");
  if (keyColumn && valueColumn) return { kind: "key-value", keyColumn, valueColumn, columns };
  const single = column("environment") ?? valueColumn ?? (columns.length === 1 ? columns[0] : undefined);
  return single ? { kind: "single", column: single, columns } : { kind: "unusable", columns };
}

/**
 * The marker of the database at `path`, read on a read-only connection. Null when the file does
 * not exist or holds no marker. Throws NOT_A_DATABASE, PERMISSION_DENIED... for unreadable files.
 */
export async function readEnvironmentMarker(
  path: string,
  options: { readonly table?: string } = {},
): Promise<EnvironmentMarker | null> {
  const file = resolve(path);
  if (!(await pathExists(file))) return null;
  await assertDatabaseFile(file, "read the environment marker of");
  return withReadConnection(file, "read the environment marker of", (db) => readMarker(db, options.table));
}

export interface MarkOptions {
  /** Table to write (default `_lifeboat_environment`); an existing table keeps its shape. */
  readonly table?: string;
  /** Changing an existing marker needs confirmation (a typed phrase when production is involved). */
  readonly confirm?: ConfirmOptions;
  /** Names that count as production (default `["production"]`). */
  readonly productionEnvironments?: readonly string[];
}

export interface MarkResult {
  readonly path: string;
  readonly environment: string;
  /** The marker before (from any table), null if there was none. */
  readonly previous: string | null;
  readonly table: string;
  readonly changed: boolean;
  /** Other tables holding a different marker (they are read after `table`, so they no longer count). */
  readonly otherMarkers: readonly EnvironmentMarker[];
}

/**
 * Stores `environment` as the marker of the database at `path`, in one write transaction. An
 * existing table keeps its shape (key/value rows, or a single row); a missing one is created as
 * `(key TEXT PRIMARY KEY, value TEXT NOT NULL)`. Replacing a different marker needs confirmation,
 * with the phrase `change <old> to <new>` when either is a production environment. Refuses a
 * protected database (unprotect it first).
 */
export async function markEnvironment(
  path: string,
  environment: string,
  options: MarkOptions = {},
): Promise<MarkResult> {
  const file = resolve(path);
  const table = options.table ?? DEFAULT_MARKER_TABLE;
  if (!ENVIRONMENT_NAME.test(environment)) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `"${environment}" is not an environment name.`, {
      plugin: "guards",
      operation: "mark",
      hint: "Use a word such as production, staging or development (letters, digits, '.', '_', '-').",
    });
  }
  await assertDatabaseFile(file, "mark");
  await assertNotProtected(file, "mark");
  const current = await readEnvironmentMarker(file, { table });
  const previous = current?.environment ?? null;
  if (previous !== null && previous !== environment) {
    const production = options.productionEnvironments ?? DEFAULT_PRODUCTION_ENVIRONMENTS;
    const involvesProduction = production.includes(previous) || production.includes(environment);
    await requireConfirmation(options.confirm ?? {}, {
      action: `mark ${file} as ${environment}`,
      reason: `${file} is marked ${previous}; marking it ${environment} changes what every guard believes it is.`,
      ...(involvesProduction ? { phrase: `change ${previous} to ${environment}` } : {}),
    });
  }
  const db = openForWriting(file, "mark");
  try {
    db.exec("BEGIN IMMEDIATE");
    try {
      writeMarker(db, table, environment, file);
      db.exec("COMMIT");
    } catch (error) {
      if (db.inTransaction) db.exec("ROLLBACK");
      throw error;
    }
    const otherMarkers = readAllMarkers(db, table).filter((m) => m.table !== table && m.environment !== environment);
    return { path: file, environment, previous, table, changed: previous !== environment, otherMarkers };
  } catch (error) {
    throw databaseError(error, file, "mark");
  } finally {
    closeQuietly(db);
  }
}

/** Writes the marker into `table` inside the caller's write transaction. */
export function writeMarker(db: Database.Database, table: string, environment: string, path: string): void {
  const shape = tableShape(db, table);
  const q = quoteIdentifier(table);
  if (!shape) {
    db.exec(`CREATE TABLE ${q} (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)`);
    db.prepare(`INSERT INTO ${q} (key, value) VALUES ('environment', ?)`).run(environment);
    return;
  }
  const isView = db.prepare("SELECT 1 FROM sqlite_schema WHERE type = 'view' AND name = ?").get(table);
  if (isView || shape.kind === "unusable") {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `${table} in ${path} cannot hold the environment marker: ${isView ? "it is a view" : `its columns (${shape.columns.join(", ")}) have neither key/value nor an environment column`}.`,
      {
        plugin: "guards",
        operation: "mark",
        hint: `Choose another table (--table), or leave it to the default ${DEFAULT_MARKER_TABLE}.`,
      },
    );
  }
  // Rails-style metadata tables want timestamps.
  const stamps = shape.columns.filter((c) => ["created_at", "updated_at"].includes(c.toLowerCase()));
  if (shape.kind === "key-value") {
    const updatedAt = stamps.find((c) => c.toLowerCase() === "updated_at");
    const changed = db
      .prepare(
        `UPDATE ${q} SET ${quoteIdentifier(shape.valueColumn)} = ?${updatedAt ? `, ${quoteIdentifier(updatedAt)} = datetime('now')` : ""} WHERE lower(${quoteIdentifier(shape.keyColumn)}) IN (${ENVIRONMENT_KEYS.map(() => "?").join(", ")})`,
      )
      .run(environment, ...ENVIRONMENT_KEYS).changes;
    if (changed === 0) {
      const columns = [shape.keyColumn, shape.valueColumn, ...stamps].map(quoteIdentifier).join(", ");
      const values = ["'environment'", "?", ...stamps.map(() => "datetime('now')")].join(", ");
      db.prepare(`INSERT INTO ${q} (${columns}) VALUES (${values})`).run(environment);
    }
    return;
  }
  const rows = db.prepare(`SELECT count(*) FROM ${q}`).pluck().get() as number;
  if (rows > 1) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `${table} in ${path} has ${rows} rows; a single-value marker table must have exactly one.`,
      {
        plugin: "guards",
        operation: "mark",
        hint: `Delete the extra rows, or mark another table (--table ${DEFAULT_MARKER_TABLE}).`,
      },
    );
  }
  if (rows === 1) db.prepare(`UPDATE ${q} SET ${quoteIdentifier(shape.column)} = ?`).run(environment);
  else {
    const columns = [shape.column, ...stamps].map(quoteIdentifier).join(", ");
    const values = ["?", ...stamps.map(() => "datetime('now')")].join(", ");
    db.prepare(`INSERT INTO ${q} (${columns}) VALUES (${values})`).run(environment);
  }
}

const optionsSchema = z.strictObject({
  /** The table `lifeboat mark` writes and that is read first. */
  table: z.string().min(1).default(DEFAULT_MARKER_TABLE),
  /** Refuse operations on a database without a marker when the config declares an environment. */
  requireMarker: z.boolean().default(false),
  /** Environments a non-matching backup may not be restored over without a typed phrase. */
  environments: z
    .array(z.string().min(1))
    .min(1)
    .default([...DEFAULT_PRODUCTION_ENVIRONMENTS]),
});

export type EnvironmentGuardOptions = z.input<typeof optionsSchema>;
/** The options with their defaults filled in, as a configured guard carries them. */
export type EnvironmentSettings = z.output<typeof optionsSchema>;

/** Reads a marker for a guard decision; a file that is not a readable database has none. */
async function markerOrError(path: string, table: string): Promise<{ marker: string | null; error?: LifeboatError }> {
  try {
    return { marker: (await readEnvironmentMarker(path, { table }))?.environment ?? null };
  } catch (error) {
    return { marker: null, error: databaseError(error, path, "read the environment marker of") };
  }
}

/**
 * Layer 3 as a guard. Denies any operation when the config's `environment:` and the database's
 * marker disagree ("the config says development, the database says production"), and, with
 * `requireMarker`, when the database has no marker. A restore over a production database of a
 * backup marked otherwise (or unmarked, when the database is marked) needs the typed phrase
 * `restore <backup environment> over <environment>`.
 */
export function environmentGuard(options: EnvironmentGuardOptions = {}): LayerGuard<EnvironmentSettings> {
  const resolved = parseLayerOptions(optionsSchema, options, "environment");
  return {
    name: "environment",
    [LAYER]: "environment",
    options: resolved,
    async check(context): Promise<GuardDecision> {
      const dbPath = resolve(context.database.path);
      const declared = context.database.declaredEnvironment;
      const read = await markerOrError(dbPath, resolved.table);
      // A damaged file is what a restore repairs: it must not be blocked by an unreadable marker.
      if (read.error && context.operation !== "restore") {
        return {
          action: "deny",
          reason: `cannot read the environment marker of ${dbPath}: ${read.error.message}`,
          hint: read.error.hint ?? "Check the database file.",
        };
      }
      const marker = read.marker;
      if (declared !== null && marker !== null && declared !== marker) {
        return {
          action: "deny",
          reason: `the config says ${declared}, the database says ${marker} (${dbPath}).`,
          hint: `Check that the config points at the right file. If the marker is wrong, fix it with \`lifeboat mark ${dbPath} ${declared}\`; if the config is wrong, change its environment: to ${marker}.`,
        };
      }
      if (declared !== null && marker === null && resolved.requireMarker && !read.error && (await pathExists(dbPath))) {
        return {
          action: "deny",
          reason: `the config says ${declared}, but ${dbPath} carries no environment marker.`,
          hint: `Mark it: \`lifeboat mark ${dbPath} ${declared}\`.`,
        };
      }
      if (context.operation === "restore" && context.destructive) {
        const target = affectedPath(context);
        const targetMarker = target === dbPath ? marker : (await markerOrError(target, resolved.table)).marker;
        const targetEnvironment = target === dbPath ? (marker ?? declared) : targetMarker;
        const backupEnvironment = context.details?.backupEnvironment;
        if (targetEnvironment !== null && resolved.environments.includes(targetEnvironment)) {
          if (typeof backupEnvironment === "string" && backupEnvironment !== targetEnvironment) {
            return {
              action: "confirm",
              phrase: `restore ${backupEnvironment} over ${targetEnvironment}`,
              reason: `The backup comes from a ${backupEnvironment} database and ${target} is ${targetEnvironment}.`,
            };
          }
          if ((backupEnvironment === null || backupEnvironment === undefined) && targetMarker !== null) {
            return {
              action: "confirm",
              phrase: `restore unmarked over ${targetEnvironment}`,
              reason: `The backup carries no environment marker and ${target} is marked ${targetEnvironment}.`,
            };
          }
        }
      }
      return { action: "allow" };
    },
  };
}

/** `type: environment` in lifeboat.yml. */
export const environmentGuardPlugin = defineGuardPlugin({
  name: "environment",
  optionsSchema,
  create: (options) => environmentGuard(options),
});
