/**
 * What the seven layers share: a brand so operations can find a configured layer (and its
 * options) among a database's guards, and the path an operation would change.
 */
import { resolve } from "node:path";
import { ErrorCodes, type Guard, type GuardContext, LifeboatError } from "@lifeboat/core";
import type { z } from "zod";

/** The layers of this package, by plugin name (the `type:` in lifeboat.yml). */
export type LayerName =
  | "permissions"
  | "immutable"
  | "environment"
  | "hash"
  | "confirmation"
  | "safety-backup"
  | "transaction";

/** Marks guards made by this package; `Symbol.for` so two copies of the package agree. */
export const LAYER: unique symbol = Symbol.for("@lifeboat/guards.layer");

/** A guard of this package: a `Guard` that also says which layer it is and carries its options. */
export interface LayerGuard<O = unknown> extends Guard {
  readonly [LAYER]: LayerName;
  readonly options: O;
}

/** The guard of `layer` among `guards` (the first one, if the config lists it twice). */
export function findLayer<O>(guards: readonly Guard[], layer: LayerName): LayerGuard<O> | undefined {
  return guards.find((g): g is LayerGuard<O> => (g as Partial<LayerGuard>)[LAYER] === layer);
}

/**
 * The file an operation would overwrite or remove: a restore's `--output`, a clone's destination,
 * otherwise the database itself.
 */
export function affectedPath(context: GuardContext): string {
  const details = context.details ?? {};
  const target = details.output ?? details.destination;
  return typeof target === "string" && target !== "" ? resolve(target) : resolve(context.database.path);
}

/** True when the operation changes the file at `affectedPath` (or, for replicate, checkpoints it). */
export function writesTo(context: GuardContext): boolean {
  return context.destructive || context.operation === "exec" || context.operation === "replicate";
}

/** The environments treated as production unless a layer's options say otherwise. */
export const DEFAULT_PRODUCTION_ENVIRONMENTS = ["production"] as const;

/** Validates a layer's options given in code (the config path goes through core's plugin parsing). */
export function parseLayerOptions<S extends z.ZodType>(schema: S, input: unknown, layer: LayerName): z.output<S> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const lines = result.error.issues.map(
    (issue) => `${issue.path.map(String).join(".") || "(options)"}: ${issue.message}`,
  );
  throw new LifeboatError(
    ErrorCodes.CONFIG_INVALID,
    `Invalid options for the ${layer} guard:\n  ${lines.join("\n  ")}`,
    {
      plugin: layer,
      hint: `See the ${layer} layer in the @lifeboat/guards README for its options.`,
    },
  );
}
