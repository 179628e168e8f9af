/**
 * Layer 2, immutability: the Linux immutable attribute (`chattr +i`). An immutable file cannot be
 * written, renamed, linked or deleted, by anyone, root included, until the attribute is removed;
 * setting or removing it needs CAP_LINUX_IMMUTABLE (root). SQLite opens an immutable database
 * read-only, so readers keep working and every write fails.
 *
 * Only the database file gets the attribute. Its -wal and -shm stay as they are: a reader must
 * write the -shm index, and after `protect`'s checkpoint the -wal holds nothing, while a writer
 * cannot open the immutable database for writing to add anything to it.
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { defineGuardPlugin, ErrorCodes, type GuardDecision, type GuardStatus, LifeboatError } from "@lifeboat/core";
import { z } from "zod";
import { affectedPath, LAYER, type LayerGuard, parseLayerOptions, writesTo } from "./layer.js";
import { readSidecar, writeSection } from "./sidecar.js";
import { assertDatabaseFile } from "./sqlite-access.js";

const PLUGIN = "immutable";
/** Bit of CAP_LINUX_IMMUTABLE in the capability sets of /proc/<pid>/status. */
const CAP_LINUX_IMMUTABLE = 9n;

interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function run(command: string, args: readonly string[]): Promise<CommandResult> {
  return new Promise((done, fail) => {
    execFile(command, args, { timeout: 10_000, encoding: "utf8" }, (error, stdout, stderr) => {
      if (error && typeof error.code !== "number") {
        fail(
          error.code === "ENOENT"
            ? new LifeboatError(
                ErrorCodes.INVALID_ARGUMENT,
                `${command} is not installed, so the immutable attribute cannot be used.`,
                {
                  plugin: PLUGIN,
                  cause: error,
                  hint: "The immutable attribute is a Linux feature; install e2fsprogs (apt-get install e2fsprogs), or protect with permissions only.",
                },
              )
            : new LifeboatError(ErrorCodes.INTERNAL, `Running ${command} failed: ${error.message}`, {
                plugin: PLUGIN,
                cause: error,
              }),
        );
        return;
      }
      done({ code: typeof error?.code === "number" ? error.code : 0, stdout, stderr });
    });
  });
}

/** Why the attribute is out of reach, from chattr/lsattr's message. */
function classify(stderr: string): "unsupported" | "not-permitted" | "missing" | "other" {
  if (/Operation not supported|Inappropriate ioctl/i.test(stderr)) return "unsupported";
  if (/Operation not permitted|Permission denied/i.test(stderr)) return "not-permitted";
  if (/No such file/i.test(stderr)) return "missing";
  return "other";
}

function unsupported(path: string, stderr: string): LifeboatError {
  return new LifeboatError(
    ErrorCodes.INVALID_ARGUMENT,
    `The file system holding ${path} does not support the immutable attribute (${stderr.trim()}).`,
    {
      plugin: PLUGIN,
      details: { path, reason: "unsupported" },
      hint: "Keep the database on a file system with file attributes (ext4, xfs, btrfs, tmpfs on Linux 6.0+), or protect it with the permissions and hash layers only.",
    },
  );
}

function notPermitted(path: string, detail: string): LifeboatError {
  return new LifeboatError(
    ErrorCodes.PERMISSION_DENIED,
    `Cannot change the immutable attribute of ${path}: ${detail}.`,
    {
      plugin: PLUGIN,
      details: { path, reason: "not-permitted" },
      hint: "Only root (a process with CAP_LINUX_IMMUTABLE) may set or clear it: run the command with sudo, or protect with the permissions and hash layers only.",
    },
  );
}

/**
 * Whether this process may set the attribute: CAP_LINUX_IMMUTABLE in its effective set. Null when
 * that cannot be read (not Linux): then only trying tells.
 */
export async function mayChangeImmutable(): Promise<boolean | null> {
  try {
    const status = await readFile("/proc/self/status", "utf8");
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
    return hex === undefined ? null : ((BigInt(`0x${hex}`) >> CAP_LINUX_IMMUTABLE) & 1n) === 1n;
  } catch {
    return null;
  }
}

/**
 * True/false: the file has / lacks the immutable attribute. Null: the file system does not keep
 * attributes (or lsattr is missing), so it cannot have it. Throws NOT_FOUND for a missing file.
 */
export async function isImmutable(path: string): Promise<boolean | null> {
  const file = resolve(path);
  let result: CommandResult;
  try {
    result = await run("lsattr", ["-d", file]);
  } catch (error) {
    if (error instanceof LifeboatError && error.code === ErrorCodes.INVALID_ARGUMENT) return null;
    throw error;
  }
  if (result.code !== 0) {
    const kind = classify(result.stderr);
    if (kind === "unsupported") return null;
    if (kind === "missing") {
      throw new LifeboatError(ErrorCodes.NOT_FOUND, `${file} does not exist.`, {
        plugin: PLUGIN,
        details: { path: file },
      });
    }
    throw new LifeboatError(ErrorCodes.INTERNAL, `lsattr ${file} failed: ${result.stderr.trim()}`, { plugin: PLUGIN });
  }
  const flags = result.stdout.trim().split(/\s+/)[0] ?? "";
  return flags.includes("i");
}

/** Sets (`on`) or clears the immutable attribute; clear errors for "not permitted" and "not supported". */
export async function setImmutable(path: string, on: boolean): Promise<void> {
  const file = resolve(path);
  if ((await mayChangeImmutable()) === false) {
    throw notPermitted(file, "this process lacks CAP_LINUX_IMMUTABLE");
  }
  const result = await run("chattr", [on ? "+i" : "-i", file]);
  if (result.code === 0) return;
  const kind = classify(result.stderr);
  if (kind === "unsupported") throw unsupported(file, result.stderr);
  if (kind === "not-permitted") throw notPermitted(file, result.stderr.trim());
  if (kind === "missing") {
    throw new LifeboatError(ErrorCodes.DATABASE_NOT_FOUND, `${file} does not exist.`, {
      plugin: PLUGIN,
      details: { path: file },
    });
  }
  throw new LifeboatError(ErrorCodes.INTERNAL, `chattr ${on ? "+i" : "-i"} ${file} failed: ${result.stderr.trim()}`, {
    plugin: PLUGIN,
    hint: "Check the file and its file system.",
  });
}

/**
 * Gives the database file the immutable attribute and records it in the sidecar (remembering
 * whether it already had it, so `removeImmutable` puts back exactly that).
 */
export async function applyImmutable(path: string): Promise<void> {
  const file = resolve(path);
  await assertDatabaseFile(file, "protect");
  const recorded = (await readSidecar(file))?.immutable;
  const before = await isImmutable(file);
  if (before === null) throw unsupported(file, "lsattr cannot read attributes here");
  if (!before) await setImmutable(file, true);
  const name = basename(file);
  const alreadyImmutable = recorded ? recorded.alreadyImmutable : before ? [name] : [];
  try {
    await writeSection(file, "immutable", {
      appliedAt: recorded?.appliedAt ?? new Date().toISOString(),
      files: [name],
      alreadyImmutable,
    });
  } catch (error) {
    if (!before) await setImmutable(file, false).catch(() => {});
    throw error;
  }
}

/** Clears the attribute `applyImmutable` set (not one the file had before) and drops the record. */
export async function removeImmutable(path: string): Promise<void> {
  const file = resolve(path);
  const recorded = (await readSidecar(file))?.immutable;
  if (!recorded) return;
  for (const name of recorded.files) {
    if (recorded.alreadyImmutable.includes(name)) continue;
    const target = join(dirname(file), name);
    if ((await isImmutable(target).catch(() => false)) === true) await setImmutable(target, false);
  }
  await writeSection(file, "immutable", undefined);
}

export interface ImmutableStatus extends GuardStatus {
  /** The record says immutable but the attribute is gone (someone ran chattr -i). */
  readonly problem: boolean;
  /** The attribute now: true, false, or null where the file system keeps no attributes. */
  readonly immutable: boolean | null;
}

/** The attribute now, against what `protect` recorded. */
export async function immutableStatus(path: string): Promise<ImmutableStatus> {
  const file = resolve(path);
  const recorded = (await readSidecar(file))?.immutable;
  const now = await isImmutable(file).catch(() => null);
  if (now === null) {
    return {
      name: PLUGIN,
      active: false,
      problem: recorded !== undefined,
      immutable: null,
      summary: recorded
        ? "recorded as immutable, but the attribute cannot be read here"
        : "not available (the file system keeps no attributes)",
    };
  }
  if (recorded) {
    return now
      ? {
          name: PLUGIN,
          active: true,
          problem: false,
          immutable: true,
          summary: `immutable since ${recorded.appliedAt}`,
        }
      : {
          name: PLUGIN,
          active: false,
          problem: true,
          immutable: false,
          summary: `NOT immutable any more (protected ${recorded.appliedAt}; someone cleared the attribute)`,
        };
  }
  return {
    name: PLUGIN,
    active: now,
    problem: false,
    immutable: now,
    summary: now ? "immutable (set outside Lifeboat)" : "off",
  };
}

const optionsSchema = z.strictObject({});
export type ImmutableGuardOptions = z.input<typeof optionsSchema>;

/**
 * Layer 2 as a guard: denies operations that would write, replace or remove an immutable database
 * (restore over it, delete, clone into it, exec, replicate), naming `lifeboat unprotect`.
 */
export function immutableGuard(options: ImmutableGuardOptions = {}): LayerGuard<z.output<typeof optionsSchema>> {
  const resolved = parseLayerOptions(optionsSchema, options, PLUGIN);
  return {
    name: PLUGIN,
    [LAYER]: "immutable",
    options: resolved,
    async check(context): Promise<GuardDecision> {
      if (!writesTo(context)) return { action: "allow" };
      const target = affectedPath(context);
      const recorded = (await readSidecar(target))?.immutable;
      const now = await isImmutable(target).catch(() => null);
      if (recorded || now) {
        return {
          action: "deny",
          reason: `${target} is immutable${recorded ? ` (protected ${recorded.appliedAt})` : ""}, so it cannot be ${context.operation === "delete" ? "deleted" : "changed"}.`,
          hint: `Run \`lifeboat unprotect ${target}\` first (as root), then repeat the ${context.operation}.`,
        };
      }
      return { action: "allow" };
    },
    apply: applyImmutable,
    remove: removeImmutable,
    status: immutableStatus,
  };
}

/** `type: immutable` in lifeboat.yml. */
export const immutableGuardPlugin = defineGuardPlugin({
  name: PLUGIN,
  optionsSchema,
  create: (options) => immutableGuard(options),
});
