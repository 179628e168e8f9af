/**
 * @lifeboat/codecs: the built-in codec plugins. Compression (`gzip`, `zstd`) goes first in a
 * database's `codecs:` list, encryption (`age`, `openpgp`) after it. The default export is the
 * array of plugins, for registering them all at once.
 */
import { type AgeCodecOptions, ageCodec, ageCodecPlugin } from "./age.js";
import { type GzipCodecOptions, gzipCodec, gzipCodecPlugin } from "./gzip.js";
import type { NamedCodec } from "./named-codec.js";
import { type OpenpgpCodecOptions, openpgpCodec, openpgpCodecPlugin } from "./openpgp.js";
import { type ZstdCodecOptions, zstdCodec, zstdCodecPlugin } from "./zstd.js";

export { AGE_DEFAULT_WORK_FACTOR } from "./age.js";
export { GZIP_DEFAULT_LEVEL } from "./gzip.js";
export { type KeyContext, readStdinOnce, stdinKeysRequested, useStdinForKeys } from "./key-sources.js";
export { ZSTD_DEFAULT_LEVEL, ZSTD_DEFAULT_WORKERS } from "./zstd.js";
export {
  type AgeCodecOptions,
  ageCodec,
  ageCodecPlugin,
  type GzipCodecOptions,
  gzipCodec,
  gzipCodecPlugin,
  type NamedCodec,
  type OpenpgpCodecOptions,
  openpgpCodec,
  openpgpCodecPlugin,
  type ZstdCodecOptions,
  zstdCodec,
  zstdCodecPlugin,
};

/** Every built-in codec plugin: gzip, zstd, age, openpgp. */
export const codecPlugins = [gzipCodecPlugin, zstdCodecPlugin, ageCodecPlugin, openpgpCodecPlugin] as const;

export default codecPlugins;
