/**
 * The `gzip` codec: node:zlib, `.gz`. Objects are plain gzip files (`gunzip` opens them).
 */

import { createGunzip, createGzip } from "node:zlib";
import { type ByteStream, type CodecSpec, defineCodecPlugin, throughTransform } from "@lifeboat/core";
import { z } from "zod";
import { corruptError, messageOf } from "./codec-errors.js";
import { levelOf, type NamedCodec } from "./named-codec.js";
import { InputWatch, slices } from "./stream-adapters.js";

/** Default gzip level: zlib's own default. */
export const GZIP_DEFAULT_LEVEL = 6;

const gzipOptionsSchema = z.strictObject({
  level: z.number().int("level must be a whole number").min(1).max(9).optional(),
});

/** Options of a `type: gzip` codec. */
export type GzipCodecOptions = z.output<typeof gzipOptionsSchema>;

/** Decoders read input in pieces this large, so one step can only expand so far. */
const DECODE_SLICE = 64 * 1024;

/** A gzip codec at `level` (1-9, default 6). Decoding any level works. */
export function gzipCodec(options: GzipCodecOptions = {}): NamedCodec {
  const level = options.level ?? GZIP_DEFAULT_LEVEL;
  return {
    spec: { type: "gzip", params: { level } },
    extension: ".gz",
    encode: (input) => throughTransform(input, createGzip({ level })),
    decode: (input, name) => gunzip(input, name),
  };
}

async function* gunzip(input: ByteStream, name: string | undefined): ByteStream {
  const watch = new InputWatch();
  try {
    yield* throughTransform(slices(watch.watch(input), DECODE_SLICE), createGunzip());
  } catch (error) {
    if (watch.failed) throw watch.error;
    throw corruptError("gzip", name, `the gzip data is damaged (${messageOf(error)})`, error);
  }
}

/** The `gzip` codec plugin: `codecs: [{ type: gzip, level: 6 }]`. */
export const gzipCodecPlugin = defineCodecPlugin<GzipCodecOptions>({
  name: "gzip",
  optionsSchema: gzipOptionsSchema,
  create: (options) => gzipCodec(options),
  fromSpec: (spec: CodecSpec) => gzipCodec({ level: levelOf(spec, 1, 9) }),
});
