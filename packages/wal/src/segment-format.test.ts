import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  decodeSegment,
  decompressSegment,
  encodeSegment,
  parseSegment,
  type SegmentCompression,
  type SegmentHeader,
} from "./segment-format.js";

async function encode(header: SegmentHeader, pages: { pgno: number; data: Buffer }[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of encodeSegment(
    header,
    (async function* () {
      yield* pages;
    })(),
  ))
    chunks.push(c);
  return Buffer.concat(chunks);
}

async function decodeAll(bytes: Buffer, chunk = 1000) {
  const source = (async function* () {
    for (let i = 0; i < bytes.length; i += chunk) yield bytes.subarray(i, i + chunk);
  })();
  const decoded = await decodeSegment(source, "test.seg");
  const out: { txn: number; pages: { pgno: number; data: Buffer }[] }[] = [];
  for await (const { txn, pages } of decoded.transactions()) {
    const list: { pgno: number; data: Buffer }[] = [];
    for await (const batch of pages) for (const p of batch) list.push({ pgno: p.pgno, data: Buffer.from(p.data) });
    out.push({ txn: txn.txn, pages: list });
  }
  return { header: decoded.header, out };
}

function sample(pageSize: number, txnPages: number[], compression: SegmentCompression = "zstd") {
  const header: SegmentHeader = {
    generation: "0123456789abcdef",
    firstTxn: 5,
    lastTxn: 4 + txnPages.length,
    pageSize,
    compression,
    createdAt: new Date(0).toISOString(),
    transactions: txnPages.map((pages, i) => ({ txn: 5 + i, observedAt: 1000 + i, commitSize: 10 + i, pages })),
  };
  const pages = txnPages.flatMap((n, t) =>
    Array.from({ length: n }, (_, k) => ({ pgno: t * 100 + k + 1, data: randomBytes(pageSize) })),
  );
  return { header, pages };
}

describe("segment format", () => {
  it.each<[SegmentCompression, number]>([
    ["zstd", 3],
    ["gzip", 3],
    ["none", 3],
    ["zstd", 4300], // over 16 MiB of records: the streamed path
  ])("encodes the same segment from laid-out page records (%s, %i pages)", async (compression, n) => {
    const { header, pages } = sample(4096, [n - 1, 0, 1], compression);
    const records = Buffer.concat(
      pages.map((p) => {
        const record = Buffer.alloc(4 + 4096);
        record.writeUInt32BE(p.pgno, 0);
        p.data.copy(record, 4);
        return record;
      }),
    );
    const fromPages = await encode(header, pages);
    const fromRecords: Buffer[] = [];
    for await (const c of encodeSegment(header, records)) fromRecords.push(c);
    const bytes = Buffer.concat(fromRecords);
    expect(bytes.equals(fromPages)).toBe(true);
    const { out } = await decodeAll(bytes, 64 * 1024);
    expect(out.flatMap((t) => t.pages)).toEqual(pages);
    // Records that do not match the header's page count are refused, not encoded.
    await expect(async () => {
      for await (const _ of encodeSegment(header, records.subarray(0, records.byteLength - 4100)));
    }).rejects.toThrow(/segment body has .* bytes, its header lists/);
  });

  it("round-trips transactions and pages, compressed or not, whatever the read chunking", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 6 }),
        fc.constantFrom<SegmentCompression>("zstd", "gzip", "none"),
        fc.integer({ min: 1, max: 5000 }),
        async (txnPages, compression, chunk) => {
          const { header, pages } = sample(512, txnPages, compression);
          const { header: back, out } = await decodeAll(await encode(header, pages), chunk);
          expect(back).toEqual(header);
          expect(out.map((t) => t.txn)).toEqual(header.transactions.map((t) => t.txn));
          expect(out.flatMap((t) => t.pages)).toEqual(pages);
          // The in-memory reader (restore) sees the same records.
          const whole = await encode(header, pages);
          const parsed = parseSegment(whole, "test.seg");
          expect(parsed.header).toEqual(header);
          const plain = await decompressSegment(parsed, "test.seg");
          expect(plain.length).toBe(pages.length * 516);
          for (const [i, page] of pages.entries()) {
            expect(plain.readUInt32BE(i * 516)).toBe(page.pgno);
            expect(plain.subarray(i * 516 + 4, (i + 1) * 516).equals(page.data)).toBe(true);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it("writes version 2 for a zstd body and 1 for gzip, and reads both", async () => {
    for (const [compression, version] of [
      ["zstd", 2],
      ["gzip", 1],
      ["none", 1],
    ] as const) {
      const { header, pages } = sample(512, [2, 1], compression);
      const bytes = await encode(header, pages);
      expect(bytes.readUInt32BE(8)).toBe(version);
      expect((await decodeAll(bytes)).out.flatMap((t) => t.pages)).toEqual(pages);
    }
  });

  it("streams segments too large to compress in one call, and reads them in memory too", async () => {
    // 17 MiB of pages: past the one-call limit, so the body is a stream without a stated size.
    for (const compression of ["zstd", "gzip"] as const) {
      const { header, pages } = sample(65536, [100, 172], compression);
      const bytes = await encode(header, pages);
      const { out } = await decodeAll(bytes, 1 << 20);
      expect(out.map((t) => t.pages.length)).toEqual([100, 172]);
      expect(out[1]!.pages.at(-1)).toEqual(pages.at(-1));
      const plain = await decompressSegment(parseSegment(bytes, "big.seg"), "big.seg");
      expect(plain.subarray(plain.length - 65536).equals(pages.at(-1)!.data)).toBe(true);
    }
  });

  it("refuses a body in a compression it does not know", async () => {
    const { header, pages } = sample(512, [1], "none");
    const bytes = await encode({ ...header, compression: "lz4" as SegmentCompression }, pages);
    await expect(decodeAll(bytes)).rejects.toMatchObject({ code: "UNSUPPORTED_FORMAT" });
    expect(() => parseSegment(bytes, "x.seg")).toThrow(/compressed with "lz4"/);
  });

  it("detects a flipped byte anywhere and a truncated segment", async () => {
    for (const compression of ["zstd", "gzip"] as const) {
      await detectsDamage(compression);
    }
  });

  async function detectsDamage(compression: SegmentCompression) {
    const { header, pages } = sample(1024, [3, 1, 2], compression);
    const good = await encode(header, pages);
    for (const at of [20, Math.floor(good.length / 2), good.length - 40, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x40;
      await expect(decodeAll(bad)).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
    }
    await expect(decodeAll(good.subarray(0, good.length - 10))).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
    await expect(decodeAll(good.subarray(0, 30))).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
    for (const at of [20, Math.floor(good.length / 2), good.length - 1]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x40;
      expect(() => parseSegment(bad, "bad.seg")).toThrow(expect.objectContaining({ code: "CORRUPT_BACKUP" }));
    }
    expect(() => parseSegment(good.subarray(0, good.length - 10), "short.seg")).toThrow(/corrupt/);
  }

  it("refuses a segment of a newer format version", async () => {
    const { header, pages } = sample(512, [1]);
    const bytes = await encode(header, pages);
    bytes.writeUInt32BE(99, 8);
    await expect(decodeAll(bytes)).rejects.toMatchObject({ code: "UNSUPPORTED_FORMAT" });
  });
});
