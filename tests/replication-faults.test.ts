/**
 * Faults around continuous archiving, with real processes: the storage target unwritable for
 * 30 s, databases the replicator cannot or must not archive as they are (rollback-journal mode,
 * a read-only file system, deleted and recreated under it), a second replicator, and SIGTERM.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { createRandom, databaseContentHash, startWriterProcess } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "./helpers.js";
import {
  alignments,
  canMount,
  commitStates,
  cpuTimeMs,
  createDatabase,
  inParallel,
  mountTmpfs,
  remount,
  restoreWithCli,
  runCli,
  sleep,
  startReplicator,
  storedGenerations,
  unmount,
  writeConfig,
} from "./replication-helpers.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function journalMode(path: string): string {
  const db = new Database(path, { fileMustExist: true });
  try {
    return String(db.pragma("journal_mode", { simple: true })).toLowerCase();
  } finally {
    db.close();
  }
}

/** Mounts a tmpfs for the test (unmounted afterwards); fails clearly where mounting is not allowed. */
function tmpfs(dir: string): string {
  expect(canMount(join(dir, "probe")), "these tests mount a tmpfs: run them as root (CAP_SYS_ADMIN)").toBe(true);
  const mnt = join(dir, "mnt");
  mountTmpfs(mnt);
  cleanups.push(() => unmount(mnt));
  return mnt;
}

describe("a storage outage", () => {
  it("30 s with the target unwritable: the queue ships when it returns, no gap", async () => {
    const dir = tempDir("outage");
    const db = join(dir, "app.db");
    const mnt = tmpfs(dir);
    const target = join(mnt, "archive");
    const initialHash = createDatabase(db);
    const writer = await startWriterProcess({
      path: db,
      seed: 5150,
      hash: true,
      ratePerSecond: 20,
      blobBytes: 16 * 1024,
      maxRowsPerTransaction: 8,
    });
    cleanups.push(() => writer.kill());
    const replicator = startReplicator([db, "--to", target]);
    cleanups.push(() => replicator.kill());
    await replicator.waitFor((e) => e.type === "snapshot", "the snapshot", 60_000);
    await replicator.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 10, "10 shipped transactions");

    const outageStart = Date.now();
    remount(mnt, "ro");
    let remounted = false;
    cleanups.push(() => {
      if (!remounted) remount(mnt, "rw");
    });
    const failed = await replicator.waitFor((e) => e.type === "target-error", "a target-error event", 25_000);
    expect(failed.error?.message, "the error names where").toContain(target);
    expect(`${failed.error?.message} ${failed.error?.hint}`, "the error says why").toMatch(/read-only|EROFS/i);
    await sleep(outageStart + 30_000 - Date.now());
    remount(mnt, "rw");
    remounted = true;
    const outageEnd = Date.now();
    const writtenDuringOutage = writer.records.filter((r) => r.t > outageStart && r.t < outageEnd).length;
    expect(writtenDuringOutage, "the writer went on during the outage").toBeGreaterThan(100);
    await replicator.waitFor(
      (e) => e.type === "target-recovered" && Date.parse(e.time) >= outageEnd,
      "the target to be back (target-recovered)",
      90_000,
    );
    await writer.waitForRecords(writer.records.length + 20);
    await writer.stop();
    const records = [...writer.records];
    const finalHash = records.at(-1)!.hash!;
    await sleep(1500);
    const exit = await replicator.kill("SIGTERM");
    expect(exit.code, replicator.stderr()).toBe(0);
    expect(replicator.events.filter((e) => e.type === "generation"), "the outage did not break the generation").toHaveLength(1);

    const states = commitStates(initialHash, records);
    const out = (name: string) => join(dir, `restored-${name}.db`);
    const [at0, at1, latest] = await inParallel(
      [
        () => restoreWithCli(db, target, out("txn0"), { toTxn: 0 }),
        () => restoreWithCli(db, target, out("txn1"), { toTxn: 1 }),
        () => restoreWithCli(db, target, out("latest")),
      ],
      3,
    );
    for (const r of [at0!, at1!, latest!]) expect(r.ok, `${r.run.stdout}\n${r.run.stderr}`).toBe(true);
    expect(latest!.hash, "restore latest equals the final state").toBe(finalHash);
    const offsets = alignments(states, at0!.hash!, at1!.hash!);
    expect(offsets).toHaveLength(1);
    const offset = offsets[0]!;
    expect(latest!.result!.txn, "every commit is a transaction of the generation").toBe(states.length - 1 - offset);

    // Transactions committed while the target was down, by number and by time.
    const random = createRandom(11);
    const inside = states.flatMap((s, i) => (s.after > outageStart + 500 && s.t < outageEnd - 500 ? [i] : []));
    const picks = new Set<number>([inside[0]!, inside.at(-1)!]);
    while (picks.size < 5) picks.add(random.pick(inside));
    const midOutage = Math.round((outageStart + outageEnd) / 2);
    const restores = await inParallel(
      [
        ...[...picks].map((i) => () => restoreWithCli(db, target, out(`txn-${i}`), { toTxn: i - offset })),
        () => restoreWithCli(db, target, out("mid-outage"), { toTime: midOutage }),
      ],
      3,
    );
    [...picks].forEach((i, k) => {
      const r = restores[k]!;
      expect(r.ok, `--to-txn ${i - offset}: ${r.run.stderr}`).toBe(true);
      expect(r.hash, `--to-txn ${i - offset} (committed during the outage)`).toBe(states[i]!.hash);
    });
    // Transactions are stamped when they were observed, not when they reached the target.
    const mid = restores.at(-1)!;
    expect(mid.ok, mid.run.stderr).toBe(true);
    const state = states[offset + mid.result!.txn]!;
    expect(mid.hash).toBe(state.hash);
    expect(state.after, "nothing committed after the requested time").toBeLessThanOrEqual(midOutage);
    const next = states[offset + mid.result!.txn + 1]!;
    expect(next.t, "every commit older than 2 s before the requested time is included").toBeGreaterThan(
      midOutage - 2000,
    );
  }, 200_000);
});

describe("databases the replicator must handle with care", () => {
  it("a rollback-journal database is switched to WAL by default", async () => {
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
    await sleep(500);
    expect((await replicator.kill("SIGTERM")).code, replicator.stderr()).toBe(0);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash).toBe(hash);
  });

  it("with changeJournalMode: false it refuses a rollback-journal database, clearly, and leaves it alone", async () => {
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
    it(`a ${mode === "wal" ? "WAL" : "rollback-journal"} database on a read-only file system: a clear error, non-zero exit, no retry loop`, async () => {
      const dir = tempDir("rofs");
      const mnt = tmpfs(dir);
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

  it("a database deleted and recreated under the running replicator: a clear message, no spinning, a new generation", async () => {
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
    expect(
      replicator.events.filter((e) => e.type === "error").length,
      "it says so once, not on every poll",
    ).toBe(1);

    const recreatedHash = createDatabase(db, { rows: 30 });
    const again = new Database(db);
    again.exec("INSERT INTO seed (v) VALUES ('recreated')");
    const finalHash = databaseContentHash(again);
    again.close();
    const second = await replicator.waitFor(
      (e) => e.type === "generation" && e.generation !== first.generation,
      "a new generation for the recreated database",
      20_000,
    );
    expect(second.reason).toMatch(/replaced|recreated|new/i);
    expect(recreatedHash).not.toBe(finalHash);
    await replicator.waitFor(
      (e) => e.type === "shipped" && e.generation === second.generation && e.lastTxn! >= 1,
      "the recreated database's insert shipped",
    );
    await sleep(500);
    expect((await replicator.kill("SIGTERM")).code, replicator.stderr()).toBe(0);
    expect(storedGenerations(target, "app")).toHaveLength(2);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash, "the latest restore is the recreated database").toBe(finalHash);
  });
});

describe("one replicator per database and target", () => {
  it("a second replicate refuses with LEASE_HELD naming the holder; the first keeps archiving", async () => {
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
});

describe("stopping the replicator", () => {
  it("SIGTERM right after a burst of commits ships every one of them and exits 0", async () => {
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
    expect(Math.max(...shipped.map((e) => e.lastTxn!)), "every commit was shipped before the exit").toBeGreaterThanOrEqual(
      60,
    );
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash).toBe(records.at(-1)!.hash);
  });

  it("SIGTERM while it is still starting: exits 0 and releases the lease", async () => {
    const dir = tempDir("sigterm-start");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db, { rows: 5000 });
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
});
