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

/** Command name -> the module that registers it (in help order). */
const COMMANDS: Readonly<Record<string, () => Promise<Register>>> = (() => {
  const init = async () => (await import("./commands/init.js")).registerInit;
  const backup = async () => (await import("./commands/backup.js")).registerBackup;
  const list = async () => (await import("./commands/list.js")).registerList;
  const restore = async () => (await import("./commands/restore.js")).registerRestore;
  const verify = async () => (await import("./commands/verify.js")).registerVerify;
  const prune = async () => (await import("./commands/prune.js")).registerPrune;
  const replicate = async () => (await import("./commands/replicate.js")).registerReplicate;
  const serve = async () => (await import("./commands/serve.js")).registerServe;
  const health = async () => (await import("./commands/health.js")).registerHealth;
  const protect = async () => (await import("./commands/protect.js")).registerProtect;
  const mark = async () => (await import("./commands/mark.js")).registerMark;
  const check = async () => (await import("./commands/check.js")).registerCheck;
  const exec = async () => (await import("./commands/exec.js")).registerExec;
  const del = async () => (await import("./commands/delete.js")).registerDelete;
  const clone = async () => (await import("./commands/clone.js")).registerClone;
  const exp = async () => (await import("./commands/export.js")).registerExport;
  const imp = async () => (await import("./commands/import.js")).registerImport;
  const demo = async () => (await import("./commands/demo.js")).registerDemo;
  return {
    init,
    backup,
    list,
    restore,
    verify,
    prune,
    replicate,
    serve,
    health,
    protect,
    unprotect: protect,
    status: protect,
    mark,
    check,
    exec,
    delete: del,
    clone,
    export: exp,
    import: imp,
    demo,
  };
})();

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
  const named = name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  const version = name === "-V" || name === "--version";
  const modules = named ? [named] : version ? [] : [...new Set(Object.values(COMMANDS))];
  for (const load of modules) (await load())(program);
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
