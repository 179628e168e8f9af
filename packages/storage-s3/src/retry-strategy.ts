/**
 * The retry strategy handed to the SDK (`retryStrategy`): the SDK's retry middleware classifies each
 * failure and asks us whether and when to try again. We retry transient failures (connection
 * refused or reset, timeouts, DNS hiccups), throttling (429, SlowDown) and server errors (5xx), never
 * client errors (4xx), up to `maxAttempts` attempts in all.
 *
 * The delay before retry n is drawn from [c/2, c] with c = min(maxDelay, baseDelay * 2^(n-1))
 * ("equal jitter"): exponential backoff whose randomness spreads out clients that failed together,
 * with a lower bound, so a given `maxAttempts` always rides out an outage of a known minimum length.
 * A server's Retry-After hint lengthens the delay (up to `maxDelay`).
 */

/** The SDK's classification of a failed attempt (see @smithy/types `RetryErrorType`). */
export type RetryErrorType = "TRANSIENT" | "THROTTLING" | "SERVER_ERROR" | "CLIENT_ERROR";

export interface RetryErrorInfo {
  readonly errorType: RetryErrorType;
  readonly retryAfterHint?: Date;
}

export interface RetryToken {
  getRetryCount(): number;
  getRetryDelay(): number;
}

export interface BackoffOptions {
  /** Attempts in all, the first included (1 = never retry). */
  readonly maxAttempts: number;
  /** Ceiling of the first retry's delay, in ms. */
  readonly baseDelayMs: number;
  /** Ceiling of any delay, in ms. */
  readonly maxDelayMs: number;
  /** Source of randomness in [0, 1); for tests. */
  readonly random?: () => number;
}

/** Implements the SDK's `RetryStrategyV2` interface structurally (no dependency on @smithy/types). */
export class BackoffRetryStrategy {
  readonly mode = "lifeboat-backoff";
  readonly #options: BackoffOptions;

  constructor(options: BackoffOptions) {
    this.#options = options;
  }

  async acquireInitialRetryToken(_scope: string): Promise<RetryToken> {
    return token(0, 0);
  }

  async refreshRetryTokenForRetry(previous: RetryToken, info: RetryErrorInfo): Promise<RetryToken> {
    const retry = previous.getRetryCount() + 1;
    if (info.errorType === "CLIENT_ERROR" || retry >= this.#options.maxAttempts) {
      // Throwing tells the middleware to give up and surface the last error.
      throw new Error("no more retries");
    }
    let delay = backoffDelay(retry, this.#options);
    if (info.retryAfterHint) {
      const hinted = info.retryAfterHint.getTime() - Date.now();
      if (hinted > delay) delay = Math.min(hinted, this.#options.maxDelayMs);
    }
    return token(retry, delay);
  }

  recordSuccess(_token: RetryToken): void {}
}

/** The delay before retry number `retry` (1-based), in ms. */
export function backoffDelay(retry: number, options: BackoffOptions): number {
  const ceiling = Math.min(options.maxDelayMs, options.baseDelayMs * 2 ** (retry - 1));
  const random = options.random ?? Math.random;
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

function token(count: number, delay: number): RetryToken {
  return { getRetryCount: () => count, getRetryDelay: () => delay };
}
