/**
 * SQLite's WAL checksum (walformat.html, "Checksum Algorithm"). It runs over every byte Lifeboat
 * reads from a WAL, so it works on 32-bit words through typed arrays, never byte by byte.
 */

/** True on little-endian hosts (every platform Node runs on in practice). */
const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Continues SQLite's cumulative WAL checksum from `(s0, s1)` over `data`, whose length must be a
 * multiple of 8. Words are read big-endian when `bigEndian` (WAL magic 0x377f0683), else
 * little-endian (0x377f0682). For each pair of words: `s0 += x[i] + s1; s1 += x[i+1] + s0`, in
 * unsigned 32-bit arithmetic. Returns the new `[s0, s1]`.
 */
export function walChecksum(data: Uint8Array, s0: number, s1: number, bigEndian: boolean): [number, number] {
  if (data.byteLength % 8 !== 0) {
    throw new RangeError(`walChecksum needs a multiple of 8 bytes, got ${data.byteLength}`);
  }
  let words: Int32Array;
  if (data.byteOffset % 4 === 0) {
    words = new Int32Array(data.buffer, data.byteOffset, data.byteLength / 4);
  } else {
    // Unaligned views are rare (pooled Buffers); copy rather than read byte by byte.
    const copy = new Uint8Array(data.byteLength);
    copy.set(data);
    words = new Int32Array(copy.buffer);
  }
  const out = new Uint32Array(2);
  checksumWords(words, 0, words.length, s0, s1, needsSwap(bigEndian), out);
  return [out[0]!, out[1]!];
}

/**
 * The checksum loop over `words[from, to)` (an even count), continuing from `(s0, s1)`; the
 * result is written into `out` (unsigned), so callers in a loop allocate nothing. `swap` says the
 * words must be byte-swapped (checksum byte order differs from the host's). Int32 arithmetic
 * with `| 0` is exact mod 2^32 and keeps V8 on its integer fast path; the loop is unrolled
 * because each step depends on the previous one.
 */
export function checksumWords(
  words: Int32Array,
  from: number,
  to: number,
  s0: number,
  s1: number,
  swap: boolean,
  out: Uint32Array,
): void {
  let a = s0 | 0;
  let b = s1 | 0;
  let i = from;
  if (!swap) {
    for (; i + 8 <= to; i += 8) {
      a = (a + words[i]! + b) | 0;
      b = (b + words[i + 1]! + a) | 0;
      a = (a + words[i + 2]! + b) | 0;
      b = (b + words[i + 3]! + a) | 0;
      a = (a + words[i + 4]! + b) | 0;
      b = (b + words[i + 5]! + a) | 0;
      a = (a + words[i + 6]! + b) | 0;
      b = (b + words[i + 7]! + a) | 0;
    }
    for (; i < to; i += 2) {
      a = (a + words[i]! + b) | 0;
      b = (b + words[i + 1]! + a) | 0;
    }
  } else {
    for (; i + 4 <= to; i += 4) {
      let x = words[i]!;
      let y = words[i + 1]!;
      x = (x << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
      y = (y << 24) | ((y & 0xff00) << 8) | ((y >>> 8) & 0xff00) | (y >>> 24);
      a = (a + x + b) | 0;
      b = (b + y + a) | 0;
      x = words[i + 2]!;
      y = words[i + 3]!;
      x = (x << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
      y = (y << 24) | ((y & 0xff00) << 8) | ((y >>> 8) & 0xff00) | (y >>> 24);
      a = (a + x + b) | 0;
      b = (b + y + a) | 0;
    }
    for (; i < to; i += 2) {
      let x = words[i]!;
      let y = words[i + 1]!;
      x = (x << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | (x >>> 24);
      y = (y << 24) | ((y & 0xff00) << 8) | ((y >>> 8) & 0xff00) | (y >>> 24);
      a = (a + x + b) | 0;
      b = (b + y + a) | 0;
    }
  }
  out[0] = a;
  out[1] = b;
}

/** Whether words in `bigEndian` checksum order must be byte-swapped on this host. */
export function needsSwap(bigEndian: boolean): boolean {
  return bigEndian === HOST_LITTLE_ENDIAN;
}

/**
 * The checksum of one frame at `words[w]` (`frameWords` words: the 24-byte frame header, then the
 * page): SQLite sums the header's first 8 bytes, then the page, continuing from `(s0, s1)`.
 * Written into `out` (unsigned), so a scan allocates nothing per frame.
 */
export function checksumFrame(
  words: Int32Array,
  w: number,
  frameWords: number,
  s0: number,
  s1: number,
  swap: boolean,
  out: Uint32Array,
): void {
  checksumWords(words, w, w + 2, s0, s1, swap, out);
  checksumWords(words, w + 6, w + frameWords, out[0]!, out[1]!, swap, out);
}
