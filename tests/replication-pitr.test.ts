/**
 * Continuous archiving end to end, with real processes: a writer process commits random
 * transactions while `lifeboat replicate` runs as its own process; then `lifeboat restore
 * --to-txn` and `--to-time` must give back exactly the states the writer committed.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createRandom, databaseContentHash, startWriterProcess, type WriterProcess } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { afterEach, describe, expect, it } from "vitest";
import { tempDir } from "./helpers.js";
import {
  alignments,
  commitStates,
  createDatabase,
  inParallel,
  observedTimes,
  type ReplicatorProcess,
  restoreWithCli,
  runCli,
  sleep,
  startReplicator,
  storedGenerations,
  storedSegments,
} from "./replication-helpers.js";

const cleanups: (() => Promise<unknown> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Observation lag we accept: a commit older than this before T must be in the restore to T. */
const LAG_BOUND_MS = 2000;

describe("point-in-time restore of a database written by another process", () => {
  it("--to-txn and --to-time give back exactly the committed states", async () => {
    const dir = tempDir("pitr");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    const initialHash = createDatabase(db);
    const writer: WriterProcess = await startWriterProcess({
      path: db,
      seed: 20261122,
      hash: true,
      ratePerSecond: 40,
      blobBytes: 48 * 1024,
      maxRowsPerTransaction: 12,
      weights: { vacuum: 3, dropTable: 4, createTable: 5, blob: 12 },
    });
    cleanups.push(() => writer.kill());
    // The replicator starts while the writer is busy: its snapshot lands somewhere in the stream.
    await writer.waitForRecords(15);
    const replicator: ReplicatorProcess = startReplicator([db, "--to", target]);
    cleanups.push(() => replicator.kill());
    await replicator.waitFor((e) => e.type === "snapshot", "the generation's snapshot", 60_000);
    await writer.waitForRecords(writer.records.length + 200, 60_000);
    await writer.stop();
    const records = [...writer.records];
    const finalHash = records.at(-1)!.hash!;
    expect(databaseContentHash(db)).toBe(finalHash);

    // SIGTERM ships everything and exits 0.
    const exit = await replicator.kill("SIGTERM");
    writeFileSync(join(dir, "events.jsonl"), replicator.events.map((e) => JSON.stringify(e)).join("\n")); // for diagnosis
    expect(exit.code, replicator.stderr()).toBe(0);
    const generations = replicator.events.filter((e) => e.type === "generation");
    expect(generations, "one run, one generation").toHaveLength(1);
    const generation = generations[0]!.generation!;
    expect(storedGenerations(target, "app")).toEqual([generation]);

    const kinds = new Set(records.map((r) => r.kind));
    for (const kind of ["insert", "update", "delete", "blob", "createTable", "dropTable", "vacuum"]) {
      expect(kinds, `the workload ran a ${kind}`).toContain(kind);
    }

    const states = commitStates(initialHash, records);
    const out = (name: string) => join(dir, `restored-${name}.db`);

    // Where the generation starts in the writer's history: the state at --to-txn 0 and 1.
    const [at0, at1, latest] = await Promise.all([
      restoreWithCli(db, target, out("txn0"), { toTxn: 0 }),
      restoreWithCli(db, target, out("txn1"), { toTxn: 1 }),
      restoreWithCli(db, target, out("latest")),
    ]);
    for (const r of [at0, at1, latest]) expect(r.ok, `${r.run.stdout}\n${r.run.stderr}`).toBe(true);
    expect(latest.hash, "restore of the latest state equals the database").toBe(finalHash);
    const candidates = alignments(states, at0.hash!, at1.hash!);
    expect(candidates, "the state at --to-txn 0 followed by --to-txn 1 is a run of committed states").toHaveLength(1);
    const offset = candidates[0]!;
    const lastTxn = states.length - 1 - offset;
    expect(latest.result!.txn, "every commit after the snapshot is one transaction of the generation").toBe(lastTxn);

    const random = createRandom(7);
    const txns = new Set<number>([0, lastTxn]);
    // Both commits of a VACUUM step are transactions of their own.
    const vacuum = states.findIndex((s, i) => i > offset && s.part === "vacuum");
    if (vacuum > 0) txns.add(vacuum - offset).add(vacuum - 1 - offset);
    while (txns.size < 20) txns.add(random.int(0, lastTxn));

    const segments = storedSegments(target, "app", generation);
    const observed = observedTimes(segments);
    for (let t = 1; t <= lastTxn; t++) expect(observed.has(t), `transaction ${t} is in a stored segment`).toBe(true);
    const snapshotAt = Date.parse(String(replicator.events.find((e) => e.type === "snapshot")!.time));
    const lastCommit = records.at(-1)!.t;
    const times: number[] = [];
    for (let i = 0; i < 50; i++) times.push(random.int(snapshotAt, lastCommit + 1500));

    const byTxn = await inParallel(
      [...txns].map((n) => () => restoreWithCli(db, target, out(`txn-${n}`), { toTxn: n })),
      4,
    );
    for (const [i, n] of [...txns].entries()) {
      const r = byTxn[i]!;
      expect(r.ok, `restore --to-txn ${n}: ${r.run.stdout}\n${r.run.stderr}`).toBe(true);
      expect(r.result!.txn).toBe(n);
      expect(r.hash, `--to-txn ${n} is the state after commit ${offset + n} of the writer`).toBe(
        states[offset + n]!.hash,
      );
    }

    const byTime = await inParallel(
      times.map((t, i) => () => restoreWithCli(db, target, out(`time-${i}`), { toTime: t })),
      4,
    );
    for (const [i, T] of times.entries()) {
      const r = byTime[i]!;
      const label = `restore --to-time ${new Date(T).toISOString()}`;
      expect(r.ok, `${label}: ${r.run.stdout}\n${r.run.stderr}`).toBe(true);
      // Exactly the transactions observed at or before T (what restore promises).
      let expectedTxn = 0;
      for (const [txn, at] of observed) if (at <= T && txn > expectedTxn) expectedTxn = txn;
      expect(r.result!.txn, `${label}: every transaction observed at or before T`).toBe(expectedTxn);
      const state = states[offset + r.result!.txn]!;
      expect(r.hash, `${label}: the committed state after transaction ${r.result!.txn}`).toBe(state.hash);
      // What a user relies on: nothing committed after T, nothing older than the lag bound missing.
      expect(state.after, `${label}: includes a commit that started after T`).toBeLessThanOrEqual(T);
      expect(state.t, `${label}: includes a commit made after T`).toBeLessThanOrEqual(T + 1000);
      const next = states[offset + r.result!.txn + 1];
      if (next) {
        expect(next.t, `${label}: misses a commit made more than ${LAG_BOUND_MS} ms before T`).toBeGreaterThan(
          T - LAG_BOUND_MS,
        );
      }
    }

    // `verify` reads back every segment and test-restores the archive.
    const verified = await runCli(["verify", db, "--to", target]);
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toContain(
      `ok     app local generation ${generation}: ${segments.length} of ${segments.length} WAL segments read back, restorable transactions 0-${lastTxn}`,
    );
    expect(verified.stdout).toMatch(
      new RegExp(
        `ok {5}app local trial restore of the latest state: generation ${generation}, transaction ${lastTxn}, integrity_check ok`,
      ),
    );
    expect(verified.stdout).toMatch(/ok {5}app local trial restore of the point in time \S+: generation/);

    // A segment lost on the target: `list` and `verify` name the archived transactions no restore can reach.
    expect(segments.length).toBeGreaterThan(2);
    const lost = segments[Math.floor(segments.length / 2)]!;
    rmSync(join(target, "app", "generations", generation, "wal", lost.key));
    const listed = await runCli(["list", db, "--to", target]);
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain(
      `warning: generation ${generation} holds transactions ${lost.lastTxn + 1}-${lastTxn} that no restore from this target can reach: transactions ${lost.firstTxn}-${lost.lastTxn} are missing here (a restore stops at ${lost.firstTxn - 1})`,
    );
    // With the first segment gone too, a restore without a point is the snapshot alone: it says
    // what it leaves out; a point in time past the gap is refused, not answered with an old state.
    rmSync(join(target, "app", "generations", generation, "wal", segments[0]!.key));
    const latestAfterLoss = await runCli(["restore", db, "--to", target, "--output", out("after-loss"), "--yes"]);
    expect(latestAfterLoss.code, latestAfterLoss.stderr).toBe(0);
    expect(latestAfterLoss.stdout).toContain(
      `warning: Generation ${generation} on local has segments up to transaction ${lastTxn}, but transaction 1 is missing there, so the restore stops at 0.`,
    );
    const atEnd = await runCli([
      "restore",
      db,
      "--to",
      target,
      "--output",
      out("at-end"),
      "--to-time",
      new Date(lastCommit + 1000).toISOString(),
    ]);
    expect(atEnd.code).not.toBe(0);
    expect(atEnd.stderr).toContain("NO_RESTORE_POINT");
    expect(atEnd.stderr).toMatch(
      /lacks transactions 1-\d+ there .* so its archived transactions \d+-\d+ cannot be applied/,
    );
    const failed = await runCli(["verify", db, "--to", target, "--checksums-only"]);
    expect(failed.code).toBe(1);
    expect(failed.stdout).toContain(
      `FAILED app local generation ${generation}: transactions 1-${segments[0]!.lastTxn} are missing, so the archived transactions ${segments[0]!.lastTxn + 1}-${lastTxn} cannot be restored (a restore stops at 0)`,
    );
  }, 170_000);

  it("a time when no replicator ran restores the state before that stretch and says which transactions it cannot place", async () => {
    const dir = tempDir("pitr-unwatched");
    const db = join(dir, "app.db");
    const target = join(dir, "archive");
    createDatabase(db);
    // The app keeps its connection open across the replicator's restart, as a server does (the
    // last connection to close checkpoints and deletes the WAL, and a new generation would start).
    const app = new Database(db);
    cleanups.push(() => {
      app.close();
    });
    app.pragma("busy_timeout = 5000");
    const write = (v: string) => app.prepare("INSERT INTO seed (v) VALUES (?)").run(v);
    const first = startReplicator([db, "--to", target]);
    cleanups.push(() => first.kill());
    await first.waitFor((e) => e.type === "snapshot", "the generation's snapshot", 60_000);
    write("watched");
    await first.waitFor((e) => e.type === "shipped" && Number(e.lastTxn) >= 1, "transaction 1 shipped", 30_000);
    const watchedHash = databaseContentHash(db);
    expect((await first.kill("SIGTERM")).code).toBe(0);
    write("while down 1");
    write("while down 2");
    await sleep(50);
    const whileDown = Date.now();
    await sleep(50);
    const second = startReplicator([db, "--to", target]);
    cleanups.push(() => second.kill());
    await second.waitFor(
      (e) => e.type === "shipped" && Number(e.lastTxn) >= 3,
      "the transactions found at start",
      30_000,
    );
    expect((await second.kill("SIGTERM")).code).toBe(0);
    expect(
      second.events.filter((e) => e.type === "generation"),
      "a clean restart continues the generation",
    ).toHaveLength(0);

    const json = await restoreWithCli(db, target, join(dir, "down.db"), { toTime: whileDown });
    expect(json.ok, `${json.run.stdout}\n${json.run.stderr}`).toBe(true);
    expect(json.result!.txn).toBe(1);
    expect(json.hash).toBe(watchedHash);
    const text = await runCli([
      "restore",
      db,
      "--to",
      target,
      "--to-time",
      new Date(whileDown).toISOString(),
      "--output",
      join(dir, "down-text.db"),
      "--yes",
    ]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(
      /warning: Transactions 2-3 were committed at unknown times between \S+ and \S+, while no replicator was watching/,
    );
    const all = await restoreWithCli(db, target, join(dir, "txn3.db"), { toTxn: 3 });
    expect(all.hash).toBe(databaseContentHash(db));
  }, 120_000);
});
