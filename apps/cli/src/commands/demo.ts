/**
 * `lifeboat demo`: the README's first command. Creates a sample shop database, backs it up to a
 * local folder with the real CLI, damages it like a bad migration would, and restores it.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { execSql, queryRows } from "@lifeboat/sqlite";
import type { Command } from "commander";
import { configTemplate } from "./init.js";

const MARKER = ".lifeboat-demo";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description("a guided demo: create a sample database, back it up, damage it, restore it")
    .option("--dir <dir>", "where to put the demo's files (recreated on every run)", "./lifeboat-demo")
    .action(async (flags: { dir: string }) => {
      const dir = resolve(flags.dir);
      if (existsSync(dir)) {
        if (!existsSync(join(dir, MARKER))) {
          throw new Error(`${dir} exists and was not made by the demo; choose another --dir.`);
        }
        rmSync(dir, { recursive: true, force: true });
      }
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, MARKER), "made by lifeboat demo; safe to delete\n");
      const db = join(dir, "shop.db");
      const say = (text: string) => process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
      const run = (...args: string[]) => {
        process.stdout.write(`$ lifeboat ${args.join(" ")}\n`);
        const child = spawnSync(process.execPath, [...process.execArgv, process.argv[1]!, ...args], {
          cwd: dir,
          stdio: "inherit",
        });
        if (child.status !== 0) throw new Error(`lifeboat ${args[0]} exited ${child.status}`);
      };
      const show = () => {
        const rows = queryRows(
          db,
          "SELECT (SELECT count(*) FROM customers) AS customers, (SELECT count(*) FROM orders) AS orders, (SELECT printf('%.2f', coalesce(sum(total), 0)) FROM orders) AS revenue",
        )[0]!;
        process.stdout.write(`   customers: ${rows.customers}   orders: ${rows.orders}   revenue: ${rows.revenue}\n`);
      };

      say(`1. A sample shop database: ${db}`);
      execSql(
        db,
        `PRAGMA journal_mode = WAL;
         CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT UNIQUE);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL, placed_at TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
           INSERT INTO customers SELECT i, 'Customer ' || i, 'c' || i || '@example.com' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
           INSERT INTO orders SELECT i, 1 + (i * 7) % 500, round(5 + (i * 37) % 200 + 0.99, 2), datetime('2026-01-01', '+' || i || ' minutes') FROM n;
         PRAGMA user_version = 3;`,
      );
      show();
      writeFileSync(join(dir, "lifeboat.yml"), configTemplate("shop", "./shop.db", "./backups"));
      process.stdout.write(`   config: ${join(dir, "lifeboat.yml")} (a local backup folder, ./backups)\n`);

      say("2. Back it up (a consistent snapshot, integrity-checked, sha256 in its manifest)");
      run("backup", "--reason", "demo");
      run("list");

      say("3. Disaster: a bad migration deletes most orders and wipes every email");
      execSql(db, "DELETE FROM orders WHERE id > 100; UPDATE customers SET email = NULL; PRAGMA user_version = 4;");
      show();

      say("4. Preview the restore, then restore (the damaged file is kept as a safety copy)");
      run("restore", "--dry-run");
      run("restore", "--latest", "--yes");
      show();

      say("5. Verify every stored backup (checksums + a trial restore with integrity_check)");
      run("verify");

      say("6. Continuous archiving: every committed transaction is shipped as it happens");
      process.stdout.write("$ lifeboat replicate &\n");
      const replicator = spawn(process.execPath, [...process.execArgv, process.argv[1]!, "replicate"], {
        cwd: dir,
        stdio: ["ignore", "pipe", "inherit"],
      });
      let ready: () => void = () => {};
      const started = new Promise<void>((resolve) => {
        ready = resolve;
      });
      replicator.stdout.on("data", (data: Buffer) => {
        for (const line of data.toString("utf8").split("\n").filter(Boolean)) {
          process.stdout.write(`   [replicate] ${line}\n`);
          if (line.includes("archiving")) ready();
        }
      });
      const exited = new Promise<number | null>((resolve) => replicator.on("exit", resolve));
      await Promise.race([started, exited]);
      if (replicator.exitCode !== null) throw new Error(`lifeboat replicate exited ${replicator.exitCode}`);
      process.stdout.write("   The shop keeps taking orders (one transaction each)...\n");
      for (let i = 0; i < 40; i++) {
        execSql(
          db,
          `INSERT INTO orders (customer_id, total, placed_at) VALUES (${1 + (i % 500)}, ${10 + i}.5, datetime('now'))`,
        );
        await sleep(25);
      }
      await sleep(400);
      const beforeBadChange = new Date();
      show();
      await sleep(400);

      say(`7. At ${beforeBadChange.toISOString()}, someone runs DELETE FROM orders without a WHERE`);
      execSql(db, "DELETE FROM orders;");
      show();
      await sleep(600);
      process.stdout.write("$ kill -TERM <replicate>   (it ships what is left, releases its lease, exits 0)\n");
      replicator.kill("SIGTERM");
      const code = await exited;
      if (code !== 0) throw new Error(`lifeboat replicate exited ${code}`);
      run("list");

      say("8. Point-in-time restore to just before the bad change");
      run("restore", "--to-time", beforeBadChange.toISOString(), "--yes");
      show();
      process.stdout.write(
        `\nDone. Everything is in ${dir}; look around with:\n  cd ${dir} && node ${process.argv[1]} list\n`,
      );
    });
}
