/** Medians and markdown tables for benchmark output. */

/** The median of `values` (the mean of the middle two for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/**
 * A GitHub-flavoured markdown table. Columns are right-aligned (numbers) except the first and
 * those listed in `leftColumns` (text).
 */
export function markdownTable(
  head: readonly string[],
  rows: readonly (readonly string[])[],
  leftColumns: readonly number[] = [],
): string {
  const left = (i: number) => i === 0 || leftColumns.includes(i);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    `| ${cells.map((c, i) => (left(i) ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (left(i) ? `${"-".repeat(w + 2)}` : `${"-".repeat(w + 1)}:`)).join("|")}|`;
  return [line(head), rule, ...rows.map(line)].join("\n");
}

export const MiB = 1024 * 1024;

export function seconds(ms: number): string {
  return (ms / 1000).toFixed(2);
}

/** Decimal megabytes per second (as dd and the ENVIRONMENT figures quote them). */
export function mbPerS(bytes: number, ms: number): string {
  return (bytes / 1e6 / (ms / 1000)).toFixed(0);
}

export function ratio(value: number, base: number): string {
  return `${(value / base).toFixed(2)}x`;
}

export function mib(bytes: number): string {
  return (bytes / MiB).toFixed(0);
}
