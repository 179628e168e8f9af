import { readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { dumpDatabase, openCopy, openWalDatabase, rebuildImage, tempDir } from "./test-fixtures.js";
import { readWalIndexHeader } from "./wal-index.js";
import { readWalTransactions } from "./wal-reader.js";

/** One transaction of a random workload. */
type Op =
  | { kind: "insert"; rows: number; size: number }
  | { kind: "update"; modulo: number; size: number }
  | { kind: "delete"; modulo: number }
  | { kind: "table" }
  | { kind: "drop" }
  | { kind: "vacuum" }
  | { kind: "rollback"; rows: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant("insert"),
      rows: fc.integer({ min: 1, max: 40 }),
      size: fc.integer({ min: 0, max: 9000 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant("update"),
      modulo: fc.integer({ min: 1, max: 5 }),
      size: fc.integer({ min: 0, max: 3000 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("delete"), modulo: fc.integer({ min: 1, max: 4 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("table") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("drop") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("vacuum") }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("rollback"), rows: fc.integer({ min: 50, max: 200 }) }) },
);

function series(n: number): string {
  return `WITH RECURSIVE s(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM s WHERE value < ${n})`;
}

describe("WAL reader against SQLite, random workloads", () => {
  it("rebuilds the database SQLite showed after every committed transaction", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 1, maxLength: 12 }),
        fc.constantFrom(1024, 4096),
        async (ops, pageSize) => {
          const { dir, cleanup } = tempDir();
          const path = join(dir, `prop-${run++}.db`);
          const db = openWalDatabase(path, pageSize);
          try {
            db.pragma("cache_size = 8"); // big transactions spill uncommitted frames into the WAL
            db.exec("CREATE TABLE t0(id INTEGER PRIMARY KEY, v BLOB)");
            const base = readFileSync(path);
            const expected = [dumpDatabase(db)];
            let tables = 1;
            let lastMxFrame = readWalIndexHeader(`${path}-shm`)!.mxFrame;
            for (const o of ops) {
              const table = `t${tables - 1}`;
              switch (o.kind) {
                case "insert":
                  db.exec(`INSERT INTO ${table}(v) ${series(o.rows)} SELECT randomblob(${o.size}) FROM s`);
                  break;
                case "update":
                  db.exec(`UPDATE ${table} SET v = randomblob(${o.size}) WHERE id % ${o.modulo} = 0`);
                  break;
                case "delete":
                  db.exec(`DELETE FROM ${table} WHERE id % ${o.modulo} = 0`);
                  break;
                case "table":
                  db.exec(
                    `BEGIN; CREATE TABLE t${tables}(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t${tables}(v) VALUES (randomblob(500)); COMMIT`,
                  );
                  tables++;
                  break;
                case "drop":
                  if (tables > 1) {
                    db.exec(`DROP TABLE ${table}`);
                    tables--;
                  } else {
                    db.exec(`DELETE FROM ${table}`);
                  }
                  break;
                case "vacuum":
                  db.exec("VACUUM");
                  break;
                case "rollback":
                  db.exec("BEGIN");
                  db.exec(`INSERT INTO ${table}(v) ${series(o.rows)} SELECT randomblob(1500) FROM s`);
                  db.exec("ROLLBACK");
                  break;
              }
              // A statement that changed nothing commits nothing; SQLite's WAL index says which did.
              const mxFrame = readWalIndexHeader(`${path}-shm`)!.mxFrame;
              if (mxFrame !== lastMxFrame) expected.push(dumpDatabase(db));
              lastMxFrame = mxFrame;
            }
            const wal = readFileSync(`${path}-wal`);
            const { transactions, result } = await readWalTransactions(`${path}-wal`);
            // Our view of the WAL ends exactly where SQLite's WAL index says the last commit is.
            const shm = readWalIndexHeader(`${path}-shm`)!;
            expect(result.lastCommitFrame).toBe(shm.mxFrame);
            expect(result.commitSize).toBe(db.pragma("page_count", { simple: true }));
            expect(transactions).toHaveLength(expected.length);
            for (let k = 1; k <= transactions.length; k++) {
              const image = rebuildImage(base, wal, pageSize, transactions.slice(0, k));
              const copy = openCopy(dir, `rebuilt-${k}.db`, image, null);
              expect(copy.integrity).toEqual(["ok"]);
              expect(copy.dump).toEqual(expected[k - 1]);
            }
          } finally {
            db.close();
            cleanup();
          }
        },
      ),
      { numRuns: 25 },
    );
  });
});
