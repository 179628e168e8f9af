import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { copySnapshot, hashDatabase, hashGuard, hashStatus } from "./database-hash.js";
import { protectDatabase, protectionStatus } from "./protect.js";
import { bankIsConsistent, makeBank, scalar, sha256Of, sql, startTransfers, tempDir } from "./test-fixtures.js";

let dir: string;
let cleanup: () => void;
let path: string;

beforeEach(() => {
  ({ dir, cleanup } = tempDir());
  path = join(dir, "app.db");
  makeBank(path);
});
afterEach(() => cleanup());

/** sha256 of the database file as a rollback-journal image (header bytes 18-19 = 1). */
function imageSha(file: string): string {
  const bytes = readFileSync(file);
  bytes[18] = 1;
  bytes[19] = 1;
  return createHash("sha256").update(bytes).digest("hex");
}

describe("hashDatabase", () => {
  it("hashes the content as of the last commit, WAL included, not the bytes of the file", async () => {
    const writer = new Database(path);
    writer.prepare("INSERT INTO notes (body) VALUES ('only in the WAL')").run();
    const hash = await hashDatabase(path);
    const fileOnly = imageSha(path); // the database file alone lacks the new row
    writer.close(); // the last connection checkpoints: now the file holds everything
    expect(hash.sha256).not.toBe(fileOnly);
    expect(imageSha(path)).toBe(hash.sha256);
    expect(hash.sizeBytes).toBe(readFileSync(path).byteLength);
    expect((await hashDatabase(path)).sha256).toBe(hash.sha256);
    sql(path, "UPDATE notes SET body = 'changed' WHERE id = 1");
    expect((await hashDatabase(path)).sha256).not.toBe(hash.sha256);
  });

  it("reads a consistent image while another process keeps writing", async () => {
    const writer = await startTransfers(dir, path);
    try {
      const ledgers: number[] = [];
      for (let i = 0; i < 3; i++) {
        const copy = join(dir, `copy-${i}.db`);
        const result = await copySnapshot(path, copy);
        expect(result.integrity.ok).toBe(true);
        expect(sha256Of(copy)).toBe(result.sha256);
        expect(bankIsConsistent(copy)).toBe(true);
        ledgers.push(scalar(copy, "SELECT count(*) FROM ledger") as number);
      }
      expect(ledgers[2]).toBeGreaterThan(ledgers[0]!); // the writer went on meanwhile
    } finally {
      await writer.stop();
    }
  });
});

describe("the hash layer", () => {
  it("reports tampering with a protected database, and denies changing it", async () => {
    await protectDatabase(path, { layers: [hashGuard()] });
    expect(await hashStatus(path)).toMatchObject({ active: true, problem: false });
    sql(path, "UPDATE accounts SET balance = balance + 1000000 WHERE id = 7");
    const status = await hashStatus(path);
    expect(status).toMatchObject({ active: true, problem: true });
    expect(status.summary).toMatch(/^TAMPERED: the content changed since/);
    const overall = await protectionStatus(path);
    expect(overall).toMatchObject({ protected: true, problems: true });
    const decision = await hashGuard().check({
      operation: "restore",
      database: { name: "app", path, declaredEnvironment: null },
      destructive: true,
    });
    expect(decision).toMatchObject({ action: "deny" });
  });
});
