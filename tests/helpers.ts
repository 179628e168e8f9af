/** Shared helpers for the end-to-end tests: run the built `lifeboat` binary as a user would. */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";

const require = createRequire(import.meta.url);
const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const BIN = join(root, "apps/cli/dist/bin.js");

export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `lifeboat ...args` from the build, without a TTY (stdin closed). */
export function cli(args: readonly string[], options: { cwd?: string; env?: Record<string, string> } = {}): CliResult {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build first (pnpm build, or npm test which builds).`);
  const child = spawnSync(process.execPath, [BIN, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 120_000,
  });
  return { code: child.status ?? -1, stdout: child.stdout, stderr: child.stderr };
}

/** Parses the JSON a `--json` command printed. */
export function json<T = any>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`);
  }
}

export function tempDir(label = "e2e"): string {
  return mkdtempSync(join(tmpdir(), `lifeboat-${label}-`));
}

/** A small shop database in WAL mode with `orders` rows. */
export function makeShop(path: string, orders = 1000): void {
  const db = new Database(path);
  db.pragma("journal_mode = WAL");
  db.exec(`CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
           CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, total REAL, note TEXT);
           CREATE INDEX orders_customer ON orders(customer_id);
           PRAGMA user_version = 7;`);
  const addCustomer = db.prepare("INSERT INTO customers (name) VALUES (?)");
  const addOrder = db.prepare("INSERT INTO orders (customer_id, total, note) VALUES (?, ?, ?)");
  db.transaction(() => {
    for (let i = 1; i <= 50; i++) addCustomer.run(`Customer ${i} ✓`);
    for (let i = 1; i <= orders; i++)
      addOrder.run(1 + (i % 50), i * 1.25, i % 7 === 0 ? null : `note ${i}, "quoted"\nline`);
  })();
  db.close();
}

export function count(path: string, table: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return (db.prepare(`SELECT count(*) AS n FROM "${table}"`).get() as { n: number }).n;
  } finally {
    db.close();
  }
}

/** Starts a process that keeps `path` open (and, with `lock`, holds a write transaction) until killed. */
export function holdOpen(path: string, lock: boolean): Promise<{ stop(): void }> {
  const script = `
    const Database = require(${JSON.stringify(require.resolve("better-sqlite3"))});
    const db = new Database(${JSON.stringify(path)});
    ${lock ? 'db.exec("BEGIN IMMEDIATE");' : 'db.prepare("SELECT 1").get();'}
    process.stdout.write("ready\\n");
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolveReady, reject) => {
    child.stdout.once("data", () => resolveReady({ stop: () => child.kill("SIGKILL") }));
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`holder exited ${code}`)));
  });
}
