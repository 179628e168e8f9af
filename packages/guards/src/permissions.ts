/**
 * Layer 1, permissions: the database and its -wal/-shm become read-only (mode 0444 by default),
 * and the modes they had are remembered in the sidecar so `unprotect` puts them back.
 *
 * What it does and does not stop:
 * - Every new connection of a non-root user can only read: SQLite opens a read-only file
 *   read-only, and writes fail with SQLITE_READONLY.
 * - A process that already has the database open keeps writing through the descriptors it has:
 *   modes are checked at open. Protect databases at rest (`protectDatabase` refuses one in use
 *   unless told otherwise). A WAL database in use would also lose its writers' ability to
 *   reopen it: its -wal/-shm are read-only too.
 * - root (CAP_DAC_OVERRIDE) ignores modes, and whoever may write the directory may still rename
 *   or delete the file: the immutable layer stops both.
 */
import { chmod, stat } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { defineGuardPlugin, errnoCode, fsError, type GuardDecision, type GuardStatus } from "@lifeboat/core";
import { z } from "zod";
import { affectedPath, LAYER, type LayerGuard, parseLayerOptions, writesTo } from "./layer.js";
import { formatMode, parseMode, readSidecar, writeSection } from "./sidecar.js";
import { assertDatabaseFile } from "./sqlite-access.js";

const PLUGIN = "permissions";
/** The files whose modes the layer manages: the database, then its WAL files. */
const FILE_SUFFIXES = ["", "-wal", "-shm"] as const;
export const DEFAULT_PROTECTED_MODE = 0o444;

async function modeOf(path: string): Promise<number | null> {
  try {
    return (await stat(path)).mode & 0o7777;
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return null;
    throw fsError(error, "inspect", path, PLUGIN);
  }
}

/**
 * Makes the database at `path` and its existing -wal/-shm read-only (`mode`), remembering their
 * previous modes. Applying again keeps the modes remembered the first time. If a chmod fails, the
 * files already changed get their modes back.
 */
export async function applyPermissions(path: string, mode: number = DEFAULT_PROTECTED_MODE): Promise<void> {
  const file = resolve(path);
  await assertDatabaseFile(file, "protect");
  const recorded = (await readSidecar(file))?.permissions;
  const previous: Record<string, string> = { ...(recorded?.files ?? {}) };
  const changed: { path: string; mode: number }[] = [];
  try {
    for (const suffix of FILE_SUFFIXES) {
      const target = file + suffix;
      const current = await modeOf(target);
      if (current === null) continue;
      const name = basename(target);
      previous[name] ??= formatMode(current);
      if (current !== mode) {
        await chmod(target, mode).catch((error: unknown) => {
          throw fsError(error, "change the mode of", target, PLUGIN);
        });
        changed.push({ path: target, mode: current });
      }
    }
    await writeSection(file, "permissions", {
      appliedAt: recorded?.appliedAt ?? new Date().toISOString(),
      mode: formatMode(mode),
      files: previous,
    });
  } catch (error) {
    for (const { path: target, mode: old } of changed.reverse()) await chmod(target, old).catch(() => {});
    throw error;
  }
}

/**
 * Puts back the remembered modes and drops the record. A -wal or -shm that appeared since (SQLite
 * creates them with the database file's mode, so read-only) gets the database's restored mode,
 * which is what SQLite would have given it.
 */
export async function removePermissions(path: string): Promise<void> {
  const file = resolve(path);
  const recorded = (await readSidecar(file))?.permissions;
  if (!recorded) return;
  const databaseMode = recorded.files[basename(file)];
  for (const suffix of FILE_SUFFIXES) {
    const target = file + suffix;
    const wanted = recorded.files[basename(target)] ?? databaseMode;
    if (wanted === undefined || (await modeOf(target)) === null) continue;
    await chmod(target, parseMode(wanted)).catch((error: unknown) => {
      throw fsError(error, "change the mode of", target, PLUGIN);
    });
  }
  await writeSection(file, "permissions", undefined);
}

export interface PermissionsStatus extends GuardStatus {
  /** Recorded as read-only, but a file is writable again. */
  readonly problem: boolean;
  /** Current mode of each existing file, octal text. */
  readonly modes: Readonly<Record<string, string>>;
}

/** The modes now, against what `protect` recorded. */
export async function permissionsStatus(path: string): Promise<PermissionsStatus> {
  const file = resolve(path);
  const recorded = (await readSidecar(file))?.permissions;
  const modes: Record<string, string> = {};
  for (const suffix of FILE_SUFFIXES) {
    const mode = await modeOf(file + suffix);
    if (mode !== null) modes[basename(file + suffix)] = formatMode(mode);
  }
  if (!recorded) {
    return { name: PLUGIN, active: false, problem: false, modes, summary: `off (${describe(modes)})` };
  }
  const writable = Object.entries(modes).filter(([, mode]) => (parseMode(mode) & 0o222) !== 0);
  if (writable.length > 0) {
    return {
      name: PLUGIN,
      active: false,
      problem: true,
      modes,
      summary: `WRITABLE again: ${writable.map(([name, mode]) => `${name} ${mode}`).join(", ")} (protected ${recorded.appliedAt} as ${recorded.mode})`,
    };
  }
  const was = recorded.files[basename(file)];
  return {
    name: PLUGIN,
    active: true,
    problem: false,
    modes,
    summary: `read-only since ${recorded.appliedAt}: ${describe(modes)}${was ? ` (was ${was})` : ""}; root can still write (add the immutable layer)`,
  };
}

function describe(modes: Record<string, string>): string {
  return Object.entries(modes)
    .map(([name, mode]) => `${name} ${mode}`)
    .join(", ");
}

/** Accepts 0o444 / 292 as numbers, or "444", "0444", "0o444" (YAML reads a bare 0444 as decimal). */
const readOnlyMode = z
  .union([
    z.number().int("mode must be a whole number"),
    z
      .string()
      .regex(/^(0o?)?[0-7]{3}$/, 'mode must be an octal mode like "0444"')
      .transform((text) => Number.parseInt(text.replace(/^0o?/, ""), 8)),
  ])
  .refine(
    (mode) => mode >= 0 && mode <= 0o777 && (mode & 0o222) === 0 && (mode & 0o400) === 0o400,
    'mode must be read-only (no write bits) and keep the owner\'s read bit, e.g. "0444" or "0440"',
  );

const optionsSchema = z.strictObject({
  /** The mode the files get. */
  mode: readOnlyMode.default(DEFAULT_PROTECTED_MODE),
});
export type PermissionsGuardOptions = z.input<typeof optionsSchema>;

/**
 * Layer 1 as a guard: denies operations that would write, replace or remove a database protected
 * by this layer (restore over it, delete, clone into it, exec, replicate). A rename would replace
 * a read-only file regardless of its mode, so the guard, not the mode, stops a restore.
 */
export function permissionsGuard(options: PermissionsGuardOptions = {}): LayerGuard<z.output<typeof optionsSchema>> {
  const resolved = parseLayerOptions(optionsSchema, options, PLUGIN);
  return {
    name: PLUGIN,
    [LAYER]: "permissions",
    options: resolved,
    async check(context): Promise<GuardDecision> {
      if (!writesTo(context)) return { action: "allow" };
      const target = affectedPath(context);
      const recorded = (await readSidecar(target))?.permissions;
      if (!recorded) return { action: "allow" };
      return {
        action: "deny",
        reason: `${target} is protected read-only (mode ${recorded.mode} since ${recorded.appliedAt}).`,
        hint: `Run \`lifeboat unprotect ${target}\` first, then repeat the ${context.operation}.`,
      };
    },
    apply: (path) => applyPermissions(path, resolved.mode),
    remove: removePermissions,
    status: permissionsStatus,
  };
}

/** `type: permissions` in lifeboat.yml. */
export const permissionsGuardPlugin = defineGuardPlugin({
  name: PLUGIN,
  optionsSchema,
  create: (options) => permissionsGuard(options),
});
