/** Everything the CLI prints: tables, sizes, progress bars, errors. */
import { ErrorCodes, formatDuration, type LifeboatError, type Progress } from "@lifeboat/core";

export interface Output {
  readonly json: boolean;
  /** Human text on stdout (suppressed with --json). */
  line(text?: string): void;
  /** The machine-readable result (only with --json). */
  result(value: unknown): void;
  progress(p: Progress): void;
  endProgress(): void;
}

export function createOutput(json: boolean): Output {
  const tty = Boolean(process.stderr.isTTY) && !json && process.env.TERM !== "dumb";
  let last = 0;
  let shown = false;
  const started = Date.now();
  return {
    json,
    line(text = "") {
      if (!json) process.stdout.write(`${text}\n`);
    },
    result(value) {
      if (json) process.stdout.write(`${JSON.stringify(value, jsonReplacer, 2)}\n`);
    },
    progress(p) {
      if (!tty) return;
      const now = Date.now();
      if (now - last < 100 && p.bytes !== p.total) return;
      last = now;
      shown = true;
      const elapsed = Math.max((now - started) / 1000, 0.001);
      const rate = p.bytes / elapsed;
      const width = 24;
      const fraction = p.total ? Math.min(p.bytes / p.total, 1) : 0;
      const bar = p.total
        ? `[${"#".repeat(Math.round(fraction * width)).padEnd(width, "-")}] ${String(Math.round(fraction * 100)).padStart(3)}% `
        : "";
      const eta = p.total && rate > 0 ? ` ETA ${formatDuration(((p.total - p.bytes) / rate) * 1000)}` : "";
      process.stderr.write(
        `\r\x1b[K${p.phase.padEnd(8)} ${bar}${formatBytes(p.bytes)}${p.total ? `/${formatBytes(p.total)}` : ""} ${formatBytes(rate)}/s${eta}`,
      );
    },
    endProgress() {
      if (shown) process.stderr.write("\r\x1b[K");
      shown = false;
    },
  };
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (value instanceof Error) return "toJSON" in value ? value : { message: value.message };
  if (typeof value === "bigint") return value.toString();
  return value;
}

export function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : 1)} ${units[i]}`;
}

/** A plain text table; column widths from content. */
export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? "").length)));
  const fmt = (r: readonly (string | number)[]) =>
    r
      .map((c, i) => (typeof c === "number" ? String(c).padStart(widths[i]!) : String(c).padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [fmt(headers), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(fmt)].join("\n");
}

export function ago(iso: string, now = Date.now()): string {
  const ms = now - Date.parse(iso);
  return ms < 0 ? "in the future" : `${formatDuration(ms)} ago`;
}

/** Exit codes (documented in the CLI README): 1 failed, 2 usage/config, 3 refused. */
export function exitCodeFor(error: LifeboatError): number {
  switch (error.code) {
    case ErrorCodes.CONFIG_INVALID:
    case ErrorCodes.INVALID_ARGUMENT:
    case ErrorCodes.PLUGIN_INVALID:
    case ErrorCodes.PLUGIN_NOT_FOUND:
      return 2;
    case ErrorCodes.GUARD_DENIED:
    case ErrorCodes.CONFIRMATION_REQUIRED:
    case ErrorCodes.HOOK_VETOED:
    case ErrorCodes.DATABASE_LOCKED:
    case ErrorCodes.LEASE_HELD:
    case ErrorCodes.ARCHIVE_MISMATCH:
      return 3;
    default:
      return 1;
  }
}
