import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ErrorCodes, isLifeboatError } from "@lifeboat/core";
import { createFixtureDatabase, FIXTURE_ODD_TABLE, FIXTURE_USER_VERSION, tableRowCounts } from "@lifeboat/testkit";
import { parse } from "csv-parse/sync";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import yauzl from "yauzl";
import { type ExportResult, exportDatabase } from "./export.js";
import { EXPORT_FORMAT, EXPORT_FORMAT_VERSION } from "./manifest.js";

let dir: string;
let fixture: string;
let exported: ExportResult;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "lifeboat-export-"));
  fixture = join(dir, "app.db");
  await createFixtureDatabase({ path: fixture, sizeMB: 1, seed: 3 });
  exported = await exportDatabase({ database: fixture, output: join(dir, "export"), views: true });
});

afterAll(() => rmSync(dir, { recursive: true, force: true }));

const sha256 = (bytes: Buffer) => createHash("sha256").update(bytes).digest("hex");

async function expectError(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isLifeboatError(error), `expected a LifeboatError, got ${String(error)}`).toBe(true);
  expect((error as { code: string }).code).toBe(code);
  expect((error as Error).message).toMatch(message);
  expect((error as { hint?: string }).hint).toBeTruthy();
}

/** Everything in `dir` that is not `keep` (leftover temp files would show up here). */
function strays(keep: readonly string[]): string[] {
  return readdirSync(dir).filter((name) => !keep.includes(name) && !name.startsWith("app.db"));
}

async function zipEntries(path: string): Promise<Map<string, Buffer>> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(path, { lazyEntries: true }, (e, z) => (e ? reject(e) : resolve(z))),
  );
  const files = new Map<string, Buffer>();
  await new Promise<void>((resolve, reject) => {
    zip.on("entry", (entry: yauzl.Entry) => {
      zip.openReadStream(entry, (error, stream) => {
        if (error) return reject(error);
        const chunks: Buffer[] = [];
        stream.on("data", (c: Buffer) => chunks.push(c));
        stream.on("end", () => {
          files.set(entry.fileName, Buffer.concat(chunks));
          zip.readEntry();
        });
      });
    });
    zip.on("end", () => resolve());
    zip.on("error", reject);
    zip.readEntry();
  });
  return files;
}

describe("exportDatabase", () => {
  it("writes one CSV per table, a README and a manifest that describes them exactly", () => {
    const m = exported.manifest;
    const files = readdirSync(exported.output).sort();
    expect(files).toEqual([...m.tables.map((t) => t.file), "README.txt", "manifest.json"].sort());
    expect(JSON.parse(readFileSync(join(exported.output, "manifest.json"), "utf8"))).toEqual(m);
    expect(m.format).toBe(EXPORT_FORMAT);
    expect(m.formatVersion).toBe(EXPORT_FORMAT_VERSION);
    expect(m.source).toEqual({ kind: "database", path: fixture });
    expect(m.database.userVersion).toBe(FIXTURE_USER_VERSION);
    expect(m.snapshotId).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{8}$/);
    const counts = tableRowCounts(fixture);
    for (const t of m.tables) {
      const bytes = readFileSync(join(exported.output, t.file));
      expect(bytes.length, t.file).toBe(t.bytes);
      expect(sha256(bytes), t.file).toBe(t.sha256);
      if (t.kind === "table") expect(t.rows, t.name).toBe(counts[t.name]);
    }
    expect(m.totals).toEqual({
      files: m.tables.length,
      rows: m.tables.reduce((n, t) => n + t.rows, 0),
      bytes: m.tables.reduce((n, t) => n + t.bytes, 0),
    });
    const users = m.tables.find((t) => t.name === "users")!;
    expect(users.columns.map((c) => [c.name, c.declaredType, c.affinity])).toEqual([
      ["id", "INTEGER", "INTEGER"],
      ["email", "TEXT", "TEXT"],
      ["name", "TEXT", "TEXT"],
      ["bio", "TEXT", "TEXT"],
      ["country", "TEXT", "TEXT"],
      ["balance", "REAL", "REAL"],
      ["karma", "INTEGER", "INTEGER"],
      ["created_at", "TEXT", "TEXT"],
      ["avatar", "BLOB", "BLOB"],
    ]);
    expect(users.columns.find((c) => c.name === "avatar")!.storageClasses.blob).toBeGreaterThan(0);
    expect(m.tables.find((t) => t.name === "order_items")?.withoutRowid).toBe(true);
    expect(m.tables.find((t) => t.name === FIXTURE_ODD_TABLE)?.file).toBe("odd__names___here.csv");
    expect(m.tables.find((t) => t.name === "order_totals")?.kind).toBe("view");
  });

  it("lists the schema as tables, then indexes, views and triggers", () => {
    const types = exported.manifest.schema.map((e) => e.type);
    const rank = { table: 0, index: 1, view: 2, trigger: 3 };
    expect(types.map((t) => rank[t])).toEqual([...types.map((t) => rank[t])].sort());
    expect(exported.manifest.schema.find((e) => e.name === "order_items")?.sql).toMatch(/WITHOUT ROWID/);
    expect(exported.manifest.schema.map((e) => e.name)).toContain("users_email_not_empty");
  });

  it("writes CSV that spreadsheets and CSV parsers read: UTF-8 BOM, CRLF, header, RFC 4180 quoting", () => {
    for (const t of exported.manifest.tables) {
      const bytes = readFileSync(join(exported.output, t.file));
      expect([...bytes.subarray(0, 3)]).toEqual([0xef, 0xbb, 0xbf]);
      const records = parse(bytes, { bom: true, relax_column_count: false }) as string[][];
      expect(records.length, t.file).toBe(t.rows + 1);
      expect(records[0]).toEqual([...(t.rowidColumn ? [t.rowidColumn] : []), ...t.columns.map((c) => c.name)]);
    }
    const edges = readFileSync(join(exported.output, "edge_values.csv"), "utf8");
    expect(edges.startsWith('\uFEFF"id","label","value"\r\n')).toBe(true);
    // NULL is an empty field, the empty string is "", and numbers keep their type.
    expect(edges).toMatch(/\r\n\d+,"null",\r\n/);
    expect(edges).toMatch(/\r\n\d+,"empty text",""\r\n/);
    expect(edges).toMatch(/\r\n\d+,"text zero","0"\r\n/);
    expect(edges).toMatch(/\r\n\d+,"integer zero",0\r\n/);
    expect(edges).toMatch(/\r\n\d+,"real negative zero",-0\.0\r\n/);
    expect(edges).toMatch(/\r\n\d+,"int64 max",9223372036854775807\r\n/);
    expect(edges).toMatch(/\r\n\d+,"2\^53 \+ 1",9007199254740993\r\n/);
    expect(edges).toMatch(/\r\n\d+,"empty blob",base64:\r\n/);
    expect(edges).toMatch(/\r\n\d+,"newlines","a\nb\r\nc\rd"\r\n/);
  });

  it("explains the files, the encoding and the import in README.txt", () => {
    const readme = readFileSync(join(exported.output, "README.txt"), "utf8");
    expect(readme).toContain("lifeboat import");
    expect(readme).toContain("byte order mark");
    expect(readme).toContain("odd__names___here.csv");
    expect(readme).toContain(`user_version): ${FIXTURE_USER_VERSION}`);
    expect(readme).toMatch(/NULL\s+an empty field/);
  });

  it("streams the same files into a ZIP", async () => {
    const zip = await exportDatabase({ database: fixture, output: join(dir, "export.zip"), views: true });
    expect(zip.format).toBe("zip");
    const entries = await zipEntries(zip.output);
    expect([...entries.keys()].sort()).toEqual(readdirSync(exported.output).sort());
    for (const t of zip.manifest.tables) {
      expect(sha256(entries.get(t.file)!), t.file).toBe(t.sha256);
      // Same database, same bytes, whatever the container.
      expect(t.sha256).toBe(exported.manifest.tables.find((d) => d.name === t.name)!.sha256);
    }
    expect(JSON.parse(entries.get("manifest.json")!.toString("utf8"))).toEqual(zip.manifest);
  });

  it("refuses an unknown table, and writes nothing", async () => {
    await expectError(
      exportDatabase({ database: fixture, output: join(dir, "nope.zip"), tables: ["users", "no_such_table"] }),
      ErrorCodes.INVALID_ARGUMENT,
      /no_such_table/,
    );
    expect(existsSync(join(dir, "nope.zip"))).toBe(false);
    expect(strays(["export", "export.zip"])).toEqual([]);
  });

  it("refuses an existing output unless forced, and then replaces it whole", async () => {
    const target = join(dir, "again.zip");
    writeFileSync(target, "old");
    await expectError(
      exportDatabase({ database: fixture, output: target }),
      ErrorCodes.INVALID_ARGUMENT,
      /already exists/,
    );
    expect(readFileSync(target, "utf8")).toBe("old");
    await exportDatabase({ database: fixture, output: target, force: true, tables: ["users"] });
    expect((await zipEntries(target)).has("users.csv")).toBe(true);

    // A directory is replaced only when it holds an earlier export (or nothing).
    const again = await exportDatabase({ database: fixture, output: join(dir, "again-dir"), tables: ["orders"] });
    await exportDatabase({ database: fixture, output: again.output, force: true, tables: ["users"] });
    expect(readdirSync(again.output).sort()).toEqual(["README.txt", "manifest.json", "users.csv"]);
    const precious = join(dir, "precious");
    mkdirSync(precious);
    writeFileSync(join(precious, "thesis.txt"), "years of work");
    await expectError(
      exportDatabase({ database: fixture, output: precious, force: true }),
      ErrorCodes.INVALID_ARGUMENT,
      /does not hold a Lifeboat export/,
    );
    expect(readFileSync(join(precious, "thesis.txt"), "utf8")).toBe("years of work");
    await expectError(
      exportDatabase({ database: fixture, output: fixture, format: "zip", force: true }),
      ErrorCodes.INVALID_ARGUMENT,
      /the database itself/,
    );
    expect(strays(["export", "export.zip", "again.zip", "again-dir", "precious"])).toEqual([]);
  });

  it("reports a missing database and a file that is not one", async () => {
    await expectError(
      exportDatabase({ database: join(dir, "missing.db"), output: join(dir, "x") }),
      ErrorCodes.DATABASE_NOT_FOUND,
      /missing\.db/,
    );
    const text = join(dir, "notes.txt");
    writeFileSync(text, "just some text, long enough to look like a header? no.".repeat(20));
    await expectError(
      exportDatabase({ database: text, output: join(dir, "x") }),
      ErrorCodes.NOT_A_DATABASE,
      /notes\.txt/,
    );
    rmSync(text);
    expect(existsSync(join(dir, "x"))).toBe(false);
  });

  it("leaves nothing behind when aborted mid-way", async () => {
    for (const output of [join(dir, "aborted"), join(dir, "aborted.zip")]) {
      const controller = new AbortController();
      await expectError(
        exportDatabase({ database: fixture, output, signal: controller.signal, onProgress: () => controller.abort() }),
        ErrorCodes.ABORTED,
        /aborted/,
      );
      expect(existsSync(output)).toBe(false);
    }
    expect(strays(["export", "export.zip", "again.zip", "again-dir", "precious"])).toEqual([]);
  });

  it("reports progress up to the database's size", async () => {
    const seen: Array<{ bytes: number; total: number | undefined; table?: string }> = [];
    await exportDatabase({ database: fixture, output: join(dir, "progress.zip"), onProgress: (p) => seen.push(p) });
    const size = statSync(fixture).size;
    expect(seen.length).toBeGreaterThan(1);
    expect(seen.every((p) => p.total === size && p.bytes <= size)).toBe(true);
    expect(seen.at(-1)!.bytes).toBe(size);
    expect(seen.map((p) => p.bytes)).toEqual([...seen.map((p) => p.bytes)].sort((a, b) => a - b));
    expect(new Set(seen.map((p) => p.table))).toContain("users");
  });
});
