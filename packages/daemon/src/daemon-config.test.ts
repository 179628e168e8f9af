import { parseConfig } from "@lifeboat/core";
import { describe, expect, it } from "vitest";
import { daemonSettingsFrom } from "./daemon-config.js";

const base = parseConfig({
  databases: [
    { name: "app", path: "/srv/app.db", targets: [{ type: "local", path: "/b" }], snapshot: { interval: "6h" } },
    { name: "jobs", path: "/srv/jobs.db", targets: [{ type: "local", path: "/b" }] },
  ],
});

/** The config as it parses once core's schema has `schedule:` and `health:` (see the README). */
function withSections(app: Record<string, unknown>, jobs: Record<string, unknown> = {}) {
  return {
    ...base,
    databases: [
      { ...base.databases[0]!, ...app },
      { ...base.databases[1]!, ...jobs },
    ],
  };
}

describe("daemonSettingsFrom", () => {
  it("falls back to snapshot.interval when there is no schedule section", () => {
    expect(daemonSettingsFrom(base)).toEqual({ schedules: { app: { snapshot: "6h" } }, databaseThresholds: {} });
    expect(daemonSettingsFrom(base, ["jobs"])).toEqual({ schedules: {}, databaseThresholds: {} });
  });

  it("reads schedule and health sections; schedule.snapshot supersedes snapshot.interval", () => {
    const settings = daemonSettingsFrom(
      withSections(
        {
          schedule: { snapshot: "0 */4 * * *", prune: "1d", verify: "0 3 * * 0", startupBackup: "1h", timezone: "UTC" },
          health: { maxReplicationLag: "2m", maxSnapshotAge: "9h" },
        },
        { schedule: { verify: "@daily" } },
      ),
    );
    expect(settings.schedules).toEqual({
      app: { snapshot: "0 */4 * * *", prune: "1d", verify: "0 3 * * 0", startupBackup: "1h", timezone: "UTC" },
      jobs: { verify: "@daily" },
    });
    expect(settings.databaseThresholds).toEqual({ app: { maxReplicationLag: "2m", maxSnapshotAge: "9h" } });
  });

  it("names the key of a bad schedule, duration or unknown key", () => {
    expect(() => daemonSettingsFrom(withSections({ schedule: { verify: "sundays" } }))).toThrow(
      /databases\[0\]\.schedule\.verify: "sundays" is neither a duration/,
    );
    expect(() => daemonSettingsFrom(withSections({}, { health: { maxSnapshotAge: "a day" } }))).toThrow(
      /databases\[1\]\.health\.maxSnapshotAge: "a day" is not a duration/,
    );
    expect(() => daemonSettingsFrom(withSections({ schedule: { snapshots: "6h" } }))).toThrow(
      /databases\[0\]\.schedule/,
    );
  });
});
