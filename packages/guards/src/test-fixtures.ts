/**
 * Helpers for this package's tests (not exported, not built): temp directories, small databases,
 * content dumps, a configured Lifeboat with every layer, and child processes that use a database
 * the way an application does (optionally as another user).
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { createLifeboat, type DatabaseContext, type Lifeboat } from "@lifeboat/core";
import { sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import Database from "better-sqlite3";
import { guardPlugins } from "./index.js";

/** Path of the better-sqlite3 module, for child processes. */
export const BETTER_SQLITE3 = createRequire(import.meta.url).resolve("better-sqlite3");
/** The monorepo root (tsx is resolved from there). */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
/** This package's entry point (TypeScript source), for child processes. */
export const PACKAGE_ENTRY = fileURLToPath(new URL("./index.ts", import.meta.url));
/** An unprivileged user: root ignores file modes, so "can a user write it" needs someone else. */
export const NOBODY = { uid: 65534, gid: 65534 } as const;

/** A fresh directory other users may enter; `cleanup()` removes it. */
export function tempDir(prefix = "lifeboat-guards-"): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export const ACCOUNTS = 20;
export const INITIAL_BALANCE = 1000;

/**
 * A small bank: `accounts` (ACCOUNTS rows, INITIAL_BALANCE each), `ledger` (transfers), `notes`
 * (`notes` rows of text). Every transfer moves money between accounts and is logged, so a
 * consistent image satisfies `bankIsConsistent`.
 */
export function makeBank(path: string, options: { journalMode?: "wal" | "delete"; notes?: number } = {}): void {
  const db = new Database(path);
  try {
    db.pragma(`journal_mode = ${options.journalMode ?? "wal"}`);
    db.exec(`
      CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance INTEGER NOT NULL);
      CREATE TABLE ledger (id INTEGER PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, amount INTEGER NOT NULL, memo TEXT);
      CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
      CREATE INDEX ledger_src ON ledger (src);
      PRAGMA user_version = 3;`);
    const account = db.prepare("INSERT INTO accounts (owner, balance) VALUES (?, ?)");
    const note = db.prepare("INSERT INTO notes (body) VALUES (?)");
    db.transaction(() => {
      for (let i = 1; i <= ACCOUNTS; i++) account.run(`owner ${i}`, INITIAL_BALANCE);
      for (let i = 1; i <= (options.notes ?? 200); i++) note.run(`note ${i}: ${"x".repeat(i % 50)}`);
    })();
  } finally {
    db.close();
  }
}

/** True when every balance equals its starting balance plus what the ledger moved. */
export function bankIsConsistent(path: string): boolean {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const wrong = db
      .prepare(
        `SELECT count(*) FROM accounts a WHERE a.balance != ${INITIAL_BALANCE}
           + coalesce((SELECT sum(amount) FROM ledger WHERE dst = a.id), 0)
           - coalesce((SELECT sum(amount) FROM ledger WHERE src = a.id), 0)`,
      )
      .pluck()
      .get() as number;
    const total = db.prepare("SELECT sum(balance) FROM accounts").pluck().get() as number;
    return wrong === 0 && total === ACCOUNTS * INITIAL_BALANCE;
  } finally {
    db.close();
  }
}

/** sha256 of a file's bytes, or null when it does not exist. */
export function sha256Of(path: string): string | null {
  if (!existsSync(path)) return null;
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** Every row of every table (and user_version), in a stable order: the logical content. */
export function dumpDatabase(path: string): Record<string, unknown> {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const out: Record<string, unknown> = { user_version: db.pragma("user_version", { simple: true }) };
    const tables = db
      .prepare("SELECT name, sql FROM sqlite_schema WHERE type IN ('table', 'index', 'trigger', 'view') ORDER BY name")
      .all() as { name: string; sql: string | null }[];
    out.schema = tables;
    for (const { name } of db
      .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
      .all() as { name: string }[]) {
      out[`table:${name}`] = db.prepare(`SELECT * FROM "${name.replaceAll('"', '""')}" ORDER BY rowid`).all();
    }
    return out;
  } finally {
    db.close();
  }
}

/** Runs SQL on a database (opening and closing a connection). */
export function sql(path: string, text: string): void {
  const db = new Database(path);
  try {
    db.exec(text);
  } finally {
    db.close();
  }
}

/** The first column of the first row of a query. */
export function scalar(path: string, query: string): unknown {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return db.prepare(query).pluck().get();
  } finally {
    db.close();
  }
}

export interface TestLifeboat {
  readonly lb: Lifeboat;
  readonly db: DatabaseContext;
  /** The local target's directory. */
  readonly backups: string;
}

/** A Lifeboat for one database with a local target and the given guard entries (every layer registered). */
export async function makeLifeboat(options: {
  readonly dir: string;
  readonly path: string;
  readonly environment?: string;
  readonly guards?: readonly Record<string, unknown>[];
  readonly name?: string;
}): Promise<TestLifeboat> {
  const backups = join(options.dir, "backups");
  const lb = createLifeboat({
    config: {
      databases: [
        {
          name: options.name ?? "app",
          path: options.path,
          ...(options.environment ? { environment: options.environment } : {}),
          targets: [{ type: "local", path: backups }],
          guards: (options.guards ?? []) as { type: string }[],
        },
      ],
    },
    plugins: [sqliteSourcePlugin, localStoragePlugin, ...guardPlugins],
    baseDir: options.dir,
    onHookError: () => {},
  });
  return { lb, db: await lb.database(), backups };
}

/** A running child process with helpers to wait for its output. */
export interface Child {
  readonly pid: number;
  waitFor(text: string, timeoutMs?: number): Promise<void>;
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; output: string }>;
  exited(): Promise<{ code: number | null; output: string }>;
}

/**
 * Runs `script` (saved as `dir/fileName`; `.cjs`, or `.mts` importing `PACKAGE_ENTRY`) in a child
 * Node process with `BETTER_SQLITE3` in its environment; optionally as another user, or under
 * `setpriv` arguments (`prefix`).
 */
export function runChild(
  dir: string,
  fileName: string,
  script: string,
  args: readonly string[],
  options: { uid?: number; gid?: number; prefix?: readonly string[] } = {},
): Child {
  const file = join(dir, fileName);
  writeFileSync(file, script);
  chmodSync(file, 0o644);
  const execArgv = /\.m?ts$/.test(fileName) ? ["--conditions=source", "--import", "tsx"] : [];
  const argv = [process.execPath, ...execArgv, file, ...args];
  const [command, ...rest] = options.prefix ? [...options.prefix, ...argv] : argv;
  const child = spawn(command!, rest, {
    env: { ...process.env, BETTER_SQLITE3, PACKAGE_ENTRY },
    stdio: ["ignore", "pipe", "pipe"],
    uid: options.uid,
    gid: options.gid,
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
    waitFor(text, timeoutMs = 30_000) {
      if (out.includes(text)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`child did not print ${text}; output:\n${out}`)), timeoutMs);
        waiters.push({
          text,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
        void exit.then(() => {
          clearTimeout(timer);
          if (!out.includes(text)) reject(new Error(`child exited without printing ${text}; output:\n${out}`));
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

/** A process that keeps the database open (reading once) until stopped. */
export async function holdOpen(dir: string, path: string): Promise<Child> {
  const child = runChild(
    dir,
    `hold-${Date.now()}.cjs`,
    `const Database = require(process.env.BETTER_SQLITE3);
     const db = new Database(process.argv[2]);
     db.prepare("SELECT count(*) FROM sqlite_schema").get();
     console.log("ready");
     setInterval(() => {}, 1000);`,
    [path],
  );
  await child.waitFor("ready");
  return child;
}

/** A process that keeps making bank transfers (WAL mode) until stopped; prints "ready" after the first. */
export async function startTransfers(dir: string, path: string): Promise<Child> {
  const child = runChild(
    dir,
    `transfers-${Date.now()}.cjs`,
    `const Database = require(process.env.BETTER_SQLITE3);
     const db = new Database(process.argv[2]);
     db.pragma("busy_timeout = 10000");
     const debit = db.prepare("UPDATE accounts SET balance = balance - ? WHERE id = ?");
     const credit = db.prepare("UPDATE accounts SET balance = balance + ? WHERE id = ?");
     const log = db.prepare("INSERT INTO ledger (src, dst, amount, memo) VALUES (?, ?, ?, ?)");
     const transfer = db.transaction((src, dst, amount) => {
       debit.run(amount, src);
       log.run(src, dst, amount, "m".repeat(200 + (amount % 300)));
       credit.run(amount, dst);
     });
     let n = 0;
     const tick = () => {
       for (let i = 0; i < 20; i++) {
         n++;
         transfer(1 + (n % ${ACCOUNTS}), 1 + ((n * 7) % ${ACCOUNTS}), 1 + (n % 13));
       }
       if (n === 20) console.log("ready");
       setImmediate(tick);
     };
     tick();`,
    [path],
  );
  await child.waitFor("ready");
  return child;
}

/** Runs a short script synchronously as another user; returns its exit code and output. */
export function runAs(
  user: { uid: number; gid: number },
  dir: string,
  script: string,
  args: readonly string[],
): { code: number | null; output: string } {
  const file = join(dir, `as-${user.uid}-${Date.now()}.cjs`);
  writeFileSync(file, script);
  chmodSync(file, 0o644);
  const result = spawnSync(process.execPath, [file, ...args], {
    env: { ...process.env, BETTER_SQLITE3 },
    uid: user.uid,
    gid: user.gid,
    encoding: "utf8",
    cwd: dir,
  });
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

/** A script for `runAs`: tries to read, then to write the database; prints READ ok/fail and WRITE ok/fail. */
export const READ_WRITE_PROBE = `const Database = require(process.env.BETTER_SQLITE3);
const path = process.argv[2];
try {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  db.prepare("SELECT count(*) FROM accounts").get();
  db.close();
  console.log("READ ok");
} catch (e) { console.log("READ fail " + e.code); }
try {
  const db = new Database(path, { fileMustExist: true });
  db.prepare("UPDATE accounts SET owner = owner WHERE id = 1").run();
  db.close();
  console.log("WRITE ok");
} catch (e) { console.log("WRITE fail " + e.code); }`;
