import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCodes, isLifeboatError } from "@lifeboat/core";
import { createFixtureDatabase, databaseContentHash } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportDatabase } from "./export.js";
import { importExport, readExportManifest } from "./import.js";

let dir: string;
let fixture: string;
let exportDir: string;
let exportZip: string;
let n = 0;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lifeboat-import-"));
  fixture = join(dir, "app.db");
  await createFixtureDatabase({ path: fixture, sizeMB: 1, seed: 9 });
  exportDir = (await exportDatabase({ database: fixture, output: join(dir, "export") })).output;
  exportZip = (await exportDatabase({ database: fixture, output: join(dir, "export.zip") })).output;
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh copy of the directory export, to damage. */
function copyOfExport(): string {
  const copy = join(dir, `copy-${++n}`);
  cpSync(exportDir, copy, { recursive: true });
  return copy;
}

/** Runs an import that must fail with `code`, and checks that nothing was left at or next to the output. */
async function expectRefused(input: string, code: string, message: RegExp): Promise<void> {
  const outDir = mkdtempSync(join(dir, "out-"));
  const out = join(outDir, "refused.db");
  const error = await importExport({ input, output: out }).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLifeboatError(error), `expected a LifeboatError, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
  expect((error as Error).message).toMatch(message);
  expect((error as { hint?: string }).hint).toBeTruthy();
  expect(readdirSync(outDir)).toEqual([]);
}

describe("importExport", () => {
  it("reads the manifest of a directory and of a ZIP", async () => {
    const a = await readExportManifest(exportDir);
    const b = await readExportManifest(exportZip);
    expect(a.tables.map((t) => t.sha256)).toEqual(b.tables.map((t) => t.sha256));
  });

  it("refuses an existing output unless forced; forced, it replaces the database and its stale WAL", async () => {
    const out = join(dir, "existing.db");
    const old = new Database(out);
    old.pragma("journal_mode = WAL");
    old.exec("CREATE TABLE old (x); INSERT INTO old VALUES (1)");
    old.close();
    writeFileSync(`${out}-wal`, "stale wal of the old database");
    const error = await importExport({ input: exportZip, output: out }).catch((e: unknown) => e);
    expect(isLifeboatError(error, ErrorCodes.INVALID_ARGUMENT)).toBe(true);
    expect((error as Error).message).toMatch(/already exists/);
    await importExport({ input: exportZip, output: out, force: true });
    expect(existsSync(`${out}-wal`)).toBe(false);
    expect(databaseContentHash(out)).toBe(databaseContentHash(fixture));
  });

  it("refuses a CSV whose content was changed, even when it still parses", async () => {
    const copy = copyOfExport();
    const file = join(copy, "users.csv");
    const text = readFileSync(file, "utf8");
    writeFileSync(file, text.replace("@example.", "@exampel."));
    await expectRefused(copy, ErrorCodes.CORRUPT_BACKUP, /users\.csv does not match the manifest: .*sha256/);
  });

  it("refuses a truncated CSV", async () => {
    const copy = copyOfExport();
    const file = join(copy, "orders.csv");
    truncateSync(file, statSync(file).size - 7);
    await expectRefused(copy, ErrorCodes.CORRUPT_BACKUP, /orders\.csv/);
  });

  it("refuses a missing CSV and a missing manifest", async () => {
    const copy = copyOfExport();
    rmSync(join(copy, "events.csv"));
    await expectRefused(copy, ErrorCodes.CORRUPT_BACKUP, /missing events\.csv/);
    rmSync(join(copy, "manifest.json"));
    await expectRefused(copy, ErrorCodes.CORRUPT_BACKUP, /no manifest\.json/);
  });

  it("refuses a truncated ZIP and a damaged one", async () => {
    const truncated = join(dir, "truncated.zip");
    cpSync(exportZip, truncated);
    truncateSync(truncated, Math.floor(statSync(truncated).size * 0.6));
    await expectRefused(truncated, ErrorCodes.CORRUPT_BACKUP, /truncated\.zip/);

    // Flip bytes inside the first entry's compressed data (the central directory stays intact).
    const damaged = join(dir, "damaged.zip");
    const bytes = readFileSync(exportZip);
    for (let i = 2000; i < 2040; i++) bytes[i] = bytes[i]! ^ 0x5a;
    writeFileSync(damaged, bytes);
    await expectRefused(damaged, ErrorCodes.CORRUPT_BACKUP, /damaged\.zip/);
  });

  it("refuses a manifest from a newer format version, and one of another format", async () => {
    const copy = copyOfExport();
    const path = join(copy, "manifest.json");
    const manifest = JSON.parse(readFileSync(path, "utf8"));
    writeFileSync(path, JSON.stringify({ ...manifest, formatVersion: 99 }));
    await expectRefused(copy, ErrorCodes.UNSUPPORTED_FORMAT, /newer Lifeboat \(export format 99/);
    writeFileSync(path, JSON.stringify({ ...manifest, format: "something.else" }));
    await expectRefused(copy, ErrorCodes.UNSUPPORTED_FORMAT, /not a Lifeboat export manifest/);
  });

  it("refuses a manifest that names files outside the export", async () => {
    const copy = copyOfExport();
    const path = join(copy, "manifest.json");
    const manifest = JSON.parse(readFileSync(path, "utf8"));
    manifest.tables[0].file = "../app.db";
    writeFileSync(path, JSON.stringify(manifest));
    await expectRefused(copy, ErrorCodes.CORRUPT_BACKUP, /not a file name an export writes/);
  });

  it("refuses a path that is not an export", async () => {
    await expectRefused(fixture, ErrorCodes.CORRUPT_BACKUP, /not a readable ZIP/);
  });
});
