/**
 * Confirmations asked by this package's own operations (mark, clone into a file outside the
 * config), with the same rules as core's `checkGuards`: a typed phrase when one is required
 * (given up front or typed on a terminal), otherwise `yes` or a y/N answer; never waiting on a
 * stdin that is not a terminal (`ask` is absent then).
 */
import { type ConfirmOptions, ErrorCodes, LifeboatError } from "@lifeboat/core";

export interface ConfirmationRequest {
  /** What would happen, for the messages: "delete app.db". */
  readonly action: string;
  /** Why a confirmation is needed; shown before the question. */
  readonly reason: string;
  /** The phrase a person must type; absent: yes/no is enough. */
  readonly phrase?: string;
}

/** Resolves when confirmed; throws CONFIRMATION_REQUIRED otherwise. */
export async function requireConfirmation(confirm: ConfirmOptions, request: ConfirmationRequest): Promise<void> {
  const { action, reason, phrase } = request;
  if (phrase !== undefined) {
    if (confirm.phrases?.includes(phrase)) return;
    if (confirm.ask) {
      const answer = await confirm.ask(`${reason}\nType "${phrase}" to continue:`, phrase);
      if (answer === phrase) return;
      throw cancelled(action);
    }
    throw new LifeboatError(ErrorCodes.CONFIRMATION_REQUIRED, `${reason} Confirmation needed to ${action}.`, {
      plugin: "guards",
      hint: `Run it on a terminal, or pass --yes --confirm "${phrase}".`,
    });
  }
  if (confirm.yes) return;
  if (confirm.ask) {
    const answer = await confirm.ask(`${reason}\n${action}? [y/N]`, undefined);
    if (answer === true || (typeof answer === "string" && /^y(es)?$/i.test(answer.trim()))) return;
    throw cancelled(action);
  }
  throw new LifeboatError(ErrorCodes.CONFIRMATION_REQUIRED, `${reason} Confirmation needed to ${action}.`, {
    plugin: "guards",
    hint: "There is no terminal to ask on; pass --yes to confirm.",
  });
}

function cancelled(action: string): LifeboatError {
  return new LifeboatError(ErrorCodes.CONFIRMATION_REQUIRED, `Not confirmed: ${action} cancelled.`, {
    plugin: "guards",
    hint: "Nothing was changed.",
  });
}
