/**
 * One replicator (Lifeboat or Litestream) running against one database, with its target watched:
 * start until ready, wait until a writer sequence number is durable on the target, stop, decode
 * the target's WAL objects, and restore with the tool's own command.
 */
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { decodeLz4Frames } from "./replication-lz4.js";
import { type S3Remote, S3Watcher } from "./replication-s3.js";
import {
  type Child,
  isSegmentPath,
  LIFEBOAT_CLI,
  LITESTREAM,
  type LitestreamSettings,
  lifeboatReady,
  litestreamReady,
  type ReplicaObject,
  readReplicaObject,
  startLifeboat,
  startLitestream,
  type ToolName,
  timeCommand,
  writeLitestreamConfig,
} from "./replication-tools.js";
import { type TargetWatcher, TreeWatcher } from "./replication-watch.js";

export interface ReplicatorSpec {
  readonly id: string;
  readonly label: string;
  readonly tool: ToolName;
  readonly litestream?: LitestreamSettings;
  /** Extra `lifeboat replicate` arguments. */
  readonly lifeboatArgs?: readonly string[];
}

export const LIFEBOAT: ReplicatorSpec = { id: "lifeboat", label: "Lifeboat (defaults)", tool: "lifeboat" };
export const LIFEBOAT_BATCHED: ReplicatorSpec = {
  id: "lifeboat-1s",
  label: "Lifeboat, --segment-interval 1s",
  tool: "lifeboat",
  lifeboatArgs: ["--segment-interval", "1s"],
};
export const LITESTREAM_DEFAULT: ReplicatorSpec = {
  id: "litestream",
  label: "Litestream 0.3.13 (defaults: monitor 1s, sync 1s)",
  tool: "litestream",
  litestream: {},
};
export const LITESTREAM_SYNC100: ReplicatorSpec = {
  id: "litestream-sync100ms",
  label: "Litestream, sync-interval 100ms",
  tool: "litestream",
  litestream: { syncInterval: "100ms" },
};
export const LITESTREAM_FAST: ReplicatorSpec = {
  id: "litestream-100ms",
  label: "Litestream, monitor-interval + sync-interval 100ms",
  tool: "litestream",
  litestream: { monitorInterval: "100ms", syncInterval: "100ms" },
};

/** A fresh WAL database with the writer's table (and nothing in its -wal). */
export function createSeqTable(path: string): void {
  const db = new Database(path);
  try {
    db.pragma("journal_mode = WAL");
    db.exec(
      "CREATE TABLE IF NOT EXISTS bench_seq (seq INTEGER PRIMARY KEY, written_at INTEGER NOT NULL, marker TEXT NOT NULL)",
    );
    db.pragma("wal_checkpoint(TRUNCATE)");
  } finally {
    db.close();
  }
}

export function seqStats(path: string): { rows: number; maxSeq: number } {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare("SELECT count(*) AS rows, coalesce(max(seq), 0) AS maxSeq FROM bench_seq").get() as {
      rows: number;
      maxSeq: number;
    };
    return row;
  } finally {
    db.close();
  }
}

export interface SnapshotInfo {
  readonly path: string;
  readonly generation: string;
  /** Lifeboat: the generation-relative transaction the snapshot is at. */
  readonly position: number;
  readonly maxSeq: number;
  /** When it became durable (Lifeboat: its manifest appeared). */
  readonly at: number;
}

export class Session {
  /** The target directory; for an S3 target, the local mirror of the bucket the poller keeps. */
  readonly target: string;
  readonly watcher: TargetWatcher;
  readonly config: string;
  /** Lifeboat's `--to`: the target directory, or an s3:// URL. */
  readonly lifeboatTo: string;
  /** The session's own bucket when the target is S3. */
  readonly bucket: string | undefined;
  child!: Child;
  readonly #decoded = new Map<string, ReplicaObject>();
  readonly #snapshots = new Map<string, SnapshotInfo>();

  constructor(
    readonly spec: ReplicatorSpec,
    readonly dir: string,
    readonly db: string,
    readonly remote?: S3Remote,
  ) {
    this.target = join(dir, "target");
    this.config = join(dir, "litestream.yml");
    mkdirSync(this.target, { recursive: true });
    if (remote) {
      this.bucket = remote.nextBucket(spec.id);
      this.lifeboatTo = remote.lifeboatUrl(this.bucket);
      this.watcher = new S3Watcher(this.target, remote.target(this.bucket));
    } else {
      this.lifeboatTo = this.target;
      this.watcher = new TreeWatcher(this.target);
    }
  }

  get tool(): ToolName {
    return this.spec.tool;
  }

  async start(nodeArgs: string[] = []): Promise<void> {
    if (this.remote && this.bucket) await this.remote.createBucket(this.bucket);
    this.watcher.start();
    if (this.spec.tool === "lifeboat") {
      this.child = startLifeboat(this.db, this.lifeboatTo, this.dir, nodeArgs, this.spec.lifeboatArgs);
      await lifeboatReady(this.child);
    } else {
      const replica = this.remote && this.bucket ? this.remote.litestreamReplica(this.bucket) : this.target;
      writeLitestreamConfig(this.config, this.db, replica, this.spec.litestream);
      this.child = startLitestream(this.config, this.dir);
      await litestreamReady(this.child);
    }
  }

  /** WAL objects on the target now, ordered by when they appeared (then by name). */
  segmentPaths(): string[] {
    const paths = this.watcher.present().filter((p) => isSegmentPath(this.spec.tool, p));
    const seen = (p: string) => this.watcher.firstSeen.get(p) ?? Number.POSITIVE_INFINITY;
    return paths.sort((a, b) => seen(a) - seen(b) || (a < b ? -1 : a > b ? 1 : 0));
  }

  decode(path: string): ReplicaObject {
    let o = this.#decoded.get(path);
    if (!o) {
      o = readReplicaObject(this.spec.tool, this.target, path, this.watcher.firstSeen.get(path));
      this.#decoded.set(path, o);
    }
    return o;
  }

  /**
   * Snapshots on the target with the writer rows they hold. A replicator that starts a new
   * generation mid-run (Lifeboat after an emergency checkpoint, Litestream after losing WAL
   * continuity) makes the writer's transactions durable through that snapshot, not through WAL
   * objects. Lifeboat: the manifest (its commit point) lists `bench_seq`'s row count; Litestream:
   * the `.snapshot.lz4` is decoded and queried. Rows are 1..N, so the row count is the highest seq.
   */
  snapshots(): SnapshotInfo[] {
    const out: SnapshotInfo[] = [];
    for (const path of this.watcher.present()) {
      const isLifeboat = this.spec.tool === "lifeboat" && /\/snapshots\/[0-9a-f]{16}\.json$/.test(path);
      const isLitestream = this.spec.tool === "litestream" && /\/snapshots\/[0-9a-f]+\.snapshot\.lz4$/.test(path);
      if (!isLifeboat && !isLitestream) continue;
      let info = this.#snapshots.get(path);
      if (!info) {
        const full = join(this.target, path);
        const generation = /generations\/([^/]+)\//.exec(path)?.[1] ?? "";
        let rows = 0;
        let position = 0;
        if (isLifeboat) {
          const m = JSON.parse(readFileSync(full, "utf8")) as {
            position: number;
            source: { tables: { name: string; rows: number }[] };
          };
          rows = m.source.tables.find((t) => t.name === "bench_seq")?.rows ?? 0;
          position = m.position;
        } else {
          const temp = join(this.dir, `snapshot-probe-${this.#snapshots.size}.db`);
          writeFileSync(temp, decodeLz4Frames(readFileSync(full)));
          rows = seqStats(temp).maxSeq;
          rmSync(temp, { force: true });
        }
        info = {
          path,
          generation,
          position,
          maxSeq: rows,
          at: this.watcher.firstSeen.get(path) ?? statSync(full).mtimeMs,
        };
        this.#snapshots.set(path, info);
      }
      out.push(info);
    }
    return out.sort((a, b) => a.at - b.at);
  }

  /** Highest writer sequence number on the target, and when it got there. Newest WAL objects first (Litestream's own writes carry no marker), then snapshots. */
  highestSeq(): { seq: number; at: number | undefined } {
    const paths = this.segmentPaths();
    let seq = 0;
    let at: number | undefined;
    for (let i = paths.length - 1; i >= 0; i--) {
      const o = this.decode(paths[i]!);
      if (o.maxSeq > 0) {
        // The first object holding that seq is the one that made it durable.
        seq = o.maxSeq;
        at = o.seenAt ?? o.mtimeMs; // mtime when the watcher missed it (they agree to a few ms)
        for (let k = i - 1; k >= 0; k--) {
          const earlier = this.decode(paths[k]!);
          if (earlier.maxSeq >= o.maxSeq) at = earlier.seenAt ?? earlier.mtimeMs;
          else break;
        }
        break;
      }
    }
    for (const snap of this.snapshots()) {
      if (snap.maxSeq > seq) {
        seq = snap.maxSeq;
        at = snap.at;
      } else if (snap.maxSeq === seq && seq > 0 && (at === undefined || snap.at < at)) at = snap.at;
    }
    return { seq, at };
  }

  /** Waits until writer transaction `seq` is durable on the target; returns when it got there. */
  async waitCovered(seq: number, timeoutMs: number): Promise<{ at: number | undefined; covered: boolean }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const h = this.highestSeq();
      if (h.seq >= seq) return { at: h.at, covered: true };
      if (Date.now() > deadline) return { at: undefined, covered: false };
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  /** Every WAL object on the target, decoded. */
  objects(): ReplicaObject[] {
    return this.segmentPaths().map((p) => this.decode(p));
  }

  async stop(): Promise<number | null> {
    const code = await this.child.stop();
    await this.watcher.settle();
    this.watcher.close();
    return code;
  }

  /** Restores with the tool's own command into `output`; returns wall time and what the restored file holds. */
  async restore(
    output: string,
    extra: string[] = [],
  ): Promise<{ ms: number; code: number | null; rows: number; maxSeq: number; out: string }> {
    for (const suffix of ["", "-wal", "-shm"]) rmSync(output + suffix, { force: true });
    const r =
      this.spec.tool === "lifeboat"
        ? await timeCommand(
            process.execPath,
            [
              LIFEBOAT_CLI,
              "restore",
              this.db,
              "--to",
              this.lifeboatTo,
              "--output",
              output,
              "--yes",
              "--json",
              ...extra,
            ],
            this.dir,
          )
        : await timeCommand(LITESTREAM, ["restore", "-config", this.config, "-o", output, ...extra, this.db], this.dir);
    if (r.code !== 0) return { ms: r.ms, code: r.code, rows: -1, maxSeq: -1, out: r.out };
    const s = seqStats(output);
    return { ms: r.ms, code: r.code, rows: s.rows, maxSeq: s.maxSeq, out: r.out };
  }
}
