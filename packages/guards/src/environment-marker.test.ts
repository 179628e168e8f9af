import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import { describeDatabase } from "@lifeboat/sqlite";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { environmentGuard } from "./environment-marker.js";
import { markEnvironment, readEnvironmentMarker } from "./index.js";
import { dumpDatabase, makeBank, makeLifeboat, scalar, sql, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 10 });
});
afterEach(() => cleanup());

describe("the environment marker", () => {
  it("is written by mark and read back the way backups record it", async () => {
    const result = await markEnvironment(path, "production");
    expect(result).toMatchObject({
      environment: "production",
      previous: null,
      table: "_lifeboat_environment",
      changed: true,
    });
    expect(await readEnvironmentMarker(path)).toEqual({ environment: "production", table: "_lifeboat_environment" });
    expect((await describeDatabase(path)).environment).toBe("production");
  });

  it("is read from an existing _environment table of either shape", async () => {
    sql(
      path,
      "CREATE TABLE _environment (key TEXT PRIMARY KEY, value TEXT); INSERT INTO _environment VALUES ('env', 'staging');",
    );
    expect(await readEnvironmentMarker(path)).toEqual({ environment: "staging", table: "_environment" });
    sql(
      path,
      "DROP TABLE _environment; CREATE TABLE _environment (name TEXT); INSERT INTO _environment VALUES ('development');",
    );
    expect(await readEnvironmentMarker(path)).toEqual({ environment: "development", table: "_environment" });
    expect((await describeDatabase(path)).environment).toBe("development");
    // Two rows in a single-value table say nothing.
    sql(path, "INSERT INTO _environment VALUES ('production');");
    expect(await readEnvironmentMarker(path)).toBeNull();
    expect((await describeDatabase(path)).environment).toBeNull();
  });

  it("keeps the shape of an existing table when marking it", async () => {
    sql(path, "CREATE TABLE meta (environment TEXT NOT NULL); INSERT INTO meta VALUES ('staging');");
    await markEnvironment(path, "development", { table: "meta", confirm: { yes: true } });
    expect(scalar(path, "SELECT count(*) || ':' || environment FROM meta")).toBe("1:development");
    expect(scalar(path, "SELECT count(*) FROM sqlite_schema WHERE name = '_lifeboat_environment'")).toBe(0);
    sql(path, "CREATE TABLE _environment (key TEXT, value TEXT); INSERT INTO _environment VALUES ('other', 'x');");
    await markEnvironment(path, "staging", { table: "_environment" });
    expect(scalar(path, "SELECT value FROM _environment WHERE key = 'environment'")).toBe("staging");
    expect(scalar(path, "SELECT value FROM _environment WHERE key = 'other'")).toBe("x");
  });

  it("needs the typed phrase to change a production marker, and changes nothing without it", async () => {
    await markEnvironment(path, "production");
    const before = dumpDatabase(path);
    await expect(markEnvironment(path, "staging", { confirm: { yes: true } })).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
      hint: expect.stringContaining('--confirm "change production to staging"'),
    });
    const asked: (string | undefined)[] = [];
    await expect(
      markEnvironment(path, "staging", {
        confirm: {
          ask: async (_q, phrase) => {
            asked.push(phrase);
            return "change production to dev";
          },
        },
      }),
    ).rejects.toMatchObject({ code: ErrorCodes.CONFIRMATION_REQUIRED });
    expect(asked).toEqual(["change production to staging"]);
    expect(dumpDatabase(path)).toEqual(before);
    const changed = await markEnvironment(path, "staging", { confirm: { phrases: ["change production to staging"] } });
    expect(changed).toMatchObject({ previous: "production", environment: "staging" });
    expect((await readEnvironmentMarker(path))?.environment).toBe("staging");
  });

  it("reports another table that still holds a different marker", async () => {
    sql(path, "CREATE TABLE _environment (value TEXT); INSERT INTO _environment VALUES ('staging');");
    const result = await markEnvironment(path, "development", { confirm: { yes: true } });
    expect(result.previous).toBe("staging");
    expect(result.otherMarkers).toEqual([{ environment: "staging", table: "_environment" }]);
  });

  it("refuses names that are not environment names", async () => {
    await expect(markEnvironment(path, "prod uction")).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
  });
});

describe("the environment guard", () => {
  it('denies every operation when config and marker disagree: "the config says development, the database says production"', async () => {
    await markEnvironment(path, "production");
    const { lb } = await makeLifeboat({ dir, path, environment: "development", guards: [{ type: "environment" }] });
    const backup = lb.backup();
    await expect(backup).rejects.toMatchObject({ code: ErrorCodes.GUARD_DENIED });
    await expect(backup).rejects.toThrow("the config says development, the database says production");
  });

  it("allows matching environments, and with requireMarker refuses an unmarked database", async () => {
    const { lb } = await makeLifeboat({
      dir,
      path,
      environment: "staging",
      guards: [{ type: "environment", requireMarker: true }],
    });
    await expect(lb.backup()).rejects.toThrow("carries no environment marker");
    await markEnvironment(path, "staging");
    await expect(lb.backup()).resolves.toMatchObject({ manifest: { source: { environment: "staging" } } });
  });

  it("asks for a phrase before a restore puts a staging backup over the production database", async () => {
    await markEnvironment(path, "staging");
    const { lb } = await makeLifeboat({ dir, path, environment: "production", guards: [{ type: "environment" }] });
    const staging = await makeLifeboat({ dir, path, environment: "staging" });
    const { id } = await staging.lb.backup();
    await markEnvironment(path, "production", { confirm: { phrases: ["change staging to production"] } });
    sql(path, "INSERT INTO notes (body) VALUES ('written in production')");
    const before = dumpDatabase(path);

    const refused = lb.restore(undefined, { backupId: id, yes: true });
    await expect(refused).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
      hint: expect.stringContaining('--confirm "restore staging over production"'),
    });
    expect(dumpDatabase(path)).toEqual(before);

    const restored = await lb.restore(undefined, {
      backupId: id,
      yes: true,
      phrases: ["restore staging over production"],
    });
    expect(restored.safetyCopy).not.toBeNull();
    expect(scalar(path, "SELECT count(*) FROM notes WHERE body = 'written in production'")).toBe(0);
  });

  it("asks for an unmarked backup over a marked production database, and not for a production backup", async () => {
    const guard = environmentGuard({});
    await markEnvironment(path, "production");
    const context = (backupEnvironment: string | null) => ({
      operation: "restore" as const,
      database: { name: "app", path, declaredEnvironment: "production" },
      destructive: true,
      details: { backupEnvironment },
    });
    expect(await guard.check(context(null))).toMatchObject({
      action: "confirm",
      phrase: "restore unmarked over production",
    });
    expect(await guard.check(context("production"))).toEqual({ action: "allow" });
    expect(await guard.check(context("development"))).toMatchObject({ phrase: "restore development over production" });
  });

  it("does not block restoring over a file that is no database any more", async () => {
    const guard = environmentGuard();
    writeFileSync(path, "garbage, not SQLite".repeat(20));
    const context = { database: { name: "app", path, declaredEnvironment: "production" }, destructive: true };
    expect(await guard.check({ ...context, operation: "restore" })).toEqual({ action: "allow" });
    expect(await guard.check({ ...context, operation: "delete" })).toMatchObject({ action: "deny" });
  });
});
