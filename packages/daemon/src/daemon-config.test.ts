import { parseConfig } from "@lifeboat/core";
import { describe, expect, it } from "vitest";
import { daemonSettingsFrom } from "./daemon-config.js";

const target = [{ type: "local", path: "/b" }];

function config(app: Record<string, unknown> = {}, jobs: Record<string, unknown> = {}) {
  return parseConfig({
    databases: [
      { name: "app", path: "/srv/app.db", targets: target, snapshot: { interval: "6h" }, ...app },
      { name: "jobs", path: "/srv/jobs.db", targets: target, ...jobs },
    ],
  });
}

describe("daemonSettingsFrom", () => {
  it("falls back to snapshot.interval when there is no schedule section", () => {
    expect(daemonSettingsFrom(config())).toEqual({ schedules: { app: { snapshot: "6h" } }, databaseThresholds: {} });
    expect(daemonSettingsFrom(config(), ["jobs"])).toEqual({ schedules: {}, databaseThresholds: {} });
  });

  it("reads the schedule and health sections of lifeboat.yml; schedule.snapshot supersedes snapshot.interval", () => {
    const settings = daemonSettingsFrom(
      config(
        {
          schedule: { snapshot: "0 */4 * * *", prune: "1d", verify: "0 3 * * 0", startupBackup: "1h", timezone: "UTC" },
          health: { maxReplicationLag: "2m", maxSnapshotAge: "9h" },
        },
        { schedule: { verify: "@daily" }, health: {} },
      ),
    );
    expect(settings.schedules).toEqual({
      app: { snapshot: "0 */4 * * *", prune: "1d", verify: "0 3 * * 0", startupBackup: "1h", timezone: "UTC" },
      jobs: { verify: "@daily" },
    });
    expect(settings.databaseThresholds).toEqual({ app: { maxReplicationLag: "2m", maxSnapshotAge: "9h" } });
    expect(daemonSettingsFrom(config({}, { schedule: { verify: "@daily" } }), ["jobs"]).schedules).toEqual({
      jobs: { verify: "@daily" },
    });
  });

  it("refuses, naming the key, a cron expression that never fires", () => {
    expect(() => daemonSettingsFrom(config({}, { schedule: { verify: "0 0 31 2 *" } }))).toThrow(
      /databases\[1\]\.schedule\.verify: "0 0 31 2 \*" never fires/,
    );
    // Only the databases asked for are checked.
    expect(daemonSettingsFrom(config({}, { schedule: { verify: "0 0 31 2 *" } }), ["app"]).schedules).toEqual({
      app: { snapshot: "6h" },
    });
  });
});
