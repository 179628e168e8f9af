import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { markEnvironment } from "./environment-marker.js";
import { dumpDatabase, makeBank, makeLifeboat, sql, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path, { notes: 20 });
});
afterEach(() => cleanup());

/** A backup, then a change: restoring would overwrite it. */
async function backupThenChange(environment: string | undefined): Promise<{
  lb: Awaited<ReturnType<typeof makeLifeboat>>["lb"];
  id: string;
  changed: Record<string, unknown>;
}> {
  const { lb } = await makeLifeboat({
    dir,
    path,
    ...(environment ? { environment } : {}),
    guards: [{ type: "confirmation" }],
  });
  const { id } = await lb.backup();
  sql(path, "INSERT INTO notes (body) VALUES ('after the backup')");
  return { lb, id, changed: dumpDatabase(path) };
}

describe("the confirmation layer with core's restore", () => {
  it("refuses to restore over production without a terminal unless the phrase is given; --yes is not enough", async () => {
    const { lb, id, changed } = await backupThenChange("production");
    for (const confirm of [{}, { yes: true }, { yes: true, phrases: ["restore prod"] }]) {
      const refused = lb.restore(undefined, { backupId: id, ...confirm });
      await expect(refused).rejects.toMatchObject({
        code: ErrorCodes.CONFIRMATION_REQUIRED,
        hint: 'Run it on a terminal, or pass --yes --confirm "restore production".',
      });
    }
    expect(dumpDatabase(path)).toEqual(changed);
    await lb.restore(undefined, { backupId: id, yes: true, phrases: ["restore production"] });
    expect(dumpDatabase(path)).not.toEqual(changed);
  });

  it("asks on a terminal for the phrase and goes ahead only when it is typed exactly", async () => {
    const { lb, id, changed } = await backupThenChange("production");
    const questions: string[] = [];
    const answer = (typed: string) => async (question: string) => {
      questions.push(question);
      return typed;
    };
    await expect(lb.restore(undefined, { backupId: id, ask: answer("restore Production") })).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
    });
    expect(questions[0]).toContain('Type "restore production" to continue');
    expect(dumpDatabase(path)).toEqual(changed);
    await lb.restore(undefined, { backupId: id, ask: answer("restore production") });
    expect(dumpDatabase(path)).not.toEqual(changed);
  });

  it("treats a database marked production as production even when the config declares nothing", async () => {
    await markEnvironment(path, "production");
    const { lb, id } = await backupThenChange(undefined);
    await expect(lb.restore(undefined, { backupId: id, yes: true })).rejects.toThrow("is a production database");
  });

  it("needs only the usual yes for other environments, and nothing for a restore to another file", async () => {
    const { lb, id } = await backupThenChange("staging");
    await expect(lb.restore(undefined, { backupId: id })).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
    });
    await expect(lb.restore(undefined, { backupId: id, yes: true })).resolves.toMatchObject({ dryRun: false });

    const production = await backupThenChange("production");
    const output = join(dir, "copy.db");
    makeBank(output, { notes: 1 });
    const restored = await production.lb.restore(undefined, { backupId: production.id, output, yes: true });
    expect(restored.output).toBe(output);
  });
});
