import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { type DatabaseContext, ErrorCodes, isLifeboatError, type Lifeboat, LifeboatError } from "@lifeboat/core";
import {
  permissionsGuard,
  protectDatabase,
  protectionLayers,
  protectionStatus,
  unprotectDatabase,
} from "@lifeboat/guards";
import type { Command } from "commander";
import { DEFAULT_CONFIG, loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput, table } from "../output.js";

/** The config's Lifeboat when there is a config (--config, or ./lifeboat.yml here); these commands also work on a bare path. */
export async function optionalLifeboat(flags: CommonFlags): Promise<Lifeboat | undefined> {
  if (flags.config === undefined && !existsSync(resolve(DEFAULT_CONFIG))) return undefined;
  return loadLifeboat(undefined, { ...(flags.config ? { config: flags.config } : {}) });
}

/**
 * The configured database `arg` names (a name or its path); undefined when it is a path the config
 * does not list (an existing file, or anything with a slash: `./new.db`).
 */
export async function configuredDatabase(
  lb: Lifeboat | undefined,
  arg: string | undefined,
): Promise<DatabaseContext | undefined> {
  if (!lb) {
    if (arg === undefined) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "Name the database file.", {
        hint: "Example: lifeboat status ./app.db (or write a lifeboat.yml with `lifeboat init`).",
      });
    }
    return undefined;
  }
  try {
    return await lb.database(arg);
  } catch (error) {
    const looksLikePath = arg !== undefined && (existsSync(arg) || arg.includes("/"));
    if (looksLikePath && isLifeboatError(error, ErrorCodes.INVALID_ARGUMENT)) return undefined;
    throw error;
  }
}

/** Parses "0444", "0o444" or "444" (octal). */
function octalMode(text: string): number {
  if (!/^(0o?)?[0-7]{3}$/.test(text)) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `--mode ${text} is not an octal mode.`, {
      hint: "Give a read-only mode such as 0444 or 0440.",
    });
  }
  return Number.parseInt(text.replace(/^0o?/, ""), 8);
}

interface ProtectFlags extends CommonFlags {
  readonly mode?: string;
  readonly immutable?: boolean;
  readonly hash: boolean;
  readonly force?: boolean;
}

interface StatusFlags extends CommonFlags {
  readonly verify: boolean;
}

export function registerProtect(program: Command): void {
  withCommon(program.command("protect"))
    .description("make a database at rest read-only: content hash, file modes, optionally the immutable attribute")
    .argument("<db>", "database name from the config, or a database path")
    .option("--mode <octal>", "mode the database and its -wal/-shm get (default 0444, or the permissions guard's)")
    .option("--immutable", "also set the Linux immutable attribute (root only; stops root and renames too)")
    .option("--no-hash", "do not record the content hash")
    .option("--force", "protect even while processes have it open (they keep writing through open descriptors)")
    .action(async (arg: string, flags: ProtectFlags) => {
      const out = createOutput(flags.json);
      const lb = await optionalLifeboat(flags);
      try {
        const db = await configuredDatabase(lb, arg);
        const path = db?.path ?? resolve(arg);
        const mode = flags.mode === undefined ? undefined : octalMode(flags.mode);
        if (mode !== undefined) permissionsGuard({ mode }); // validates: read-only, owner can read
        const layers = protectionLayers(db?.guards ?? [], {
          ...(mode !== undefined ? { mode } : {}),
          ...(flags.immutable ? { immutable: true } : {}),
          ...(flags.hash === false ? { hash: false } : {}),
        });
        const result = await protectDatabase(path, { layers, allowInUse: Boolean(flags.force) });
        out.line(`Protected ${result.path}: ${result.applied.join(", ")}`);
        if (result.checkpointed)
          out.line("  The WAL was checkpointed first: the database file alone holds everything.");
        for (const holder of result.inUseBy) {
          out.line(
            `  warning: pid ${holder.pid}${holder.command ? ` (${holder.command})` : ""} has it open and keeps writing through its open descriptors`,
          );
        }
        out.result({ ok: true, protect: result });
      } finally {
        await lb?.close();
      }
    });

  withCommon(program.command("unprotect"))
    .description("undo what protect did: the attribute, the file modes it changed, the recorded hash")
    .argument("<db>", "database name from the config, or a database path")
    .action(async (arg: string, flags: CommonFlags) => {
      const out = createOutput(flags.json);
      const lb = await optionalLifeboat(flags);
      try {
        const db = await configuredDatabase(lb, arg);
        const result = await unprotectDatabase(db?.path ?? resolve(arg));
        out.line(
          result.removed.length > 0
            ? `Unprotected ${result.path}: removed ${result.removed.join(", ")}`
            : `${result.path} was not protected by Lifeboat; nothing changed.`,
        );
        out.result({ ok: true, unprotect: result });
      } finally {
        await lb?.close();
      }
    });

  withCommon(program.command("status"))
    .description("show a database's protection (and whether its content changed since protect), marker and users")
    .argument("<db>", "database name from the config, or a database path")
    .option("--no-verify", "do not recompute the content hash (fast; tampering goes unnoticed)")
    .addHelpText(
      "after",
      "\nExit codes: 0 fine, 1 a layer reports a problem (content changed, file writable again...).",
    )
    .action(async (arg: string, flags: StatusFlags) => {
      const out = createOutput(flags.json);
      const lb = await optionalLifeboat(flags);
      try {
        const db = await configuredDatabase(lb, arg);
        const status = await protectionStatus(db?.path ?? resolve(arg), { verifyHash: flags.verify });
        out.line(
          `${status.path}: ${status.protected ? "protected" : "not protected"}${status.problems ? " - PROBLEMS" : ""}`,
        );
        out.line(
          table(
            ["LAYER", "STATE", "DETAILS"],
            status.layers.map((l) => [l.name, l.problem ? "PROBLEM" : l.active ? "on" : "off", l.summary]),
          ),
        );
        const declared = db?.declaredEnvironment;
        out.line(
          `environment: ${status.environment ? `${status.environment.environment} (table ${status.environment.table})` : "no marker"}${declared ? `; the config says ${declared}` : ""}`,
        );
        out.line(
          `in use by: ${status.inUseBy.length === 0 ? "nobody" : status.inUseBy.map((h) => `pid ${h.pid}${h.command ? ` (${h.command})` : ""}`).join(", ")}`,
        );
        out.result({ ok: !status.problems, status });
        if (status.problems) process.exitCode = 1;
      } finally {
        await lb?.close();
      }
    });
}
