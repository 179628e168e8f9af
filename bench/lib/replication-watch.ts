/**
 * Watches a storage target directory tree (inotify through fs.watch, one watcher per directory,
 * added as directories appear) and records, per object, when it first became visible under its
 * final name, plus every object write (a new name, or a name whose inode/size/mtime changed) and
 * every delete. Temp files (`*.tmp`: Lifeboat's `.x.lifeboat-put-….tmp`, Litestream's `x.tmp`)
 * are not objects. Both tools write objects as temp file + fsync + rename, so "visible under
 * its final name" is "durable on the target".
 *
 * Event times are taken in the callback (Date.now()), so they include the watching process's
 * event-loop delay; the bench keeps that process idle while it measures.
 */
import { type FSWatcher, lstatSync, readdirSync, watch } from "node:fs";
import { join, relative } from "node:path";

/** Writes and deletes among `events` in [from, to) whose path passes `filter`. */
export function countEvents(
  events: readonly ObjectEvent[],
  from: number,
  to: number,
  filter: (path: string) => boolean = () => true,
): { puts: number; deletes: number } {
  let puts = 0;
  let deletes = 0;
  for (const e of events) {
    if (e.at < from || e.at >= to || !filter(e.path)) continue;
    if (e.kind === "put") puts++;
    else deletes++;
  }
  return { puts, deletes };
}

export interface ObjectEvent {
  readonly at: number;
  readonly kind: "put" | "delete";
  /** Path relative to the watched root. */
  readonly path: string;
}

/**
 * What the bench needs from whatever watches a target (a directory: TreeWatcher; a bucket:
 * S3Watcher in replication-s3.ts). Paths are relative to the target's root (object keys).
 */
export interface TargetWatcher {
  readonly events: ObjectEvent[];
  /** First time each object was seen under its final name (relative path → ms). */
  readonly firstSeen: Map<string, number>;
  start(): void;
  /** Objects present now, by relative path. */
  present(): string[];
  /** Counts writes and deletes in [from, to). */
  count(from: number, to: number, filter?: (path: string) => boolean): { puts: number; deletes: number };
  /** Called once the replicator has stopped: catch up with the target's final state. */
  settle(): Promise<void>;
  close(): void;
}

export class TreeWatcher implements TargetWatcher {
  readonly root: string;
  readonly events: ObjectEvent[] = [];
  /** First time each object was seen under its final name (relative path → ms). */
  readonly firstSeen = new Map<string, number>();
  readonly #known = new Map<string, string>();
  readonly #watchers = new Map<string, FSWatcher>();
  #closed = false;

  constructor(root: string) {
    this.root = root;
  }

  start(): void {
    this.#watchDir(this.root, Date.now());
  }

  #isTemp(name: string): boolean {
    return name.endsWith(".tmp");
  }

  #watchDir(dir: string, at: number): void {
    if (this.#closed || this.#watchers.has(dir)) return;
    let w: FSWatcher;
    try {
      w = watch(dir, (_event, name) => {
        const now = Date.now();
        if (name) this.#check(join(dir, name.toString()), now);
        else this.#scan(dir, now);
      });
    } catch {
      return; // gone already
    }
    w.on("error", () => {});
    this.#watchers.set(dir, w);
    this.#scan(dir, at); // whatever appeared before the watch was in place
  }

  #scan(dir: string, at: number): void {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) this.#check(join(dir, name), at);
  }

  #check(path: string, at: number): void {
    const name = path.slice(path.lastIndexOf("/") + 1);
    if (this.#isTemp(name)) return;
    const info = lstatSync(path, { throwIfNoEntry: false });
    const rel = relative(this.root, path);
    if (info?.isDirectory()) {
      this.#watchDir(path, at);
      return;
    }
    const before = this.#known.get(rel);
    if (!info) {
      if (before !== undefined) {
        this.#known.delete(rel);
        this.events.push({ at, kind: "delete", path: rel });
      }
      return;
    }
    if (!info.isFile()) return;
    const signature = `${info.ino}:${info.size}:${info.mtimeMs}`;
    if (signature === before) return;
    this.#known.set(rel, signature);
    if (!this.firstSeen.has(rel)) this.firstSeen.set(rel, at);
    this.events.push({ at, kind: "put", path: rel });
  }

  /** Objects present now, by relative path (a final scan also catches anything the watch missed). */
  present(): string[] {
    const out: string[] = [];
    const walk = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true })) {
        const full = join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else if (entry.isFile() && !this.#isTemp(entry.name)) out.push(relative(this.root, full));
      }
    };
    walk(this.root);
    return out;
  }

  /** Counts writes and deletes in [from, to). */
  count(from: number, to: number, filter: (path: string) => boolean = () => true): { puts: number; deletes: number } {
    return countEvents(this.events, from, to, filter);
  }

  /** Events arrive as they happen and `present()` scans the directory: nothing to catch up. */
  async settle(): Promise<void> {}

  close(): void {
    this.#closed = true;
    for (const w of this.#watchers.values()) w.close();
    this.#watchers.clear();
  }
}
