/**
 * A small LZ4 frame decoder (https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md), enough
 * to read Litestream's `*.wal.lz4` replica files without an npm dependency or a process per file.
 * Checksums are skipped (the benchmark only needs the bytes; restore correctness is checked by
 * restoring with Litestream itself).
 */

const FRAME_MAGIC = 0x184d2204;
const BLOCK_MAX = [0, 0, 0, 0, 64 * 1024, 256 * 1024, 1024 * 1024, 4 * 1024 * 1024];

/** Decodes every LZ4 frame in `src` (concatenated frames and skippable frames allowed). */
export function decodeLz4Frames(src: Buffer): Buffer {
  let out = Buffer.allocUnsafe(Math.max(1024, src.length * 4));
  let o = 0;
  let i = 0;
  const ensure = (extra: number) => {
    if (o + extra <= out.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, o + extra));
    out.copy(bigger, 0, 0, o);
    out = bigger;
  };
  while (i + 4 <= src.length) {
    const magic = src.readUInt32LE(i);
    if ((magic & 0xfffffff0) === 0x184d2a50) {
      i += 8 + src.readUInt32LE(i + 4); // skippable frame
      continue;
    }
    if (magic !== FRAME_MAGIC) throw new Error(`not an LZ4 frame at byte ${i} (magic ${magic.toString(16)})`);
    const flg = src[i + 4]!;
    const bd = src[i + 5]!;
    i += 6;
    if (flg >> 6 !== 1) throw new Error(`unsupported LZ4 frame version ${flg >> 6}`);
    const blockChecksum = (flg & 0x10) !== 0;
    const contentSize = (flg & 0x08) !== 0;
    const contentChecksum = (flg & 0x04) !== 0;
    const dictId = (flg & 0x01) !== 0;
    const blockMax = BLOCK_MAX[(bd >> 4) & 7] ?? 4 * 1024 * 1024;
    if (contentSize) i += 8;
    if (dictId) i += 4;
    i += 1; // header checksum
    for (;;) {
      const word = src.readUInt32LE(i);
      i += 4;
      if (word === 0) break; // end mark
      const size = word & 0x7fffffff;
      ensure(blockMax);
      if (word & 0x80000000) {
        src.copy(out, o, i, i + size);
        o += size;
      } else {
        o = decodeBlock(src, i, i + size, out, o);
      }
      i += size;
      if (blockChecksum) i += 4;
    }
    if (contentChecksum) i += 4;
  }
  return out.subarray(0, o);
}

/** One LZ4 block (sequences of literals and matches) into `dst` at `d`; returns the new end. */
function decodeBlock(src: Buffer, i: number, end: number, dst: Buffer, d: number): number {
  while (i < end) {
    const token = src[i++]!;
    let literals = token >> 4;
    if (literals === 15) {
      let b: number;
      do {
        b = src[i++]!;
        literals += b;
      } while (b === 255);
    }
    src.copy(dst, d, i, i + literals);
    d += literals;
    i += literals;
    if (i >= end) break; // the last sequence has literals only
    const offset = src[i]! | (src[i + 1]! << 8);
    i += 2;
    let match = token & 15;
    if (match === 15) {
      let b: number;
      do {
        b = src[i++]!;
        match += b;
      } while (b === 255);
    }
    match += 4;
    let from = d - offset;
    if (offset === 0 || from < 0) throw new Error("corrupt LZ4 block: bad match offset");
    if (offset >= match) {
      dst.copyWithin(d, from, from + match);
      d += match;
    } else {
      for (let k = 0; k < match; k++) dst[d++] = dst[from++]!;
    }
  }
  return d;
}
