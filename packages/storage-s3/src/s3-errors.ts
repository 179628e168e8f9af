/**
 * Turns what the AWS SDK throws into `LifeboatError`s that name the target (bucket, prefix,
 * endpoint: never credentials) and say what to do. The SDK's error is not kept as `cause`: it
 * carries the raw response, and its message is the server's; a sanitised copy (name, code, status,
 * request id, attempts, redacted message) is kept instead, so logging an error with its cause cannot
 * print a secret.
 */
import { ErrorCodes, LifeboatError, NotFoundError, PreconditionFailedError } from "@lifeboat/core";

export const PLUGIN = "s3";

/** What an error message may say about the target. */
export interface TargetFacts {
  readonly bucket: string;
  readonly prefix: string;
  /** The endpoint without user info or query, when one is configured. */
  readonly endpoint: string | undefined;
  readonly region: string;
  readonly location: string;
  readonly requestTimeout: number;
  /** Strings that must never appear in a message (secret key, session token, access key id). */
  readonly secrets: readonly string[];
}

export interface ErrorContext {
  readonly operation: string;
  readonly key?: string;
  readonly signal?: AbortSignal;
}

interface SdkErrorLike {
  name?: string;
  message?: string;
  code?: string;
  Code?: string;
  errno?: string | number;
  cause?: unknown;
  $metadata?: { httpStatusCode?: number; requestId?: string; attempts?: number; totalRetryDelay?: number };
}

const NETWORK_ERRNOS = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ETIMEDOUT",
  "EPIPE",
  "ECONNABORTED",
]);

/** Replaces every secret in `text` with `***`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (secret.length >= 4) out = out.split(secret).join("***");
  return out;
}

/** The HTTP status of an SDK error, if it got a response. */
export function httpStatus(error: unknown): number | undefined {
  return (error as SdkErrorLike | null)?.$metadata?.httpStatusCode;
}

/** The S3 error code (`NoSuchKey`, `SlowDown`, ...) or the SDK error's name. */
export function s3Code(error: unknown): string | undefined {
  const e = error as SdkErrorLike | null;
  const code = e?.Code ?? e?.name;
  // The SDK's names for a response it could not parse: no code at all, really.
  return code === "UnknownError" || code === "Unknown" ? undefined : code;
}

/** Whether the SDK error says the object or bucket is missing (404 or its codes). */
export function isNotFound(error: unknown): boolean {
  const code = s3Code(error);
  return code === "NoSuchKey" || code === "NotFound" || (httpStatus(error) === 404 && code !== "NoSuchBucket");
}

export function isPreconditionFailed(error: unknown): boolean {
  const code = s3Code(error);
  return (
    httpStatus(error) === 412 ||
    code === "PreconditionFailed" ||
    // AWS: a concurrent conditional write to the same key is in progress; the other writer wins.
    code === "ConditionalRequestConflict"
  );
}

export function isAbort(error: unknown, signal?: AbortSignal): boolean {
  return signal?.aborted === true || (error as SdkErrorLike | null)?.name === "AbortError";
}

/** Maps any error from an S3 call to a LifeboatError. LifeboatErrors pass through unchanged. */
export function toLifeboatError(error: unknown, facts: TargetFacts, context: ErrorContext): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const e = (error ?? {}) as SdkErrorLike;
  const { operation, key } = context;
  const status = httpStatus(error);
  const code = s3Code(error);
  const errno = networkErrno(error);
  const attempts = e.$metadata?.attempts;
  const rawMessage = e.message === "UnknownError" ? "" : (e.message ?? String(error));
  const serverMessage = redact(rawMessage, facts.secrets);
  const what =
    key === undefined ? `${operation} on ${facts.location}` : `${operation} of "${key}" in ${facts.location}`;
  const afterAttempts = attempts && attempts > 1 ? ` (after ${attempts} attempts)` : "";
  const details: Record<string, unknown> = {
    bucket: facts.bucket,
    prefix: facts.prefix,
    ...(facts.endpoint === undefined ? { region: facts.region } : { endpoint: facts.endpoint }),
    ...(key === undefined ? {} : { key }),
    ...(code === undefined ? {} : { s3Code: code }),
    ...(status === undefined ? {} : { httpStatus: status }),
    ...(errno === undefined ? {} : { errno }),
    ...(attempts === undefined ? {} : { attempts }),
    ...(e.$metadata?.requestId ? { requestId: e.$metadata.requestId } : {}),
  };
  const base = { plugin: PLUGIN, operation, details, cause: sanitisedCause(e, serverMessage) };
  const server = facts.endpoint ?? `S3 (${facts.region})`;
  // The location already names the endpoint; the subject of a sentence need not repeat it.
  const who = facts.endpoint ? "The S3 server" : "AWS S3";

  if (isAbort(error, context.signal)) {
    return new LifeboatError(ErrorCodes.ABORTED, `The ${what} was aborted.`, {
      ...base,
      hint:
        operation === "put" ? "Nothing was stored; run the operation again to store it." : "Run the operation again.",
    });
  }

  if (e.name === "CredentialsProviderError" || /Could not load credentials/i.test(e.message ?? "")) {
    return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `No S3 credentials were found for ${facts.location}.`, {
      ...base,
      hint:
        "Name the environment variables that hold them in the target's options (accessKeyIdEnv, secretAccessKeyEnv), " +
        "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an AWS profile (profile / AWS_PROFILE), " +
        "or run where an instance or container role is available.",
    });
  }

  if (code === "NoSuchBucket" || (operation === "init" && status === 404)) {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `The bucket "${facts.bucket}" does not exist at ${server}; the ${what} failed.`,
      {
        ...base,
        hint:
          `Create it, e.g. \`aws s3 mb s3://${facts.bucket}${facts.endpoint ? ` --endpoint-url ${facts.endpoint}` : ` --region ${facts.region}`}\`, ` +
          "or correct `bucket` (and `region`/`endpoint`) in the target's options.",
      },
    );
  }

  if (code === "InvalidAccessKeyId") {
    return new LifeboatError(
      ErrorCodes.PERMISSION_DENIED,
      `${who} does not know the access key ID (InvalidAccessKeyId); the ${what} failed.`,
      {
        ...base,
        hint: "Check the access key ID (accessKeyIdEnv, AWS_ACCESS_KEY_ID or the profile) is one this endpoint issued.",
      },
    );
  }
  if (code === "SignatureDoesNotMatch") {
    return new LifeboatError(
      ErrorCodes.PERMISSION_DENIED,
      `${who} rejected the request signature: the secret access key does not match the access key ID (SignatureDoesNotMatch); the ${what} failed.`,
      {
        ...base,
        hint: "Check the secret access key (secretAccessKeyEnv, AWS_SECRET_ACCESS_KEY or the profile) belongs to the access key ID.",
      },
    );
  }
  if (code === "ExpiredToken" || code === "InvalidToken" || code === "TokenRefreshRequired") {
    return new LifeboatError(
      ErrorCodes.PERMISSION_DENIED,
      `The session token is expired or invalid (${code}); the ${what} failed.`,
      {
        ...base,
        hint: "Refresh the temporary credentials (sessionTokenEnv / AWS_SESSION_TOKEN) or use long-lived ones.",
      },
    );
  }
  if (code === "RequestTimeTooSkewed") {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `${who} refused the ${what}: this machine's clock is too far off (RequestTimeTooSkewed).`,
      { ...base, hint: "Synchronise the system clock (NTP) and try again." },
    );
  }
  if (status === 403 || code === "AccessDenied" || code === "AllAccessDisabled") {
    return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Access denied: ${who} refused the ${what}.`, {
      ...base,
      hint:
        "Check the credentials, and that they may use this bucket and prefix " +
        "(s3:ListBucket, s3:GetObject, s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload).",
    });
  }

  if (code === "PermanentRedirect" || code === "AuthorizationHeaderMalformed" || status === 301) {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `The bucket "${facts.bucket}" is not in region ${facts.region} (${code ?? status}); the ${what} failed.`,
      { ...base, hint: "Set `region` in the target's options to the bucket's region." },
    );
  }

  if (errno !== undefined || e.name === "TimeoutError" || code === "RequestTimeout") {
    const endpoint = facts.endpoint ?? `the S3 endpoint for ${facts.region}`;
    const reason =
      errno === "ECONNREFUSED"
        ? "the connection was refused"
        : errno === "ENOTFOUND" || errno === "EAI_AGAIN"
          ? "its host name does not resolve"
          : errno === "EHOSTUNREACH" || errno === "ENETUNREACH"
            ? "the network cannot reach it"
            : errno === "ECONNRESET" || errno === "EPIPE" || errno === "ECONNABORTED"
              ? "the connection was reset"
              : `it did not answer within the request timeout (${facts.requestTimeout} ms)`;
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `Cannot reach ${endpoint}: ${reason}${afterAttempts}; the ${what} failed.`,
      {
        ...base,
        hint:
          errno === "ENOTFOUND" || errno === "EAI_AGAIN"
            ? "Check the endpoint's host name and this machine's DNS."
            : "Check that the server is running and reachable at that address and port (endpoint), and the network in between; raise requestTimeout or maxAttempts for slow or flaky links.",
      },
    );
  }

  if (status === 429 || code === "SlowDown" || code === "Throttling" || code === "TooManyRequests") {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `${who} is throttling requests (${code ?? status})${afterAttempts}; the ${what} failed.`,
      { ...base, hint: "Lower queueSize, spread the load, or try again later." },
    );
  }
  if (status !== undefined && status >= 500) {
    return new LifeboatError(
      ErrorCodes.STORAGE_ERROR,
      `${who} failed with HTTP ${status} (${[code ?? "server error", serverMessage].filter(Boolean).join(": ")})${afterAttempts}; the ${what} failed.`,
      { ...base, hint: "The S3 service has a problem; try again later or check its status." },
    );
  }

  return new LifeboatError(
    ErrorCodes.STORAGE_ERROR,
    `S3 ${what} failed: ${code ?? "error"}${status ? ` (HTTP ${status})` : ""}${serverMessage ? `: ${serverMessage}` : ""}`,
    {
      ...base,
      hint: "Check the target's options (bucket, prefix, storageClass, serverSideEncryption) and the server's logs.",
    },
  );
}

export function notFoundError(facts: TargetFacts, key: string, operation: string): NotFoundError {
  return new NotFoundError(`No object "${key}" in ${facts.location}.`, {
    plugin: PLUGIN,
    operation,
    details: { key, bucket: facts.bucket, prefix: facts.prefix },
    hint: "Check the key and the target's bucket and prefix; list the target to see what it holds.",
  });
}

export function existsError(facts: TargetFacts, key: string): PreconditionFailedError {
  return new PreconditionFailedError(`The object "${key}" already exists in ${facts.location}; it was not replaced.`, {
    plugin: PLUGIN,
    operation: "put",
    details: { key, bucket: facts.bucket, prefix: facts.prefix },
    hint: "Another writer created it first; read it, or write under another key.",
  });
}

function networkErrno(error: unknown): string | undefined {
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current && typeof current === "object"; depth++) {
    const code = (current as SdkErrorLike).code;
    if (typeof code === "string" && NETWORK_ERRNOS.has(code)) return code;
    current = (current as SdkErrorLike).cause;
  }
  return undefined;
}

function sanitisedCause(e: SdkErrorLike, message: string): Error {
  const cause = new Error(message);
  cause.name = e.name ?? "Error";
  const facts: Record<string, unknown> = {};
  if (e.Code ?? e.code) facts.code = e.Code ?? e.code;
  if (e.$metadata) {
    facts.$metadata = {
      httpStatusCode: e.$metadata.httpStatusCode,
      requestId: e.$metadata.requestId,
      attempts: e.$metadata.attempts,
      totalRetryDelay: e.$metadata.totalRetryDelay,
    };
  }
  return Object.assign(cause, facts);
}
