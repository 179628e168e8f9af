import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createLifeboat, type DatabaseContext, Repository } from "@lifeboat/core";
import { readWalIndexHeader, sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { databaseContentHash } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { listGenerations, restoreToPoint } from "./point-in-time.js";
import { Replicator, type ReplicatorEvent } from "./replicator.js";
import { parseSegment } from "./segment-format.js";
import { verifyArchive } from "./verify-archive.js";

const require = createRequire(import.meta.url);
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(
  options: {
    checkpointPages?: number;
    emergencyCheckpointPages?: number;
    segmentIntervalMs?: number;
    queueMaxBytes?: number;
  } = {},
) {
  const dir = mkdtempSync(join(tmpdir(), "lifeboat-wal-"));
  const path = join(dir, "app.db");
  const app = new Database(path);
  app.pragma("journal_mode = WAL");
  app.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB); INSERT INTO t (v) VALUES ('before');");
  const lb = createLifeboat({
    config: { databases: [{ path, targets: [{ type: "local", path: join(dir, "backups") }] }] },
    plugins: [sqliteSourcePlugin, localStoragePlugin],
  });
  const db: DatabaseContext = await lb.database();
  const events: ReplicatorEvent[] = [];
  const replicator = new Replicator(db, {
    syncIntervalMs: 50,
    checkpointPages: options.checkpointPages ?? 1000,
    ...(options.emergencyCheckpointPages ? { emergencyCheckpointPages: options.emergencyCheckpointPages } : {}),
    ...(options.segmentIntervalMs ? { segmentIntervalMs: options.segmentIntervalMs } : {}),
    ...(options.queueMaxBytes ? { queueMaxBytes: options.queueMaxBytes } : {}),
    onEvent: (e) => events.push(e),
  });
  cleanups.push(() => {
    app.close();
  });
  /** A second replicator of the same database (a restart), reporting into the same events. */
  const restarted = () => new Replicator(db, { syncIntervalMs: 50, onEvent: (e) => events.push(e) });
  return { dir, path, app, lb, db, replicator, events, restarted };
}

/** Runs `code` in another Node process, as an app would, with `db` (better-sqlite3) open on `path`; resolves with its stdout. */
function inAppProcess(path: string, code: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        "-e",
        `const db = new (require(${JSON.stringify(require.resolve("better-sqlite3"))}))(${JSON.stringify(path)}); ${code}`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    child.stdout.on("data", (d) => {
      out += String(d);
    });
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve(out) : reject(new Error(`the app process exited with ${code}`))));
  });
}

describe("replicator and point-in-time restore", () => {
  it("restores exactly the state after any shipped transaction", async () => {
    const { dir, app, db, replicator, events } = await setup({ checkpointPages: 40 });
    await replicator.start();
    const hashes: string[] = [databaseContentHash(app)];
    const insert = app.prepare("INSERT INTO t (v, b) VALUES (?, ?)");
    for (let i = 1; i <= 120; i++) {
      if (i % 17 === 0) app.exec(`DELETE FROM t WHERE id % 3 = ${i % 3}`);
      else if (i === 60) app.exec("BEGIN; CREATE TABLE extra (x); INSERT INTO extra VALUES (1), (2); COMMIT;");
      else if (i === 90) app.exec("DROP TABLE extra");
      else insert.run(`row ${i}`, Buffer.alloc((i % 5) * 3000, i));
      hashes.push(databaseContentHash(app));
      if (i % 10 === 0) await replicator.sync();
    }
    // Writes pause: a checkpoint can now complete. Which kind completes last depends on timing: a
    // PASSIVE one (on its own thread) once the pin has moved past the last commit, or a locked one
    // when the app kept committing past an incomplete PASSIVE; after a complete one the WAL
    // restarts only at the next commit, so with none left nothing more is checkpointed.
    const completed = () => events.some((e) => e.type === "checkpoint" && e.complete);
    for (let waited = 0; !completed() && waited < 5000; waited += 50) {
      await replicator.sync();
      await new Promise((r) => setTimeout(r, 50));
    }
    const stopped = await replicator.stop();
    expect(stopped.pending).toEqual([]);
    expect(replicator.txn).toBe(120);
    // Checkpoints completed, and the history stayed one generation.
    expect(completed()).toBe(true);
    expect(events.filter((e) => e.type === "generation")).toHaveLength(1);

    for (const txn of [0, 1, 17, 59, 60, 61, 90, 119, 120]) {
      const output = join(dir, `restored-${txn}.db`);
      const result = await restoreToPoint(db, { toTxn: txn, output });
      expect(result.txn).toBe(txn);
      expect(databaseContentHash(output), `txn ${txn}`).toBe(hashes[txn]);
    }
    const latest = await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(latest.txn).toBe(120);
    const generations = await listGenerations(new Repository(db.targets[0]!, db.name));
    expect(generations).toHaveLength(1);
    expect(generations[0]!.continuousTo).toBe(120);
  });

  it("restores to a time: every transaction observed at or before it", async () => {
    const { dir, app, db, replicator } = await setup();
    await replicator.start();
    const marks: { time: number; hash: string }[] = [];
    for (let i = 0; i < 5; i++) {
      app.prepare("INSERT INTO t (v) VALUES (?)").run(`batch ${i}`);
      await replicator.sync();
      await new Promise((r) => setTimeout(r, 30));
      marks.push({ time: Date.now(), hash: databaseContentHash(app) });
      await new Promise((r) => setTimeout(r, 30));
    }
    await replicator.stop();
    for (const mark of marks) {
      const output = join(dir, `at-${mark.time}.db`);
      await restoreToPoint(db, { toTime: mark.time, output });
      expect(databaseContentHash(output)).toBe(mark.hash);
    }
  });

  it("stamps what a restart finds already committed with when nobody watched, and says so at restores into that stretch", async () => {
    const { dir, app, db, replicator, events, restarted } = await setup();
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await replicator.start();
    app.exec("INSERT INTO t (v) VALUES ('watched')");
    await replicator.sync();
    const watched = databaseContentHash(app);
    await replicator.stop();
    const stoppedAt = Date.now();
    await sleep(30);
    const gapCommits: number[] = [];
    for (const v of ["down 1", "down 2"]) {
      app.prepare("INSERT INTO t (v) VALUES (?)").run(v);
      gapCommits.push(Date.now());
      await sleep(30);
    }
    const midGap = Date.now();
    await sleep(30);
    const again = restarted();
    await again.start();
    app.exec("INSERT INTO t (v) VALUES ('watched again')");
    await again.sync();
    await again.stop();
    expect(events.filter((e) => e.type === "generation")).toHaveLength(1); // a clean restart continues
    // The headers: the two transactions found at the restart carry a bound before their commits.
    const repo = new Repository(db.targets[0]!, db.name);
    const [generation] = await listGenerations(repo);
    const headers = [];
    for (const seg of generation!.segments) {
      const chunks: Uint8Array[] = [];
      for await (const c of (await repo.target.get(seg.key)).body) chunks.push(c);
      headers.push(...parseSegment(Buffer.concat(chunks), seg.key).header.transactions);
    }
    expect(headers.map((h) => h.txn)).toEqual([1, 2, 3, 4]);
    expect(headers[0]!.committedAfter).toBeUndefined();
    expect(headers[3]!.committedAfter).toBeUndefined();
    for (const h of headers.slice(1, 3)) {
      expect(h.committedAfter).toBeGreaterThanOrEqual(headers[0]!.observedAt);
      expect(h.committedAfter).toBeLessThanOrEqual(Math.min(stoppedAt, gapCommits[0]!));
    }
    // A time inside the stretch: the state before it, with a warning naming the transactions.
    const mid = await restoreToPoint(db, { toTime: midGap, output: join(dir, "mid.db") });
    expect(mid.txn).toBe(1);
    expect(databaseContentHash(join(dir, "mid.db"))).toBe(watched);
    expect(mid.warnings).toHaveLength(1);
    expect(mid.warnings[0]).toMatch(/Transactions 2-3 were committed at unknown times between .* --to-txn \(up to 3\)/);
    // A dry run says the same, and names the same transaction.
    const dry = await restoreToPoint(db, { toTime: midGap, output: join(dir, "dry.db"), dryRun: true });
    expect(dry.txn).toBe(1);
    expect(dry.warnings).toEqual(mid.warnings);
    // Before the stretch, and after the restart: no warning.
    const before = await restoreToPoint(db, { toTime: headers[0]!.observedAt, output: join(dir, "before.db") });
    expect(before.warnings).toEqual([]);
    const latest = await restoreToPoint(db, { toTime: Date.now(), output: join(dir, "latest.db") });
    expect(latest.warnings).toEqual([]);
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
  });

  it("warns when a time falls between two generations, where nothing was archived", async () => {
    const { dir, app, db, replicator, events, restarted } = await setup();
    await replicator.start();
    app.exec("INSERT INTO t (v) VALUES ('one')");
    await replicator.sync();
    const first = databaseContentHash(app);
    await replicator.stop();
    await new Promise((r) => setTimeout(r, 30));
    app.exec("INSERT INTO t (v) VALUES ('two')");
    app.pragma("wal_checkpoint(TRUNCATE)"); // the history cannot be continued: a new generation
    const between = Date.now();
    await new Promise((r) => setTimeout(r, 30));
    const again = restarted();
    await again.start();
    await again.stop();
    expect(events.filter((e) => e.type === "generation")).toHaveLength(2);
    const result = await restoreToPoint(db, { toTime: between, output: join(dir, "between.db") });
    expect(databaseContentHash(join(dir, "between.db"))).toBe(first);
    expect(result.warnings).toHaveLength(1);
    expect(result.warnings[0]).toMatch(/^Nothing was archived between .* and .* \(the start of generation/);
  });

  it("a one-off backup taken while the replicator runs does not hide the archive's newer states", async () => {
    const { dir, app, lb, db, replicator } = await setup();
    await replicator.start();
    app.exec("INSERT INTO t (v) VALUES ('one')");
    await replicator.sync();
    await lb.backup(undefined, { reason: "manual" }); // not through the replicator: a generation of its own
    await new Promise((r) => setTimeout(r, 30));
    app.exec("INSERT INTO t (v) VALUES ('two')");
    await replicator.sync();
    const afterTwo = databaseContentHash(app);
    await new Promise((r) => setTimeout(r, 30));
    const between = Date.now();
    await new Promise((r) => setTimeout(r, 30));
    app.exec("INSERT INTO t (v) VALUES ('three')");
    await replicator.stop();
    expect(await listGenerations(new Repository(db.targets[0]!, db.name))).toHaveLength(2);
    const latest = await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
    expect(latest.txn).toBe(3);
    await restoreToPoint(db, { toTime: between, output: join(dir, "between.db") });
    expect(databaseContentHash(join(dir, "between.db"))).toBe(afterTwo);
  });

  it("says so when segments after a missing one cannot be applied", async () => {
    const { dir, app, db, replicator } = await setup();
    await replicator.start();
    for (const v of ["one", "two", "three"]) {
      app.prepare("INSERT INTO t (v) VALUES (?)").run(v);
      await replicator.sync();
    }
    await replicator.stop();
    const repo = new Repository(db.targets[0]!, db.name);
    const [generation] = await listGenerations(repo);
    expect(generation!.segments.map((x) => [x.firstTxn, x.lastTxn])).toEqual([
      [1, 1],
      [2, 2],
      [3, 3],
    ]);
    expect(generation!.stranded).toBeNull();
    rmSync(join(dir, "backups", generation!.segments[1]!.key)); // lost on the target
    const latest = await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(latest.txn).toBe(1);
    expect(latest.warnings).toEqual([
      expect.stringMatching(/segments up to transaction 3, but transaction 2 is missing/),
    ]);
    const [after] = await listGenerations(repo);
    expect(after!.stranded).toEqual({ fromTxn: 3, toTxn: 3, missingFrom: 2 });
    expect(after!.restorableTo).toBe(1);
  });

  it("a database copied over in place with its -wal and -shm removed starts a new generation, and stopping leaves the new content alone", async () => {
    const { dir, path, app, db, replicator, events } = await setup();
    await replicator.start();
    app.prepare("INSERT INTO t (v) VALUES (?)").run("archived");
    await replicator.sync();
    await waitUntil(() => events.some((e) => e.type === "shipped" && e.lastTxn >= 1), "transaction 1 shipped");
    app.close();
    const other = join(dir, "other.db");
    const source = new Database(other);
    source.pragma("journal_mode = WAL");
    source.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, b BLOB); INSERT INTO t (v) VALUES ('other');");
    source.close();
    // By hand, as a restore gone wrong: cp keeps the inode, so only the -wal and -shm tell.
    rmSync(`${path}-wal`);
    rmSync(`${path}-shm`);
    copyFileSync(other, path);
    // The app, in its own process as in production (in this process, SQLite would share the
    // replicator's view of the removed -shm).
    await inAppProcess(path, 'for (let i = 0; i < 5; i++) db.prepare("INSERT INTO t (v) VALUES (?)").run("new " + i);');
    await replicator.sync();
    await replicator.stop();
    expect(events.filter((e) => e.type === "generation").map((e) => e.type === "generation" && e.reason)).toEqual([
      "first run",
      expect.stringMatching(/-wal file was deleted while the replicator had it open/),
    ]);
    const warned = events.find((e) => e.type === "error");
    expect(warned?.type === "error" && warned.error.hint).toMatch(/--to-txn 1 --output recovered\.db/);
    // Before: the replicator, last to close, checkpointed the stale WAL into the new file and
    // deleted the app's WAL (by path) with its five commits.
    const after = new Database(path, { readonly: true });
    expect(after.prepare("SELECT v FROM t ORDER BY id").pluck().all()).toEqual([
      "other",
      "new 0",
      "new 1",
      "new 2",
      "new 3",
      "new 4",
    ]);
    after.close();
    await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(path));
  });

  it("checkpoints an idle app's last commits into the database file", async () => {
    const { dir, path, app, replicator } = await setup();
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    for (let i = 0; i < 30; i++) insert.run(`row ${i}`); // far below the checkpoint threshold
    await replicator.sync();
    await waitUntil(() => {
      const index = readWalIndexHeader(`${path}-shm`)!;
      return index.nBackfill === index.mxFrame;
    }, "every frame in the database file");
    // The file alone (as `rm app.db-wal app.db-shm` would leave it) holds every commit.
    copyFileSync(path, join(dir, "file-only.db"));
    const alone = new Database(join(dir, "file-only.db"), { readonly: true });
    expect(alone.prepare("SELECT count(*) FROM t").pluck().get()).toBe(31);
    alone.close();
    await replicator.stop();
  });

  it("a target whose folder was deleted gets a new snapshot at the next lease renewal", async () => {
    const { dir, app, db, events } = await setup();
    const replicator = new Replicator(db, { syncIntervalMs: 50, leaseTtlMs: 3000, onEvent: (e) => events.push(e) });
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    insert.run("before");
    await replicator.sync();
    rmSync(join(dir, "backups"), { recursive: true }); // a cleanup job with the wrong path
    for (const v of ["after 1", "after 2"]) {
      insert.run(v);
      await replicator.sync();
    }
    // Renewals every second with this TTL.
    await waitUntil(() => events.filter((e) => e.type === "snapshot").length >= 2, "a second snapshot", 5000);
    insert.run("after the new snapshot");
    await replicator.sync();
    await replicator.stop();
    expect(events.filter((e) => e.type === "error").map((e) => e.type === "error" && e.error.message)).toEqual([
      expect.stringMatching(/lost archived data of generation \w+: its lease and snapshots were deleted/),
    ]);
    expect(events.filter((e) => e.type === "snapshot")).toHaveLength(2);
    expect(existsSync(join(dir, "backups", "app", "lifeboat.json"))).toBe(true);
    await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
  });

  it("a target whose WAL segments were deleted gets a new snapshot when the sentinel check finds the first one gone", async () => {
    const { dir, app, db, events } = await setup();
    const replicator = new Replicator(db, { syncIntervalMs: 50, leaseTtlMs: 3000, onEvent: (e) => events.push(e) });
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    for (const v of ["one", "two", "three"]) {
      insert.run(v);
      await replicator.sync();
    }
    await waitUntil(() => events.some((e) => e.type === "shipped" && e.lastTxn >= 3), "transaction 3 shipped");
    const [generation] = await listGenerations(new Repository(db.targets[0]!, db.name));
    const wal = join(dir, "backups", "app", "generations", generation!.generation, "wal");
    for (const name of readdirSync(wal)) rmSync(join(wal, name)); // an expiry rule on WAL objects
    insert.run("four");
    await replicator.sync();
    // Renewals every second, the sentinel every sixth.
    await waitUntil(() => events.filter((e) => e.type === "snapshot").length >= 2, "a second snapshot");
    insert.run("five");
    await replicator.sync();
    await replicator.stop();
    expect(events.filter((e) => e.type === "error").map((e) => e.type === "error" && e.error.message)).toEqual([
      expect.stringMatching(
        /lost archived data of generation \w+: segment .* the first after its newest snapshot, was deleted/,
      ),
    ]);
    await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
  }, 20_000);

  it("verifyArchive reads back every segment and names a damaged one and the transactions a missing one strands", async () => {
    const { dir, app, db, replicator } = await setup();
    await replicator.start();
    for (const v of ["one", "two", "three", "four"]) {
      app.prepare("INSERT INTO t (v, b) VALUES (?, ?)").run(v, randomBytes(3000));
      await replicator.sync();
    }
    await replicator.stop();
    const sound = await verifyArchive(db);
    expect(sound.ok).toBe(true);
    expect(sound.generations).toEqual([
      expect.objectContaining({ segments: 4, segmentsOk: 4, windows: [{ fromTxn: 0, toTxn: 4 }], problems: [] }),
    ]);

    const [generation] = await listGenerations(new Repository(db.targets[0]!, db.name));
    const file = (i: number) => join(dir, "backups", generation!.segments[i]!.key);
    const bytes = readFileSync(file(1));
    bytes[bytes.length - 40]! ^= 0xff; // in the compressed body, before the sha256 trailer
    writeFileSync(file(1), bytes);
    rmSync(file(2));
    const damaged = await verifyArchive(db);
    expect(damaged.ok).toBe(false);
    expect(damaged.failedSegments).toEqual([
      expect.objectContaining({ key: generation!.segments[1]!.key, problem: expect.stringMatching(/is corrupt/) }),
    ]);
    // The damaged segment counts as missing: a restore stops before it.
    expect(damaged.generations[0]!.windows).toEqual([{ fromTxn: 0, toTxn: 1 }]);
    expect(damaged.generations[0]!.problems).toEqual([
      "transactions 2-3 are missing or unreadable, so the archived transactions 4-4 cannot be restored (a restore stops at 1)",
      expect.stringMatching(/^segment .* is corrupt/),
    ]);
  });

  it("gives up on a WAL whose committed frames fail their checksums and starts a new generation", async () => {
    // SQLite 3.40 (Debian 12's, Python's) leaves such frames after ROLLBACK TO a savepoint in a
    // transaction that spilled to the WAL: the index counts them, their headers were never
    // written. Here a commit's frame headers are zeroed the same way, before the replicator (on
    // this same event loop) can read them.
    const { dir, path, app, db, replicator, events } = await setup();
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    insert.run("one");
    insert.run("two");
    await replicator.sync();
    expect(replicator.txn).toBe(2);
    const beforeBreak = databaseContentHash(app);
    const first = readWalIndexHeader(`${path}-shm`)!.mxFrame;
    insert.run("written without valid frame headers");
    const last = readWalIndexHeader(`${path}-shm`)!.mxFrame;
    const wal = openSync(`${path}-wal`, "r+");
    for (let frame = first + 1; frame <= last; frame++)
      writeSync(wal, Buffer.alloc(16), 0, 16, 32 + (frame - 1) * (24 + 4096) + 8);
    closeSync(wal);
    insert.run("after the break");
    const end = readWalIndexHeader(`${path}-shm`)!.mxFrame;
    expect(app.prepare("SELECT count(*) AS n FROM t").get()).toEqual({ n: 5 }); // SQLite itself reads them
    const restarted = () => events.some((e) => e.type === "generation" && /cannot be validated/.test(e.reason));
    for (let waited = 0; !restarted() && waited < 10_000; waited += 50) {
      await replicator.sync().catch(() => {});
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(restarted(), "a new generation started").toBe(true);
    const error = events.find((e) => e.type === "error");
    expect(error?.type === "error" && error.error.code).toBe("INTEGRITY_FAILED");
    expect(error?.type === "error" && error.error.message).toMatch(
      new RegExp(`counts committed frames up to ${end}, but the WAL's frames cannot be validated after frame ${first}`),
    );
    insert.run("in the new generation");
    await replicator.sync();
    await replicator.stop();

    const generations = await listGenerations(new Repository(db.targets[0]!, db.name));
    expect(generations).toHaveLength(2);
    expect(generations[0]!.restorableTo).toBe(2); // up to the break, and no further
    await restoreToPoint(db, { generation: generations[0]!.generation, output: join(dir, "old.db") });
    expect(databaseContentHash(join(dir, "old.db"))).toBe(beforeBreak);
    // The new generation's snapshot holds everything SQLite committed, the unreadable frames too.
    const latest = await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(latest.generation).toBe(generations[1]!.generation);
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
    expect(
      new Database(join(dir, "latest.db"), { readonly: true }).prepare("SELECT count(*) AS n FROM t").get(),
    ).toEqual({
      n: 6,
    });
  });

  it("lets the app's own TRUNCATE checkpoint through within its busy timeout, and the history goes on", async () => {
    const { dir, path, app, db, replicator, events } = await setup();
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    for (let i = 0; i < 20; i++) insert.run(`row ${i}`);
    await replicator.sync();
    // Another process, as an app would: TRUNCATE holds the write lock and waits for readers, so
    // a pin that moved only once a second made it wait up to two seconds (other writers too).
    const truncate = () =>
      inAppProcess(
        path,
        `db.pragma("busy_timeout = 300"); process.stdout.write(JSON.stringify(db.pragma("wal_checkpoint(TRUNCATE)")[0]));`,
      );
    for (let round = 0; round < 3; round++) {
      await new Promise((r) => setTimeout(r, 100));
      expect(JSON.parse(await truncate()), `round ${round}`).toEqual({ busy: 0, log: 0, checkpointed: 0 });
      expect(statSync(`${path}-wal`).size).toBe(0);
      for (let i = 0; i < 5; i++) insert.run(`after truncate ${round}.${i}`);
      await replicator.sync();
    }
    await replicator.stop();
    expect(replicator.txn).toBe(35);
    expect(events.filter((e) => e.type === "generation")).toHaveLength(1);
    await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
  });

  it("a restart at transaction 0 after the app wrote and truncated the WAL meanwhile starts a new generation", async () => {
    const { dir, app, db, replicator, events, restarted } = await setup();
    app.pragma("wal_checkpoint(TRUNCATE)");
    await replicator.start(); // an empty WAL and nothing committed while it runs: its position is frame 0
    await replicator.stop();
    app.exec("INSERT INTO t (v) VALUES ('while down'); CREATE TABLE later (x); INSERT INTO later VALUES (1);");
    app.pragma("wal_checkpoint(TRUNCATE)"); // the WAL is empty again, its header gone
    const again = restarted();
    await again.start();
    app.exec("INSERT INTO t (v) VALUES ('after')");
    await again.sync();
    await again.stop();
    const generations = events.filter((e) => e.type === "generation");
    expect(generations).toHaveLength(2);
    expect(generations[1]).toMatchObject({ reason: expect.stringMatching(/no longer continues.*missing/) });
    await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
  });

  it("an outside TRUNCATE checkpoint while the replicator is down starts a new generation", async () => {
    const { app, db, replicator, events, path, restarted } = await setup();
    await replicator.start();
    app.exec("INSERT INTO t (v) VALUES ('one')");
    await replicator.stop();
    app.exec("INSERT INTO t (v) VALUES ('two')");
    app.pragma("wal_checkpoint(TRUNCATE)");
    app.exec("INSERT INTO t (v) VALUES ('three')");
    const again = restarted();
    await again.start();
    app.exec("INSERT INTO t (v) VALUES ('four')");
    await again.stop();
    const generations = events.filter((e) => e.type === "generation");
    expect(generations).toHaveLength(2);
    const output = `${path}.restored`;
    await restoreToPoint(db, { output });
    expect(databaseContentHash(output)).toBe(databaseContentHash(app));
    expect(existsSync(output)).toBe(true);
    expect(readdirSync(join(path, "..")).some((f) => f.includes("lifeboat-restore"))).toBe(false);
  });
});

describe("replicator generations", () => {
  it("a database that starts with an empty WAL stays in one generation when the app writes", async () => {
    const { app, replicator, events } = await setup();
    app.pragma("wal_checkpoint(TRUNCATE)");
    await replicator.start();
    for (let i = 0; i < 5; i++) {
      app.exec(`INSERT INTO t (v) VALUES ('x${i}')`);
      await replicator.sync();
    }
    await replicator.stop();
    expect(events.filter((e) => e.type === "generation")).toHaveLength(1);
    expect(replicator.txn).toBe(5);
  });
});

/** Another process commits about `rate` times a second, without pause, for `ms`; resolves with the number of commits. */
function writeWithoutPause(path: string, rate: number, ms: number): Promise<number> {
  const script = `
    const Database = require("better-sqlite3");
    const db = new Database(${JSON.stringify(path)});
    db.pragma("busy_timeout = 10000");
    db.pragma("synchronous = NORMAL");
    const insert = db.prepare("INSERT INTO t (v, b) VALUES (?, randomblob(500))");
    const start = Date.now();
    const end = start + ${ms};
    const tick = new Int32Array(new SharedArrayBuffer(4));
    let n = 0;
    while (Date.now() < end) {
      insert.run("w" + n);
      n++;
      while (n > ((Date.now() - start) * ${rate}) / 1000) Atomics.wait(tick, 0, 0, 1);
    }
    db.close();
    console.log(n);`;
  const child = spawn(process.execPath, ["-e", script], {
    cwd: dirname(dirname(fileURLToPath(import.meta.url))),
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout.on("data", (d) => {
    out += d;
  });
  return new Promise((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`writer exited ${code}`))));
  });
}

describe("locked checkpoints", () => {
  it("bound the WAL under a writer that never pauses, without breaking the generation", async () => {
    const { dir, path, app, db, replicator, events } = await setup({
      checkpointPages: 50,
      emergencyCheckpointPages: 300,
    });
    await replicator.start();
    const commits = await writeWithoutPause(path, 1500, 3000);
    await replicator.stop();
    expect(commits).toBeGreaterThan(300);
    const truncates = events.filter((e) => e.type === "checkpoint" && e.mode === "LOCKED");
    expect(truncates.length, "locked checkpoints ran").toBeGreaterThan(0);
    expect(
      truncates.some((e) => e.type === "checkpoint" && e.complete),
      "at least one completed",
    ).toBe(true);
    expect(
      events.filter((e) => e.type === "generation"),
      "no frame was checkpointed unshipped",
    ).toHaveLength(1);
    expect(replicator.txn, "every commit was shipped").toBe(commits);
    expect(replicator.maxWriteLockMs).toBeGreaterThan(0);
    const output = join(dir, "latest.db");
    await restoreToPoint(db, { output });
    expect(databaseContentHash(output)).toBe(databaseContentHash(app));
    // Without the backstop the WAL would hold every commit (a frame of 4 KiB or more each).
    // Without locked checkpoints the WAL would hold every commit (a frame of 4 KiB or more each);
    // with them it restarts whenever it passes checkpointPages (50), plus what a lock wait adds
    // (about 160 frames here on an idle machine; the bound leaves room for a loaded CI machine).
    expect(statSync(`${path}-wal`).size).toBeLessThan((commits * 4096) / 3);
    expect(replicator.maxWriteLockMs, "the lock is held briefly").toBeLessThan(1000);
  }, 60_000);

  it("lets the app's own checkpoints copy frames: its pin never stays on read lock 0 once the WAL has frames", async () => {
    // The pin is taken while the WAL is empty (read lock 0: the database file only). Left there,
    // it stops every checkpoint, and SQLite's auto-checkpoint sorts the whole WAL at every commit
    // past 1000 frames. Neither the pass rotation (past 100,000 frames) nor the 1 s rotation
    // comes into play here: only the probe can move it.
    const { app, path, replicator } = await setup({ checkpointPages: 100_000 });
    app.pragma("wal_checkpoint(TRUNCATE)");
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    const started = Date.now();
    for (let i = 0; i < 1500; i++) {
      insert.run(`row ${i}`);
      if (i % 100 === 0) await new Promise((r) => setTimeout(r, 10));
    }
    const index = readWalIndexHeader(`${path}-shm`)!;
    expect(Date.now() - started, "the writes took less than the 1 s pin rotation").toBeLessThan(900);
    expect(index.mxFrame).toBeGreaterThan(1000);
    // The app's auto-checkpoint (past 1000 frames) copied frames into the database file.
    expect(index.nBackfill).toBeGreaterThan(0);
    await replicator.sync();
    await replicator.stop();
    expect(replicator.txn).toBeGreaterThanOrEqual(1500);
  });
});

describe("segment interval", () => {
  it("gathers the commits of each interval into one segment, and loses none", async () => {
    const { dir, app, db, replicator, events } = await setup({ segmentIntervalMs: 600 });
    await replicator.start();
    const started = Date.now();
    for (let i = 0; i < 30; i++) {
      app.prepare("INSERT INTO t (v) VALUES (?)").run(`row ${i}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const elapsed = Date.now() - started;
    await replicator.stop();
    const segments = events.filter((e) => e.type === "spooled");
    // One segment per started interval, plus the final one at stop; without batching, about 30.
    expect(segments.length).toBeLessThanOrEqual(Math.ceil(elapsed / 600) + 2);
    expect(segments.length).toBeGreaterThan(1);
    expect(replicator.txn).toBe(30);
    const output = join(dir, "latest.db");
    await restoreToPoint(db, { output });
    expect(databaseContentHash(output)).toBe(databaseContentHash(app));
  });
});

describe("the local queue", () => {
  const queued = (replicator: Replicator) =>
    readdirSync(join(replicator.spool.dir, "segments"), { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && e.name.endsWith(".seg"))
      .map((e) => statSync(join(e.parentPath, e.name)).size);

  it("keeps only the newest segment once the target has every transaction", async () => {
    const { app, replicator } = await setup();
    await replicator.start();
    const insert = app.prepare("INSERT INTO t (v) VALUES (?)");
    for (let i = 0; i < 40; i++) {
      insert.run(`row ${i}`);
      await replicator.sync();
    }
    expect(queued(replicator).length, "segments queued while running").toBeGreaterThan(1);
    const stopped = await replicator.stop();
    expect(stopped.pending).toEqual([]);
    expect(queued(replicator), "what stays queued after a clean stop").toHaveLength(1);
  });

  it("past its bound while the target is down: drops the oldest, says so, and the target catches up with a new snapshot", async () => {
    const { dir, app, db, replicator, events } = await setup({ queueMaxBytes: 200_000 });
    await replicator.start();
    app.exec("INSERT INTO t (v) VALUES ('shipped before the outage')");
    await replicator.sync();
    await waitUntil(() => events.some((e) => e.type === "shipped" && e.lastTxn === 1), "transaction 1 shipped");
    // The target breaks: its directory is replaced by a file.
    const target = join(dir, "backups");
    renameSync(target, `${target}.away`);
    writeFileSync(target, "not a directory");
    const insert = app.prepare("INSERT INTO t (v, b) VALUES (?, ?)");
    let midOutage = 0;
    for (let i = 0; i < 30; i++) {
      insert.run(`outage ${i}`, randomBytes(20_000)); // incompressible: about 20 kB per segment
      await replicator.sync();
      if (i === 15) midOutage = Date.now();
    }
    await waitUntil(() => events.some((e) => e.type === "target-error"), "a target-error");
    const sizes = queued(replicator);
    expect(
      sizes.reduce((a, b) => a + b, 0),
      "queued bytes stay within the bound plus the newest segment",
    ).toBeLessThanOrEqual(200_000 + Math.max(...sizes));
    const warning = events.find((e) => e.type === "error" && /passed its bound/.test(e.error.message));
    expect(warning, "an event says transactions were dropped before the target got them").toBeDefined();
    if (warning?.type !== "error") throw new Error("unreachable");
    expect(warning.error.message).toMatch(
      /on local, points after transaction 1 cannot be restored, up to the new snapshot/,
    );
    expect(warning.error.hint).toMatch(/queueMaxSize/);

    rmSync(target);
    renameSync(`${target}.away`, target);
    app.exec("INSERT INTO t (v) VALUES ('after the outage')");
    const last = 32;
    await waitUntil(
      () => replicator.progress[0]?.shipped === last && replicator.progress[0]?.generation === replicator.generation,
      "the target to catch up",
      20_000,
      () => replicator.sync(),
    );
    expect(
      events.some((e) => e.type === "snapshot" && e.targets.includes("local") && e.position > 1),
      "it caught up from a new snapshot",
    ).toBe(true);
    expect(events.some((e) => e.type === "target-recovered")).toBe(true);
    await replicator.stop();
    expect(
      events.filter((e) => e.type === "generation"),
      "the generation goes on",
    ).toHaveLength(1);

    const latest = await restoreToPoint(db, { output: join(dir, "latest.db") });
    expect(latest.txn).toBe(last);
    expect(databaseContentHash(join(dir, "latest.db"))).toBe(databaseContentHash(app));
    const before = await restoreToPoint(db, { toTxn: 1, output: join(dir, "txn1.db") });
    expect(before.txn).toBe(1);
    await expect(restoreToPoint(db, { toTxn: 2, output: join(dir, "txn2.db") })).rejects.toThrow(
      /Transaction 2 of generation \w+ is not restorable from local: it holds transactions 0-1 \(/,
    );
    await expect(
      restoreToPoint(db, { toTime: midOutage, output: join(dir, "mid.db") }),
      "a time whose transactions are missing is refused, not answered with another state",
    ).rejects.toThrow(
      /is not restorable from local: generation \w+ lacks the transactions after 1 up to its snapshot at \d+ there/,
    );

    const [generation] = await listGenerations(new Repository(db.targets[0]!, db.name));
    expect(generation!.windows).toHaveLength(2);
    expect(generation!.windows[0]).toMatchObject({ fromTxn: 0, toTxn: 1 });
    expect(generation!.windows[1]!.toTxn).toBe(last);
    expect(generation!.restorableTo).toBe(last);
    const resumed = generation!.windows[1]!.fromTxn;
    const atResume = await restoreToPoint(db, { toTxn: resumed, output: join(dir, "resumed.db") });
    expect(atResume.snapshotPosition).toBe(resumed);
  });
});

async function waitUntil(
  done: () => boolean,
  what: string,
  timeoutMs = 10_000,
  poke: () => Promise<unknown> = async () => {},
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await poke();
    await new Promise((r) => setTimeout(r, 50));
  }
}
