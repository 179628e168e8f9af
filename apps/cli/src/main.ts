/** The `lifeboat` command: parses arguments, runs a command, reports errors with exit codes. */
import { readFileSync } from "node:fs";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { Command, CommanderError, Option } from "commander";
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

type Register = (program: Command) => void;

/** Command name -> the module that registers it and its register function (in help order). */
const COMMAND_MODULES: readonly (readonly [string, string, string])[] = [
  ["init", "init", "registerInit"],
  ["backup", "backup", "registerBackup"],
  ["list", "list", "registerList"],
  ["restore", "restore", "registerRestore"],
  ["verify", "verify", "registerVerify"],
  ["prune", "prune", "registerPrune"],
  ["replicate", "replicate", "registerReplicate"],
  ["serve", "serve", "registerServe"],
  ["health", "health", "registerHealth"],
  ["protect", "protect", "registerProtect"],
  ["unprotect", "protect", "registerProtect"],
  ["status", "protect", "registerProtect"],
  ["mark", "mark", "registerMark"],
  ["check", "check", "registerCheck"],
  ["exec", "exec", "registerExec"],
  ["delete", "delete", "registerDelete"],
  ["clone", "clone", "registerClone"],
  ["export", "export", "registerExport"],
  ["import", "import", "registerImport"],
  ["demo", "demo", "registerDemo"],
];

async function loadRegister(file: string, name: string): Promise<Register> {
  const module = (await import(`./commands/${file}.js`)) as Record<string, Register>;
  return module[name]!;
}

export async function main(argv: readonly string[]): Promise<number> {
  const program = new Command("lifeboat")
    .description("Keeps SQLite databases safe: verified backups, continuous archiving, point-in-time restore.")
    .version(VERSION, "-V, --version")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride();
  const json = argv.includes("--json");
  // Only the named command's module is loaded (each pulls in its packages: S3, OpenPGP, the
  // daemon...), which keeps start-up short; help and unknown commands load them all.
  const name = argv[2];
  const version = name === "-V" || name === "--version";
  const named = COMMAND_MODULES.find(([command]) => command === name);
  const modules = named
    ? [named]
    : version
      ? []
      : COMMAND_MODULES.filter(([, file], i, all) => all.findIndex(([, f]) => f === file) === i);
  for (const [, file, register] of modules) (await loadRegister(file, register))(program);
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
