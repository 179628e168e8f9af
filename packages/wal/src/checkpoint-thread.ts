/**
 * PASSIVE checkpoints on a worker thread. A checkpoint copies up to `checkpointPages` pages into
 * the database file and fsyncs it: done synchronously on the main thread (better-sqlite3 is
 * synchronous) it held up shipping and uploads for as long, which showed as lag spikes. On its own
 * thread, with its own connection, the replicator keeps shipping meanwhile. Safe: a checkpoint
 * never copies past a reader's mark, and the replicator's pins (on the main thread) never mark
 * past what it has shipped. Connections of one process share SQLite's lock bookkeeping.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";

const driverPath = createRequire(import.meta.url).resolve("better-sqlite3");

// CommonJS source run with `eval: true`, so tests against the TypeScript source need no build.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driverPath);
let db = null;
const open = () => {
  if (db) return db;
  db = new Database(workerData.path, { fileMustExist: true, timeout: workerData.busyTimeoutMs });
  db.pragma("wal_autocheckpoint = 0");
  return db;
};
parentPort.on("message", (message) => {
  if (message === "close") {
    if (db) db.close();
    db = null;
    parentPort.close();
    return;
  }
  try {
    const row = open().pragma("wal_checkpoint(PASSIVE)")[0];
    parentPort.postMessage({ ok: true, row });
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

/** One worker with one connection, for the replicator's PASSIVE checkpoints (one at a time). */
export class CheckpointThread {
  readonly #worker: Worker;
  #pending: ((row: CheckpointRow | undefined) => void) | null = null;
  #exited = false;

  constructor(path: string, busyTimeoutMs = 5000) {
    this.#worker = new Worker(WORKER_SOURCE, {
      eval: true,
      execArgv: [],
      workerData: { driverPath, path, busyTimeoutMs },
    });
    this.#worker.unref();
    const settle = (row: CheckpointRow | undefined) => {
      const pending = this.#pending;
      this.#pending = null;
      this.#worker.unref();
      pending?.(row);
    };
    this.#worker.on("message", (m: { ok: boolean; row?: CheckpointRow }) => settle(m.ok ? m.row : undefined));
    this.#worker.on("error", () => settle(undefined));
    this.#worker.on("exit", () => {
      this.#exited = true;
      settle(undefined);
    });
  }

  /** The thread ended (closed, or died): make a new one. */
  get exited(): boolean {
    return this.#exited;
  }

  /** `PRAGMA wal_checkpoint(PASSIVE)`'s row; undefined if it failed (busy, or the thread is gone). */
  passive(): Promise<CheckpointRow | undefined> {
    if (this.#pending || this.#exited) return Promise.resolve(undefined); // one at a time
    this.#worker.ref();
    return new Promise((resolve) => {
      this.#pending = resolve;
      this.#worker.postMessage("passive");
    });
  }

  /** Closes the connection and ends the thread. */
  async close(): Promise<void> {
    if (this.#exited) return;
    const exited = new Promise<void>((resolve) => this.#worker.once("exit", () => resolve()));
    this.#worker.postMessage("close");
    const timer = setTimeout(() => void this.#worker.terminate(), 5000);
    await exited;
    clearTimeout(timer);
  }
}
