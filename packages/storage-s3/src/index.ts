import { s3StoragePlugin } from "./s3-plugin.js";

export { parseSize, type S3StoragePluginOptions, s3StoragePlugin } from "./s3-plugin.js";
export {
  type ChecksumMode,
  DEFAULTS,
  type S3RequestCounts,
  type S3StorageOptions,
  type S3StorageTarget,
  s3Storage,
} from "./s3-storage.js";
export default s3StoragePlugin;
