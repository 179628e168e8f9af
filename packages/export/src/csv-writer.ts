/**
 * The CSV encoder of the export: SQLite values to RFC 4180 text by the rules of value-codec.ts
 * (text always quoted, `"` doubled; integers, reals and BLOBs as unquoted tokens; NULL as nothing;
 * CRLF after every record). Written by hand because a general CSV library spent more time
 * deciding how to quote each field than reading the rows cost; the output is byte for byte what
 * csv-stringify wrote with the options of the first export format (a property test checks it).
 */
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { BLOB_PREFIX, formatBlob, formatReal, type SqliteValue } from "./value-codec.js";

/**
 * Bytes of CSV handed to the sink at a time. 1 MiB chunks measured the same CPU but raised the
 * peak RSS of a 256 MiB export from 167 to 197 MiB (dead chunks wait longer for a GC).
 */
export const CHUNK_BYTES = 256 * 1024;
/** Encoded records are joined as a string up to about this many UTF-16 units, then copied into the chunk (short strings concatenate fastest). */
const TEXT_UNITS = 16 * 1024;
/** BLOBs of more bytes than this have their base64 copied straight into the chunk, not into the string first. */
const DIRECT_BLOB_BYTES = 4096;

const QUOTES = /"/g;

function unexpected(value: unknown): LifeboatError {
  const type = typeof value === "object" && value !== null ? (value.constructor?.name ?? "object") : typeof value;
  return new LifeboatError(ErrorCodes.INTERNAL, `Unexpected value of type ${type} in a row.`, {
    plugin: "export",
    operation: "export",
    hint: "This is a bug in Lifeboat; please report it.",
  });
}

/** One value as one CSV field (without a delimiter). Throws INTERNAL for a value SQLite never returns. */
export function encodeField(value: SqliteValue): string {
  if (value === null) return "";
  switch (typeof value) {
    case "string":
      return value.indexOf('"') === -1 ? `"${value}"` : `"${value.replace(QUOTES, '""')}"`;
    case "bigint":
      return value.toString();
    case "number":
      return formatReal(value);
    case "object":
      if (Buffer.isBuffer(value)) return BLOB_PREFIX + value.toString("base64");
      if ((value as unknown) instanceof Uint8Array) return formatBlob(value);
  }
  throw unexpected(value);
}

/**
 * Encodes records into UTF-8 chunks of about `chunkBytes` each, for the caller to write (few, large
 * writes; memory bounded by the chunk size plus the largest single record). Each chunk is a new
 * Buffer, so a sink may keep it.
 */
export class CsvWriter {
  readonly #chunkBytes: number;
  #chunk: Buffer;
  #at = 0;
  #text = "";
  /** Chunks completed and not yet taken. */
  #done: Buffer[] = [];

  constructor(chunkBytes = CHUNK_BYTES) {
    this.#chunkBytes = chunkBytes;
    this.#chunk = this.#allocate(0);
  }

  #allocate(atLeast: number): Buffer {
    // Room for a full chunk plus one string of TEXT_UNITS (at most 3 UTF-8 bytes per unit).
    return Buffer.allocUnsafe(Math.max(this.#chunkBytes + 3 * TEXT_UNITS + 64, atLeast));
  }

  /** Copies `text` into the chunk, starting a new chunk when it might not fit. */
  #put(text: string, encoding: "utf8" | "latin1"): void {
    // The exact UTF-8 size costs a scan: worth it only to size a buffer for one huge record.
    const most =
      encoding === "latin1"
        ? text.length
        : text.length > TEXT_UNITS
          ? Buffer.byteLength(text, "utf8")
          : 3 * text.length;
    if (this.#at + most > this.#chunk.length) this.#seal(most);
    this.#at += this.#chunk.write(text, this.#at, encoding);
  }

  #spill(): void {
    if (this.#text.length === 0) return;
    this.#put(this.#text, "utf8");
    this.#text = "";
  }

  /** Ends the current chunk (if it holds anything) and starts one with room for at least `room` bytes. */
  #seal(room = 0): void {
    if (this.#at > 0) this.#done.push(this.#chunk.subarray(0, this.#at));
    this.#chunk = this.#allocate(room);
    this.#at = 0;
  }

  /**
   * Encodes one record: its fields by the value rules, joined by `,`, ended by CRLF. Returns true
   * when a chunk is complete (the caller then writes what `take` returns).
   */
  add(row: readonly SqliteValue[]): boolean {
    for (let i = 0; i < row.length; i++) {
      if (i > 0) this.#text += ",";
      const value = row[i]!;
      if (Buffer.isBuffer(value) && value.length > DIRECT_BLOB_BYTES) {
        this.#text += BLOB_PREFIX;
        this.#spill();
        // base64 is ASCII: latin1 copies it byte for byte.
        this.#put(value.toString("base64"), "latin1");
      } else {
        this.#text += encodeField(value);
      }
    }
    this.#text += "\r\n";
    if (this.#text.length >= TEXT_UNITS) this.#spill();
    if (this.#at >= this.#chunkBytes) this.#seal();
    return this.#done.length > 0;
  }

  /** The completed chunks, in order; with `all`, also the rest encoded so far (the writer is then empty). */
  take(all = false): Buffer[] {
    if (all) {
      this.#spill();
      if (this.#at > 0) this.#seal();
    }
    const done = this.#done;
    this.#done = [];
    return done;
  }
}
