/**
 * The errors every codec raises on the way back: damaged data is `CORRUPT_BACKUP`, a key that is
 * missing or does not fit is `CONFIG_INVALID`. Messages name the object (when the caller passed
 * its name) and never contain key material.
 */
import { ErrorCodes, LifeboatError } from "@lifeboat/core";

/** "the object app/generations/…/snapshots/0.snap.zst.age", or "the stored object". */
export function objectLabel(name: string | undefined): string {
  return name ? `the object ${name}` : "the stored object";
}

/** Data that cannot be decoded: tampered, truncated or not written by this codec. */
export function corruptError(
  plugin: string,
  name: string | undefined,
  problem: string,
  cause?: unknown,
): LifeboatError {
  return new LifeboatError(ErrorCodes.CORRUPT_BACKUP, `Cannot ${plugin}-decode ${objectLabel(name)}: ${problem}.`, {
    plugin,
    operation: "decode",
    cause,
    hint: "The stored data is damaged or truncated. Restore another backup (lifeboat list) or read it from another target (--from NAME), and run `lifeboat verify`.",
    details: name ? { object: name } : undefined,
  });
}

/** A key that is needed and not configured, unreadable, or not the one the object was written for. */
export function keyError(
  plugin: string,
  name: string | undefined,
  problem: string,
  hint: string,
  cause?: unknown,
): LifeboatError {
  return new LifeboatError(
    ErrorCodes.CONFIG_INVALID,
    name ? `Cannot decrypt ${objectLabel(name)}: ${problem}.` : `${plugin}: ${problem}.`,
    { plugin, operation: "decode", cause, hint, details: name ? { object: name } : undefined },
  );
}

/** A configuration problem found while encoding or loading keys (no object involved). */
export function configError(plugin: string, problem: string, hint: string, cause?: unknown): LifeboatError {
  return new LifeboatError(ErrorCodes.CONFIG_INVALID, `${plugin} codec: ${problem}.`, { plugin, cause, hint });
}

/** The message of an unknown thrown value, for wrapping library errors (never holds secrets). */
export function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
