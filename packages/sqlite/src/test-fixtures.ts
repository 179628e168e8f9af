/**
 * Helpers for this package's tests (not exported from the package): temp directories, database
 * dumps, rebuilding a database image from a WAL, rewriting a WAL's checksum byte order, and
 * child processes that use a database the way an application does.
 */
import { spawn } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { checksumFrame, needsSwap } from "./wal-checksum.js";
import {
  parseWalHeader,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  WAL_MAGIC_BIG_ENDIAN,
  WAL_MAGIC_LITTLE_ENDIAN,
  type WalTransaction,
  walChecksum,
  walFrameOffset,
} from "./wal-reader.js";

/** Path of the better-sqlite3 module, for child processes. */
export const BETTER_SQLITE3 = createRequire(import.meta.url).resolve("better-sqlite3");

/** The monorepo root. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** Absolute path of this package's entry point (TypeScript source), for child processes. */
export const PACKAGE_ENTRY = fileURLToPath(new URL("./index.ts", import.meta.url));

/** Another user to run child processes as, when running as root (root ignores file modes). */
export const OTHER_USER: { uid?: number; gid?: number } = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};

/** A fresh directory under the OS temp dir; `cleanup()` removes it. */
export function tempDir(prefix = "lifeboat-sqlite-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  // Child processes running as another user must reach files in here.
  chmodSync(dir, 0o755);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A WAL-mode connection that never checkpoints on its own. */
export function openWalDatabase(path: string, pageSize = 4096): Database.Database {
  const db = new Database(path);
  db.pragma(`page_size = ${pageSize}`);
  db.pragma("journal_mode = WAL");
  db.pragma("wal_autocheckpoint = 0");
  return db;
}

/** Every table's rows in a stable order, for comparing logical content. */
export function dumpDatabase(db: Database.Database): Record<string, unknown[]> {
  const out: Record<string, unknown[]> = {};
  const tables = db
    .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .pluck()
    .all() as string[];
  for (const table of tables) {
    const q = `"${table.replaceAll('"', '""')}"`;
    const columns = (db.prepare(`PRAGMA table_info(${q})`).all() as unknown[]).length;
    const order = Array.from({ length: columns }, (_, i) => i + 1).join(", ");
    out[table] = db
      .prepare(`SELECT * FROM ${q} ORDER BY ${order}`)
      .raw()
      .all()
      .map((row) => (row as unknown[]).map((v) => (Buffer.isBuffer(v) ? `blob:${v.toString("hex")}` : v)));
  }
  out["<schema>"] = db.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY name").raw().all();
  return out;
}

/** Opens `path` read-only, dumps it, checks its integrity, closes it. */
export function dumpFile(path: string): { dump: Record<string, unknown[]>; integrity: string[] } {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return {
      dump: dumpDatabase(db),
      integrity: db.prepare("PRAGMA integrity_check").pluck().all() as string[],
    };
  } finally {
    db.close();
  }
}

/**
 * Rebuilds a rollback-journal database image: `base` (the database file) with the page images
 * of `transactions` applied in order, truncated to the last one's size.
 */
export function rebuildImage(
  base: Buffer,
  wal: Buffer,
  pageSize: number,
  transactions: readonly WalTransaction[],
): Buffer {
  let pages = Math.floor(base.byteLength / pageSize);
  let image = Buffer.from(base);
  for (const txn of transactions) {
    const size = txn.commitSize * pageSize;
    if (image.byteLength < size) image = Buffer.concat([image, Buffer.alloc(size - image.byteLength)]);
    for (let i = 0; i < txn.pgnos.length; i++) {
      const start = walFrameOffset(txn.firstFrame + i, pageSize) + WAL_FRAME_HEADER_SIZE;
      wal.copy(image, (txn.pgnos[i]! - 1) * pageSize, start, start + pageSize);
    }
    pages = txn.commitSize;
  }
  image = image.subarray(0, pages * pageSize);
  image[18] = 1;
  image[19] = 1;
  return image;
}

/**
 * Rewrites a valid WAL with the other checksum byte order (magic ...83 for big-endian): new
 * header checksum and a new checksum chain over every frame up to the first invalid one.
 */
export function rewriteWalChecksums(wal: Buffer, bigEndian: boolean): Buffer {
  const header = parseWalHeader(wal);
  if (!header) throw new Error("not a valid WAL");
  const out = Buffer.from(wal);
  // Own, aligned memory for the word view.
  const aligned = new Uint8Array(out.byteLength);
  out.writeUInt32BE(bigEndian ? WAL_MAGIC_BIG_ENDIAN : WAL_MAGIC_LITTLE_ENDIAN, 0);
  let [s0, s1] = walChecksum(out.subarray(0, 24), 0, 0, bigEndian);
  out.writeUInt32BE(s0, 24);
  out.writeUInt32BE(s1, 28);
  const frameSize = WAL_FRAME_HEADER_SIZE + header.pageSize;
  // Recompute the original chain alongside, to stop where the original stops being valid.
  let o0 = header.checksum1;
  let o1 = header.checksum2;
  aligned.set(wal);
  const words = new Int32Array(aligned.buffer);
  const sum = new Uint32Array(2);
  for (let offset = WAL_HEADER_SIZE; offset + frameSize <= wal.byteLength; offset += frameSize) {
    const w = offset / 4;
    const frameWords = frameSize / 4;
    checksumFrame(words, w, frameWords, o0, o1, needsSwap(header.bigEndianChecksum), sum);
    if (sum[0] !== wal.readUInt32BE(offset + 16) || sum[1] !== wal.readUInt32BE(offset + 20)) break;
    [o0, o1] = [sum[0]!, sum[1]!];
    checksumFrame(words, w, frameWords, s0, s1, needsSwap(bigEndian), sum);
    [s0, s1] = [sum[0]!, sum[1]!];
    out.writeUInt32BE(s0, offset + 16);
    out.writeUInt32BE(s1, offset + 20);
  }
  return out;
}

/** Copies a database and a WAL image into `dir` as a fresh pair and returns SQLite's view of it. */
export function openCopy(
  dir: string,
  name: string,
  dbBytes: Buffer,
  walBytes: Buffer | null,
): { dump: Record<string, unknown[]>; integrity: string[] } {
  const path = join(dir, name);
  writeFileSync(path, dbBytes);
  if (walBytes) writeFileSync(`${path}-wal`, walBytes);
  return dumpFile(path);
}

/** A running child process with helpers to wait for its output. */
export interface Child {
  readonly pid: number;
  readonly output: () => string;
  /** Resolves when the child printed `text`. */
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  /** Sends SIGTERM (or `signal`) and resolves with the exit code and output. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; output: string }>;
  /** Resolves when it exits by itself. */
  exited(): Promise<{ code: number | null; output: string }>;
}

/**
 * Runs `script` (saved as `dir/fileName`: `.cjs` for CommonJS, `.mjs` for ESM) in a child Node
 * process (`BETTER_SQLITE3` in its environment says where better-sqlite3 is). `uid`/`gid` run it
 * as another user; `typescript` lets it import this package's TypeScript source.
 */
export function runChild(
  dir: string,
  fileName: string,
  script: string,
  args: readonly string[],
  options: { uid?: number; gid?: number; typescript?: boolean } = {},
): Child {
  const name = fileName;
  const file = join(dir, fileName);
  writeFileSync(file, script);
  chmodSync(file, 0o644);
  const execArgv = options.typescript ? ["--conditions=source", "--import", "tsx"] : [];
  const child = spawn(process.execPath, [...execArgv, file, ...args], {
    env: { ...process.env, BETTER_SQLITE3 },
    stdio: ["ignore", "pipe", "pipe"],
    uid: options.uid,
    gid: options.gid,
    // tsx is resolved from the repository root.
    cwd: REPO_ROOT,
  });
  let out = "";
  const waiters: { text: string; resolve: () => void }[] = [];
  const onData = (data: Buffer) => {
    out += data.toString();
    for (const w of [...waiters]) {
      if (out.includes(w.text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve();
      }
    }
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exit = new Promise<{ code: number | null; output: string }>((resolve) => {
    child.on("exit", (code) => resolve({ code, output: out }));
  });
  return {
    pid: child.pid ?? -1,
    output: () => out,
    waitFor(text, timeoutMs = 20_000) {
      if (out.includes(text)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`child ${name} did not print ${text}; output:\n${out}`)),
          timeoutMs,
        );
        waiters.push({
          text,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        void exit.then(() => {
          clearTimeout(timer);
          if (!out.includes(text)) reject(new Error(`child ${name} exited without printing ${text}; output:\n${out}`));
        });
      });
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exit;
    },
    exited: () => exit,
  };
}
