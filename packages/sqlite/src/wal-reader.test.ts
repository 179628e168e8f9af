import { copyFileSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { endianness } from "node:os";
import { join } from "node:path";
import type Database from "better-sqlite3";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  dumpDatabase,
  openCopy,
  openWalDatabase,
  rebuildImage,
  rewriteWalChecksums,
  tempDir,
} from "./test-fixtures.js";
import { readWalIndexHeader } from "./wal-index.js";
import {
  buildWalPageIndex,
  parseWalHeader,
  readWalPages,
  readWalTransactions,
  WAL_FORMAT_VERSION,
  WAL_FRAME_HEADER_SIZE,
  WAL_MAGIC_BIG_ENDIAN,
  WAL_MAGIC_LITTLE_ENDIAN,
  type WalTransaction,
  walChecksum,
  walFrameOffset,
} from "./wal-reader.js";

let dir: string;
let cleanup: () => void;
const open: Database.Database[] = [];

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
});
afterEach(() => {
  for (const db of open.splice(0)) if (db.open) db.close();
  cleanup();
});

/** `WITH` clause for a table `s(value)` of 1..n. */
function series(n: number): string {
  return `WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < ${n})`;
}

/** The statements each test database runs, one transaction each. */
const STEPS = [
  "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB, note TEXT)",
  "INSERT INTO t(v, note) VALUES (randomblob(3000), 'a'), (randomblob(10), 'b')",
  `INSERT INTO t(v, note) ${series(40)} SELECT randomblob(900), 'bulk' || value FROM s`,
  "UPDATE t SET note = 'updated' WHERE id % 3 = 0",
  "DELETE FROM t WHERE id % 5 = 0",
  "INSERT INTO t(v, note) VALUES (randomblob(20000), 'overflow')",
];

interface Fixture {
  path: string;
  db: Database.Database;
  /** The database file before any WAL frame (never checkpointed: the connection stays open). */
  base: Buffer;
  /** Dump and page count after each step. */
  dumps: Record<string, unknown[]>[];
  pageCounts: number[];
}

/** A WAL database with one transaction per step; the writer stays open so nothing is checkpointed. */
function walFixture(name = "app.db", steps = STEPS, pageSize = 4096): Fixture {
  const path = join(dir, name);
  const db = openWalDatabase(path, pageSize);
  open.push(db);
  const base = readFileSync(path);
  const dumps: Record<string, unknown[]>[] = [];
  const pageCounts: number[] = [];
  for (const step of steps) {
    db.exec(step);
    dumps.push(dumpDatabase(db));
    pageCounts.push(db.pragma("page_count", { simple: true }) as number);
  }
  return { path, db, base, dumps, pageCounts };
}

function shape(txns: readonly WalTransaction[]) {
  return txns.map((t) => ({ first: t.firstFrame, last: t.lastFrame, size: t.commitSize, pgnos: [...t.pgnos] }));
}

/** Reference checksum: one word at a time through a DataView. */
function referenceChecksum(data: Uint8Array, s0: number, s1: number, bigEndian: boolean): [number, number] {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  for (let i = 0; i < data.byteLength; i += 8) {
    s0 = (s0 + view.getUint32(i, !bigEndian) + s1) >>> 0;
    s1 = (s1 + view.getUint32(i + 4, !bigEndian) + s0) >>> 0;
  }
  return [s0, s1];
}

describe("walChecksum", () => {
  it("matches a word-by-word reference in both byte orders, aligned or not", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 0, maxLength: 600 }),
        fc.integer({ min: 0, max: 3 }),
        fc.nat({ max: 0xffffffff }),
        fc.nat({ max: 0xffffffff }),
        fc.boolean(),
        (raw, shift, s0, s1, bigEndian) => {
          const length = raw.length - (raw.length % 8);
          const backing = new Uint8Array(length + shift);
          backing.set(raw.subarray(0, length), shift);
          const data = backing.subarray(shift, shift + length);
          expect(walChecksum(data, s0, s1, bigEndian)).toEqual(referenceChecksum(data, s0, s1, bigEndian));
        },
      ),
      { numRuns: 300 },
    );
  });

  it("rejects a length that is not a multiple of 8", () => {
    expect(() => walChecksum(new Uint8Array(12), 0, 0, false)).toThrow(RangeError);
  });
});

describe("parseWalHeader", () => {
  it("reads the header SQLite wrote, in the host's byte order", () => {
    const f = walFixture();
    const header = parseWalHeader(readFileSync(`${f.path}-wal`));
    expect(header).not.toBeNull();
    expect(header?.magic).toBe(endianness() === "LE" ? WAL_MAGIC_LITTLE_ENDIAN : WAL_MAGIC_BIG_ENDIAN);
    expect(header?.bigEndianChecksum).toBe(endianness() === "BE");
    expect(header?.version).toBe(WAL_FORMAT_VERSION);
    expect(header?.pageSize).toBe(4096);
    const shm = readWalIndexHeader(`${f.path}-shm`);
    expect([header?.salt1, header?.salt2]).toEqual([shm?.salt1, shm?.salt2]);
  });

  it("rejects a header with any byte changed, and short buffers", () => {
    const f = walFixture();
    const bytes = readFileSync(`${f.path}-wal`).subarray(0, 32);
    for (let i = 0; i < 32; i++) {
      const copy = Buffer.from(bytes);
      copy[i]! ^= 0x10;
      expect(parseWalHeader(copy), `byte ${i}`).toBeNull();
    }
    expect(parseWalHeader(bytes.subarray(0, 31))).toBeNull();
  });
});

describe("scanWal on WAL files written by SQLite", () => {
  it("yields each committed transaction with SQLite's sizes, and ends where SQLite's WAL index does", async () => {
    const f = walFixture();
    const { transactions, result } = await readWalTransactions(`${f.path}-wal`);
    expect(transactions.map((t) => t.commitSize)).toEqual(f.pageCounts);
    expect(transactions[0]?.firstFrame).toBe(1);
    for (let i = 1; i < transactions.length; i++) {
      expect(transactions[i]?.firstFrame).toBe(transactions[i - 1]!.lastFrame + 1);
    }
    const shm = readWalIndexHeader(`${f.path}-shm`)!;
    expect(result).toMatchObject({
      reset: null,
      stop: "end-of-file",
      lastCommitFrame: shm.mxFrame,
      lastValidFrame: shm.mxFrame,
      uncommittedFrames: 0,
      commitSize: shm.nPage,
    });
    expect(result.end).toEqual({
      salt1: shm.salt1,
      salt2: shm.salt2,
      frame: shm.mxFrame,
      checksum1: shm.frameChecksum1,
      checksum2: shm.frameChecksum2,
    });
  });

  it("rebuilds, after every transaction, exactly the database SQLite showed then", async () => {
    const f = walFixture();
    const wal = readFileSync(`${f.path}-wal`);
    const { transactions } = await readWalTransactions(`${f.path}-wal`);
    for (let k = 1; k <= transactions.length; k++) {
      const image = rebuildImage(f.base, wal, 4096, transactions.slice(0, k));
      const copy = openCopy(dir, `rebuilt-${k}.db`, image, null);
      expect(copy.integrity).toEqual(["ok"]);
      expect(copy.dump).toEqual(f.dumps[k - 1]);
    }
  });

  it("gives the same result whatever the read size (frame and chunk boundaries)", async () => {
    const f = walFixture();
    const full = await readWalTransactions(`${f.path}-wal`);
    for (const chunkSize of [1, 4096 + 24, 3 * (4096 + 24) + 5, 64 * 1024]) {
      const scan = await readWalTransactions(`${f.path}-wal`, { chunkSize });
      expect(shape(scan.transactions)).toEqual(shape(full.transactions));
      expect(scan.result).toEqual(full.result);
    }
  });

  it("reads with synchronous calls when asked: the same result, and no other work runs before it ends", async () => {
    const f = walFixture();
    const full = await readWalTransactions(`${f.path}-wal`, { pageRecords: 1 << 30 });
    let ran = false;
    setImmediate(() => {
      ran = true;
    });
    const sync = await readWalTransactions(`${f.path}-wal`, { pageRecords: 1 << 30, sync: true, chunkSize: 4096 + 24 });
    expect(ran, "a callback queued before the scan ran during it").toBe(false);
    expect(shape(sync.transactions)).toEqual(shape(full.transactions));
    expect(sync.result).toEqual(full.result);
    // The asynchronous scan does let it run (so the check above can fail).
    await readWalTransactions(`${f.path}-wal`, { chunkSize: 4096 + 24 });
    expect(ran).toBe(true);
    const middle = full.transactions[Math.floor(full.transactions.length / 2)]!;
    const resumed = await readWalTransactions(`${f.path}-wal`, { after: middle.end, sync: true });
    expect(shape(resumed.transactions)).toEqual(
      shape(full.transactions.filter((t) => t.firstFrame > middle.end.frame)),
    );
    expect((await readWalTransactions(join(dir, "gone-wal"), { after: middle.end, sync: true })).result.reset).toBe(
      "missing",
    );
  });

  it("copies the committed frames as page records when asked, within its limit, whatever the read size", async () => {
    const f = walFixture();
    const wal = readFileSync(`${f.path}-wal`);
    const full = await readWalTransactions(`${f.path}-wal`);
    expect(full.result.pageRecords).toBeNull();
    const expected = (transactions: readonly WalTransaction[]): Buffer =>
      Buffer.concat(
        transactions.flatMap((t) =>
          [...t.pgnos].map((pgno, i) => {
            const start = walFrameOffset(t.firstFrame + i, 4096) + WAL_FRAME_HEADER_SIZE;
            const record = Buffer.alloc(4 + 4096);
            record.writeUInt32BE(pgno, 0);
            wal.copy(record, 4, start, start + 4096);
            return record;
          }),
        ),
      );
    const all = expected(full.transactions);
    expect(all.byteLength).toBe(full.transactions.reduce((n, t) => n + t.pgnos.length, 0) * 4100);
    for (const chunkSize of [4096 + 24, 3 * (4096 + 24) + 5, 64 * 1024]) {
      const scan = await readWalTransactions(`${f.path}-wal`, { chunkSize, pageRecords: 1 << 30 });
      expect(shape(scan.transactions)).toEqual(shape(full.transactions));
      expect(scan.result.pageRecords?.equals(all), `chunk size ${chunkSize}`).toBe(true);
      // Exactly the limit fits; a byte less does not (and the scan itself is unchanged).
      const exact = await readWalTransactions(`${f.path}-wal`, { chunkSize, pageRecords: all.byteLength });
      expect(exact.result.pageRecords?.equals(all)).toBe(true);
      const over = await readWalTransactions(`${f.path}-wal`, { chunkSize, pageRecords: all.byteLength - 1 });
      expect(over.result.pageRecords).toBeNull();
      expect(shape(over.transactions)).toEqual(shape(full.transactions));
    }
    // Resumed after a position and stopped at a frame: only the transactions yielded.
    const middle = full.transactions[Math.floor(full.transactions.length / 2)]!;
    const last = full.transactions.at(-2)!;
    const part = await readWalTransactions(`${f.path}-wal`, {
      after: middle.end,
      maxFrame: last.lastFrame,
      pageRecords: 1 << 30,
    });
    expect(part.result.pageRecords?.equals(expected(part.transactions))).toBe(true);
    expect(part.transactions.at(-1)!.lastFrame).toBe(last.lastFrame);
  });

  it("collects the page records in the memory it is given, when that holds a first read", async () => {
    const f = walFixture();
    const full = await readWalTransactions(`${f.path}-wal`, { pageRecords: 1 << 30 });
    const all = full.result.pageRecords!;
    const given = new ArrayBuffer(all.byteLength + 256 * 1024);
    const reused = await readWalTransactions(`${f.path}-wal`, { pageRecords: 1 << 30, pageRecordsBuffer: given });
    expect(reused.result.pageRecords!.buffer).toBe(given);
    expect(reused.result.pageRecords!.equals(all)).toBe(true);
    // Too small for the first read: a new buffer, the same records.
    const tiny = new ArrayBuffer(1024);
    const fresh = await readWalTransactions(`${f.path}-wal`, { pageRecords: 1 << 30, pageRecordsBuffer: tiny });
    expect(fresh.result.pageRecords!.buffer).not.toBe(tiny);
    expect(fresh.result.pageRecords!.equals(all)).toBe(true);
  });

  it("never copies the frames of a transaction that did not commit", async () => {
    const f = walFixture();
    const wal = readFileSync(`${f.path}-wal`);
    const full = await readWalTransactions(`${f.path}-wal`);
    const last = full.transactions.at(-1)!;
    // Cut the commit frame in half: the last transaction is now a torn one.
    const torn = `${f.path}-torn-wal`;
    writeFileSync(torn, wal.subarray(0, walFrameOffset(last.lastFrame, 4096) + 2000));
    const scan = await readWalTransactions(torn, { pageRecords: 1 << 30 });
    expect(scan.transactions).toHaveLength(full.transactions.length - 1);
    const committedFrames = scan.transactions.reduce((n, t) => n + t.pgnos.length, 0);
    expect(scan.result.pageRecords?.byteLength).toBe(committedFrames * 4100);
  });

  it.each([512, 65536])("handles page size %i", async (pageSize) => {
    const f = walFixture("p.db", STEPS, pageSize);
    const wal = readFileSync(`${f.path}-wal`);
    const { transactions, result } = await readWalTransactions(`${f.path}-wal`);
    expect(result.header?.pageSize).toBe(pageSize);
    expect(transactions.map((t) => t.commitSize)).toEqual(f.pageCounts);
    const copy = openCopy(dir, "rebuilt.db", rebuildImage(f.base, wal, pageSize, transactions), null);
    expect(copy.dump).toEqual(f.dumps.at(-1));
  });

  it("stops at a torn last frame and, like SQLite, keeps everything before that transaction", async () => {
    const f = walFixture();
    const wal = readFileSync(`${f.path}-wal`);
    const all = (await readWalTransactions(`${f.path}-wal`)).transactions;
    const last = all.at(-1)!;
    const torn = wal.subarray(0, walFrameOffset(last.lastFrame, 4096) + 100);
    writeFileSync(join(dir, "torn-wal"), torn);
    const { transactions, result } = await readWalTransactions(join(dir, "torn-wal"));
    expect(shape(transactions)).toEqual(shape(all.slice(0, -1)));
    expect(result.stop).toBe("partial-frame");
    expect(result.uncommittedFrames).toBe(last.lastFrame - last.firstFrame);
    // SQLite's own recovery of the same files agrees.
    const sqlite = openCopy(dir, "torn.db", f.base, torn);
    expect(sqlite.dump).toEqual(f.dumps.at(-2));
  });

  it("yields nothing at or after a corrupted frame, as SQLite's recovery does", async () => {
    const f = walFixture();
    const wal = readFileSync(`${f.path}-wal`);
    const all = (await readWalTransactions(`${f.path}-wal`)).transactions;
    const victim = all[3]!;
    const bad = walFrameOffset(victim.lastFrame, 4096) + WAL_FRAME_HEADER_SIZE + 1000;
    const corrupted = Buffer.from(wal);
    corrupted[bad]! ^= 0x01;
    writeFileSync(join(dir, "bad-wal"), corrupted);
    const { transactions, result } = await readWalTransactions(join(dir, "bad-wal"));
    expect(shape(transactions)).toEqual(shape(all.slice(0, 3)));
    expect(result).toMatchObject({
      stop: "checksum-mismatch",
      lastValidFrame: victim.lastFrame - 1,
      lastCommitFrame: all[2]!.lastFrame,
    });
    expect(openCopy(dir, "bad.db", f.base, corrupted).dump).toEqual(f.dumps[2]);
  });

  it("stops at a frame whose salts belong to another WAL generation", async () => {
    const f = walFixture();
    const wal = Buffer.from(readFileSync(`${f.path}-wal`));
    const all = (await readWalTransactions(`${f.path}-wal`)).transactions;
    const frame = all[2]!.firstFrame;
    wal.writeUInt32BE((wal.readUInt32BE(walFrameOffset(frame, 4096) + 8) + 1) >>> 0, walFrameOffset(frame, 4096) + 8);
    writeFileSync(join(dir, "salted-wal"), wal);
    const { transactions, result } = await readWalTransactions(join(dir, "salted-wal"));
    expect(transactions).toHaveLength(2);
    expect(result).toMatchObject({ stop: "salt-mismatch", lastValidFrame: frame - 1 });
  });

  it("never reports the frames of a transaction that spilled to the WAL and was rolled back", async () => {
    const f = walFixture("spill.db", STEPS.slice(0, 2));
    const committed = await readWalTransactions(`${f.path}-wal`);
    f.db.pragma("cache_size = 4");
    f.db.exec("BEGIN");
    f.db.prepare(`INSERT INTO t(v, note) ${series(300)} SELECT randomblob(2000), 'spill' FROM s`).run();
    const during = await readWalTransactions(`${f.path}-wal`);
    f.db.exec("ROLLBACK");
    const after = await readWalTransactions(`${f.path}-wal`);
    for (const scan of [during, after]) {
      expect(shape(scan.transactions)).toEqual(shape(committed.transactions));
      expect(scan.result.lastCommitFrame).toBe(committed.result.lastCommitFrame);
      expect(scan.result.uncommittedFrames).toBeGreaterThan(10);
    }
    // The next transaction overwrites the spilled frames from the last commit on.
    f.db.exec("INSERT INTO t(v, note) VALUES (randomblob(10), 'next')");
    const next = await readWalTransactions(`${f.path}-wal`);
    expect(next.transactions).toHaveLength(committed.transactions.length + 1);
    expect(next.transactions.at(-1)?.firstFrame).toBe(committed.result.lastCommitFrame + 1);
    const image = rebuildImage(f.base, readFileSync(`${f.path}-wal`), 4096, next.transactions);
    expect(openCopy(dir, "after-spill.db", image, null).dump).toEqual(dumpDatabase(f.db));
  });

  it("reports a missing WAL as having no header", async () => {
    const { transactions, result } = await readWalTransactions(join(dir, "nothing-wal"));
    expect(transactions).toEqual([]);
    expect(result).toMatchObject({ header: null, reset: null, end: null, stop: "no-header", fileSize: 0 });
  });
});

describe("scanWal resuming from a position", () => {
  it("yields exactly the transactions committed after the position", async () => {
    const f = walFixture("r.db", STEPS.slice(0, 3));
    const first = await readWalTransactions(`${f.path}-wal`);
    for (const step of STEPS.slice(3)) f.db.exec(step);
    const rest = await readWalTransactions(`${f.path}-wal`, { after: first.result.end! });
    const full = await readWalTransactions(`${f.path}-wal`);
    expect(rest.result.reset).toBeNull();
    expect(shape([...first.transactions, ...rest.transactions])).toEqual(shape(full.transactions));
    expect(rest.result.end).toEqual(full.result.end);
    // Nothing new: no transactions, same end, the size of the last commit.
    const none = await readWalTransactions(`${f.path}-wal`, { after: full.result.end! });
    expect(none.transactions).toEqual([]);
    expect(none.result).toMatchObject({
      reset: null,
      end: full.result.end,
      commitSize: f.db.pragma("page_count", { simple: true }),
    });
  });

  it("resumes from any transaction's end, and honours maxFrame", async () => {
    const f = walFixture();
    const full = (await readWalTransactions(`${f.path}-wal`)).transactions;
    for (let i = 0; i < full.length; i++) {
      const rest = await readWalTransactions(`${f.path}-wal`, { after: full[i]!.end });
      expect(shape(rest.transactions)).toEqual(shape(full.slice(i + 1)));
    }
    const upTo = await readWalTransactions(`${f.path}-wal`, { maxFrame: full[2]!.lastFrame });
    expect(shape(upTo.transactions)).toEqual(shape(full.slice(0, 3)));
    expect(upTo.result.stop).toBe("max-frame");
  });

  it("detects a WAL reset by a checkpoint (salt change) and reads the new generation from frame 1", async () => {
    const f = walFixture("reset.db", STEPS.slice(0, 3));
    const before = await readWalTransactions(`${f.path}-wal`);
    f.db.pragma("wal_checkpoint(RESTART)");
    f.db.exec(STEPS[3]!);
    const resumed = await readWalTransactions(`${f.path}-wal`, { after: before.result.end! });
    expect(resumed.transactions).toEqual([]);
    expect(resumed.result).toMatchObject({ reset: "salt-changed", end: null, stop: "reset" });
    const fresh = await readWalTransactions(`${f.path}-wal`);
    expect(fresh.result.header?.salt1).toBe((before.result.header!.salt1 + 1) >>> 0);
    expect(fresh.transactions[0]?.firstFrame).toBe(1);
    expect(fresh.transactions).toHaveLength(1);
  });

  it("detects a truncated WAL, a position that does not match, and a missing WAL", async () => {
    const f = walFixture();
    const { result } = await readWalTransactions(`${f.path}-wal`);
    const end = result.end!;
    const copy = join(dir, "copy-wal");
    copyFileSync(`${f.path}-wal`, copy);
    truncateSync(copy, walFrameOffset(end.frame, 4096) + 10);
    expect((await readWalTransactions(copy, { after: end })).result.reset).toBe("truncated");
    const wrong = { ...end, checksum1: (end.checksum1 + 1) >>> 0 };
    expect((await readWalTransactions(`${f.path}-wal`, { after: wrong })).result.reset).toBe("position-mismatch");
    expect((await readWalTransactions(join(dir, "gone-wal"), { after: end })).result.reset).toBe("missing");
    writeFileSync(copy, Buffer.alloc(64, 7));
    expect((await readWalTransactions(copy, { after: end })).result.reset).toBe("header-invalid");
  });

  it("after a TRUNCATE checkpoint, continues from the WAL index's announced generation without a reset", async () => {
    const f = walFixture("trunc.db", STEPS.slice(0, 2));
    f.db.pragma("wal_checkpoint(TRUNCATE)");
    const shm = readWalIndexHeader(`${f.path}-shm`)!;
    expect(shm.mxFrame).toBe(0);
    const position = { salt1: shm.salt1, salt2: shm.salt2, frame: 0, checksum1: 0, checksum2: 0 };
    const empty = await readWalTransactions(`${f.path}-wal`, { after: position });
    expect(empty.transactions).toEqual([]);
    expect(empty.result.reset).toBeNull();
    f.db.exec(STEPS[2]!);
    const next = await readWalTransactions(`${f.path}-wal`, { after: position });
    expect(next.result.reset).toBeNull();
    expect(next.transactions).toHaveLength(1);
    expect(next.transactions[0]?.firstFrame).toBe(1);
  });
});

describe("big-endian checksums", () => {
  it("reads a WAL with magic 0x377f0683 exactly as SQLite does", async () => {
    const f = walFixture();
    const wal = readFileSync(`${f.path}-wal`);
    const big = rewriteWalChecksums(wal, true);
    expect(big.readUInt32BE(0)).toBe(WAL_MAGIC_BIG_ENDIAN);
    expect(parseWalHeader(big)?.bigEndianChecksum).toBe(true);
    writeFileSync(join(dir, "big-wal"), big);
    const little = await readWalTransactions(`${f.path}-wal`);
    const scanned = await readWalTransactions(join(dir, "big-wal"));
    expect(shape(scanned.transactions)).toEqual(shape(little.transactions));
    expect(scanned.result.stop).toBe("end-of-file");
    // SQLite recovers the rewritten WAL and sees the same database.
    const sqlite = openCopy(dir, "big.db", f.base, big);
    expect(sqlite.integrity).toEqual(["ok"]);
    expect(sqlite.dump).toEqual(f.dumps.at(-1));
    // And rewriting back gives the original bytes.
    expect(rewriteWalChecksums(big, false).equals(wal)).toBe(true);
    // A flipped byte in a big-endian WAL stops the scan too.
    const bad = Buffer.from(big);
    bad[walFrameOffset(2, 4096) + 30]! ^= 0x80;
    writeFileSync(join(dir, "big-bad-wal"), bad);
    const stopped = await readWalTransactions(join(dir, "big-bad-wal"));
    expect(stopped.result).toMatchObject({ stop: "checksum-mismatch", lastValidFrame: 1 });
  });
});

describe("buildWalPageIndex and readWalPages", () => {
  it("maps every page to its latest committed frame", async () => {
    const f = walFixture();
    const walPath = `${f.path}-wal`;
    const wal = readFileSync(walPath);
    const { transactions } = await readWalTransactions(walPath);
    for (const k of [1, 3, transactions.length]) {
      const index = await buildWalPageIndex(walPath, { maxFrame: transactions[k - 1]!.lastFrame });
      expect(index.commitSize).toBe(f.pageCounts[k - 1]);
      const expected = rebuildImage(f.base, wal, 4096, transactions.slice(0, k));
      const image = Buffer.alloc(index.commitSize * 4096);
      f.base.copy(image, 0, 0, Math.min(f.base.byteLength, image.byteLength));
      for (const [pgno, offset] of index.pages) wal.copy(image, (pgno - 1) * 4096, offset, offset + 4096);
      image[18] = 1;
      image[19] = 1;
      expect(image.equals(expected)).toBe(true);
    }
  });

  it("reads a transaction's page images and refuses a WAL that was reset meanwhile", async () => {
    const f = walFixture();
    const walPath = `${f.path}-wal`;
    const wal = readFileSync(walPath);
    const { transactions, result } = await readWalTransactions(walPath);
    const txn = transactions[2]!;
    const pages = [];
    for await (const page of readWalPages(walPath, result.header!, txn, { chunkSize: 2 * 4120 })) pages.push(page);
    expect(pages.map((p) => p.pgno)).toEqual([...txn.pgnos]);
    for (const page of pages) {
      const start = walFrameOffset(page.frame, 4096) + WAL_FRAME_HEADER_SIZE;
      expect(page.data.equals(wal.subarray(start, start + 4096))).toBe(true);
    }
    f.db.pragma("wal_checkpoint(RESTART)");
    f.db.exec(`INSERT INTO t(v) ${series(30)} SELECT randomblob(3000) FROM s`);
    await expect(async () => {
      for await (const _ of readWalPages(walPath, result.header!, txn)) {
        // drain
      }
    }).rejects.toMatchObject({ code: "INTERNAL" });
  });
});
