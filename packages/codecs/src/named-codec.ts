/** The codec shape every codec here returns, and a helper for reading recorded specs. */
import type { ByteStream, Codec, CodecSpec } from "@lifeboat/core";

/** A codec whose `decode` also takes the object's name (its storage key) for error messages. */
export interface NamedCodec extends Codec {
  /** As `Codec.decode`; `name`, when given, is quoted in every error. */
  decode(input: ByteStream, name?: string): ByteStream;
}

/** The level a spec records, if it is a whole number in range (decoding does not depend on it). */
export function levelOf(spec: CodecSpec, min: number, max: number): number | undefined {
  const level = spec.params?.level;
  return typeof level === "number" && Number.isInteger(level) && level >= min && level <= max ? level : undefined;
}
