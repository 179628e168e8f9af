import { randomBytes } from "node:crypto";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeSegment, encodeSegment, type SegmentHeader } from "./segment-format.js";

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

function sample(pageSize: number, txnPages: number[], compression: "gzip" | "none" = "gzip") {
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
  it("round-trips transactions and pages, compressed or not, whatever the read chunking", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 6 }),
        fc.constantFrom<"gzip" | "none">("gzip", "none"),
        fc.integer({ min: 1, max: 5000 }),
        async (txnPages, compression, chunk) => {
          const { header, pages } = sample(512, txnPages, compression);
          const { header: back, out } = await decodeAll(await encode(header, pages), chunk);
          expect(back).toEqual(header);
          expect(out.map((t) => t.txn)).toEqual(header.transactions.map((t) => t.txn));
          expect(out.flatMap((t) => t.pages)).toEqual(pages);
        },
      ),
      { numRuns: 40 },
    );
  });

  it("detects a flipped byte anywhere and a truncated segment", async () => {
    const { header, pages } = sample(1024, [3, 1, 2]);
    const good = await encode(header, pages);
    for (const at of [20, Math.floor(good.length / 2), good.length - 40, good.length - 1]) {
      const bad = Buffer.from(good);
      bad[at]! ^= 0x40;
      await expect(decodeAll(bad)).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
    }
    await expect(decodeAll(good.subarray(0, good.length - 10))).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
    await expect(decodeAll(good.subarray(0, 30))).rejects.toMatchObject({ code: "CORRUPT_BACKUP" });
  });

  it("refuses a segment of a newer format version", async () => {
    const { header, pages } = sample(512, [1]);
    const bytes = await encode(header, pages);
    bytes.writeUInt32BE(99, 8);
    await expect(decodeAll(bytes)).rejects.toMatchObject({ code: "UNSUPPORTED_FORMAT" });
  });
});
