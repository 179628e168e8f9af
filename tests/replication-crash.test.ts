/**
 * Crashes and outages around continuous archiving, with real processes: the replicator SIGKILLed
 * at random moments and restarted, the writer SIGKILLed in the middle of transactions, another
 * process resetting the WAL while the replicator is down, and the storage target unwritable for
 * 30 s. Whatever happens, every restore is a state the writer committed, and nothing the
 * replicator reported as shipped is lost. The tests run concurrently: the outage mostly waits.
 */
import { spawn } from "node:child_process";
import { copyFileSync, existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRandom, databaseContentHash, startWriterProcess, type WriterRecord } from "@lifeboat/testkit";
import { describe, type ExpectStatic, it } from "vitest";
import { tempDir } from "./helpers.js";
import {
  alignments,
  BETTER_SQLITE3,
  cleanupList,
  commitStates,
  createDatabase,
  inParallel,
  type ReplicatorJsonEvent,
  type ReplicatorProcess,
  type RestoreOutcome,
  remount,
  restoreWithCli,
  runCli,
  sleep,
  sqliteProcess,
  startReplicator,
  summarizeWal,
  tmpfs,
  waitUntil,
  writeConfig,
} from "./replication-helpers.js";

const positionName = (position: number) => position.toString(16).padStart(16, "0");

/** Content hash after each writer transaction (0: the state before the writer). */
function hashesByWriterTxn(initialHash: string, records: readonly WriterRecord[]): Map<number, string> {
  const map = new Map<number, string>([[0, initialHash]]);
  for (const r of records) map.set(r.txn, r.hash!);
  return map;
}

/** Asserts that a restore succeeded and produced exactly the state right after one of the writer's commits. */
function expectCommittedState(
  expect: ExpectStatic,
  r: RestoreOutcome,
  hashes: Map<number, string>,
  label: string,
): void {
  expect(r.ok, `${label}: ${r.run.stdout}\n${r.run.stderr}`).toBe(true);
  expect(hashes.has(r.writerTxn!), `${label}: holds writer transaction ${r.writerTxn}, which was never reported`).toBe(
    true,
  );
  expect(r.hash, `${label}: is exactly the state after writer transaction ${r.writerTxn}`).toBe(
    hashes.get(r.writerTxn!),
  );
}

/** Starts `lifeboat replicate` and waits for its first event; throws with its output if it exits instead. */
async function startAndWait(args: readonly string[], track: ReplicatorProcess[]): Promise<ReplicatorProcess> {
  const replicator = startReplicator(args);
  track.push(replicator);
  await replicator.waitFor(() => true, "the restarted replicator's first event", 30_000);
  return replicator;
}

describe.concurrent("crashes during continuous archiving", () => {
  it("SIGKILL of the replicator at random moments: restarts lose nothing it reported shipped", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("crash-replicator");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    const initialHash = createDatabase(db);
    // Frequent checkpoints: kills also land around them and the WAL restarts they allow.
    const config = writeConfig(dir, db, target, { syncInterval: "250ms", checkpointPages: 300 });
    const writer = await startWriterProcess({
      path: db,
      seed: 31337,
      hash: true,
      ratePerSecond: 12,
      blobBytes: 16 * 1024,
      maxRowsPerTransaction: 10,
      weights: { vacuum: 2, dropTable: 3 },
    });
    cleanups.push(() => writer.kill());
    const replicators: ReplicatorProcess[] = [];
    cleanups.push(() => Promise.all(replicators.map((r) => r.kill())));
    // Every run's events, kept next to the database for diagnosis (also when the test fails).
    cleanups.push(() =>
      writeFileSync(
        join(dir, "events.jsonl"),
        replicators.flatMap((r) => r.events.map((e) => JSON.stringify({ pid: r.pid, ...e }))).join("\n"),
      ),
    );

    const random = createRandom(4242);
    let startupKills = 0;
    for (let trial = 0; trial < 30; trial++) {
      if (trial % 4 === 3) {
        // A kill at any moment, startup included (lease, resume, snapshot).
        const replicator = startReplicator(["--config", config]);
        replicators.push(replicator);
        await sleep(random.int(100, 1500));
        expect(
          replicator.exit(),
          `replicator ${replicator.pid} exited by itself: ${replicator.stderr()}`,
        ).toBeUndefined();
        if (!replicator.events.some((e) => e.type === "spooled" || e.type === "shipped")) startupKills++;
        await replicator.kill("SIGKILL");
        continue;
      }
      // A restart right after a crash is not refused by the dead run's lease.
      const replicator = await startAndWait(["--config", config], replicators);
      await sleep(random.int(200, 800));
      await replicator.kill("SIGKILL");
    }
    // A last run that ends normally: SIGTERM ships everything and exits 0.
    const last = await startAndWait(["--config", config], replicators);
    await last.waitFor((e) => e.type === "shipped", "a shipped segment in the last run", 30_000);
    await writer.stop();
    const records = [...writer.records];
    const finalHash = records.at(-1)!.hash!;
    expect(databaseContentHash(db)).toBe(finalHash);
    await sleep(1500);
    const lastExit = await last.kill("SIGTERM");
    expect(lastExit.code, last.stderr()).toBe(0);

    const events: ReplicatorJsonEvent[] = replicators.flatMap((r) => r.events);
    for (const r of replicators) {
      // Soft: the restores below show whether these errors cost any data.
      expect
        .soft(
          r.events.filter((e) => e.type === "error"),
          `errors reported by replicator ${r.pid}`,
        )
        .toEqual([]);
    }
    const shippedTo = new Map<string, number>();
    for (const e of events) {
      if (e.type === "shipped") shippedTo.set(e.generation!, Math.max(shippedTo.get(e.generation!) ?? 0, e.lastTxn!));
    }
    const generations = new Set(events.filter((e) => e.type === "generation").map((e) => e.generation!));
    for (const g of shippedTo.keys()) expect(generations, `shipped generation ${g} was announced`).toContain(g);
    expect(shippedTo.size).toBeGreaterThan(0);

    const hashes = hashesByWriterTxn(initialHash, records);
    const states = commitStates(initialHash, records);
    const listing = await runCli(["list", db, "--to", target, "--json"]);
    expect(listing.code, listing.stderr).toBe(0);
    const windows = new Map<string, { firstTxn: number; lastTxn: number }>(
      (
        JSON.parse(listing.stdout).databases[0].targets[0].generations as {
          generation: string;
          firstTxn: number;
          lastTxn: number;
        }[]
      ).map((g) => [g.generation, g]),
    );

    const out = (name: string) => join(dir, `restored-${name}.db`);
    const latest = await restoreWithCli(db, target, out("latest"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect(latest.hash, "the latest restore equals the final database").toBe(finalHash);

    // Every generation: the last shipped transaction restores, to a committed state, and the run
    // from the generation's first snapshot (read as FORMAT.md says: the .snap is the database
    // file) to it holds exactly that many commits of the writer.
    const results = await inParallel(
      [...shippedTo].map(
        ([generation, lastShipped]) =>
          () =>
            restoreWithCli(db, target, out(`${generation}-last`), { generation, toTxn: lastShipped }),
      ),
      3,
    );
    [...shippedTo].forEach(([generation, lastShipped], i) => {
      const window = windows.get(generation);
      expect(window, `generation ${generation} is listed`).toBeDefined();
      expect(window!.lastTxn, `generation ${generation} is continuous up to what was shipped`).toBeGreaterThanOrEqual(
        lastShipped,
      );
      const atLast = results[i]!;
      expectCommittedState(expect, atLast, hashes, `restore --generation ${generation} --to-txn ${lastShipped}`);
      expect(atLast.result!.txn).toBe(lastShipped);
      const snapshot = join(target, "app", "generations", generation, "snapshots", positionName(window!.firstTxn));
      expect(existsSync(`${snapshot}.json`), `${snapshot}.json`).toBe(true);
      const copy = out(`${generation}-snapshot`);
      copyFileSync(`${snapshot}.snap`, copy);
      const firstHash = databaseContentHash(copy);
      // States are the writer's commits in order; VACUUM steps are two commits with one hash.
      const firstIndexes = states.flatMap((s, k) => (s.hash === firstHash ? [k] : []));
      const lastIndexes = states.flatMap((s, k) => (s.hash === atLast.hash ? [k] : []));
      expect(firstIndexes.length, `generation ${generation}: its snapshot is a committed state`).toBeGreaterThan(0);
      const distance = lastShipped - window!.firstTxn;
      expect(
        firstIndexes.some((f) => lastIndexes.includes(f + distance)),
        `generation ${generation}: transactions ${window!.firstTxn}..${lastShipped} are exactly ${distance} commits of the writer`,
      ).toBe(true);
    });
    console.log(
      `replicator crash trials: 30 kills (${startupKills} before it shipped anything), ${shippedTo.size} generations with shipped transactions, ${records.length} writer transactions`,
    );
  }, 240_000);

  it("SIGKILL of the writer in the middle of a transaction: no uncommitted frame is shipped", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("crash-writer");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db);
    const config = writeConfig(dir, db, target, { syncInterval: "200ms" });
    const replicator = startReplicator(["--config", config]);
    cleanups.push(() => replicator.kill());
    await replicator.waitFor((e) => e.type === "snapshot", "the first snapshot");

    // A writer that commits `commits` small transactions, then opens a large one that spills
    // uncommitted pages into the WAL (tiny page cache) and hangs until it is killed.
    const script = join(dir, "hanging-writer.cjs");
    writeFileSync(
      script,
      `const Database = require(${JSON.stringify(BETTER_SQLITE3)});
const { randomBytes } = require("node:crypto");
const { commits, bigRows, hang } = JSON.parse(process.argv[2]);
const db = new Database(${JSON.stringify(db)});
db.pragma("busy_timeout = 10000");
db.pragma("cache_size = 8");
db.exec("CREATE TABLE IF NOT EXISTS big (id INTEGER PRIMARY KEY, data BLOB)");
const insert = db.prepare("INSERT INTO big (data) VALUES (?)");
for (let i = 0; i < commits; i++) db.transaction(() => { insert.run(randomBytes(3000)); db.prepare("UPDATE seed SET v = v || 'x' WHERE id = ?").run(i + 1); })();
process.stdout.write(JSON.stringify({ committed: commits }) + "\\n");
db.exec("BEGIN IMMEDIATE");
for (let i = 0; i < bigRows; i++) insert.run(randomBytes(8192));
db.exec("DELETE FROM seed WHERE id % 2 = 0");
process.stdout.write(JSON.stringify({ open: true }) + "\\n");
if (hang) setInterval(() => {}, 1000); else { db.exec("COMMIT"); db.close(); }
`,
    );
    const runWriter = (options: { commits: number; bigRows: number; hang: boolean }) => {
      const child = spawn(process.execPath, [script, JSON.stringify(options)], { stdio: ["ignore", "pipe", "pipe"] });
      cleanups.push(() => {
        child.kill("SIGKILL");
      });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => {
        stdout += d;
      });
      child.stderr.setEncoding("utf8").on("data", (d: string) => {
        stderr += d;
      });
      const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
      return { child, exited, saw: (what: string) => stdout.includes(what), stderr: () => stderr };
    };
    const out = (name: string) => join(dir, `restored-${name}.db`);
    let expectedTxn = 1; // the first writer's CREATE TABLE big is a commit of its own
    let restores = 0;
    const expectLatest = async (hash: string, txns: number, label: string) => {
      // Allow the replicator to catch up: a restore either lags (an earlier committed state) or is exact.
      const r = await waitUntil(
        async () => {
          const attempt = await restoreWithCli(db, target, out(`latest-${restores++}`));
          expect(attempt.ok, `${label}: ${attempt.run.stdout}\n${attempt.run.stderr}`).toBe(true);
          return attempt.result!.txn >= txns ? attempt : undefined;
        },
        `${label}: the replicator ships transaction ${txns}`,
        30_000,
        500,
      );
      expect(r.result!.txn, `${label}: transactions in the generation`).toBe(txns);
      expect(r.hash, `${label}: the last committed state`).toBe(hash);
    };

    for (const [round, rows] of [
      [0, 600],
      [1, 150],
    ] as const) {
      const w = runWriter({ commits: 5, bigRows: rows, hang: true });
      await waitUntil(() => (w.saw('"open"') ? true : undefined), `writer round ${round} opens its transaction`);
      expectedTxn += 5;
      const committed = databaseContentHash(db); // readers see only committed transactions
      const wal = summarizeWal(`${db}-wal`);
      expect(
        wal.validFrames - wal.lastCommitFrame,
        "the open transaction spilled valid, uncommitted frames into the WAL",
      ).toBeGreaterThan(rows);
      await sleep(1500); // several sync intervals with uncommitted frames in the WAL
      await expectLatest(committed, expectedTxn, `round ${round}, transaction open`);
      w.child.kill("SIGKILL");
      await w.exited;
      await sleep(800);
      expect(databaseContentHash(db), "after the kill the database holds the committed state").toBe(committed);
      await expectLatest(committed, expectedTxn, `round ${round}, writer killed`);
    }
    // A writer after the crashes: its commits overwrite the dead transaction's frames.
    const w = runWriter({ commits: 3, bigRows: 20, hang: false });
    expect(await w.exited, w.stderr()).toBe(0);
    expectedTxn += 4;
    const finalHash = databaseContentHash(db);
    const exit = await replicator.kill("SIGTERM");
    expect(exit.code, replicator.stderr()).toBe(0);
    await expectLatest(finalHash, expectedTxn, "after the crashes");
    expect(
      replicator.events.filter((e) => e.type === "generation"),
      "one generation throughout",
    ).toHaveLength(1);
  }, 180_000);

  it("an outside TRUNCATE checkpoint while the replicator is down starts a new generation; both restore", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("crash-truncate");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    const initialHash = createDatabase(db);
    const config = writeConfig(dir, db, target, { syncInterval: "250ms" });
    const writerOptions = {
      path: db,
      seed: 777,
      hash: true,
      ratePerSecond: 25,
      blobBytes: 16 * 1024,
      weights: { vacuum: 0 },
    };
    const before = await startWriterProcess(writerOptions);
    cleanups.push(() => before.kill());
    const first = startReplicator(["--config", config]);
    cleanups.push(() => first.kill());
    const gen1 = (await first.waitFor((e) => e.type === "generation", "the first generation")).generation!;
    await first.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 20, "20 shipped transactions");
    // The application pauses while the replicator is stopped, so this SIGTERM cannot race the
    // replicator's start-up (see the SIGTERM tests in replication-faults.test.ts).
    await before.stop();
    await sleep(1000);
    const firstExit = await first.kill("SIGTERM");
    expect(firstExit.code, first.stderr()).toBe(0);
    const lastShipped1 = Math.max(...first.events.filter((e) => e.type === "shipped").map((e) => e.lastTxn!));

    // The application goes on (a new writer process continues the same workload) while the replicator is down.
    const writer = await startWriterProcess(writerOptions);
    cleanups.push(() => writer.kill());
    await writer.waitForRecords(writer.records.length + 10);
    const checkpoint = sqliteProcess(`
      const db = new Database(${JSON.stringify(db)});
      db.pragma("busy_timeout = 10000");
      for (let i = 0; i < 50; i++) {
        const [row] = db.pragma("wal_checkpoint(TRUNCATE)");
        if (row.busy === 0) { console.log(JSON.stringify(row)); break; }
      }
      db.close();`);
    expect(checkpoint.code, checkpoint.stderr).toBe(0);
    expect(JSON.parse(checkpoint.stdout), "the TRUNCATE checkpoint completed").toMatchObject({ busy: 0 });
    await writer.waitForRecords(writer.records.length + 10); // the WAL restarts with new salts
    const gapTime = Date.now();
    await sleep(300);

    const second = startReplicator(["--config", config]);
    cleanups.push(() => second.kill());
    const announced = await second.waitFor((e) => e.type === "generation", "a generation event on restart");
    const gen2 = announced.generation!;
    expect(gen2, "a new generation").not.toBe(gen1);
    await second.waitFor(
      (e) => e.type === "shipped" && e.generation === gen2,
      "a shipped segment of the new generation",
    );
    await writer.waitForRecords(writer.records.length + 20);
    await writer.stop();
    const records = [...before.records, ...writer.records];
    const finalHash = records.at(-1)!.hash!;
    await sleep(1000);
    const secondExit = await second.kill("SIGTERM");
    expect(secondExit.code, second.stderr()).toBe(0);

    const hashes = hashesByWriterTxn(initialHash, records);
    const out = (name: string) => join(dir, `restored-${name}.db`);
    const [old, oldFirst, latest, newFirst, inGap] = await inParallel(
      [
        () => restoreWithCli(db, target, out("gen1"), { generation: gen1 }),
        () => restoreWithCli(db, target, out("gen1-0"), { generation: gen1, toTxn: 0 }),
        () => restoreWithCli(db, target, out("latest")),
        () => restoreWithCli(db, target, out("gen2-0"), { generation: gen2, toTxn: 0 }),
        () => restoreWithCli(db, target, out("gap"), { toTime: gapTime }),
      ],
      3,
    );
    expectCommittedState(expect, old!, hashes, "the old generation's latest state");
    expect(old!.result!.generation).toBe(gen1);
    expect(old!.result!.txn, "everything the first run shipped").toBe(lastShipped1);
    // SIGTERM shipped everything committed before it was sent.
    expect(old!.hash, "the old generation ends with the last commit before SIGTERM").toBe(before.records.at(-1)!.hash);
    expectCommittedState(expect, oldFirst!, hashes, "the old generation's snapshot");
    expectCommittedState(expect, latest!, hashes, "the latest state");
    expect(latest!.result!.generation).toBe(gen2);
    expect(latest!.hash).toBe(finalHash);
    expectCommittedState(expect, newFirst!, hashes, "the new generation's snapshot");
    expect(newFirst!.writerTxn!, "the new generation starts after the old one ends").toBeGreaterThan(old!.writerTxn!);
    // A moment while the replicator was down: the old generation's end is the newest state archived then.
    expectCommittedState(expect, inGap!, hashes, "restore to a moment in the gap");
    expect(inGap!.result!.generation).toBe(gen1);
    expect(inGap!.hash).toBe(old!.hash);
    // Transaction numbers restart with each generation: `--to-txn N` alone takes the newest
    // generation that has transaction N, not blindly the newest generation.
    const byTxn = await restoreWithCli(db, target, out("by-txn"), { toTxn: lastShipped1 });
    expect(byTxn.ok, byTxn.run.stderr).toBe(true);
    const gen2Last = latest!.result!.txn;
    expect(byTxn.result!.generation).toBe(lastShipped1 <= gen2Last ? gen2 : gen1);
    expectCommittedState(expect, byTxn, hashes, `restore --to-txn ${lastShipped1}`);
    if (lastShipped1 > gen2Last) expect(byTxn.hash).toBe(old!.hash);
    const beyond = await restoreWithCli(db, target, out("beyond"), { toTxn: Math.max(lastShipped1, gen2Last) + 1 });
    expect(beyond.ok, "a transaction no generation has").toBe(false);
    expect(beyond.run.stdout + beyond.run.stderr).toMatch(/not restorable/);
  }, 120_000);

  it("an application's own checkpoint (what SQLite's autocheckpoint does) does not break the generation", async ({
    expect,
    onTestFinished,
  }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("app-checkpoint");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db);
    const config = writeConfig(dir, db, target, { syncInterval: "250ms" });
    const replicator = startReplicator(["--config", config]);
    cleanups.push(() => replicator.kill());
    const generation = (await replicator.waitFor((e) => e.type === "generation", "the generation")).generation!;
    await replicator.waitFor((e) => e.type === "snapshot", "the snapshot");
    // The application: writes, and later checkpoints PASSIVE at a quiet moment (as wal_autocheckpoint
    // does after a commit). The replicator has shipped everything by then, so the checkpoint completes.
    const app = (statements: string) =>
      sqliteProcess(`
        const db = new Database(${JSON.stringify(db)});
        db.pragma("busy_timeout = 5000");
        db.pragma("wal_autocheckpoint = 0");
        const out = [];
        for (const sql of ${JSON.stringify(statements.split(";").filter((x) => x.trim()))}) {
          out.push(sql.startsWith("PRAGMA") ? db.pragma(sql.slice(7)) : db.exec(sql) && null);
        }
        console.log(JSON.stringify(out));
        db.close();`);
    const writes = app("INSERT INTO seed (v) VALUES ('a');INSERT INTO seed (v) VALUES (randomblob(5000))");
    expect(writes.code, writes.stderr).toBe(0);
    await replicator.waitFor((e) => e.type === "shipped" && e.lastTxn! >= 2, "both writes shipped");
    await sleep(1000);
    const checkpoint = app("PRAGMA wal_checkpoint(PASSIVE)");
    expect(checkpoint.code, checkpoint.stderr).toBe(0);
    const [[row]] = JSON.parse(checkpoint.stdout) as [{ busy: number; log: number; checkpointed: number }[]];
    expect(row!.log, "the application's checkpoint completed").toBe(row!.checkpointed);
    await sleep(1000); // a few syncs: the replicator renews its read transaction
    // The next write restarts the WAL (fresh salts): the same history goes on.
    const more = app("INSERT INTO seed (v) VALUES ('b');INSERT INTO seed (v) VALUES ('c')");
    expect(more.code, more.stderr).toBe(0);
    const finalHash = databaseContentHash(db);
    await replicator.waitFor(
      (e) => (e.type === "shipped" && e.lastTxn! >= 4) || (e.type === "generation" && e.generation !== generation),
      "the last writes shipped",
    );
    await sleep(500);
    expect((await replicator.kill("SIGTERM")).code, replicator.stderr()).toBe(0);
    const generations = replicator.events.filter((e) => e.type === "generation");
    expect.soft(replicator.events.filter((e) => e.type === "error")).toEqual([]);
    expect
      .soft(
        generations.map((e) => e.reason),
        "one generation: the WAL restart after the application's complete checkpoint continues the history",
      )
      .toEqual([generations[0]!.reason]);
    const latest = await restoreWithCli(db, target, join(dir, "restored.db"));
    expect(latest.ok, latest.run.stderr).toBe(true);
    expect.soft(latest.result!.txn, "the four writes are transactions 1-4 of the generation").toBe(4);
    expect(latest.hash).toBe(finalHash);
  });

  it("30 s with the target unwritable: the queue ships when it returns, no gap", async ({ expect, onTestFinished }) => {
    const cleanups = cleanupList(onTestFinished);
    const dir = tempDir("outage");
    const db = join(dir, "app.db");
    const mnt = tmpfs(dir, cleanups);
    const target = join(mnt, "archive");
    const initialHash = createDatabase(db);
    const writer = await startWriterProcess({
      path: db,
      seed: 5150,
      hash: true,
      ratePerSecond: 10,
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
    expect(writtenDuringOutage, "the writer went on during the outage").toBeGreaterThan(60);
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
    expect(
      replicator.events.filter((e) => e.type === "generation"),
      "the outage did not break the generation",
    ).toHaveLength(1);

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
