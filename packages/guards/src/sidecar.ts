/**
 * The protection sidecar `.<db>.lifeboat-protect.json`, next to the database: what `protect`
 * changed (so `unprotect` can put back exactly what was there) and the content hash it recorded.
 * Each file-system layer owns one section; the file is gone when no section is left.
 */
import { constants } from "node:fs";
import { open, readFile, rename } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { ErrorCodes, errnoCode, fsError, fsyncDir, LifeboatError, removeQuietly, tempPathFor } from "@lifeboat/core";

export const SIDECAR_FORMAT = "lifeboat.protect";
export const SIDECAR_FORMAT_VERSION = 1;

export interface PermissionsRecord {
  readonly appliedAt: string;
  /** The mode every file was given, octal text ("0444"). */
  readonly mode: string;
  /** The mode each file (by name: `app.db`, `app.db-wal`...) had before, octal text. */
  readonly files: Readonly<Record<string, string>>;
}

export interface ImmutableRecord {
  readonly appliedAt: string;
  /** Files (by name) given the immutable attribute. */
  readonly files: readonly string[];
  /** Files that already had it before `protect`: `unprotect` leaves them immutable. */
  readonly alreadyImmutable: readonly string[];
}

export interface HashRecord {
  readonly recordedAt: string;
  readonly algorithm: "sha256";
  /** What was hashed: the consistent snapshot image (WAL content included, header bytes 18-19 = 1). */
  readonly of: "snapshot-image";
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly pageSize: number;
  readonly pageCount: number;
}

export interface ProtectSidecar {
  readonly format: typeof SIDECAR_FORMAT;
  readonly formatVersion: number;
  /** The database file's name. */
  readonly database: string;
  readonly permissions?: PermissionsRecord;
  readonly immutable?: ImmutableRecord;
  readonly hash?: HashRecord;
}

export type SidecarSection = "permissions" | "immutable" | "hash";
const SECTIONS: readonly SidecarSection[] = ["permissions", "immutable", "hash"];

/** `/data/.app.db.lifeboat-protect.json` for `/data/app.db`. */
export function sidecarPath(database: string): string {
  return join(dirname(database), `.${basename(database)}.lifeboat-protect.json`);
}

/** The sidecar of `database`, or null when there is none (the database is not protected). */
export async function readSidecar(database: string): Promise<ProtectSidecar | null> {
  const file = sidecarPath(database);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    if (errnoCode(error) === "ENOENT") return null;
    throw fsError(error, "read", file, "guards");
  }
  let parsed: ProtectSidecar;
  try {
    parsed = JSON.parse(text) as ProtectSidecar;
  } catch (error) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `The protection record ${file} is not valid JSON.`, {
      cause: error,
      plugin: "guards",
      details: { path: file },
      hint: "It was changed by hand or damaged. Check the database's modes and attributes (ls -l, lsattr), then delete the file and run `lifeboat protect` again.",
    });
  }
  if (parsed?.format !== SIDECAR_FORMAT || typeof parsed.formatVersion !== "number") {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${file} is not a Lifeboat protection record.`, {
      plugin: "guards",
      details: { path: file },
      hint: "Move the file away; Lifeboat keeps its protection record under this name.",
    });
  }
  if (parsed.formatVersion > SIDECAR_FORMAT_VERSION) {
    throw new LifeboatError(
      ErrorCodes.UNSUPPORTED_FORMAT,
      `${file} was written by a newer Lifeboat (format ${parsed.formatVersion}).`,
      { plugin: "guards", details: { path: file }, hint: "Upgrade Lifeboat to change this database's protection." },
    );
  }
  return parsed;
}

/** The sections present: which layers are applied. */
export function appliedSections(sidecar: ProtectSidecar | null): SidecarSection[] {
  return sidecar ? SECTIONS.filter((s) => sidecar[s] !== undefined) : [];
}

/**
 * Replaces one section (or removes it, with `undefined`) atomically: temp file, fsync, rename,
 * fsync the directory. The sidecar is removed when its last section goes.
 */
export async function writeSection<S extends SidecarSection>(
  database: string,
  section: S,
  value: ProtectSidecar[S] | undefined,
): Promise<void> {
  const current = await readSidecar(database);
  const next: Record<string, unknown> = {
    format: SIDECAR_FORMAT,
    formatVersion: SIDECAR_FORMAT_VERSION,
    database: basename(database),
    ...(current ?? {}),
  };
  if (value === undefined) delete next[section];
  else next[section] = value;
  const file = sidecarPath(database);
  if (!SECTIONS.some((s) => next[s] !== undefined)) {
    if (current) {
      await removeQuietly(file);
      await fsyncDir(dirname(file));
    }
    return;
  }
  const temp = tempPathFor(file, "protect");
  try {
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o644);
    try {
      await handle.writeFile(`${JSON.stringify(next, null, 2)}\n`);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
    await fsyncDir(dirname(file));
  } catch (error) {
    await removeQuietly(temp);
    throw fsError(error, "write", file, "guards");
  }
}

/** Octal text for a mode: 0o644 -> "0644". */
export function formatMode(mode: number): string {
  return `0${(mode & 0o7777).toString(8).padStart(3, "0")}`;
}

/** "0644" -> 0o644. */
export function parseMode(text: string): number {
  return Number.parseInt(text, 8);
}
