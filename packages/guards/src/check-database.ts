/**
 * `lifeboat check`: the start-up validation an application or a deploy script runs before it
 * trusts a database. Reports every check instead of stopping at the first failure.
 */
import { resolve } from "node:path";
import {
  type DatabaseContext,
  type DatabaseDescription,
  type IntegrityMode,
  type IntegrityResult,
  isLifeboatError,
} from "@lifeboat/core";
import { sqliteSource } from "@lifeboat/sqlite";
import { DEFAULT_MARKER_TABLE, type EnvironmentSettings, readEnvironmentMarker } from "./environment-marker.js";
import { findLayer } from "./layer.js";
import { appliedSections, readSidecar } from "./sidecar.js";
import { pathExists } from "./sqlite-access.js";
import type { ValidationRules } from "./transaction.js";

export interface CheckOptions {
  /** What the database should be (`environment:` of the config); compared with its marker. */
  readonly declaredEnvironment?: string | null;
  /** Fail when the config declares an environment and the database carries no marker. */
  readonly requireMarker?: boolean;
  readonly markerTable?: string;
  readonly requiredTables?: readonly string[];
  readonly minRows?: Readonly<Record<string, number>>;
  /** The journal mode the database must be in (`wal`, `delete`...). */
  readonly journalMode?: string;
  /** Default `quick`. */
  readonly integrity?: IntegrityMode;
}

export interface CheckItem {
  /** `exists`, `opens`, `integrity`, `tables`, `rows`, `environment`, `journal-mode`, `protection`. */
  readonly name: string;
  readonly ok: boolean;
  readonly message: string;
}

export interface CheckResult {
  readonly path: string;
  /** Every check passed. */
  readonly ok: boolean;
  readonly exists: boolean;
  /** The file opened as a SQLite database. */
  readonly opened: boolean;
  readonly checks: readonly CheckItem[];
  readonly description: DatabaseDescription | null;
  readonly integrity: IntegrityResult | null;
  readonly environment: string | null;
}

/**
 * The check options a configured database implies: its declared environment, the environment
 * layer's table and `requireMarker`, the transaction layer's `requiredTables` and `minRows`.
 */
export function checkOptionsFor(db: DatabaseContext): CheckOptions {
  const environment = findLayer<EnvironmentSettings>(db.guards, "environment")?.options;
  const rules = findLayer<ValidationRules>(db.guards, "transaction")?.options;
  return {
    declaredEnvironment: db.declaredEnvironment,
    ...(environment ? { markerTable: environment.table, requireMarker: environment.requireMarker } : {}),
    ...(rules ? { requiredTables: rules.requiredTables, minRows: rules.minRows } : {}),
  };
}

/**
 * Checks the database at `path`: it exists and opens as SQLite, passes the integrity check
 * (inside one read transaction with the rest, so a live database is judged at one moment), has the
 * required tables and minimum row counts, its marker agrees with the declared environment, and it
 * is in the expected journal mode. Also reports whether it is protected. Never throws for a
 * failed check; `ok` says whether all passed.
 */
export async function checkDatabase(path: string, options: CheckOptions = {}): Promise<CheckResult> {
  const file = resolve(path);
  const checks: CheckItem[] = [];
  const result = (rest: Partial<CheckResult> & Pick<CheckResult, "exists" | "opened">): CheckResult => ({
    path: file,
    ok: checks.every((c) => c.ok),
    checks,
    description: null,
    integrity: null,
    environment: null,
    ...rest,
  });
  if (!(await pathExists(file))) {
    checks.push({ name: "exists", ok: false, message: `${file} does not exist` });
    return result({ exists: false, opened: false });
  }
  let description: DatabaseDescription;
  let integrity: IntegrityResult;
  try {
    const snapshot = await sqliteSource().snapshot(file, { integrity: options.integrity ?? "quick" });
    snapshot.release();
    description = snapshot.description;
    integrity = snapshot.integrity;
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    if (isLifeboatError(error) && error.code === "INTEGRITY_FAILED") {
      checks.push({ name: "opens", ok: true, message: "opens as a SQLite database" });
      checks.push({ name: "integrity", ok: false, message });
      return result({ exists: true, opened: true });
    }
    checks.push({ name: "opens", ok: false, message });
    return result({ exists: true, opened: false });
  }
  checks.push({
    name: "opens",
    ok: true,
    message: `SQLite ${description.engineVersion}, ${description.pageCount} pages of ${description.pageSize} bytes, user_version ${description.userVersion}`,
  });
  if (integrity.check !== "none") {
    checks.push({
      name: "integrity",
      ok: integrity.ok,
      message: integrity.ok
        ? `${integrity.check}: ok`
        : `${integrity.check}: ${integrity.messages.slice(0, 3).join("; ")}`,
    });
  }
  const rows = new Map(description.tables.map((t) => [t.name, t.rows]));
  const required = options.requiredTables ?? [];
  if (required.length > 0) {
    const missing = required.filter((t) => !rows.has(t));
    checks.push({
      name: "tables",
      ok: missing.length === 0,
      message:
        missing.length === 0
          ? `required tables present: ${required.join(", ")}`
          : `missing tables: ${missing.join(", ")}`,
    });
  }
  for (const [table, min] of Object.entries(options.minRows ?? {})) {
    const count = rows.get(table);
    checks.push({
      name: "rows",
      ok: count !== undefined && count >= min,
      message:
        count === undefined
          ? `table ${table} is missing (needs at least ${min} rows)`
          : `table ${table}: ${count} rows (at least ${min})`,
    });
  }
  const table = options.markerTable ?? DEFAULT_MARKER_TABLE;
  const marker = (await readEnvironmentMarker(file, { table }).catch(() => null))?.environment ?? null;
  const declared = options.declaredEnvironment ?? null;
  if (declared !== null && marker !== null && declared !== marker) {
    checks.push({
      name: "environment",
      ok: false,
      message: `the config says ${declared}, the database says ${marker}`,
    });
  } else if (declared !== null && marker === null) {
    checks.push({
      name: "environment",
      ok: !options.requireMarker,
      message: `no environment marker (the config says ${declared}; lifeboat mark sets one)`,
    });
  } else {
    checks.push({ name: "environment", ok: true, message: marker ? `marked ${marker}` : "no environment marker" });
  }
  const expected = options.journalMode?.toLowerCase();
  checks.push({
    name: "journal-mode",
    ok: expected === undefined || expected === description.journalMode,
    message:
      expected === undefined || expected === description.journalMode
        ? `journal_mode ${description.journalMode}`
        : `journal_mode ${description.journalMode}, expected ${expected}`,
  });
  const protectedBy = appliedSections(await readSidecar(file).catch(() => null));
  checks.push({
    name: "protection",
    ok: true,
    message: protectedBy.length > 0 ? `protected (${protectedBy.join(", ")})` : "not protected",
  });
  return result({ exists: true, opened: true, description, integrity, environment: marker });
}
