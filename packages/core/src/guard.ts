/**
 * Guards are protection layers asked before any operation that can destroy or overwrite data.
 * Each answers allow, deny (with a reason a person can act on) or "confirm" (with the phrase a
 * person must type). All guards of a database are asked; the first deny wins; confirmations add up.
 */
import type { DatabaseContext } from "./context.js";

export type GuardedOperation = "backup" | "restore" | "delete" | "clone" | "exec" | "prune" | "replicate";

export interface GuardContext {
  readonly operation: GuardedOperation;
  readonly database: {
    readonly name: string;
    readonly path: string;
    /** What the config declares (`production`, ...), if anything. */
    readonly declaredEnvironment: string | null;
  };
  /** True when the operation overwrites or removes existing data. */
  readonly destructive: boolean;
  /** Free-form facts about the operation (backup id, output path...). */
  readonly details?: Readonly<Record<string, string | number | boolean | null>>;
}

export type GuardDecision =
  | { readonly action: "allow" }
  | { readonly action: "deny"; readonly reason: string; readonly hint?: string }
  | { readonly action: "confirm"; readonly phrase: string; readonly reason: string };

export interface GuardStatus {
  readonly name: string;
  readonly active: boolean;
  readonly summary: string;
}

export interface Guard {
  readonly name: string;
  check(context: GuardContext): Promise<GuardDecision>;
  /**
   * Called once every guard allowed a destructive operation and every confirmation was given,
   * right before anything changes (e.g. to take a verified safety backup). Throwing stops it.
   */
  prepare?(context: GuardContext, db: DatabaseContext): Promise<void>;
  /** Layers that change the file system (permissions, immutability, hash) apply and undo it. */
  apply?(path: string): Promise<void>;
  remove?(path: string): Promise<void>;
  status?(path: string): Promise<GuardStatus>;
}
