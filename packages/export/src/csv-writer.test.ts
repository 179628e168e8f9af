import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import Database from "better-sqlite3";
import { stringify } from "csv-stringify/sync";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHUNK_BYTES, CsvWriter } from "./csv-writer.js";
import { exportDatabase } from "./export.js";
import { importExport } from "./import.js";
import { formatBlob, formatReal, type SqliteValue, storageClassOf } from "./value-codec.js";

/**
 * The csv-stringify options that exports were written with before the hand-written encoder: the
 * reference the encoder must match byte for byte (exports already on disk must not change format).
 */
const STRINGIFY_OPTIONS = {
  quoted_string: true,
  record_delimiter: "windows" as const,
  cast: {
    bigint: (value: bigint) => value.toString(),
    number: (value: number) => formatReal(value),
    object: (value: object) => {
      if (value instanceof Uint8Array) return formatBlob(value);
      throw new Error(`unexpected ${value.constructor.name}`);
    },
  },
};

const INT64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
/** Every kind of value a row holds, with the awkward ones made likely. */
const value: fc.Arbitrary<SqliteValue> = fc.oneof(
  fc.constant(null),
  INT64,
  fc.constantFrom(0n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 9007199254740993n),
  fc.double({ noNaN: true }),
  fc.constantFrom(0, -0, 1, 0.1, 1e21, 1e20, 1e308, -1e308, 5e-324, 2 ** 53, Infinity, -Infinity),
  fc.string({ unit: "binary" }),
  fc.string({ unit: "grapheme" }),
  fc.constantFrom(
    "",
    "0",
    "NULL",
    "1.0",
    "base64:",
    '"',
    '""',
    'a "quoted" word',
    "a,b",
    " lead",
    "trail ",
    "\r\n",
    "\r",
    "\n",
    "\t",
    "\uFEFF",
    "\0",
    "=1+2",
    "-3",
    "🚀 Ελληνικά 日本語 e\u0301",
    "\uD800",
  ),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
  // Past the sizes where the encoder copies BLOBs and text straight into the chunk.
  fc.integer({ min: 4000, max: 12_000 }).map((n) => Buffer.alloc(n, n % 251)),
  fc.integer({ min: 15_000, max: 40_000 }).map((n) => `"é${"x".repeat(n)}"`),
);

function encode(rows: readonly SqliteValue[][], chunkBytes?: number): Buffer[] {
  const writer = new CsvWriter(chunkBytes);
  const chunks: Buffer[] = [];
  for (const row of rows) if (writer.add(row)) chunks.push(...writer.take());
  chunks.push(...writer.take(true));
  return chunks;
}

describe("CsvWriter", () => {
  it("writes exactly what csv-stringify wrote with the exporter's options, however it chunks", () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 6 })
          .chain((width) =>
            fc.tuple(
              fc.array(fc.string({ unit: "binary" }), { minLength: width, maxLength: width }),
              fc.array(fc.array(value, { minLength: width, maxLength: width }), { maxLength: 12 }),
              fc.option(fc.integer({ min: 1, max: 50_000 })),
            ),
          ),
        ([header, rows, chunkBytes]) => {
          const records = [header, ...rows];
          const expected = Buffer.from(stringify(records, STRINGIFY_OPTIONS), "utf8");
          const actual = Buffer.concat(encode(records, chunkBytes ?? undefined));
          if (!actual.equals(expected)) {
            expect(actual.toString("utf8")).toBe(expected.toString("utf8"));
            expect(actual).toEqual(expected);
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it("hands out chunks of about the chunk size, so writes are few and memory stays flat", () => {
    const row: SqliteValue[] = [123456789n, "some text, with a comma", 0.25, null, Buffer.alloc(100, 7)];
    const rows = Array.from({ length: 40_000 }, () => row);
    const chunks = encode(rows);
    const record = Buffer.concat(encode([row])).length;
    expect(Buffer.concat(chunks).length).toBe(record * rows.length);
    expect(chunks.length).toBeGreaterThan(3);
    for (const chunk of chunks.slice(0, -1)) {
      expect(chunk.length).toBeGreaterThanOrEqual(CHUNK_BYTES);
      expect(chunk.length).toBeLessThan(CHUNK_BYTES + 64 * 1024);
    }
  });

  it("keeps a record larger than a chunk whole", () => {
    const big = "ü".repeat(3 * CHUNK_BYTES);
    const chunks = encode([["a"], [big], [Buffer.alloc(2 * CHUNK_BYTES, 1)], ["z"]]);
    expect(Buffer.concat(chunks).toString("utf8")).toBe(
      `"a"\r\n"${big}"\r\nbase64:${Buffer.alloc(2 * CHUNK_BYTES, 1).toString("base64")}\r\n"z"\r\n`,
    );
  });

  it("refuses a value SQLite never returns", () => {
    const writer = new CsvWriter();
    let error: unknown;
    try {
      writer.add([true as unknown as SqliteValue]);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(LifeboatError);
    expect((error as LifeboatError).code).toBe(ErrorCodes.INTERNAL);
  });
});

describe("export then import", () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), "lifeboat-csv-writer-"));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function rowsOf(path: string): SqliteValue[][] {
    const db = new Database(path, { readonly: true });
    try {
      return db
        .prepare("SELECT rowid, a, b, c FROM t ORDER BY rowid")
        .raw(true)
        .safeIntegers(true)
        .all() as SqliteValue[][];
    } finally {
      db.close();
    }
  }

  it("gives back every value of random rows with its storage class", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(value, value, value), { maxLength: 20 }),
        fc.constantFrom("dir" as const, "zip" as const),
        async (rows, format) => {
          run++;
          const source = join(dir, `source-${run}.db`);
          const db = new Database(source);
          db.exec("CREATE TABLE t (a, b, c)");
          const insert = db.prepare("INSERT INTO t (a, b, c) VALUES (?, ?, ?)");
          for (const row of rows) insert.run(...row);
          db.close();
          const exported = await exportDatabase({
            database: source,
            output: join(dir, format === "zip" ? `export-${run}.zip` : `export-${run}`),
          });
          const back = join(dir, `back-${run}.db`);
          await importExport({ input: exported.output, output: back });
          const expected = rowsOf(source);
          const actual = rowsOf(back);
          expect(actual.length).toBe(expected.length);
          for (const [r, row] of expected.entries()) {
            for (const [c, v] of row.entries()) {
              const w = actual[r]![c]!;
              const same =
                storageClassOf(v) === storageClassOf(w) &&
                (Buffer.isBuffer(v) && Buffer.isBuffer(w) ? v.equals(w) : Object.is(v, w));
              if (!same) throw new Error(`row ${r} column ${c}: ${String(v)} came back as ${String(w)}`);
            }
          }
        },
      ),
      { numRuns: 30 },
    );
  });
});
