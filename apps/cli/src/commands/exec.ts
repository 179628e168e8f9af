import { readFile } from "node:fs/promises";
import { ErrorCodes, errnoCode, LifeboatError } from "@lifeboat/core";
import { execMigration, validationRules } from "@lifeboat/guards";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput, table } from "../output.js";
import { ask, canAsk } from "../prompt.js";

interface Flags extends CommonFlags {
  readonly sql: string;
  readonly dryRun?: boolean;
  readonly yes?: boolean;
  readonly confirm?: string[];
  readonly to?: string[];
  readonly maxRowLoss?: string;
  readonly requireTable?: string[];
  readonly integrity?: "full" | "quick";
}

export function registerExec(program: Command): void {
  withCommon(program.command("exec"))
    .description(
      "run an SQL script (a migration) in one transaction, after a backup, committing only if the checks pass",
    )
    .argument("[db]", "database name or path (default: the only database in the config)")
    .requiredOption("--sql <file>", "the SQL script (no BEGIN/COMMIT: exec wraps it in one transaction)")
    .option("-n, --dry-run", "run the script and its checks, then roll back")
    .option("-y, --yes", "do not ask before running it")
    .option("--confirm <phrase...>", 'typed confirmation a guard asks for, e.g. "exec production"')
    .option("--to <location...>", "take the safety backup here instead of the config's targets")
    .option(
      "--max-row-loss <fraction>",
      "share of its rows a table may lose (0..1; default 0.1, or the transaction guard's)",
    )
    .option("--require-table <table...>", "tables that must exist afterwards (added to the transaction guard's)")
    .option("--integrity <mode>", "check before committing: full or quick")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      let sql: string;
      try {
        sql = await readFile(flags.sql, "utf8");
      } catch (error) {
        throw new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `Cannot read the SQL script ${flags.sql} (${errnoCode(error) ?? String(error)}).`,
          {
            hint: "Check the path given to --sql.",
          },
        );
      }
      const maxRowLoss = flags.maxRowLoss === undefined ? undefined : Number(flags.maxRowLoss);
      if (maxRowLoss !== undefined && !(maxRowLoss >= 0 && maxRowLoss <= 1)) {
        throw new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `--max-row-loss ${flags.maxRowLoss} is not a fraction from 0 to 1.`,
          {
            hint: "Example: --max-row-loss 0.25 lets each table lose up to a quarter of its rows; 1 turns the rule off.",
          },
        );
      }
      const lb = await loadLifeboat(db, flags);
      try {
        const name = flags.to ? lb.databases[0] : db;
        const database = await lb.database(name);
        const result = await execMigration(database, {
          sql,
          source: flags.sql,
          dryRun: Boolean(flags.dryRun),
          yes: Boolean(flags.yes),
          phrases: flags.confirm ?? [],
          ...(canAsk() && !flags.yes ? { ask } : {}),
          rules: {
            ...(maxRowLoss !== undefined ? { maxRowLoss } : {}),
            ...(flags.requireTable
              ? { requiredTables: [...validationRules(database).requiredTables, ...flags.requireTable] }
              : {}),
            ...(flags.integrity ? { integrity: flags.integrity } : {}),
          },
        });
        out.line(
          `${result.dryRun ? "Dry run: ran and rolled back" : "Committed"} ${result.statements} statement(s) of ${result.source} on ${result.path}`,
        );
        if (result.safetyBackup)
          out.line(`  backup first: ${result.safetyBackup.id} (${result.safetyBackup.locations.join(", ")})`);
        out.line(
          `  ${result.integrity.check}: ok; user_version ${result.userVersion.before} -> ${result.userVersion.after}`,
        );
        const changed = result.tables.filter((t) => t.before !== t.after);
        if (changed.length > 0) {
          out.line(
            table(
              ["TABLE", "ROWS BEFORE", "ROWS AFTER"],
              changed.map((t) => [t.name, t.before ?? "-", t.after ?? "-"]),
            ),
          );
        }
        out.result({ ok: true, exec: result });
      } finally {
        await lb.close();
      }
    });
}
