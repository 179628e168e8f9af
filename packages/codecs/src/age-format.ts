/**
 * The parts of the age v1 format (age-encryption.org/v1) Lifeboat runs natively: the STREAM
 * payload (ChaCha20-Poly1305 over 64 KiB chunks) and the scrypt passphrase stanza. The
 * age-encryption package stays in charge of the header (X25519 stanzas, header MAC); its own
 * payload code is pure JavaScript and measured ~75 MB/s here, against ~1 GB/s for node:crypto.
 * Interop tests against the `age` CLI keep this honest.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scrypt } from "node:crypto";
import type { Identity, Recipient } from "age-encryption";
import { loadAge } from "./lazy-libs.js";

/** Plaintext bytes per STREAM chunk (the spec's fixed 64 KiB). */
export const CHUNK_SIZE = 64 * 1024;
const TAG_SIZE = 16;
const SEALED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE;
/** The payload nonce that follows the header. */
export const NONCE_SIZE = 16;
/** The header of a file with a few hundred recipients fits; anything longer is not an age file. */
export const MAX_HEADER_SIZE = 1024 * 1024;
/** scrypt work factors we write and accept (2^20 needs 1 GiB of memory). */
export const MIN_WORK_FACTOR = 10;
export const MAX_WORK_FACTOR = 20;

/** The version line every age file starts with. */
const MAGIC = Buffer.from("age-encryption.org/v1\n", "latin1");

/** Thrown for data that is not a well-formed age file; the codec turns it into CORRUPT_BACKUP. */
export class AgeFormatError extends Error {}

/** The payload key: HKDF-SHA-256(file key, salt = nonce, info = "payload"). */
export function payloadKey(fileKey: Uint8Array, nonce: Uint8Array): Buffer {
  return Buffer.from(hkdfSync("sha256", fileKey, nonce, "payload", 32));
}

/** 11-byte big-endian chunk counter followed by the last-chunk flag. */
class ChunkNonce {
  readonly bytes = Buffer.alloc(12);

  next(): void {
    for (let i = 10; i >= 0; i--) {
      this.bytes[i] = (this.bytes[i]! + 1) & 0xff;
      if (this.bytes[i] !== 0) return;
    }
    throw new AgeFormatError("too many chunks");
  }
}

function seal(key: Buffer, nonce: ChunkNonce, plaintext: Uint8Array, last: boolean): Buffer[] {
  nonce.bytes[11] = last ? 1 : 0;
  const cipher = createCipheriv("chacha20-poly1305", key, nonce.bytes, { authTagLength: TAG_SIZE });
  const body = cipher.update(plaintext);
  cipher.final();
  nonce.next();
  return [body, cipher.getAuthTag()];
}

function open(key: Buffer, nonce: ChunkNonce, sealed: Uint8Array, last: boolean): Buffer {
  nonce.bytes[11] = last ? 1 : 0;
  const decipher = createDecipheriv("chacha20-poly1305", key, nonce.bytes, { authTagLength: TAG_SIZE });
  decipher.setAuthTag(sealed.subarray(sealed.byteLength - TAG_SIZE));
  const body = decipher.update(sealed.subarray(0, sealed.byteLength - TAG_SIZE));
  try {
    decipher.final();
  } catch {
    throw new AgeFormatError(
      last ? "the last chunk fails authentication (tampered or truncated)" : "a chunk fails authentication (tampered)",
    );
  }
  nonce.next();
  return body;
}

/** Output is handed on in pieces of about this size: fewer, larger writes downstream. */
const BATCH_SIZE = 1024 * 1024;

/** Collects small buffers and releases them joined, about `BATCH_SIZE` at a time. */
class Batch {
  #parts: Buffer[] = [];
  #size = 0;

  add(...parts: Buffer[]): void {
    for (const part of parts) {
      this.#parts.push(part);
      this.#size += part.byteLength;
    }
  }

  get full(): boolean {
    return this.#size >= BATCH_SIZE;
  }

  take(): Buffer {
    const joined = this.#parts.length === 1 ? this.#parts[0]! : Buffer.concat(this.#parts, this.#size);
    this.#parts = [];
    this.#size = 0;
    return joined;
  }
}

/**
 * Encrypts `input` as STREAM chunks. A full chunk is held back until the next byte shows it is
 * not the last: the last chunk carries a flag, and may be full, but is empty only for empty input.
 */
export async function* sealPayload(input: AsyncIterable<Uint8Array>, key: Buffer): AsyncIterable<Uint8Array> {
  const nonce = new ChunkNonce();
  const pending = Buffer.allocUnsafe(CHUNK_SIZE);
  const batch = new Batch();
  let used = 0;
  for await (const chunk of input) {
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (used === CHUNK_SIZE) {
        batch.add(...seal(key, nonce, pending, false));
        used = 0;
        if (batch.full) yield batch.take();
      }
      const n = Math.min(CHUNK_SIZE - used, chunk.byteLength - offset);
      pending.set(chunk.subarray(offset, offset + n), used);
      used += n;
      offset += n;
    }
  }
  batch.add(...seal(key, nonce, pending.subarray(0, used), true));
  yield batch.take();
}

/** Decrypts STREAM chunks; every chunk is authenticated before its plaintext is passed on. */
export async function* openPayload(input: AsyncIterable<Uint8Array>, key: Buffer): AsyncIterable<Uint8Array> {
  const nonce = new ChunkNonce();
  const pending = Buffer.allocUnsafe(SEALED_CHUNK_SIZE);
  const batch = new Batch();
  let used = 0;
  let first = true;
  for await (const chunk of input) {
    let offset = 0;
    while (offset < chunk.byteLength) {
      if (used === SEALED_CHUNK_SIZE) {
        batch.add(open(key, nonce, pending, false));
        used = 0;
        first = false;
        if (batch.full) yield batch.take();
      }
      const n = Math.min(SEALED_CHUNK_SIZE - used, chunk.byteLength - offset);
      pending.set(chunk.subarray(offset, offset + n), used);
      used += n;
      offset += n;
    }
  }
  if (used < TAG_SIZE) throw new AgeFormatError("the payload ends early (truncated)");
  const last = open(key, nonce, pending.subarray(0, used), true);
  if (last.byteLength === 0 && !first) throw new AgeFormatError("the last chunk is empty");
  batch.add(last);
  yield batch.take();
}

/**
 * Reads the header (through the `--- MAC` line) and the payload nonce from the start of an age
 * file; returns them and an iterable of the rest.
 */
export async function readHeader(
  input: AsyncIterable<Uint8Array>,
): Promise<{ header: Buffer; nonce: Buffer; rest: AsyncIterable<Uint8Array> }> {
  const iterator = input[Symbol.asyncIterator]();
  let buffered = Buffer.alloc(0);
  let headerEnd = -1;
  let searchFrom = 0;
  let checked = false;
  while (headerEnd < 0 || buffered.byteLength < headerEnd + NONCE_SIZE) {
    const next = await iterator.next();
    if (next.done) {
      throw new AgeFormatError(
        buffered.byteLength === 0 ? "it is empty" : "it ends inside the age header (truncated, or not an age file)",
      );
    }
    buffered = Buffer.concat([buffered, next.value]);
    if (headerEnd < 0) {
      if (!checked && buffered.byteLength >= MAGIC.byteLength) {
        if (!buffered.subarray(0, MAGIC.byteLength).equals(MAGIC)) {
          throw new AgeFormatError("it does not start with an age header (not an age file, or ASCII-armored)");
        }
        checked = true;
      }
      const mac = buffered.indexOf("\n--- ", Math.max(0, searchFrom - 4));
      if (mac >= 0) {
        const eol = buffered.indexOf("\n", mac + 1);
        if (eol >= 0) headerEnd = eol + 1;
      }
      searchFrom = buffered.byteLength;
      if (headerEnd < 0 && buffered.byteLength > MAX_HEADER_SIZE) {
        throw new AgeFormatError("its age header is longer than 1 MiB (not an age file)");
      }
    }
  }
  const header = buffered.subarray(0, headerEnd);
  const nonce = buffered.subarray(headerEnd, headerEnd + NONCE_SIZE);
  const leftover = buffered.subarray(headerEnd + NONCE_SIZE);
  const rest = (async function* () {
    if (leftover.byteLength > 0) yield leftover;
    for (;;) {
      const next = await iterator.next();
      if (next.done) return;
      yield next.value;
    }
  })();
  return { header, nonce, rest };
}

/** True when the header's only stanza is a scrypt (passphrase) stanza. */
export function isPassphraseHeader(header: Uint8Array): boolean {
  return Buffer.from(header).toString("latin1").includes("\n-> scrypt ");
}

const SCRYPT_LABEL = "age-encryption.org/v1/scrypt";

function scryptKey(passphrase: string, salt: Uint8Array, logN: number): Promise<Buffer> {
  const labelAndSalt = Buffer.concat([Buffer.from(SCRYPT_LABEL, "latin1"), salt]);
  return new Promise((resolve, reject) => {
    // scrypt needs 128 * r * N bytes; allow that plus slack.
    scrypt(passphrase, labelAndSalt, 32, { N: 2 ** logN, r: 8, p: 1, maxmem: 256 * 8 * 2 ** logN }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

function base64NoPad(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64").replace(/=+$/, "");
}

/**
 * A scrypt recipient (node:crypto's native scrypt) that also hands the file key to `capture`.
 * It yields the header's only stanza, as the age spec requires for passphrase files.
 */
export function scryptRecipient(passphrase: string, logN: number, capture: (fileKey: Uint8Array) => void): Recipient {
  return {
    async wrapFileKey(fileKey) {
      capture(Uint8Array.from(fileKey));
      const salt = randomBytes(16);
      const key = await scryptKey(passphrase, salt, logN);
      const cipher = createCipheriv("chacha20-poly1305", key, Buffer.alloc(12), { authTagLength: TAG_SIZE });
      const body = Buffer.concat([cipher.update(fileKey), cipher.final(), cipher.getAuthTag()]);
      const { Stanza } = await loadAge();
      return [new Stanza(["scrypt", base64NoPad(salt), String(logN)], body)];
    },
  };
}

/** A recipient that adds no stanza and only captures the file key (to run the payload natively). */
export function fileKeyCapture(capture: (fileKey: Uint8Array) => void): Recipient {
  return {
    wrapFileKey(fileKey) {
      capture(Uint8Array.from(fileKey));
      return [];
    },
  };
}

/** The scrypt identity, with the age spec's checks (only stanza, canonical work factor, bounds). */
export function scryptIdentity(passphrase: string): Identity {
  return {
    async unwrapFileKey(stanzas) {
      const scryptStanzas = stanzas.filter((s) => s.args[0] === "scrypt");
      if (scryptStanzas.length === 0) return null;
      if (stanzas.length !== 1) throw new AgeFormatError("a scrypt stanza is not the only one in the header");
      const stanza = scryptStanzas[0]!;
      const [, saltText, logNText] = stanza.args;
      if (stanza.args.length !== 3 || !saltText || !logNText || !/^[1-9][0-9]*$/.test(logNText)) {
        throw new AgeFormatError("invalid scrypt stanza");
      }
      const salt = Buffer.from(saltText, "base64");
      const logN = Number(logNText);
      if (salt.byteLength !== 16 || stanza.body.byteLength !== 32) throw new AgeFormatError("invalid scrypt stanza");
      if (logN > MAX_WORK_FACTOR) throw new AgeFormatError(`scrypt work factor ${logN} is above ${MAX_WORK_FACTOR}`);
      const key = await scryptKey(passphrase, salt, logN);
      const decipher = createDecipheriv("chacha20-poly1305", key, Buffer.alloc(12), { authTagLength: TAG_SIZE });
      decipher.setAuthTag(stanza.body.subarray(16));
      const fileKey = decipher.update(stanza.body.subarray(0, 16));
      try {
        decipher.final();
      } catch {
        return null; // another passphrase
      }
      return fileKey;
    },
  };
}
