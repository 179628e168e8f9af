import { resolve } from "node:path";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { type CheckOptions, type CheckResult, checkDatabase, checkOptionsFor } from "@lifeboat/guards";
import type { Command } from "commander";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput } from "../output.js";
import { configuredDatabase, optionalLifeboat } from "./protect.js";

interface Flags extends CommonFlags {
  readonly requireTable?: string[];
  readonly minRows?: string[];
  readonly journalMode?: string;
  readonly integrity: "full" | "quick" | "off";
  readonly environment?: string;
}

/** Exit codes of `lifeboat check` (also in its --help). */
export const CHECK_EXIT = { ok: 0, failed: 1, usage: 2, missing: 4 } as const;

function parseMinRows(specs: readonly string[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const spec of specs) {
    const match = /^(.+)=(\d+)$/.exec(spec);
    if (!match) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `--min-rows ${spec} is not TABLE=COUNT.`, {
        hint: "Example: --min-rows users=1",
      });
    }
    out[match[1]!] = Number(match[2]);
  }
  return out;
}

export function registerCheck(program: Command): void {
  withCommon(program.command("check"))
    .description("start-up validation: the database exists, opens, passes quick_check, has its tables and environment")
    .argument("[db]", "database name from the config, or a database path (default: every database in the config)")
    .option("--require-table <table...>", "tables that must exist (added to the transaction guard's requiredTables)")
    .option("--min-rows <table=count...>", "tables that must hold at least this many rows")
    .option("--journal-mode <mode>", "the journal mode it must be in (wal, delete...)")
    .option("--integrity <mode>", "full, quick or off", "quick")
    .option("--environment <env>", "what it must be marked (default: the config's environment:)")
    .addHelpText(
      "after",
      `\nExit codes (for scripts): ${CHECK_EXIT.ok} every check passed; ${CHECK_EXIT.failed} a check failed (integrity, tables, rows, environment, journal mode); ${CHECK_EXIT.usage} bad usage or config; ${CHECK_EXIT.missing} the database does not exist or does not open as SQLite. With several databases, the highest code wins.`,
    )
    .action(async (arg: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await optionalLifeboat(flags);
      try {
        const extra: CheckOptions = {
          integrity: flags.integrity,
          ...(flags.journalMode ? { journalMode: flags.journalMode } : {}),
          ...(flags.environment ? { declaredEnvironment: flags.environment } : {}),
        };
        const names = arg === undefined && lb ? lb.databases : [arg];
        const results: CheckResult[] = [];
        let code: number = CHECK_EXIT.ok;
        for (const name of names) {
          const db = await configuredDatabase(lb, name);
          const base = db ? checkOptionsFor(db) : {};
          const result = await checkDatabase(db?.path ?? resolve(name!), {
            ...base,
            ...extra,
            requiredTables: [...(base.requiredTables ?? []), ...(flags.requireTable ?? [])],
            minRows: { ...(base.minRows ?? {}), ...parseMinRows(flags.minRows ?? []) },
          });
          results.push(result);
          out.line(`${result.ok ? "ok    " : "FAILED"} ${db ? `${db.name} (${result.path})` : result.path}`);
          for (const check of result.checks)
            out.line(`  ${check.ok ? "ok  " : "FAIL"} ${check.name}: ${check.message}`);
          const own = result.ok ? CHECK_EXIT.ok : result.opened ? CHECK_EXIT.failed : CHECK_EXIT.missing;
          code = Math.max(code, own);
        }
        out.result({ ok: code === CHECK_EXIT.ok, checks: results });
        if (code !== CHECK_EXIT.ok) process.exitCode = code;
      } finally {
        await lb?.close();
      }
    });
}
