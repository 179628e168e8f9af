/**
 * Layer 5, confirmation: a destructive operation on a production database needs a typed phrase,
 * `<operation> <environment>` (`restore production`, `delete production`, `exec production`).
 * Core's `checkGuards` asks for it on a terminal; without one the operation is refused unless
 * the phrase was given up front (`--confirm "restore production"`). Nothing ever waits on a
 * stdin that is not a terminal.
 *
 * The environment is what the config declares or what the database's marker says: if either
 * names a production environment, the phrase is required.
 */
import { resolve } from "node:path";
import { defineGuardPlugin, type GuardDecision, type GuardedOperation } from "@lifeboat/core";
import { z } from "zod";
import { DEFAULT_MARKER_TABLE, readEnvironmentMarker } from "./environment-marker.js";
import { affectedPath, DEFAULT_PRODUCTION_ENVIRONMENTS, LAYER, type LayerGuard, parseLayerOptions } from "./layer.js";

const PLUGIN = "confirmation";
const OPERATIONS = [
  "backup",
  "restore",
  "delete",
  "clone",
  "exec",
  "prune",
  "replicate",
] as const satisfies readonly GuardedOperation[];

const optionsSchema = z.strictObject({
  /** Environments whose destructive operations need the typed phrase. */
  environments: z
    .array(z.string().min(1))
    .min(1)
    .default([...DEFAULT_PRODUCTION_ENVIRONMENTS]),
  /** Operations it applies to (when destructive). */
  operations: z.array(z.enum(OPERATIONS)).default(["restore", "delete", "clone", "exec", "prune"]),
  /** The marker table read first (as the environment layer's `table`). */
  table: z.string().min(1).default(DEFAULT_MARKER_TABLE),
});
export type ConfirmationGuardOptions = z.input<typeof optionsSchema>;

/** The phrase a person types to confirm `operation` on a database of `environment`. */
export function confirmationPhrase(operation: string, environment: string): string {
  return `${operation} ${environment}`;
}

/** Layer 5 as a guard (see the module comment). */
export function confirmationGuard(options: ConfirmationGuardOptions = {}): LayerGuard<z.output<typeof optionsSchema>> {
  const resolved = parseLayerOptions(optionsSchema, options, PLUGIN);
  return {
    name: PLUGIN,
    [LAYER]: "confirmation",
    options: resolved,
    async check(context): Promise<GuardDecision> {
      if (!context.destructive || !resolved.operations.includes(context.operation)) return { action: "allow" };
      const target = affectedPath(context);
      const isDatabase = target === resolve(context.database.path);
      const marker = await readEnvironmentMarker(target, { table: resolved.table }).catch(() => null);
      const environments = isDatabase
        ? [context.database.declaredEnvironment, marker?.environment ?? null]
        : [marker?.environment ?? null];
      const production = environments.find((e): e is string => e !== null && resolved.environments.includes(e));
      if (production === undefined) return { action: "allow" };
      return {
        action: "confirm",
        phrase: confirmationPhrase(context.operation, production),
        reason: `${target} is a ${production} database; ${context.operation} overwrites or removes its data.`,
      };
    },
  };
}

/** `type: confirmation` in lifeboat.yml. */
export const confirmationGuardPlugin = defineGuardPlugin({
  name: PLUGIN,
  optionsSchema,
  create: (options) => confirmationGuard(options),
});
