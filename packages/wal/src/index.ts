export { Lease, type LeaseRecord } from "./lease.js";
export {
  type GenerationInfo,
  listGenerations,
  type PointInTimeOptions,
  type PointInTimeResult,
  restoreToPoint,
} from "./point-in-time.js";
export {
  generationSnapshotReason,
  isGenerationSnapshot,
  Replicator,
  type ReplicatorEvent,
  type ReplicatorOptions,
  replicatorOptionsFrom,
} from "./replicator.js";
export {
  type DecodedSegment,
  decodeSegment,
  encodeSegment,
  SEGMENT_FORMAT_VERSION,
  SEGMENT_MAGIC,
  type SegmentHeader,
  type SegmentPage,
  type SegmentTransaction,
} from "./segment-format.js";
export { parseSegmentKey, type SegmentKeyInfo, segmentKey, walPrefix } from "./segment-keys.js";
export { queueDirOf, requestSnapshot, type SnapshotResponse } from "./snapshot-requests.js";
export { Spool, type SpooledSegment } from "./spool.js";
export {
  type ArchiveCheck,
  type ArchiveCheckOptions,
  type ArchivedGeneration,
  type SegmentProblem,
  verifyArchive,
} from "./verify-archive.js";
