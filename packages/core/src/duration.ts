import { ErrorCodes, LifeboatError } from "./errors.js";

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Parses `90s`, `15m`, `1h30m`, `7d`, `2w` into milliseconds. Throws INVALID_ARGUMENT otherwise. */
export function parseDuration(text: string, where = "duration"): number {
  const trimmed = text.trim();
  const pattern = /(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)/gy;
  let total = 0;
  let consumed = 0;
  for (const match of trimmed.matchAll(pattern)) {
    total += Number(match[1]) * (UNITS[match[2] ?? ""] ?? Number.NaN);
    consumed = (match.index ?? 0) + match[0].length;
  }
  if (trimmed === "" || consumed !== trimmed.length || !Number.isFinite(total)) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${where}: "${text}" is not a duration.`, {
      hint: "Use a number with a unit: 90s, 15m, 1h, 7d, 2w (units: ms, s, m, h, d, w).",
    });
  }
  return total;
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  if (ms < 3_600_000) return `${Math.round(ms / 60_000)}m`;
  if (ms < 86_400_000) return `${(ms / 3_600_000).toFixed(1)}h`;
  return `${(ms / 86_400_000).toFixed(1)}d`;
}

const RELATIVE_UNITS: Record<string, number> = {};
for (const [unit, names] of Object.entries({
  ms: ["ms", "millisecond", "milliseconds"],
  s: ["s", "sec", "secs", "second", "seconds"],
  m: ["m", "min", "mins", "minute", "minutes"],
  h: ["h", "hr", "hrs", "hour", "hours"],
  d: ["d", "day", "days"],
  w: ["w", "week", "weeks"],
})) {
  for (const name of names) RELATIVE_UNITS[name] = UNITS[unit] ?? Number.NaN;
}

/**
 * Parses a point in time: ISO 8601 (`2026-11-22T10:15:00Z`, a date alone means midnight UTC, a
 * time without an offset is local time), a relative form (`10 minutes ago`, `2h ago`,
 * `yesterday`), or Unix time (`1795342500` seconds, `@1795342500.25`, 13 digits: milliseconds).
 * Returns epoch milliseconds.
 */
export function parseTime(text: string, now = Date.now()): number {
  const t = text.trim().toLowerCase();
  if (t === "now") return now;
  const relative = /^(\d+(?:\.\d+)?)\s*([a-z]+)\s+ago$/.exec(t);
  if (relative) {
    const unit = RELATIVE_UNITS[relative[2] ?? ""];
    if (unit !== undefined) return now - Number(relative[1]) * unit;
  }
  if (t === "yesterday") return now - 86_400_000;
  // Unix time, as `date +%s` prints it (optionally `@`-prefixed, as `date -d` takes it): seconds,
  // with a fraction or not; 13 digits are milliseconds (`Date.now()`).
  const epoch = /^@?(\d{9,13})(\.\d+)?$/.exec(t);
  if (epoch) {
    const digits = epoch[1]!;
    return digits.length >= 12 && !epoch[2] ? Number(digits) : Math.floor(Number(digits + (epoch[2] ?? "")) * 1000);
  }
  const parsed = /^\d+$/.test(t) ? Number.NaN : Date.parse(text.trim()); // "12345" is no year 12345
  if (!Number.isNaN(parsed)) return parsed;
  throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `"${text}" is not a point in time.`, {
    hint: 'Use ISO 8601 (2026-11-22T10:15:00Z) or a relative time ("10 minutes ago", "2h ago").',
  });
}
