/**
 * Lifecycle hooks. Every hook has a declared kind, as rollup classifies its hooks:
 * - `sequential`: run one after another, in registration order; any may veto by throwing or by
 *   returning `{ veto: reason }`, which aborts the operation with `HOOK_VETOED`.
 * - `parallel`: run together; they only observe. Their failures are reported, never fatal.
 */
import { ErrorCodes, LifeboatError } from "./errors.js";

export interface HookDatabase {
  readonly name: string;
  readonly path: string;
}

export interface HookEvents {
  beforeBackup: { readonly database: HookDatabase; readonly reason: string };
  afterBackup: {
    readonly database: HookDatabase;
    readonly backupId: string;
    readonly sizeBytes: number;
    readonly targets: readonly { readonly name: string; readonly ok: boolean; readonly error?: string }[];
  };
  beforeRestore: { readonly database: HookDatabase; readonly backupId: string; readonly output: string };
  afterRestore: { readonly database: HookDatabase; readonly backupId: string; readonly output: string };
  onSegment: {
    readonly database: HookDatabase;
    readonly target: string;
    readonly generation: string;
    readonly firstTxn: number;
    readonly lastTxn: number;
  };
  onError: { readonly database: HookDatabase | null; readonly operation: string; readonly error: LifeboatError };
  onLagHigh: { readonly database: HookDatabase; readonly target: string; readonly lagSeconds: number };
  onVerifyFailed: { readonly database: HookDatabase; readonly backupId: string; readonly problems: readonly string[] };
}

export type HookName = keyof HookEvents;

export const hookKinds = {
  beforeBackup: "sequential",
  beforeRestore: "sequential",
  afterBackup: "parallel",
  afterRestore: "parallel",
  onSegment: "parallel",
  onError: "parallel",
  onLagHigh: "parallel",
  onVerifyFailed: "parallel",
} as const satisfies Record<HookName, "sequential" | "parallel">;

export type SequentialHookName = { [K in HookName]: (typeof hookKinds)[K] extends "sequential" ? K : never }[HookName];

export type HookResult = void | { readonly veto: string };

export type HookHandler<K extends HookName> = (event: HookEvents[K]) => HookResult | Promise<HookResult>;

export type Hooks = { readonly [K in HookName]?: HookHandler<K> };

/** Holds hook handlers and runs them according to their kind. */
export class HookRunner {
  readonly #handlers = new Map<HookName, { source: string; handler: HookHandler<HookName> }[]>();
  readonly #onObserverError: (hook: HookName, source: string, error: unknown) => void;

  constructor(onObserverError: (hook: HookName, source: string, error: unknown) => void = () => {}) {
    this.#onObserverError = onObserverError;
  }

  /** Registers handlers; `source` names them in messages (`config hook #2`, a plugin name). */
  add(source: string, hooks: Hooks): void {
    for (const [name, handler] of Object.entries(hooks) as [HookName, HookHandler<HookName>][]) {
      if (!handler) continue;
      const list = this.#handlers.get(name) ?? [];
      list.push({ source, handler });
      this.#handlers.set(name, list);
    }
  }

  /**
   * Runs the handlers of `name` by its declared kind. Sequential hooks that veto or throw abort
   * with `HOOK_VETOED`; parallel hooks never throw here.
   */
  async run<K extends HookName>(name: K, event: HookEvents[K]): Promise<void> {
    const handlers = this.#handlers.get(name) ?? [];
    if (hookKinds[name] === "sequential") {
      for (const { source, handler } of handlers) {
        let result: HookResult;
        try {
          result = await handler(event);
        } catch (error) {
          throw new LifeboatError(ErrorCodes.HOOK_VETOED, `The ${name} hook (${source}) failed: ${messageOf(error)}`, {
            cause: error,
            hint: "The operation was not started. Fix the hook or remove it from the configuration.",
          });
        }
        if (result && typeof result === "object" && "veto" in result) {
          throw new LifeboatError(ErrorCodes.HOOK_VETOED, `The ${name} hook (${source}) vetoed: ${result.veto}`, {
            hint: "The operation was not started.",
          });
        }
      }
      return;
    }
    await Promise.all(
      handlers.map(async ({ source, handler }) => {
        try {
          await handler(event);
        } catch (error) {
          this.#onObserverError(name, source, error);
        }
      }),
    );
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
