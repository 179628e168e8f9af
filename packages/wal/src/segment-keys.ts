/** Segment keys live in core's layout (retention must see them); re-exported here for readers of this package. */
export { parseSegmentKey, type SegmentKeyInfo, segmentKey, walPrefix } from "@lifeboat/core";
