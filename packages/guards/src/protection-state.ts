/**
 * Whether a database is protected, as this package's own operations (delete, clone into, exec,
 * mark) see it: a protection record, or the immutable attribute however it was set. They refuse
 * a protected database whether or not the config lists the file-system layers as guards.
 */
import { resolve } from "node:path";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { isImmutable } from "./immutability.js";
import { appliedSections, readSidecar, type SidecarSection } from "./sidecar.js";

export interface ProtectionState {
  /** Layers recorded in the sidecar. */
  readonly layers: readonly SidecarSection[];
  /** The immutable attribute is set now (recorded or not). */
  readonly immutable: boolean;
}

export async function protectionState(path: string): Promise<ProtectionState> {
  const file = resolve(path);
  const layers = appliedSections(await readSidecar(file));
  const immutable = (await isImmutable(file).catch(() => null)) === true;
  return { layers, immutable };
}

/** Throws GUARD_DENIED if the database at `path` is protected (see the module comment). */
export async function assertNotProtected(path: string, operation: string): Promise<void> {
  const file = resolve(path);
  const state = await protectionState(file);
  if (state.layers.length === 0 && !state.immutable) return;
  const what = [...new Set([...state.layers, ...(state.immutable ? ["immutable" as const] : [])])].join(", ");
  throw new LifeboatError(ErrorCodes.GUARD_DENIED, `${file} is protected (${what}); refusing to ${operation} it.`, {
    plugin: "guards",
    operation,
    details: { path: file, layers: [...state.layers], immutable: state.immutable },
    hint: `Run \`lifeboat unprotect ${file}\` first${state.immutable ? " (as root)" : ""}, then repeat the ${operation}.`,
  });
}
