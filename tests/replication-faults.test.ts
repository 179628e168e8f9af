/**
 * Faults around continuous archiving, with real processes: databases the replicator cannot or
 * must not archive as they are (rollback-journal mode, a read-only file system, deleted and
 * recreated under it), a second replicator on the same database and target, and SIGTERM.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { databaseContentHash, startWriterProcess } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { describe, it } from "vitest";
import { tempDir } from "./helpers.js";
import {
  cleanupList,
  cpuTimeMs,
  createDatabase,
  remount,
  restoreWithCli,
  runCli,
  sleep,
  startReplicator,
  storedGenerations,
  tmpfs,
  writeConfig,
} from "./replication-helpers.js";

function journalMode(path: string): string {
  const db = new Database(path, { fileMustExist: true });
  try {
    return String(db.pragma("journal_mode", { simple: true })).toLowerCase();
  } finally {
    db.close();
  }
}

describe.concurrent("continuous archiving under faults", () => {
  it("a rollback-journal database is switched to WAL by default", async ({ expect, onTestFinished }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("journal");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db, { journalMode: "delete" });
    expect(journalMode(db)).toBe("delete");
    const replicator = startReplicator([db, "--to", target]);
    cleanups.push(() => replicator.kill());
    await replicator.waitFor((e) => e.type === "snapshot", "the snapshot");
    expect(journalMode(db)).toBe("wal");
    const app = new Database(db);
    app.pragma("busy_timeout = 5000");
    app.exec("INSERT INTO seed (v) VALUES ('after the switch')");
    const hash = databaseContentHash(app);
    app.close();
    await replicator.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 1, "the insert shipped");
    await sleep(1500);
    expect((await replicator.kill("SIGTERM")).code, replicator.stderr()).toBe(0);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash).toBe(hash);
  });

  it("with changeJournalMode: false it refuses a rollback-journal database, clearly, and leaves it alone", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("journal-refuse");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db, { journalMode: "delete" });
    const config = writeConfig(dir, db, target, { changeJournalMode: false });
    const replicator = startReplicator(["--config", config]);
    cleanups.push(() => replicator.kill());
    const exit = await Promise.race([replicator.exited, sleep(30_000).then(() => undefined)]);
    expect(exit, "the replicator exits instead of running").toBeDefined();
    expect(exit!.code).not.toBe(0);
    expect(exit!.code).not.toBeNull();
    const message = replicator.stderr();
    expect(message).toContain(db);
    expect(message).toMatch(/journal mode/i);
    expect(message).toMatch(/WAL/);
    expect(message, "says how to fix it").toMatch(/changeJournalMode|journal_mode\s*=\s*WAL/);
    expect(journalMode(db), "the database was not changed").toBe("delete");
    expect(existsSync(`${db}-wal`)).toBe(false);
  });

  for (const mode of ["wal", "delete"] as const) {
    it(`a ${mode === "wal" ? "WAL" : "rollback-journal"} database on a read-only file system: a clear error, non-zero exit, no retry loop`, async ({
      expect,
      onTestFinished,
    }) => {
      const cleanups = cleanupList(onTestFinished);
      const dir = tempDir("rofs");
      const mnt = tmpfs(dir, cleanups);
      const db = join(mnt, "app.db");
      createDatabase(db, { journalMode: mode });
      remount(mnt, "ro");
      cleanups.push(() => remount(mnt, "rw"));
      const started = Date.now();
      const replicator = startReplicator([db, "--to", join(dir, "archive")]);
      cleanups.push(() => replicator.kill());
      const exit = await Promise.race([replicator.exited, sleep(30_000).then(() => undefined)]);
      expect(exit, "the replicator exits instead of retrying").toBeDefined();
      expect(exit!.code).not.toBe(0);
      expect(exit!.code).not.toBeNull();
      expect(Date.now() - started).toBeLessThan(30_000);
      const message = replicator.stderr();
      expect(message, "names the database").toContain(db);
      expect(message, "not an internal error").not.toMatch(/INTERNAL/);
      expect(
        message.replaceAll(db, "<db>"),
        "says the problem is write access / a read-only file system (not merely that it cannot open the file)",
      ).toMatch(/read-only|readonly|write access|EROFS/i);
    });
  }

  it("a database deleted and recreated under the running replicator: a clear message, no spinning, a new generation", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("recreate");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db);
    const config = writeConfig(dir, db, target, { syncInterval: "250ms" });
    const replicator = startReplicator(["--config", config]);
    cleanups.push(() => replicator.kill());
    const first = await replicator.waitFor((e) => e.type === "generation", "the first generation");
    const app = new Database(db);
    app.exec("INSERT INTO seed (v) VALUES ('one')");
    app.close();
    await replicator.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 1, "the insert shipped");

    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${db}${suffix}`, { force: true });
    const deleted = await replicator.waitFor(
      (e) => e.type === "error" && e.error?.code === "DATABASE_NOT_FOUND",
      "an error event saying the database is gone",
      15_000,
    );
    expect(deleted.error!.message).toContain(db);
    const cpuBefore = cpuTimeMs(replicator.pid);
    await sleep(3000);
    expect(replicator.exit(), "the replicator keeps running while the database is missing").toBeUndefined();
    expect(cpuTimeMs(replicator.pid) - cpuBefore, "it waits quietly (no busy loop)").toBeLessThan(1000);
    expect(replicator.events.filter((e) => e.type === "error").length, "it says so once, not on every poll").toBe(1);

    const recreatedHash = createDatabase(db, { rows: 30 });
    const again = new Database(db);
    again.exec("INSERT INTO seed (v) VALUES ('recreated')");
    const finalHash = databaseContentHash(again);
    again.close();
    const second = await replicator.waitFor(
      (e) => e.type === "generation" && e.generation !== first.generation,
      "a new generation for the recreated database",
      10_000,
    );
    expect(second.reason).toMatch(/replaced|recreated|new/i);
    expect(recreatedHash).not.toBe(finalHash);
    // The insert is either in the new generation's snapshot (when the app's connection closed
    // first: closing the last connection checkpoints the WAL) or shipped after it: the final
    // restore below checks the content either way.
    await replicator.waitFor(
      (e) => e.type === "snapshot" && e.generation === second.generation,
      "the recreated database's snapshot",
    );
    await sleep(500);
    expect((await replicator.kill("SIGTERM")).code, replicator.stderr()).toBe(0);
    expect(storedGenerations(target, "app")).toHaveLength(2);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash, "the latest restore is the recreated database").toBe(finalHash);
  });

  it("a second replicate refuses with LEASE_HELD naming the holder; the first keeps archiving", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("lease");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db);
    const first = startReplicator([db, "--to", target]);
    cleanups.push(() => first.kill());
    await first.waitFor((e) => e.type === "snapshot", "the first replicator's snapshot");
    const lease = JSON.parse(readFileSync(join(target, "app", "locks", "replicator.json"), "utf8"));

    const second = await runCli(["replicate", db, "--to", target], { timeoutMs: 30_000 });
    expect(second.code, `${second.stdout}\n${second.stderr}`).toBe(3);
    expect(second.stderr).toContain("LEASE_HELD");
    expect(second.stderr, "names the holder's host").toContain(hostname());
    expect(second.stderr, "names the holder's pid").toContain(`pid ${first.pid}`);
    expect(second.stderr, "says since when").toContain(lease.since);
    const secondJson = await runCli(["replicate", db, "--to", target, "--json"], { timeoutMs: 30_000 });
    expect(secondJson.code).toBe(3);
    const error = JSON.parse(secondJson.stdout).error;
    expect(error.code).toBe("LEASE_HELD");
    expect(error.details.holder).toMatchObject({ host: hostname(), pid: first.pid, since: lease.since });

    // The refused runs took nothing from the first one.
    expect(JSON.parse(readFileSync(join(target, "app", "locks", "replicator.json"), "utf8")).owner).toBe(lease.owner);
    const app = new Database(db);
    app.exec("INSERT INTO seed (v) VALUES ('still archived')");
    const hash = databaseContentHash(app);
    app.close();
    await first.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 1, "the first replicator keeps shipping");
    await sleep(300);
    expect((await first.kill("SIGTERM")).code, first.stderr()).toBe(0);
    expect(existsSync(join(target, "app", "locks", "replicator.json")), "SIGTERM releases the lease").toBe(false);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.hash).toBe(hash);
  });

  it("SIGTERM right after a burst of commits ships every one of them and exits 0", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("sigterm");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db);
    // A long sync interval: only the stop path can have shipped the last commits in time.
    const config = writeConfig(dir, db, target, { syncInterval: "1m" });
    const replicator = startReplicator(["--config", config]);
    cleanups.push(() => replicator.kill());
    await replicator.waitFor((e) => e.type === "snapshot", "the snapshot");
    await sleep(1000); // the command has finished starting and handles signals
    const writer = await startWriterProcess({ path: db, seed: 3, hash: true, transactions: 60, blobBytes: 8192 });
    cleanups.push(() => writer.kill());
    await writer.exited;
    const records = [...writer.records];
    expect(records).toHaveLength(60);
    const exit = await replicator.kill("SIGTERM");
    expect(exit.code, replicator.stderr()).toBe(0);
    const shipped = replicator.events.filter((e) => e.type === "shipped");
    expect(
      Math.max(...shipped.map((e) => e.lastTxn!)),
      "every commit was shipped before the exit",
    ).toBeGreaterThanOrEqual(60);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash).toBe(records.at(-1)!.hash);
  });

  it("SIGTERM while the application keeps writing: exits 0 and everything committed before it is archived", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("sigterm-busy");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    const initialHash = createDatabase(db);
    const writer = await startWriterProcess({ path: db, seed: 9, hash: true, ratePerSecond: 30, blobBytes: 16 * 1024 });
    cleanups.push(() => writer.kill());
    const replicator = startReplicator([db, "--to", target]);
    cleanups.push(() => replicator.kill());
    await replicator.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 10, "10 shipped transactions");
    await sleep(3000);
    const sentAt = Date.now();
    const exit = await Promise.race([replicator.kill("SIGTERM"), sleep(30_000).then(() => undefined)]);
    expect(exit, "the replicator stops within 30 s of SIGTERM while writes go on").toBeDefined();
    expect(exit!.signal, "the process handled SIGTERM instead of dying of it").toBeNull();
    expect(exit!.code, replicator.stderr()).toBe(0);
    await writer.stop();
    const hashes = new Map<number, string>([[0, initialHash], ...writer.records.map((r) => [r.txn, r.hash!] as const)]);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash, "a committed state").toBe(hashes.get(latest.writerTxn!));
    const committedBefore = writer.records.filter((r) => r.t < sentAt).at(-1)!.txn;
    expect(latest.writerTxn!, "every commit made before the SIGTERM was archived").toBeGreaterThanOrEqual(
      committedBefore,
    );
  });

  it("SIGTERM while it is still starting: exits 0 and releases the lease", async ({ expect, onTestFinished }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("sigterm-start");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db, { rows: 100_000 }); // a few MB: the snapshot takes a moment
    const replicator = startReplicator([db, "--to", target]);
    cleanups.push(() => replicator.kill());
    // The generation is announced before its snapshot is taken and shipped: start-up is under way.
    await replicator.waitFor((e) => e.type === "generation", "the generation event");
    const exit = await replicator.kill("SIGTERM");
    // Soft: a failure here should still show its consequences below.
    expect.soft(exit.signal, "the process handled SIGTERM instead of dying of it").toBeNull();
    expect.soft(exit.code, replicator.stderr()).toBe(0);
    expect.soft(existsSync(join(target, "app", "locks", "replicator.json")), "the lease was released").toBe(false);
    // A supervisor restarting it right away is not refused by a lease the stopped run left behind.
    const again = startReplicator([db, "--to", target]);
    cleanups.push(() => again.kill());
    const early = await Promise.race([again.exited, sleep(5000).then(() => undefined)]);
    expect(early, `a restart right away runs: ${again.stderr()}`).toBeUndefined();
  });

  it("a database of the config that does not exist yet: the others are archived, and it is once it appears", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("later");
    const present = join(dir, "present.db");
    const later = join(dir, "later.db");
    const target = join(dir, "archive");
    createDatabase(present);
    const config = join(dir, "lifeboat.yml");
    writeFileSync(
      config,
      JSON.stringify({
        databases: [present, later].map((path) => ({ path, targets: [{ type: "local", path: target }] })),
      }),
    );
    const replicator = startReplicator(["--config", config]);
    cleanups.push(() => replicator.kill());
    const waiting = await replicator.waitFor((e) => e.type === "waiting", "a waiting event for the missing database");
    expect(waiting.database).toBe("later");
    await replicator.waitFor((e) => e.type === "started", "the start of archiving");
    expect(storedGenerations(target, "present")).toHaveLength(1);
    const hash = createDatabase(later, { rows: 10 });
    await replicator.waitFor(
      (e) => e.type === "snapshot" && e.database === "later",
      "the snapshot of the database once it exists",
      15_000,
    );
    const exit = await replicator.kill("SIGTERM");
    expect(exit.code, replicator.stderr()).toBe(0);
    const restored = await restoreWithCli(later, target, join(dir, "later-restored.db"));
    expect(restored.ok, restored.run.stderr).toBe(true);
    expect(restored.hash).toBe(hash);
  });
});
