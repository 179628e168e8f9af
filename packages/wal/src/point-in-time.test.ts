import type { SnapshotManifest } from "@lifeboat/core";
import { describe, expect, it } from "vitest";
import { restoreWindows } from "./point-in-time.js";
import type { SegmentKeyInfo } from "./segment-keys.js";

/** Only the fields the windows read. */
const snap = (position: number, createdAt: number, ok = true) =>
  ({ position, createdAt: new Date(createdAt).toISOString(), integrity: { ok } }) as unknown as SnapshotManifest;
const seg = (firstTxn: number, lastTxn: number, lastObservedAt: number) =>
  ({
    key: `${firstTxn}-${lastTxn}`,
    db: "app",
    generation: "g",
    firstTxn,
    lastTxn,
    lastObservedAt,
    extensions: "",
  }) as SegmentKeyInfo;
const iso = (ms: number) => new Date(ms).toISOString();

describe("restorable windows", () => {
  it("one window from the snapshot through contiguous segments; a later snapshot inside it changes nothing", () => {
    const windows = restoreWindows([snap(0, 1_000), snap(4, 9_000)], [seg(1, 2, 2_000), seg(3, 5, 3_000)]);
    // The snapshot at 4 was created (after its upload) later than transaction 5 was observed: the
    // window still ends at transaction 5's time.
    expect(windows).toEqual([{ fromTxn: 0, toTxn: 5, from: iso(1_000), to: iso(3_000) }]);
  });

  it("a gap in the segments ends a window; the next starts at the snapshot after it", () => {
    const windows = restoreWindows(
      [snap(0, 1_000), snap(6, 7_000)],
      [seg(1, 2, 2_000), seg(5, 5, 5_000), seg(7, 9, 8_000)],
    );
    expect(windows).toEqual([
      { fromTxn: 0, toTxn: 2, from: iso(1_000), to: iso(2_000) },
      { fromTxn: 6, toTxn: 9, from: iso(7_000), to: iso(8_000) },
    ]);
  });

  it("a snapshot right after the last archived transaction starts a window of its own (no time is known between)", () => {
    const windows = restoreWindows([snap(0, 1_000), snap(3, 6_000)], [seg(1, 2, 2_000)]);
    expect(windows.map((w) => [w.fromTxn, w.toTxn])).toEqual([
      [0, 2],
      [3, 3],
    ]);
    expect(windows[1]!.to).toBe(iso(6_000));
  });

  it("a segment that starts before the snapshot and ends after it extends the window", () => {
    expect(restoreWindows([snap(3, 1_000)], [seg(1, 5, 2_000), seg(6, 6, 3_000)])).toEqual([
      { fromTxn: 3, toTxn: 6, from: iso(1_000), to: iso(3_000) },
    ]);
  });

  it("no snapshot, no window", () => {
    expect(restoreWindows([], [seg(1, 2, 2_000)])).toEqual([]);
  });
});
