/**
 * Reads the header of the WAL index (the `-shm` file, sqlite.org/walformat.html §2.1): which WAL
 * frame is the latest commit, the database size after it, and how far checkpoints have copied
 * frames back into the database file. SQLite keeps this file memory-mapped and in host byte
 * order; reading it with `read()` sees the same bytes. Synchronous: it is read while a
 * write lock is held, where every microsecond counts.
 */

import { endianness } from "node:os";
import { keptDescriptor, readAtSync } from "./kept-descriptors.js";

/** Two copies of the 48-byte header, then the checkpoint info (nBackfill, read marks, locks...). */
const SHM_READ_SIZE = 136;
const HEADER_SIZE = 48;
const NBACKFILL_OFFSET = 96;

export interface WalIndexHeader {
  /** Incremented by every commit. */
  readonly change: number;
  readonly pageSize: number;
  readonly bigEndianChecksum: boolean;
  /** Index of the last committed frame (0: the WAL holds nothing the database file lacks). */
  readonly mxFrame: number;
  /** Database size in pages after that commit. */
  readonly nPage: number;
  /** Running checksum after frame `mxFrame`. */
  readonly frameChecksum1: number;
  readonly frameChecksum2: number;
  /** The salts of the WAL this index describes (written to the WAL header by the next writer after a restart). */
  readonly salt1: number;
  readonly salt2: number;
  /** Frames `1..nBackfill` have been copied into the database file by checkpoints. */
  readonly nBackfill: number;
  /** The raw 48 bytes of the first header copy, to compare two reads. */
  readonly raw: Buffer;
}

/**
 * Reads the WAL-index header of `shmPath`. Returns null when the file is missing, too short, not
 * initialised, or its two header copies differ (a writer is updating it: read again).
 */
export function readWalIndexHeader(shmPath: string): WalIndexHeader | null {
  let fd: number;
  try {
    // Never a descriptor of our own that we would close: that would drop this process's SQLite locks.
    fd = keptDescriptor(shmPath);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
  const buf = Buffer.alloc(SHM_READ_SIZE);
  const bytesRead = readAtSync(fd, buf, 0, SHM_READ_SIZE, 0);
  {
    if (bytesRead < SHM_READ_SIZE) return null;
    const first = buf.subarray(0, HEADER_SIZE);
    if (!first.equals(buf.subarray(HEADER_SIZE, 2 * HEADER_SIZE))) return null;
    const le = endianness() === "LE";
    const u32 = (offset: number) => (le ? buf.readUInt32LE(offset) : buf.readUInt32BE(offset));
    const isInit = buf[12];
    if (isInit !== 1) return null;
    const szPage = le ? buf.readUInt16LE(14) : buf.readUInt16BE(14);
    return {
      change: u32(8),
      pageSize: szPage === 1 ? 65536 : szPage,
      bigEndianChecksum: buf[13] !== 0,
      mxFrame: u32(16),
      nPage: u32(20),
      frameChecksum1: u32(24),
      frameChecksum2: u32(28),
      // The salts are copied from the WAL header byte for byte (big-endian there).
      salt1: buf.readUInt32BE(32),
      salt2: buf.readUInt32BE(36),
      nBackfill: u32(NBACKFILL_OFFSET),
      raw: Buffer.from(first),
    };
  }
}
