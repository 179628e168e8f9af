export { closeQuietly, quoteIdentifier } from "./database-file.js";
export { type DatabaseHolder, findHolders } from "./in-use.js";
export { ENVIRONMENT_TABLES } from "./inspect.js";
export { SNAPSHOT_CHUNK_SIZE, type SqliteSnapshot, type SqliteSnapshotOptions } from "./snapshot.js";
export { execSql, queryRows } from "./sql.js";
export {
  checkIntegrity,
  describeDatabase,
  type SqliteSource,
  sqliteSource,
  sqliteSourcePlugin,
} from "./sqlite-source.js";
export { readWalIndexHeader, type WalIndexHeader } from "./wal-index.js";
export {
  buildWalPageIndex,
  parseWalFrameHeader,
  parseWalHeader,
  readWalFrames,
  readWalPages,
  readWalTransactions,
  scanWal,
  WAL_FORMAT_VERSION,
  WAL_FRAME_HEADER_SIZE,
  WAL_HEADER_SIZE,
  WAL_MAGIC_BIG_ENDIAN,
  WAL_MAGIC_LITTLE_ENDIAN,
  type WalFrameHeader,
  type WalHeader,
  type WalPage,
  type WalPageIndex,
  type WalPosition,
  type WalResetReason,
  type WalScan,
  type WalScanOptions,
  type WalScanResult,
  type WalStopReason,
  type WalTransaction,
  walChecksum,
  walFrameOffset,
  walStartPosition,
} from "./wal-reader.js";
