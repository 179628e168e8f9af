import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { databaseNameOf, loadConfigFile, parseConfig, scheduleProblem } from "./config.js";
import { LifeboatError } from "./errors.js";

function problems(input: unknown): string {
  try {
    parseConfig(input);
  } catch (error) {
    expect(error).toBeInstanceOf(LifeboatError);
    expect((error as LifeboatError).code).toBe("CONFIG_INVALID");
    return (error as LifeboatError).message;
  }
  throw new Error("expected the config to be rejected");
}

describe("config schema", () => {
  it("accepts a minimal config and fills defaults", () => {
    const config = parseConfig({ databases: [{ path: "./app.db", targets: [{ type: "local", path: "./b" }] }] });
    expect(config.version).toBe(1);
    expect(config.databases[0]!.snapshot.integrity).toBe("quick");
    expect(config.databases[0]!.hooks).toEqual([]);
    expect(databaseNameOf(config.databases[0]!)).toBe("app");
  });

  it("names the path of a missing required key", () => {
    expect(problems({ databases: [{ targets: [{ type: "local" }] }] })).toContain("databases[0].path: required");
    expect(problems({ databases: [{ path: "a.db", targets: [{ path: "x" }, {}] }] })).toMatch(
      /databases\[0\]\.targets\[0\]\.type: required/,
    );
  });

  it("rejects unknown keys with their full path", () => {
    const message = problems({
      databases: [{ path: "a.db", targets: [{ type: "local" }], retension: { keepLast: 1 } }],
    });
    expect(message).toContain("databases[0].retension: unknown key");
    expect(problems({ databases: [{ path: "a.db", targets: [{ type: "local" }] }], extra: 1 })).toContain(
      "extra: unknown key",
    );
  });

  it("rejects bad durations, hook shapes and duplicate database names", () => {
    expect(
      problems({ databases: [{ path: "a.db", targets: [{ type: "local" }], retention: { keepWithin: "soon" } }] }),
    ).toContain("databases[0].retention.keepWithin");
    expect(
      problems({ databases: [{ path: "a.db", targets: [{ type: "local" }], hooks: [{ on: "afterBackup" }] }] }),
    ).toContain("exactly one of exec or webhook");
    expect(
      problems({ databases: [{ path: "a.db", targets: [{ type: "local" }], hooks: [{ on: "whenever", exec: "x" }] }] }),
    ).toContain("databases[0].hooks[0].on");
    expect(
      problems({
        databases: [
          { path: "x/a.db", targets: [{ type: "local" }] },
          { path: "y/a.db", targets: [{ type: "local" }] },
        ],
      }),
    ).toContain("used twice");
  });

  it("accepts schedule and health sections with durations and cron expressions", () => {
    const config = parseConfig({
      databases: [
        {
          path: "a.db",
          targets: [{ type: "local" }],
          schedule: {
            snapshot: " 0 */6 * * * ",
            prune: "1d",
            verify: "30 3 * * MON-FRI",
            startupBackup: "1h",
            timezone: "Europe/Berlin",
          },
          health: { maxReplicationLag: "2m", maxSnapshotAge: "13h" },
        },
      ],
    });
    expect(config.databases[0]!.schedule).toEqual({
      snapshot: "0 */6 * * *",
      prune: "1d",
      verify: "30 3 * * MON-FRI",
      startupBackup: "1h",
      timezone: "Europe/Berlin",
    });
    expect(config.databases[0]!.health).toEqual({ maxReplicationLag: "2m", maxSnapshotAge: "13h" });
    for (const spec of [
      "@daily",
      "0 0 L * *",
      "0 0 15W * *",
      "0 0 * * 5#2",
      "0 0 * * 5L",
      "0 0 0 * * * 2030",
      "1,2-5/2 * * * *",
      "0 0 ? JAN-MAR 7",
    ]) {
      expect(scheduleProblem(spec), spec).toBeNull();
    }
  });

  it("names the key of a bad schedule, duration, time zone or unknown key", () => {
    const db = (extra: Record<string, unknown>) => ({
      databases: [
        { path: "a.db", targets: [{ type: "local" }] },
        { path: "b.db", targets: [{ type: "local" }], ...extra },
      ],
    });
    expect(problems(db({ schedule: { verify: "sundays" } }))).toContain(
      'databases[1].schedule.verify: "sundays" is neither a duration (6h, 1d) nor a cron expression',
    );
    expect(problems(db({ schedule: { snapshot: "0 25 * * *" } }))).toContain(
      'databases[1].schedule.snapshot: "0 25 * * *" is not a valid cron expression: hour "25" is out of range 0-23',
    );
    expect(problems(db({ schedule: { prune: "5/15 * * * *" } }))).toContain("databases[1].schedule.prune");
    expect(problems(db({ schedule: { verify: "0 3 * * FUNDAY" } }))).toContain('weekday "FUNDAY" is out of range');
    expect(problems(db({ schedule: { verify: "@sometimes" } }))).toContain("is not a cron nickname");
    expect(problems(db({ schedule: { snapshot: "" } }))).toContain("databases[1].schedule.snapshot");
    expect(problems(db({ schedule: { startupBackup: "0 3 * * *" } }))).toContain("databases[1].schedule.startupBackup");
    expect(problems(db({ schedule: { timezone: "Mars/Olympus" } }))).toContain(
      'databases[1].schedule.timezone: "Mars/Olympus" is not an IANA time zone',
    );
    expect(problems(db({ health: { maxSnapshotAge: "a day" } }))).toContain(
      'databases[1].health.maxSnapshotAge: "a day" is not a duration',
    );
    expect(problems(db({ schedule: { snapshots: "6h" } }))).toContain("databases[1].schedule.snapshots: unknown key");
    expect(problems(db({ health: { maxLag: "1m" } }))).toContain("databases[1].health.maxLag: unknown key");
  });

  it("reports YAML syntax errors with line and column, and missing files with a hint", () => {
    const dir = mkdtempSync(join(tmpdir(), "lifeboat-config-"));
    const file = join(dir, "lifeboat.yml");
    writeFileSync(file, "databases:\n  - path: a.db\n    targets: [\n");
    expect(() => loadConfigFile(file)).toThrow(/not valid YAML \(line \d+, column \d+\)/);
    try {
      loadConfigFile(join(dir, "missing.yml"));
    } catch (error) {
      expect((error as LifeboatError).message).toContain("No config file at");
      expect((error as LifeboatError).hint).toContain("lifeboat init");
    }
    expect(() => loadConfigFile(dir)).toThrow(/is a directory/);
  });
});
