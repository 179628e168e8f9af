/**
 * Every error Lifeboat raises is a `LifeboatError` with a stable `code`. Messages say what went
 * wrong and where; `hint` says what the user can do about it. Plugins throw these too (or wrap
 * their own errors in them) so the CLI and the programmatic API report failures the same way.
 */

/** Stable error codes. Never renamed once released: scripts match on them. */
export const ErrorCodes = {
  /** A storage key, backup id or generation does not exist. */
  NOT_FOUND: "NOT_FOUND",
  /** A conditional create (`ifNoneMatch: "*"`) found the key already present. */
  PRECONDITION_FAILED: "PRECONDITION_FAILED",
  /** A key is not acceptable to a storage target (escapes the root, NUL, backslash, empty). */
  INVALID_KEY: "INVALID_KEY",
  /** The configuration file is missing, unreadable, malformed or fails validation. */
  CONFIG_INVALID: "CONFIG_INVALID",
  /** A plugin named in the configuration cannot be found or loaded, or is not a plugin. */
  PLUGIN_NOT_FOUND: "PLUGIN_NOT_FOUND",
  /** A plugin is present but its options or its shape are wrong. */
  PLUGIN_INVALID: "PLUGIN_INVALID",
  /** The database path does not exist. */
  DATABASE_NOT_FOUND: "DATABASE_NOT_FOUND",
  /** The path exists but is not a SQLite database (a directory, another kind of file). */
  NOT_A_DATABASE: "NOT_A_DATABASE",
  /** The database is open or locked by another process and the operation needs it idle. */
  DATABASE_LOCKED: "DATABASE_LOCKED",
  /** `PRAGMA integrity_check` (or quick_check) reported problems. */
  INTEGRITY_FAILED: "INTEGRITY_FAILED",
  /** A stored object does not match its recorded checksum or size, or cannot be decoded. */
  CORRUPT_BACKUP: "CORRUPT_BACKUP",
  /** A storage target failed: unreachable, permission denied, full, or an unexpected answer. */
  STORAGE_ERROR: "STORAGE_ERROR",
  /** The device is full. Nothing partial was left behind. */
  DISK_FULL: "DISK_FULL",
  /** Permission was denied on a file or directory. */
  PERMISSION_DENIED: "PERMISSION_DENIED",
  /** A guard refused the operation. */
  GUARD_DENIED: "GUARD_DENIED",
  /** The operation needs a confirmation that was not given (no TTY and no `--yes`). */
  CONFIRMATION_REQUIRED: "CONFIRMATION_REQUIRED",
  /** A sequential hook vetoed the operation. */
  HOOK_VETOED: "HOOK_VETOED",
  /** A hook failed to run (timeout, crash) where its failure matters. */
  HOOK_FAILED: "HOOK_FAILED",
  /** Another process holds the lease for this database on this target. */
  LEASE_HELD: "LEASE_HELD",
  /**
   * The database's folder on a target belongs to another database file whose name maps to the
   * same folder (`my app.db` and `my_app.db`, `app.db` and `app.sqlite`).
   */
  ARCHIVE_MISMATCH: "ARCHIVE_MISMATCH",
  /** The requested point in time or transaction is outside every recovery window. */
  NO_RESTORE_POINT: "NO_RESTORE_POINT",
  /** A stored object was written by a newer, unknown format version. */
  UNSUPPORTED_FORMAT: "UNSUPPORTED_FORMAT",
  /** The caller passed an invalid argument (bad duration, bad id, conflicting flags). */
  INVALID_ARGUMENT: "INVALID_ARGUMENT",
  /** The operation was aborted through its AbortSignal. */
  ABORTED: "ABORTED",
  /** A bug: an invariant did not hold. Please report it. */
  INTERNAL: "INTERNAL",
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export interface LifeboatErrorOptions {
  /** What the user can do about it, one or two sentences. */
  hint?: string;
  /** The plugin that raised it (`local`, `s3`, `sqlite`, ...). */
  plugin?: string;
  /** The operation that was running (`backup`, `restore`, `put`, ...). */
  operation?: string;
  /** The underlying error. */
  cause?: unknown;
  /** Structured facts for `--json` output (never secrets). */
  details?: Record<string, unknown>;
}

export class LifeboatError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly plugin: string | undefined;
  readonly operation: string | undefined;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: LifeboatErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "LifeboatError";
    this.code = code;
    this.hint = options.hint;
    this.plugin = options.plugin;
    this.operation = options.operation;
    this.details = options.details;
  }

  toJSON(): Record<string, unknown> {
    return {
      code: this.code,
      message: this.message,
      hint: this.hint,
      plugin: this.plugin,
      operation: this.operation,
      details: this.details,
    };
  }
}

export class NotFoundError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super(ErrorCodes.NOT_FOUND, message, options);
    this.name = "NotFoundError";
  }
}

export class PreconditionFailedError extends LifeboatError {
  constructor(message: string, options: LifeboatErrorOptions = {}) {
    super(ErrorCodes.PRECONDITION_FAILED, message, options);
    this.name = "PreconditionFailedError";
  }
}

export function isLifeboatError(error: unknown, code?: ErrorCode): error is LifeboatError {
  return error instanceof LifeboatError && (code === undefined || error.code === code);
}

/** Node's errno for "no space left on device" and friends, mapped to our codes. */
export function errnoCode(error: unknown): string | undefined {
  return typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined;
}

/**
 * Wraps a file-system error from `operation` on `path` in a LifeboatError with an actionable
 * message. Already-wrapped errors pass through unchanged.
 */
export function fsError(error: unknown, operation: string, path: string, plugin?: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  const errno = errnoCode(error);
  const base = { cause: error, operation, plugin, details: { path, errno } };
  switch (errno) {
    case "ENOSPC":
    case "EDQUOT":
      return new LifeboatError(ErrorCodes.DISK_FULL, `No space left on the device while writing ${path}.`, {
        ...base,
        hint: "Free some space or point the target at a larger volume; nothing partial was kept.",
      });
    case "EACCES":
    case "EPERM":
    case "EROFS":
      return new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Permission denied: cannot ${operation} ${path}.`, {
        ...base,
        hint:
          errno === "EROFS"
            ? "The file system is read-only; choose a writable location."
            : "Check the owner and mode of the path, or run as a user that may write there.",
      });
    case "ENOENT":
      return new NotFoundError(`${path} does not exist.`, base);
    default:
      return new LifeboatError(
        ErrorCodes.STORAGE_ERROR,
        `Cannot ${operation} ${path}: ${error instanceof Error ? error.message : String(error)}`,
        base,
      );
  }
}
