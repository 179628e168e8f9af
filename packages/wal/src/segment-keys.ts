/** Where segments live on a target: `<db>/generations/<gen>/wal/<first>-<last>-<lastObservedMs>.seg[exts]`. */
import { keys, positionKey } from "@lifeboat/core";

export function walPrefix(db: string, generation: string): string {
  return `${keys.generation(db, generation)}wal/`;
}

/**
 * The key carries the last transaction's observed time (ms, 12 hex digits) so a point-in-time
 * restore picks its segments from a listing alone, without reading every segment's header.
 */
export function segmentKey(
  db: string,
  generation: string,
  firstTxn: number,
  lastTxn: number,
  lastObservedAt: number,
  extensions = "",
): string {
  return `${walPrefix(db, generation)}${positionKey(firstTxn)}-${positionKey(lastTxn)}-${lastObservedAt.toString(16).padStart(12, "0")}.seg${extensions}`;
}

const SEGMENT_KEY =
  /^([^/]+)\/generations\/([0-9a-f]{16})\/wal\/([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{12})\.seg((?:\.[a-z0-9]+)*)$/;

export interface SegmentKeyInfo {
  readonly key: string;
  readonly db: string;
  readonly generation: string;
  readonly firstTxn: number;
  readonly lastTxn: number;
  readonly lastObservedAt: number;
  readonly extensions: string;
}

export function parseSegmentKey(key: string): SegmentKeyInfo | undefined {
  const m = SEGMENT_KEY.exec(key);
  if (!m) return undefined;
  return {
    key,
    db: m[1]!,
    generation: m[2]!,
    firstTxn: Number.parseInt(m[3]!, 16),
    lastTxn: Number.parseInt(m[4]!, 16),
    lastObservedAt: Number.parseInt(m[5]!, 16),
    extensions: m[6] ?? "",
  };
}
