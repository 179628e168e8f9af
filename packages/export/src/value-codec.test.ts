import { parse } from "csv-parse/sync";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CsvReader } from "./csv-reader.js";
import { CsvWriter } from "./csv-writer.js";
import { decodeField, formatReal, type SqliteValue, storageClassOf } from "./value-codec.js";

const INT64 = fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n });
const value: fc.Arbitrary<SqliteValue> = fc.oneof(
  fc.constant(null),
  INT64,
  fc.double({ noNaN: true }),
  fc.constantFrom(0, -0, 1, 0.1, 1e308, -1e308, 5e-324, 2 ** 53, Infinity, -Infinity),
  fc.string({ unit: "binary" }),
  fc.constantFrom("", "0", "NULL", "1.0", "base64:", '"', "a,b", "\r\n", "\r", "\n", "\uFEFF", "\0"),
  fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
);

function same(a: SqliteValue, b: SqliteValue): boolean {
  if (storageClassOf(a) !== storageClassOf(b)) return false;
  if (Buffer.isBuffer(a) && Buffer.isBuffer(b)) return a.equals(b);
  return Object.is(a, b);
}

/** Feeds `bytes` to a reader in pieces cut at `cuts` (byte offsets), returning the records. */
function readBack(bytes: Buffer, cuts: readonly number[]): SqliteValue[][] {
  const records: SqliteValue[][] = [];
  const reader = new CsvReader("test.csv", (r) => records.push(r));
  let at = 0;
  for (const cut of [...cuts].sort((x, y) => x - y)) {
    reader.write(bytes.subarray(at, Math.max(at, cut)));
    at = Math.max(at, cut);
  }
  reader.write(bytes.subarray(at));
  reader.end();
  return records;
}

/** The CSV text the exporter writes for `rows`. */
function csvText(rows: SqliteValue[][]): string {
  const writer = new CsvWriter();
  for (const row of rows) writer.add(row);
  return Buffer.concat(writer.take(true)).toString("utf8");
}

function csvBytes(rows: SqliteValue[][]): Buffer {
  return Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(csvText(rows), "utf8")]);
}

describe("value encoding", () => {
  it("writes NULL, empty text, numbers and BLOBs so that each is recognisable in the CSV text", () => {
    const line = csvText([
      [null, "", "0", 0n, 0, -0, 1e308, 2 ** 53, Buffer.alloc(0), Buffer.from([0, 255]), 'say "hi"'],
    ]);
    expect(line).toBe(',"","0",0,0.0,-0.0,1e+308,9007199254740992.0,base64:,base64:AP8=,"say ""hi"""\r\n');
  });

  it("keeps integers beyond 2^53 exact and reals in their shortest exact form", () => {
    expect(csvText([[9007199254740993n, -(2n ** 63n), 0.1, 5e-324]])).toBe(
      "9007199254740993,-9223372036854775808,0.1,5e-324\r\n",
    );
    expect(formatReal(-Infinity)).toBe("-Infinity");
    expect(decodeField("9223372036854775807", false, () => "x")).toBe(9223372036854775807n);
    expect(
      Object.is(
        decodeField("-0.0", false, () => "x"),
        -0,
      ),
    ).toBe(true);
  });

  it("rejects fields an export never writes, naming where", () => {
    expect(() => decodeField("hello", false, () => "t.csv, line 3")).toThrow(/t\.csv, line 3/);
    expect(() => decodeField("9223372036854775808", false, () => "x")).toThrow(/outside 64 bits/);
    expect(() => decodeField("base64:a*==", false, () => "x")).toThrow(/not base64/);
    expect(() => decodeField("1.", false, () => "x")).toThrow(/CORRUPT|neither/);
  });

  it("round-trips every value with its storage class, however the file is cut into chunks", () => {
    fc.assert(
      fc.property(
        fc
          .integer({ min: 1, max: 5 })
          .chain((width) =>
            fc.tuple(
              fc.array(fc.array(value, { minLength: width, maxLength: width }), { minLength: 1, maxLength: 8 }),
              fc.array(fc.nat(), { maxLength: 6 }),
            ),
          ),
        ([rows, cutSeeds]) => {
          const bytes = csvBytes(rows);
          const back = readBack(
            bytes,
            cutSeeds.map((n) => n % (bytes.length + 1)),
          );
          expect(back.length).toBe(rows.length);
          for (const [r, row] of rows.entries()) {
            for (const [c, v] of row.entries()) {
              if (!same(v, back[r]![c]!))
                throw new Error(`row ${r} column ${c}: ${String(v)} came back as ${String(back[r]![c])}`);
            }
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it("is plain RFC 4180: a general CSV parser reads the same fields and sees text as quoted", () => {
    fc.assert(
      fc.property(fc.array(fc.array(value, { minLength: 3, maxLength: 3 }), { minLength: 1, maxLength: 6 }), (rows) => {
        const text = csvText(rows);
        const seen: Array<[string, boolean]> = [];
        const records = parse(text, {
          relax_column_count: false,
          cast: (field, context) => {
            seen.push([field, context.quoting]);
            return field;
          },
        }) as string[][];
        expect(records.length).toBe(rows.length);
        const flat = rows.flat();
        for (const [i, v] of flat.entries()) {
          const [field, quoted] = seen[i]!;
          expect(quoted).toBe(typeof v === "string");
          expect(
            same(
              decodeField(field, quoted, () => "x"),
              v,
            ),
          ).toBe(true);
        }
      }),
      { numRuns: 200 },
    );
  });

  it("reports a truncated file, a missing BOM and a bare line feed", () => {
    const whole = csvBytes([["a", 1n]]);
    expect(() => readBack(whole.subarray(0, whole.length - 1), [])).toThrow(/middle of a record/);
    expect(() => readBack(Buffer.from('"a",1\r\n'), [])).toThrow(/byte order mark/);
    expect(() => readBack(Buffer.from('\uFEFF"a",1\n'), [])).toThrow(/line feed/);
    expect(() => readBack(Buffer.from('\uFEFF"a"x,1\r\n'), [])).toThrow(/after a quoted field/);
  });
});
