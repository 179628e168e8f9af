/** Asks every guard of a database about an operation; turns the answers into one decision. */
import type { DatabaseContext } from "./context.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import type { GuardContext, GuardedOperation } from "./guard.js";

export interface ConfirmOptions {
  /** The user already confirmed (`--yes`). */
  readonly yes?: boolean;
  /** Typed phrases given up front (`--confirm "restore production"`). */
  readonly phrases?: readonly string[];
  /** Asks a person (on a TTY). Absent: no one can be asked. Returns what they answered. */
  readonly ask?: (question: string, phrase: string | undefined) => Promise<string | boolean>;
}

/**
 * Runs the guards. A deny throws `GUARD_DENIED`. Confirmations (from guards, and the generic one
 * every destructive operation needs) are satisfied by a matching phrase, `yes` (only when no phrase
 * is required), or by asking; otherwise `CONFIRMATION_REQUIRED` is thrown.
 */
export async function checkGuards(
  db: DatabaseContext,
  operation: GuardedOperation,
  destructive: boolean,
  confirm: ConfirmOptions,
  details: GuardContext["details"] = {},
  question?: string,
): Promise<void> {
  const context: GuardContext = {
    operation,
    database: { name: db.name, path: db.path, declaredEnvironment: db.declaredEnvironment },
    destructive,
    details,
  };
  await decide(db, context, confirm, question);
  // Everyone agreed: the last word before anything changes (e.g. a verified backup to the targets).
  if (destructive) for (const guard of db.guards) await guard.prepare?.(context, db);
}

async function decide(
  db: DatabaseContext,
  context: GuardContext,
  confirm: ConfirmOptions,
  question: string | undefined,
): Promise<void> {
  const { operation, destructive } = context;
  const phrases: { phrase: string; reason: string }[] = [];
  for (const guard of db.guards) {
    const decision = await guard.check(context);
    if (decision.action === "deny") {
      throw new LifeboatError(
        ErrorCodes.GUARD_DENIED,
        `The ${guard.name} guard refused to ${operation} ${db.name}: ${decision.reason}`,
        {
          hint: decision.hint ?? "Nothing was changed.",
          plugin: guard.name,
          operation,
        },
      );
    }
    if (decision.action === "confirm") phrases.push({ phrase: decision.phrase, reason: decision.reason });
  }
  if (!destructive && phrases.length === 0) return;
  for (const { phrase, reason } of phrases) {
    // Without a terminal a typed phrase counts only together with --yes: two deliberate flags.
    if (confirm.phrases?.includes(phrase) && (confirm.yes || confirm.ask)) continue;
    if (confirm.ask) {
      const answer = await confirm.ask(`${reason}\nType "${phrase}" to continue:`, phrase);
      if (answer === phrase) continue;
      throw new LifeboatError(
        ErrorCodes.CONFIRMATION_REQUIRED,
        `Not confirmed: ${operation} of ${db.name} cancelled.`,
        {
          hint: "Nothing was changed.",
        },
      );
    }
    throw new LifeboatError(
      ErrorCodes.CONFIRMATION_REQUIRED,
      `${reason} Confirmation needed to ${operation} ${db.name}.`,
      {
        hint: `Run it on a terminal, or pass --yes --confirm "${phrase}".`,
      },
    );
  }
  if (phrases.length > 0 || confirm.yes) return;
  if (confirm.ask) {
    const answer = await confirm.ask(question ?? `${operation} ${db.name}? This overwrites data. [y/N]`, undefined);
    if (answer === true || (typeof answer === "string" && /^y(es)?$/i.test(answer.trim()))) return;
    throw new LifeboatError(ErrorCodes.CONFIRMATION_REQUIRED, `Not confirmed: ${operation} of ${db.name} cancelled.`, {
      hint: "Nothing was changed.",
    });
  }
  throw new LifeboatError(
    ErrorCodes.CONFIRMATION_REQUIRED,
    `${operation} of ${db.name} overwrites data and needs confirmation.`,
    {
      hint: "There is no terminal to ask on; pass --yes to confirm.",
    },
  );
}
