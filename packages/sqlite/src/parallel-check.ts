/**
 * The integrity check of a snapshot, run on another thread while the snapshot's body streams.
 *
 * A worker opens its own read-only connection C beforehand. While the snapshot is fixed (the
 * write lock held in WAL mode, or B's SHARED lock in rollback-journal mode), C starts its read
 * transaction: it then sees exactly B's snapshot, and checks it on the second core while the main
 * thread reads, hashes and writes the image. Connections of one process share SQLite's lock
 * bookkeeping, so C's close never drops B's locks.
 */
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { IntegrityMode, IntegrityResult } from "@lifeboat/core";
import { integrityResultFrom, MAX_INTEGRITY_MESSAGES } from "./inspect.js";

/** Below this size a thread costs more than it saves: the check runs after the body instead. */
export const PARALLEL_CHECK_MIN_BYTES = 64 * 1024 * 1024;

const driverPath = createRequire(import.meta.url).resolve("better-sqlite3");

// CommonJS source run with `eval: true`, so tests against the TypeScript source need no build.
const WORKER_SOURCE = `
const { parentPort, workerData } = require("node:worker_threads");
const Database = require(workerData.driverPath);
const fail = (error) => parentPort.postMessage({ type: "error", message: String((error && error.message) || error) });
let db = null;
try {
  db = new Database(workerData.path, { readonly: true, fileMustExist: true, timeout: workerData.busyTimeoutMs });
  parentPort.postMessage({ type: "ready" });
} catch (error) {
  fail(error);
}
if (db) {
  parentPort.once("message", (message) => {
    try {
      if (message !== "pin") return;
      db.exec("BEGIN");
      db.prepare("SELECT count(*) FROM sqlite_schema").get();
      parentPort.postMessage({ type: "pinned" });
      const messages = db.prepare("PRAGMA " + workerData.check + "(" + workerData.max + ")").pluck().all();
      parentPort.postMessage({ type: "result", messages });
    } catch (error) {
      fail(error);
    } finally {
      db.close();
    }
  });
}
`;

type WorkerMessage =
  | { readonly type: "ready" }
  | { readonly type: "pinned" }
  | { readonly type: "result"; readonly messages: string[] }
  | { readonly type: "error"; readonly message: string };

/** A worker with its connection open, waiting to pin. */
export class ParallelCheck {
  readonly #worker: Worker;
  readonly #mode: Exclude<IntegrityMode, "off">;
  readonly #next: ((message: WorkerMessage) => void)[] = [];
  #result: Promise<IntegrityResult> | null = null;

  private constructor(worker: Worker, mode: Exclude<IntegrityMode, "off">) {
    this.#worker = worker;
    this.#mode = mode;
    worker.on("message", (message: WorkerMessage) => this.#deliver(message));
    worker.on("error", (error) => this.#deliver({ type: "error", message: error.message }));
    worker.on("exit", () => {
      for (const waiter of this.#next.splice(0)) waiter({ type: "error", message: "the check thread exited" });
    });
    worker.unref(); // only awaited messages keep the process alive, never an abandoned check
  }

  #message(): Promise<WorkerMessage> {
    this.#worker.ref();
    return new Promise((resolve) => this.#next.push(resolve));
  }

  #deliver(message: WorkerMessage): void {
    this.#next.shift()?.(message);
    if (this.#next.length === 0) this.#worker.unref();
  }

  /** Starts the worker and opens its connection; null if that fails (the caller checks on B). */
  static async open(path: string, mode: IntegrityMode, busyTimeoutMs: number): Promise<ParallelCheck | null> {
    if (mode === "off") return null;
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      execArgv: [],
      workerData: {
        driverPath,
        path,
        busyTimeoutMs,
        check: mode === "full" ? "integrity_check" : "quick_check",
        max: MAX_INTEGRITY_MESSAGES,
      },
    });
    const check = new ParallelCheck(worker, mode);
    const ready = await check.#message();
    if (ready.type !== "ready") {
      check.cancel();
      return null;
    }
    return check;
  }

  /**
   * Starts C's read transaction. Call only while the snapshot is fixed (no commit can happen).
   * False if it failed: then cancel and check on B.
   */
  async pin(): Promise<boolean> {
    const pinned = this.#message(); // messages arrive in this order
    const result = this.#message();
    this.#worker.postMessage("pin");
    if ((await pinned).type !== "pinned") return false;
    const check = this.#mode === "full" ? "integrity_check" : "quick_check";
    this.#result = result.then((m) => {
      if (m.type !== "result")
        throw new Error(`the integrity check thread failed: ${"message" in m ? m.message : m.type}`);
      return integrityResultFrom(check, m.messages);
    });
    this.#result.catch(() => {});
    return true;
  }

  /** The check's result (after a successful `pin`). */
  result(): Promise<IntegrityResult> {
    if (!this.#result) return Promise.reject(new Error("the integrity check thread was not pinned"));
    return this.#result;
  }

  /** Stops the worker (its connection closes with it). */
  cancel(): void {
    void this.#worker.terminate();
  }
}
