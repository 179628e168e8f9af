import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { databaseNameOf, loadConfigFile, parseConfig } from "./config.js";
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
