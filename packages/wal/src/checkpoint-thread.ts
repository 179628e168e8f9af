/**
 * The replicator's checkpoint helper, on a worker thread with its own connections.
 *
 * - PASSIVE checkpoints: a checkpoint copies up to `checkpointPages` pages into the database file
 *   and fsyncs it. Done synchronously on the main thread (better-sqlite3 is synchronous) it held
 *   up shipping and uploads for as long, which showed as lag spikes. Safe beside the main thread:
 *   a checkpoint never copies past a reader's mark, and the replicator's pins never mark past
 *   what it has shipped. Connections of one process share SQLite's lock bookkeeping.
 * - The write lock, for a checkpoint that must complete while the app commits without pause.
 *   SQLite's busy handler sleeps between attempts (1, 2, 5, 10 ms...), and a writer that commits
 *   back to back frees the lock for microseconds at a time, so it would wait in vain; the thread
 *   instead tries `BEGIN IMMEDIATE` in a tight loop for a bounded time, which catches such a gap
 *   within milliseconds, and without blocking the main thread's event loop meanwhile.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

const driverPath = createRequire(import.meta.url).resolve("better-sqlite3");

// CommonJS source run with `eval: true`, so tests against the TypeScript source need no build.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const { performance } = require("node:perf_hooks");
const Database = require(workerData.driverPath);
const connections = {};
const open = (name, timeout) => {
  if (connections[name]) return connections[name];
  const db = new Database(workerData.path, { fileMustExist: true, timeout });
  db.pragma("wal_autocheckpoint = 0");
  connections[name] = db;
  return db;
};
let lockedAt = 0;
const handlers = {
  passive: () => ({ row: open("checkpoint", workerData.busyTimeoutMs).pragma("wal_checkpoint(PASSIVE)")[0] }),
  truncate: ({ timeoutMs }) => {
    const db = open("checkpoint", workerData.busyTimeoutMs);
    db.pragma("busy_timeout = " + Math.max(0, Math.floor(timeoutMs)));
    try {
      return { row: db.pragma("wal_checkpoint(TRUNCATE)")[0] };
    } finally {
      db.pragma("busy_timeout = " + workerData.busyTimeoutMs);
    }
  },
  lock: ({ spinMs }) => {
    const db = open("lock", 0);
    if (db.inTransaction) db.exec("ROLLBACK");
    const started = performance.now();
    for (let attempts = 1; ; attempts++) {
      try {
        db.exec("BEGIN IMMEDIATE");
        lockedAt = performance.now();
        return { locked: true, attempts, waitedMs: lockedAt - started };
      } catch (error) {
        if (!String(error && error.code).startsWith("SQLITE_BUSY")) throw error;
        if (performance.now() - started >= spinMs) return { locked: false, attempts, waitedMs: performance.now() - started };
      }
    }
  },
  unlock: () => {
    const db = connections.lock;
    if (!db || !db.inTransaction) return { heldMs: 0 };
    db.exec("ROLLBACK"); // it wrote nothing
    return { heldMs: performance.now() - lockedAt };
  },
};
parentPort.on("message", (message) => {
  if (message.type === "close") {
    for (const db of Object.values(connections)) {
      try { if (db.inTransaction) db.exec("ROLLBACK"); db.close(); } catch {}
    }
    parentPort.close();
    return;
  }
  try {
    parentPort.postMessage({ ok: true, ...handlers[message.type](message) });
  } catch (error) {
    parentPort.postMessage({ ok: false, message: String((error && error.message) || error) });
  }
});
`;

export interface CheckpointRow {
  readonly busy: number;
  readonly log: number;
  readonly checkpointed: number;
}

export interface LockAttempt {
  /** The thread holds the write lock: no commit can happen until `unlock()`. */
  readonly locked: boolean;
  readonly waitedMs: number;
  readonly attempts: number;
}

type Reply = { ok: true; [key: string]: unknown } | { ok: false; message: string };

/** One worker, one request at a time. */
export class CheckpointThread {
  readonly #worker: Worker;
  #pending: ((reply: Reply) => void) | null = null;
  #exited = false;

  constructor(path: string, busyTimeoutMs = 5000) {
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      execArgv: [],
      workerData: { driverPath, path, busyTimeoutMs },
    });
    this.#worker.unref();
    const settle = (reply: Reply) => {
      const pending = this.#pending;
      this.#pending = null;
      this.#worker.unref();
      pending?.(reply);
    };
    this.#worker.on("message", settle);
    this.#worker.on("error", (error) => settle({ ok: false, message: String(error) }));
    this.#worker.on("exit", () => {
      this.#exited = true;
      settle({ ok: false, message: "the checkpoint thread exited" });
    });
  }

  /** The thread ended (closed, or died): make a new one. */
  get exited(): boolean {
    return this.#exited;
  }

  /** True while a request runs. */
  get busy(): boolean {
    return this.#pending !== null;
  }

  #request(message: { type: string; [key: string]: unknown }): Promise<Reply> {
    if (this.#pending || this.#exited) return Promise.resolve({ ok: false, message: "busy" });
    this.#worker.ref();
    return new Promise((resolve) => {
      this.#pending = resolve;
      this.#worker.postMessage(message);
    });
  }

  /** `PRAGMA wal_checkpoint(PASSIVE)`'s row; undefined if it failed (busy, or the thread is gone). */
  async passive(): Promise<CheckpointRow | undefined> {
    const reply = await this.#request({ type: "passive" });
    return reply.ok ? (reply.row as CheckpointRow) : undefined;
  }

  /**
   * `PRAGMA wal_checkpoint(TRUNCATE)`'s row; undefined if it failed. It waits up to `timeoutMs`
   * for writers, then for readers while it holds the write lock: for rare repairs only.
   */
  async truncate(timeoutMs: number): Promise<CheckpointRow | undefined> {
    const reply = await this.#request({ type: "truncate", timeoutMs });
    return reply.ok ? (reply.row as CheckpointRow) : undefined;
  }

  /**
   * Takes the database's write lock, trying for at most `spinMs` (a busy loop on the thread).
   * Throws if the thread failed; `locked: false` if the app held the lock all that time.
   */
  async lock(spinMs: number): Promise<LockAttempt> {
    const reply = await this.#request({ type: "lock", spinMs });
    if (!reply.ok) throw new Error(`the checkpoint thread could not take the write lock: ${reply.message}`);
    return reply as unknown as LockAttempt;
  }

  /** Releases the write lock; resolves to how long the thread held it (ms). */
  async unlock(): Promise<number> {
    const reply = await this.#request({ type: "unlock" });
    if (!reply.ok) throw new Error(`the checkpoint thread could not release the write lock: ${reply.message}`);
    return reply.heldMs as number;
  }

  /** Closes the connections (releasing any lock) and ends the thread. */
  async close(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.#worker.once("exit", () => resolve()));
    this.#worker.postMessage({ type: "close" });
    const timer = setTimeout(() => void this.#worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }
}
