/** Percentiles, lag computation and Markdown tables for the replication benchmark. */

/** Nearest-rank percentile of finite values (NaN when there are none). */
export function percentile(values: ArrayLike<number>, p: number): number {
  const sorted = Float64Array.from(values).filter(Number.isFinite).sort();
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export function median(values: ArrayLike<number>): number {
  const sorted = Float64Array.from(values).filter(Number.isFinite).sort();
  if (sorted.length === 0) return Number.NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export interface Coverage {
  /** When this object became durable on the target. */
  readonly at: number;
  /** Every writer transaction up to this sequence number is in it or in earlier objects. */
  readonly maxSeq: number;
}

/**
 * Lag of each writer transaction: the time of the first object (by time) that covers its
 * sequence number, minus its commit time. NaN when no object covers it.
 */
export function lagsFromCoverage(
  commitTimes: Float64Array,
  firstSeq: number,
  coverage: readonly Coverage[],
): Float64Array {
  const sorted = [...coverage].sort((a, b) => a.at - b.at);
  const lags = new Float64Array(commitTimes.length).fill(Number.NaN);
  let j = 0;
  let covered = 0; // highest seq covered by sorted[0..j)
  for (let k = 0; k < commitTimes.length; k++) {
    const seq = firstSeq + k;
    while (covered < seq && j < sorted.length) {
      covered = Math.max(covered, sorted[j]!.maxSeq);
      j++;
    }
    if (covered < seq) break;
    lags[k] = sorted[j - 1]!.at - commitTimes[k]!;
  }
  return lags;
}

export interface LagSummary {
  readonly n: number;
  readonly uncovered: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly min: number;
}

export function summarize(lags: ArrayLike<number>): LagSummary {
  let uncovered = 0;
  let max = Number.NEGATIVE_INFINITY;
  let min = Number.POSITIVE_INFINITY;
  for (let i = 0; i < lags.length; i++) {
    const v = lags[i]!;
    if (!Number.isFinite(v)) uncovered++;
    else {
      if (v > max) max = v;
      if (v < min) min = v;
    }
  }
  return {
    n: lags.length,
    uncovered,
    p50: percentile(lags, 50),
    p90: percentile(lags, 90),
    p99: percentile(lags, 99),
    max,
    min,
  };
}

export function fmt(v: number | undefined | null, digits = 0): string {
  if (v === undefined || v === null || !Number.isFinite(v)) return "-";
  return v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function table(headers: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const line = (cells: readonly (string | number)[]) => `| ${cells.map(String).join(" | ")} |`;
  return [line(headers), line(headers.map(() => "---")), ...rows.map(line)].join("\n");
}
