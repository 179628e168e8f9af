/**
 * `lifeboat replicate --exec CMD`: the app runs as a child of the archiver. Its exit code is
 * lifeboat's, everything it wrote is shipped before lifeboat exits, signals sent to lifeboat
 * reach it, and it is never started when archiving cannot start.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { tempDir } from "./helpers.js";
import {
  BETTER_SQLITE3,
  cleanupList,
  createDatabase,
  type ReplicatorJsonEvent,
  type ReplicatorProcess,
  restoreWithCli,
  runCli,
  startReplicator,
  waitUntil,
} from "./replication-helpers.js";

/**
 * Writes an app (CommonJS, run with this Node) that adds `rows` rows to `app_log`, then a last
 * row `last`, and exits `code`; or, with `untilSignal`, writes a ready file and waits for SIGTERM,
 * then records it in the database and in `marker` and exits 0.
 */
function writeApp(
  dir: string,
  options: { rows: number; last: string; code?: number; untilSignal?: { ready: string; marker: string } },
): string {
  const file = join(dir, "app.cjs");
  writeFileSync(
    file,
    `const Database = require(${JSON.stringify(BETTER_SQLITE3)});
const fs = require("node:fs");
const db = new Database(process.argv[2]);
db.pragma("busy_timeout = 10000");
db.exec("CREATE TABLE IF NOT EXISTS app_log (id INTEGER PRIMARY KEY, note TEXT)");
const add = db.prepare("INSERT INTO app_log (note) VALUES (?)");
for (let i = 0; i < ${options.rows}; i++) add.run("row " + i);
const finish = (code) => { add.run(${JSON.stringify(options.last)}); db.close(); process.exit(code); };
${
  options.untilSignal
    ? `process.on("SIGTERM", () => {
  fs.writeFileSync(${JSON.stringify(options.untilSignal.marker)}, "SIGTERM " + process.pid);
  finish(0);
});
fs.writeFileSync(${JSON.stringify(options.untilSignal.ready)}, String(process.pid));
setInterval(() => {}, 1000);`
    : `finish(${options.code ?? 0});`
}
`,
  );
  return `"${process.execPath}" "${file}"`;
}

/** `type` widened: `exec`, `exec-exit` and `started` are the CLI's lines, not replicator events. */
function indexOf(replicator: ReplicatorProcess, type: string): number {
  return replicator.events.findIndex((e) => (e.type as string) === type);
}

function eventOf(replicator: ReplicatorProcess, type: string): ReplicatorJsonEvent | undefined {
  return replicator.events[indexOf(replicator, type)];
}

function appRows(path: string): { count: number; last: string } {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare("SELECT count(*) AS count, (SELECT note FROM app_log ORDER BY id DESC LIMIT 1) AS last FROM app_log")
      .get() as {
      count: number;
      last: string;
    };
  } finally {
    db.close();
  }
}

describe.concurrent("lifeboat replicate --exec", () => {
  it("exits with the app's exit code after shipping its last write", async ({ onTestFinished }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("exec-code");
    const db = join(dir, "app.db");
    const target = join(dir, "backups");
    createDatabase(db);
    const app = writeApp(dir, { rows: 25, last: "last write before exit 7", code: 7 });
    const replicator = startReplicator([db, "--to", target, "--exec", `${app} "${db}"`]);
    cleanups.push(() => replicator.kill("SIGKILL"));

    const exit = await replicator.exited;
    expect(exit, replicator.stderr()).toEqual({ code: 7, signal: null });
    const started = eventOf(replicator, "exec");
    expect(started?.pid).toEqual(expect.any(Number));
    expect(eventOf(replicator, "exec-exit")).toMatchObject({ code: 7, exitCode: 7 });
    // The app ran only once archiving had started.
    expect(indexOf(replicator, "started")).toBeLessThan(indexOf(replicator, "exec"));

    const restored = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(restored.ok, `${restored.run.stdout}\n${restored.run.stderr}`).toBe(true);
    expect(appRows(restored.output)).toEqual({ count: 26, last: "last write before exit 7" });
  });

  it("passes SIGTERM to the app, which stops cleanly; its shutdown write is shipped and lifeboat exits 0", async ({
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("exec-signal");
    const db = join(dir, "app.db");
    const target = join(dir, "backups");
    const ready = join(dir, "ready");
    const marker = join(dir, "got-signal");
    createDatabase(db);
    const app = writeApp(dir, { rows: 3, last: "stopped by SIGTERM", untilSignal: { ready, marker } });
    const replicator = startReplicator([db, "--to", target, "--exec", `${app} "${db}"`]);
    cleanups.push(() => replicator.kill("SIGKILL"));

    const appPid = Number(
      await waitUntil(() => (existsSync(ready) ? readFileSync(ready, "utf8") : undefined), "the app"),
    );
    const exit = await replicator.kill("SIGTERM");
    expect(exit, replicator.stderr()).toEqual({ code: 0, signal: null });
    expect(readFileSync(marker, "utf8")).toBe(`SIGTERM ${appPid}`);
    expect(eventOf(replicator, "exec-exit")).toMatchObject({ code: 0, signal: null });

    const restored = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(restored.ok, `${restored.run.stdout}\n${restored.run.stderr}`).toBe(true);
    expect(appRows(restored.output)).toEqual({ count: 4, last: "stopped by SIGTERM" });
  });

  it("an app killed by a signal gives 128 + the signal's number", async ({ onTestFinished }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("exec-killed");
    const db = join(dir, "app.db");
    createDatabase(db);
    const replicator = startReplicator([db, "--to", join(dir, "backups"), "--exec", "kill -KILL $$"]);
    cleanups.push(() => replicator.kill("SIGKILL"));
    expect(await replicator.exited, replicator.stderr()).toEqual({ code: 137, signal: null });
    expect(eventOf(replicator, "exec-exit")).toMatchObject({ signal: "SIGKILL", exitCode: 137 });
  });

  it("does not start the app when archiving cannot start (another replicator holds the lease)", async ({
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("exec-refused");
    const db = join(dir, "app.db");
    const target = join(dir, "backups");
    const marker = join(dir, "app-started");
    createDatabase(db);
    const first = startReplicator([db, "--to", target]);
    cleanups.push(() => first.kill("SIGKILL"));
    await first.waitFor((e) => (e.type as string) === "started", "the first replicator to start");

    const second = await runCli(["replicate", db, "--to", target, "--exec", `touch "${marker}"`], {
      timeoutMs: 60_000,
    });
    expect(second.code, second.stderr).not.toBe(0);
    expect(second.stderr).toContain(`archiving did not start, so \`touch "${marker}"\` was not started`);
    expect(second.stderr).toContain("LEASE_HELD");
    expect(existsSync(marker)).toBe(false);
    expect((await first.kill("SIGTERM")).code).toBe(0);
  });
});
