/** The `lifeboat` command: parses arguments, runs a command, reports errors with exit codes. */
import { readFileSync } from "node:fs";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { Command, CommanderError, Option } from "commander";
import { registerBackup } from "./commands/backup.js";
import { registerCheck } from "./commands/check.js";
import { registerClone } from "./commands/clone.js";
import { registerDelete } from "./commands/delete.js";
import { registerDemo } from "./commands/demo.js";
import { registerExec } from "./commands/exec.js";
import { registerExport } from "./commands/export.js";
import { registerHealth } from "./commands/health.js";
import { registerImport } from "./commands/import.js";
import { registerInit } from "./commands/init.js";
import { registerList } from "./commands/list.js";
import { registerMark } from "./commands/mark.js";
import { registerProtect } from "./commands/protect.js";
import { registerPrune } from "./commands/prune.js";
import { registerReplicate } from "./commands/replicate.js";
import { registerRestore } from "./commands/restore.js";
import { registerServe } from "./commands/serve.js";
import { registerVerify } from "./commands/verify.js";
import { exitCodeFor } from "./output.js";

const VERSION = (JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string })
  .version;

/** Options every command has. */
export function withCommon(command: Command): Command {
  return command
    .addOption(new Option("-c, --config <file>", "config file").default(undefined, "./lifeboat.yml"))
    .option("--json", "machine-readable output on stdout", false);
}

export interface CommonFlags {
  readonly config?: string;
  readonly json: boolean;
}

/** `--key-stdin`, for the commands that decode stored objects (restore, verify, export). */
export function withKeyStdin(command: Command): Command {
  return command.option(
    "--key-stdin",
    "read the decryption key from standard input (age identity or passphrase, OpenPGP private key), in addition to the config's key sources",
  );
}

export interface KeyStdinFlags {
  readonly keyStdin?: boolean;
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = new Command("lifeboat")
    .description("Keeps SQLite databases safe: verified backups, continuous archiving, point-in-time restore.")
    .version(VERSION, "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  const json = argv.includes("--json");
  for (const register of [
    registerInit,
    registerBackup,
    registerList,
    registerRestore,
    registerVerify,
    registerPrune,
    registerReplicate,
    registerServe,
    registerHealth,
    registerProtect,
    registerMark,
    registerCheck,
    registerExec,
    registerDelete,
    registerClone,
    registerExport,
    registerImport,
    registerDemo,
  ]) {
    register(program);
  }
  try {
    await program.parseAsync([...argv]);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (
        error.code === "commander.helpDisplayed" ||
        error.code === "commander.version" ||
        error.code === "commander.help"
      )
        return 0;
      return 2;
    }
    return reportError(error, json);
  }
}

export function reportError(error: unknown, json: boolean): number {
  const lifeboatError =
    error instanceof LifeboatError
      ? error
      : new LifeboatError(ErrorCodes.INTERNAL, error instanceof Error ? error.message : String(error), {
          cause: error,
          hint: "This is a bug in Lifeboat; please report it with the command you ran.",
        });
  if (json) process.stdout.write(`${JSON.stringify({ ok: false, error: lifeboatError.toJSON() }, null, 2)}\n`);
  process.stderr.write(`lifeboat: error ${lifeboatError.code}: ${lifeboatError.message}\n`);
  if (lifeboatError.hint) process.stderr.write(`  what to do: ${lifeboatError.hint}\n`);
  if (lifeboatError.code === ErrorCodes.INTERNAL && error instanceof Error && error.stack) {
    process.stderr.write(`${error.stack}\n`);
  }
  return exitCodeFor(lifeboatError);
}
