import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { ErrorCodes } from "@lifeboat/core";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { cloneDatabase } from "./clone-database.js";
import { markEnvironment, readEnvironmentMarker } from "./environment-marker.js";
import {
  bankIsConsistent,
  dumpDatabase,
  holdOpen,
  makeBank,
  makeLifeboat,
  runChild,
  scalar,
  sha256Of,
  startTransfers,
  tempDir,
} from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let src: string;
let dst: string;

beforeEach(async () => {
  ({ dir, cleanup } = tempDir());
  src = join(dir, "prod.db");
  dst = join(dir, "staging.db");
  makeBank(src, { notes: 100 });
  await markEnvironment(src, "production");
});
afterEach(() => cleanup());

describe("cloneDatabase", () => {
  it("copies a database while it is written, consistently, and marks the copy", async () => {
    const writer = await startTransfers(dir, src);
    let result: Awaited<ReturnType<typeof cloneDatabase>>;
    try {
      result = await cloneDatabase(src, dst, { environment: "staging" });
    } finally {
      await writer.stop();
    }
    expect(result.sourceUnchanged).toBe(false); // the application wrote meanwhile
    expect(result.integrity.ok).toBe(true);
    expect(bankIsConsistent(dst)).toBe(true);
    expect(scalar(dst, "SELECT count(*) FROM ledger")).toBeGreaterThan(0);
    expect((await readEnvironmentMarker(dst))?.environment).toBe("staging");
    expect((await readEnvironmentMarker(src))?.environment).toBe("production");
    expect(scalar(dst, "PRAGMA journal_mode")).toBe("wal");
    expect(readdirSync(dir).filter((f) => f.startsWith(".staging.db"))).toEqual([]); // no temp files left
  });

  it("never writes to its source: a source at rest keeps every byte", async () => {
    // A crashed writer leaves commits in the -wal: the clone must include them and leave both files alone.
    const crash = runChild(
      dir,
      "crash.cjs",
      `const Database = require(process.env.BETTER_SQLITE3);
       const db = new Database(process.argv[2]);
       db.prepare("INSERT INTO notes (body) VALUES ('only in the WAL')").run();
       console.log("ready");
       setInterval(() => {}, 1000);`,
      [src],
    );
    await crash.waitFor("ready");
    await crash.stop("SIGKILL");
    const before = { db: sha256Of(src), wal: sha256Of(`${src}-wal`) };
    const result = await cloneDatabase(src, dst, { environment: "development" });
    expect(result.sourceUnchanged).toBe(true);
    expect({ db: sha256Of(src), wal: sha256Of(`${src}-wal`) }).toEqual(before);
    expect(scalar(dst, "SELECT count(*) FROM notes WHERE body = 'only in the WAL'")).toBe(1);
  });

  it("asks what the copy of a marked database is, instead of cloning the production marker", async () => {
    await expect(cloneDatabase(src, dst)).rejects.toMatchObject({
      code: ErrorCodes.INVALID_ARGUMENT,
      hint: expect.stringContaining("--environment"),
    });
    expect(existsSync(dst)).toBe(false);
  });

  it("refuses to overwrite a production database with a non-production clone", async () => {
    const other = join(dir, "other.db");
    makeBank(other, { notes: 3 });
    await markEnvironment(other, "staging");
    const before = sha256Of(src);
    const refused = cloneDatabase(other, src, { environment: "staging", yes: true });
    await expect(refused).rejects.toMatchObject({ code: ErrorCodes.GUARD_DENIED });
    await expect(refused).rejects.toThrow("Refusing to overwrite the production database");
    expect(sha256Of(src)).toBe(before);
  });

  it("refuses to create a file where the config keeps a production database", async () => {
    const { db } = await makeLifeboat({ dir, path: join(dir, "new-prod.db"), environment: "production" });
    await expect(cloneDatabase(src, db, { environment: "staging" })).rejects.toMatchObject({
      code: ErrorCodes.GUARD_DENIED,
    });
  });

  it("replaces an existing copy only when confirmed, keeping the old one", async () => {
    makeBank(dst, { notes: 1 });
    const old = dumpDatabase(dst);
    await expect(cloneDatabase(src, dst, { environment: "staging" })).rejects.toMatchObject({
      code: ErrorCodes.CONFIRMATION_REQUIRED,
    });
    expect(dumpDatabase(dst)).toEqual(old);
    const result = await cloneDatabase(src, dst, { environment: "staging", yes: true });
    expect(result.replacedCopy).not.toBeNull();
    expect(dumpDatabase(result.replacedCopy!)).toEqual(old);
    expect(scalar(dst, "SELECT count(*) FROM notes")).toBe(100);
    expect(statSync(dst).mode & 0o777).toBe(0o644);
  });

  it("takes a verified backup of a configured destination before replacing it", async () => {
    makeBank(dst, { notes: 5 });
    await markEnvironment(dst, "staging");
    const old = dumpDatabase(dst);
    const { lb, db } = await makeLifeboat({ dir, path: dst, name: "staging", environment: "staging" });
    const result = await cloneDatabase(src, db, { environment: "staging", yes: true });
    expect(result.safetyBackup).toMatchObject({ kind: "targets", operation: "clone" });
    await lb.restore(undefined, { backupId: result.safetyBackup!.id, yes: true });
    expect(dumpDatabase(dst)).toEqual(old);
  });

  it("refuses to replace a destination that is in use", async () => {
    makeBank(dst, { notes: 1 });
    const holder = await holdOpen(dir, dst);
    try {
      await expect(cloneDatabase(src, dst, { environment: "staging", yes: true })).rejects.toMatchObject({
        code: ErrorCodes.DATABASE_LOCKED,
      });
    } finally {
      await holder.stop();
    }
    expect(scalar(dst, "SELECT count(*) FROM notes")).toBe(1);
  });
});
