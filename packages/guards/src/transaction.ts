/**
 * Layer 7, transaction rollback: `exec` runs an SQL script (a migration) in one transaction after
 * a safety backup, then checks the result before committing: `PRAGMA integrity_check`, required
 * tables, minimum row counts, and that no table lost more rows than allowed. Any error or failed
 * check rolls the transaction back.
 *
 * What "unchanged" means after a failure. The database file is byte-identical: in rollback-journal
 * mode SQLite puts back every page it spilled from its journal; in WAL mode nothing reaches the
 * database file before a commit, and exec keeps a read-only connection open until its writer has
 * closed, so closing the writer never checkpoints. In WAL mode a large transaction may spill
 * uncommitted frames into the -wal file, after its last commit: SQLite ignores them (they carry
 * no commit record) and overwrites them with the next transaction. Every committed byte, and so
 * the database's content, stays as it was.
 */
import { resolve } from "node:path";
import {
  type ConfirmOptions,
  checkGuards,
  type DatabaseContext,
  defineGuardPlugin,
  ErrorCodes,
  type GuardDecision,
  type IntegrityResult,
  LifeboatError,
  type OperationOptions,
} from "@lifeboat/core";
import Database from "better-sqlite3";
import { z } from "zod";
import { findLayer, LAYER, type LayerGuard, parseLayerOptions } from "./layer.js";
import { assertNotProtected } from "./protection-state.js";
import { restoreSafetyBackup, type SafetyBackup, takeSafetyBackup } from "./safety-backup.js";
import { type SqlStatement, splitSqlStatements, transactionConflict } from "./sql-statements.js";
import {
  assertDatabaseFile,
  BUSY_TIMEOUT_MS,
  closeQuietly,
  countRows,
  databaseError,
  openForWriting,
} from "./sqlite-access.js";

const PLUGIN = "transaction";

const rulesSchema = z.strictObject({
  /** The check run before committing: the full `integrity_check` or the cheaper `quick_check`. */
  integrity: z.enum(["full", "quick"]).default("full"),
  /** Tables that must exist after the script. */
  requiredTables: z.array(z.string().min(1)).default([]),
  /** Tables that must hold at least this many rows after the script. */
  minRows: z.record(z.string().min(1), z.number().int().min(0)).default({}),
  /** The largest share (0..1) of its rows a table may lose; a table that disappears loses all of them. */
  maxRowLoss: z.number().min(0).max(1).default(0.1),
  /** Tables the row-loss rule ignores (caches, sessions...). */
  ignoreTables: z.array(z.string().min(1)).default([]),
  /** Fail when `PRAGMA foreign_key_check` finds more violations than before. */
  foreignKeyCheck: z.boolean().default(false),
});
export type TransactionGuardOptions = z.input<typeof rulesSchema>;
export type ValidationRules = z.output<typeof rulesSchema>;

/** The validation rules of `db`: its configured transaction layer's, else the defaults. */
export function validationRules(db: DatabaseContext, overrides: TransactionGuardOptions = {}): ValidationRules {
  const configured = findLayer<ValidationRules>(db.guards, "transaction")?.options ?? {};
  return parseLayerOptions(rulesSchema, { ...configured, ...overrides }, PLUGIN);
}

export interface ExecOptions extends ConfirmOptions, OperationOptions {
  /** The SQL script. */
  readonly sql: string;
  /** Where it came from, for messages (`migrations/007.sql`). */
  readonly source?: string;
  /** Rules that replace the configured ones for this run. */
  readonly rules?: TransactionGuardOptions;
  /** Run the script and its checks, then roll back: nothing changes, no backup is taken. */
  readonly dryRun?: boolean;
}

export interface TableChange {
  readonly name: string;
  readonly before: number | null;
  readonly after: number | null;
}

export interface ExecResult {
  readonly database: string;
  readonly path: string;
  readonly source: string;
  readonly statements: number;
  readonly dryRun: boolean;
  readonly committed: boolean;
  readonly safetyBackup: SafetyBackup | null;
  readonly tables: readonly TableChange[];
  readonly userVersion: { readonly before: number; readonly after: number };
  readonly integrity: IntegrityResult;
  readonly durationMs: number;
}

/**
 * Runs `options.sql` on `db` in one transaction (see the module comment). Order: the script is
 * split and refused if it controls transactions itself; guards (operation `exec`, destructive)
 * and confirmations; a verified safety backup; `BEGIN IMMEDIATE`; the statements one by one;
 * the checks; COMMIT (or ROLLBACK on any failure, or for a dry run).
 *
 * Throws INVALID_ARGUMENT for a script that cannot run (naming the statement and line),
 * INTEGRITY_FAILED when the result fails the integrity check, GUARD_DENIED when it breaks a
 * validation rule; in each case the transaction was rolled back.
 */
export async function execMigration(db: DatabaseContext, options: ExecOptions): Promise<ExecResult> {
  const started = Date.now();
  const path = resolve(db.path);
  const source = options.source ?? "the script";
  const statements = splitSqlStatements(options.sql);
  if (statements.length === 0) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${source} holds no SQL statements.`, {
      plugin: PLUGIN,
      operation: "exec",
      hint: "Check the file name and its contents.",
    });
  }
  for (const statement of statements) {
    const conflict = transactionConflict(statement);
    if (conflict) {
      throw new LifeboatError(
        ErrorCodes.INVALID_ARGUMENT,
        `Statement ${statement.index + 1} of ${source} (line ${statement.line}): ${conflict}. Nothing was run.`,
        {
          plugin: PLUGIN,
          operation: "exec",
          details: { statement: statement.index + 1, line: statement.line },
          hint: "Remove BEGIN/COMMIT/ROLLBACK from the script: exec wraps it in one transaction and commits only when every check passes.",
        },
      );
    }
  }
  const rules = validationRules(db, options.rules);
  const dryRun = options.dryRun === true;
  await assertDatabaseFile(path, "exec");
  if (!dryRun) await assertNotProtected(path, "exec");
  await checkGuards(
    db,
    "exec",
    !dryRun,
    dryRun ? {} : options,
    { sql: source, statements: statements.length, dryRun },
    `Run ${statements.length} statement(s) of ${source} on ${path}? A backup is taken first. [y/N]`,
  );
  const safetyBackup = dryRun ? null : await takeSafetyBackup(db, "exec", options);

  // The holder closes last: a read-only connection never checkpoints, so closing the writer
  // leaves the database file as it is (see the module comment).
  let holder: Database.Database | undefined;
  let writer: Database.Database | undefined;
  let endedEarly: SqlStatement | undefined;
  try {
    holder = new Database(path, { readonly: true, fileMustExist: true, timeout: BUSY_TIMEOUT_MS });
    holder.prepare("SELECT count(*) FROM sqlite_schema").get();
    writer = openForWriting(path, "exec");
    const result = runInTransaction(writer, statements, rules, { path, source, dryRun }, (s) => {
      endedEarly = s;
    });
    return {
      database: db.name,
      path,
      source,
      statements: statements.length,
      dryRun,
      committed: !dryRun,
      safetyBackup,
      ...result,
      durationMs: Date.now() - started,
    };
  } catch (error) {
    throw databaseError(error, path, "exec");
  } finally {
    closeQuietly(writer);
    closeQuietly(holder);
    if (endedEarly && safetyBackup) await rollBackAfterEarlyCommit(db, safetyBackup, endedEarly, source);
  }
}

interface RunContext {
  readonly path: string;
  readonly source: string;
  readonly dryRun: boolean;
}

function runInTransaction(
  db: Database.Database,
  statements: readonly SqlStatement[],
  rules: ValidationRules,
  run: RunContext,
  onEndedEarly: (statement: SqlStatement) => void,
): Pick<ExecResult, "tables" | "userVersion" | "integrity"> {
  db.exec("BEGIN IMMEDIATE");
  try {
    const before = countRows(db);
    const userVersionBefore = db.pragma("user_version", { simple: true }) as number;
    const violationsBefore = rules.foreignKeyCheck ? foreignKeyViolations(db) : 0;
    for (const statement of statements) {
      try {
        const prepared = db.prepare(statement.text);
        if (prepared.reader) prepared.all();
        else prepared.run();
      } catch (error) {
        throw new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `Statement ${statement.index + 1} of ${run.source} (line ${statement.line}) failed: ${error instanceof Error ? error.message : String(error)}. The transaction was rolled back; ${run.path} is unchanged.`,
          {
            plugin: PLUGIN,
            operation: "exec",
            cause: error,
            details: { statement: statement.index + 1, line: statement.line, sql: statement.text.slice(0, 200) },
            hint: "Fix the statement and run exec again.",
          },
        );
      }
      if (!db.inTransaction) {
        onEndedEarly(statement);
        throw new LifeboatError(
          ErrorCodes.INTERNAL,
          `Statement ${statement.index + 1} of ${run.source} (line ${statement.line}) ended exec's transaction.`,
          { plugin: PLUGIN, operation: "exec", hint: "The database is being put back from the safety backup." },
        );
      }
    }
    const integrity = runIntegrity(db, rules.integrity);
    if (!integrity.ok) {
      throw new LifeboatError(
        ErrorCodes.INTEGRITY_FAILED,
        `After ${run.source}, ${run.path} fails ${integrity.check}: ${integrity.messages.slice(0, 3).join("; ")}. The transaction was rolled back; the database is unchanged.`,
        { plugin: PLUGIN, operation: "exec", details: { messages: integrity.messages } },
      );
    }
    const after = countRows(db);
    const problems = validate(before, after, rules);
    if (rules.foreignKeyCheck) {
      const violations = foreignKeyViolations(db);
      if (violations > violationsBefore) {
        problems.push(`foreign_key_check finds ${violations} violations (${violationsBefore} before)`);
      }
    }
    if (problems.length > 0) {
      throw new LifeboatError(
        ErrorCodes.GUARD_DENIED,
        `The transaction guard rolled back ${run.source}: ${problems.join("; ")}. ${run.path} is unchanged.`,
        {
          plugin: PLUGIN,
          operation: "exec",
          details: { problems },
          hint: "If the change is intended, relax the rule for this run (e.g. --max-row-loss 1) or in the transaction guard's options.",
        },
      );
    }
    const names = [...new Set([...before.keys(), ...after.keys()])].sort();
    const result = {
      tables: names.map((name) => ({ name, before: before.get(name) ?? null, after: after.get(name) ?? null })),
      userVersion: { before: userVersionBefore, after: db.pragma("user_version", { simple: true }) as number },
      integrity,
    };
    db.exec(run.dryRun ? "ROLLBACK" : "COMMIT");
    return result;
  } catch (error) {
    if (db.inTransaction) db.exec("ROLLBACK");
    throw error;
  }
}

/** The rule violations of a migration that turned `before` into `after`. */
export function validate(
  before: ReadonlyMap<string, number>,
  after: ReadonlyMap<string, number>,
  rules: ValidationRules,
): string[] {
  const problems: string[] = [];
  const missing = rules.requiredTables.filter((t) => !after.has(t));
  if (missing.length > 0) problems.push(`required table${missing.length > 1 ? "s" : ""} ${missing.join(", ")} missing`);
  for (const [table, min] of Object.entries(rules.minRows)) {
    const rows = after.get(table);
    if (rows !== undefined && rows < min) problems.push(`table ${table} has ${rows} rows, at least ${min} required`);
  }
  for (const [table, was] of before) {
    if (was === 0 || rules.ignoreTables.includes(table)) continue;
    const now = after.get(table) ?? 0;
    const lost = was - now;
    if (lost > was * rules.maxRowLoss) {
      problems.push(
        after.has(table)
          ? `table ${table} lost ${lost} of ${was} rows (${percent(lost / was)}; at most ${percent(rules.maxRowLoss)} allowed)`
          : `table ${table} (${was} rows) is gone`,
      );
    }
  }
  return problems;
}

function percent(x: number): string {
  return `${Math.round(x * 1000) / 10}%`;
}

function runIntegrity(db: Database.Database, mode: "full" | "quick"): IntegrityResult {
  const check = mode === "full" ? "integrity_check" : "quick_check";
  const messages = db.prepare(`PRAGMA ${check}(100)`).pluck().all() as string[];
  const ok = messages.length === 1 && messages[0] === "ok";
  return { check, ok, messages: ok ? [] : messages };
}

function foreignKeyViolations(db: Database.Database): number {
  return db.prepare("PRAGMA foreign_key_check").all().length;
}

/** Defence in depth: a statement committed despite the static check; put the backup back. */
async function rollBackAfterEarlyCommit(
  db: DatabaseContext,
  safety: SafetyBackup,
  statement: SqlStatement,
  source: string,
): Promise<never> {
  try {
    await restoreSafetyBackup(db, safety);
  } catch (error) {
    throw new LifeboatError(
      ErrorCodes.INTERNAL,
      `Statement ${statement.index + 1} of ${source} committed part of the script, and putting back the safety backup ${safety.id} failed: ${error instanceof Error ? error.message : String(error)}`,
      {
        plugin: PLUGIN,
        operation: "exec",
        cause: error,
        hint: `Stop the application and restore the safety backup: lifeboat restore ${db.name} --backup ${safety.id}.`,
      },
    );
  }
  throw new LifeboatError(
    ErrorCodes.INTERNAL,
    `Statement ${statement.index + 1} of ${source} (line ${statement.line}) ended exec's transaction; the database was put back from the safety backup ${safety.id}.`,
    { plugin: PLUGIN, operation: "exec", hint: "Remove transaction control from the script and run it again." },
  );
}

/**
 * Layer 7 as a guard: it carries the validation rules `exec` applies before committing
 * (`requiredTables`, `minRows`, `maxRowLoss`, `ignoreTables`, `integrity`, `foreignKeyCheck`);
 * `lifeboat check` reads `requiredTables` and `minRows` too. Its check allows: the rules act
 * inside the transaction, where the outcome is known.
 */
export function transactionGuard(options: TransactionGuardOptions = {}): LayerGuard<ValidationRules> {
  const resolved = parseLayerOptions(rulesSchema, options, PLUGIN);
  return {
    name: PLUGIN,
    [LAYER]: "transaction",
    options: resolved,
    async check(): Promise<GuardDecision> {
      return { action: "allow" };
    },
  };
}

/** `type: transaction` in lifeboat.yml. */
export const transactionGuardPlugin = defineGuardPlugin({
  name: PLUGIN,
  optionsSchema: rulesSchema,
  create: (options) => transactionGuard(options),
});
