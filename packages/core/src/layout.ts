/**
 * Where things live on a storage target, and the JSON formats core writes there. The same page
 * in prose: docs/FORMAT.md. Every database has its own folder (its name) on a target:
 *
 *   <db>/lifeboat.json                                         repository marker
 *   <db>/generations/<gen>/snapshots/<pos>.snap[.gz|.zst][.age] full database image
 *   <db>/generations/<gen>/snapshots/<pos>.json                manifest (written last: the commit point)
 *   <db>/generations/<gen>/snapshots/<pos>.verified.json       result of the last `verify`
 *   <db>/generations/<gen>/wal/<first>-<last>.seg[...]         WAL segments (see @lifeboat/wal)
 *   <db>/locks/replicator.json                                 replicator lease
 *
 * `<gen>` is 16 lower-case hex digits: 12 of creation time in ms, 4 random, so generations sort
 * by age. `<pos>` is the snapshot's transaction position as 16 hex digits (0 for a standalone
 * backup taken without a replicator).
 */
import { randomBytes } from "node:crypto";
import type { CodecSpec } from "./codec.js";
import type { IntegrityResult, TableInfo } from "./source.js";

export const REPOSITORY_FORMAT_VERSION = 1;
export const MANIFEST_FORMAT_VERSION = 1;

export function newGenerationId(now = Date.now()): string {
  return now.toString(16).padStart(12, "0") + randomBytes(2).toString("hex");
}

export function positionKey(position: number | bigint): string {
  return BigInt(position).toString(16).padStart(16, "0");
}

export const keys = {
  marker: (db: string) => `${db}/lifeboat.json`,
  generations: (db: string) => `${db}/generations/`,
  generation: (db: string, gen: string) => `${db}/generations/${gen}/`,
  snapshotObject: (db: string, gen: string, pos: number, extensions: string) =>
    `${db}/generations/${gen}/snapshots/${positionKey(pos)}.snap${extensions}`,
  snapshotManifest: (db: string, gen: string, pos: number) =>
    `${db}/generations/${gen}/snapshots/${positionKey(pos)}.json`,
  snapshotVerified: (db: string, gen: string, pos: number) =>
    `${db}/generations/${gen}/snapshots/${positionKey(pos)}.verified.json`,
  lease: (db: string) => `${db}/locks/replicator.json`,
};

const MANIFEST_KEY = /^([^/]+)\/generations\/([0-9a-f]{16})\/snapshots\/([0-9a-f]{16})\.json$/;

/** Recognises a manifest key; returns its generation and position. */
export function parseManifestKey(key: string): { db: string; generation: string; position: number } | undefined {
  const match = MANIFEST_KEY.exec(key);
  if (!match) return undefined;
  return { db: match[1]!, generation: match[2]!, position: Number.parseInt(match[3]!, 16) };
}

/** The id users type: `<gen>-<pos>`; any unique prefix selects it. */
export function snapshotId(generation: string, position: number): string {
  return `${generation}-${positionKey(position)}`;
}

export interface RepositoryMarker {
  readonly format: "lifeboat.repository";
  readonly formatVersion: number;
  readonly database: string;
  /**
   * File name (no directory) of the database the folder was created for. Absent in folders made
   * before 0.2.0 and by commands that do not know the file.
   */
  readonly file?: string;
  readonly createdAt: string;
  readonly createdBy: string;
}

export interface SnapshotManifest {
  readonly format: "lifeboat.snapshot";
  readonly formatVersion: number;
  readonly id: string;
  readonly generation: string;
  /** Transactions included (0 for a standalone backup). */
  readonly position: number;
  readonly database: { readonly name: string; readonly path: string };
  readonly createdAt: string;
  readonly reason: string;
  readonly tool: { readonly name: "lifeboat"; readonly version: string };
  readonly source: {
    readonly type: string;
    readonly engineVersion: string;
    readonly pageSize: number;
    readonly pageCount: number;
    readonly journalMode: string;
    readonly userVersion: number;
    readonly environment: string | null;
    readonly tables: readonly TableInfo[];
  };
  readonly integrity: IntegrityResult;
  /** The plain database image. */
  readonly content: { readonly size: number; readonly sha256: string };
  /** The stored object: after the codec chain. */
  readonly object: {
    readonly key: string;
    readonly size: number;
    readonly sha256: string;
    readonly codecs: readonly CodecSpec[];
  };
}

export interface VerificationRecord {
  readonly format: "lifeboat.verification";
  readonly formatVersion: number;
  readonly verifiedAt: string;
  readonly ok: boolean;
  readonly problems: readonly string[];
}

/** WAL segments (format in @lifeboat/wal): `<db>/generations/<gen>/wal/<first>-<last>-<lastObservedMs>.seg[exts]`. */
export function walPrefix(db: string, generation: string): string {
  return `${`${db}/generations/${generation}/`}wal/`;
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
