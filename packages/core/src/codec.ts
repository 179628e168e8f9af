/**
 * Codecs transform stored bytes: compression first, then encryption, on the way out; the
 * reverse on the way back. The chain used for an object is recorded in its manifest (or segment
 * header) as `CodecSpec`s, so restore never depends on the current config.
 */
export type ByteStream = AsyncIterable<Uint8Array>;

/** What a manifest records about one codec stage. Never contains secrets. */
export interface CodecSpec {
  /** The codec plugin name (`gzip`, `zstd`, `age`, ...). */
  readonly type: string;
  /** Parameters needed to decode (level, public recipients' ids...). */
  readonly params?: Readonly<Record<string, unknown>>;
}

export interface Codec {
  /** Recorded in manifests. */
  readonly spec: CodecSpec;
  /** File-name extension the stage adds, with the dot (`.gz`, `.zst`, `.age`). */
  readonly extension: string;
  /** Streaming transform; constant memory. */
  encode(input: ByteStream): ByteStream;
  /**
   * Streaming inverse. Throws `CORRUPT_BACKUP` on tampered or truncated input and a
   * `CONFIG_INVALID` error naming the missing key when it cannot decrypt. `name` is the stored
   * object's key, for those messages (optional: older plugins ignore it).
   */
  decode(input: ByteStream, name?: string): ByteStream;
}

/** Applies a chain of codecs in order (encode) or reverse order (decode). */
export function encodeChain(codecs: readonly Codec[], input: ByteStream): ByteStream {
  return codecs.reduce((stream, codec) => codec.encode(stream), input);
}

/** Decodes with `codecs` in reverse order; `name` (the object's key) goes into their errors. */
export function decodeChain(codecs: readonly Codec[], input: ByteStream, name?: string): ByteStream {
  return codecs.reduceRight((stream, codec) => codec.decode(stream, name), input);
}
