import { createHash } from "node:crypto";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { cli, count, holdOpen, json, makeShop, tempDir } from "./helpers.js";

function findFiles(dir: string, suffix: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(suffix))
    .map((f) => join(dir, f));
}

describe("lifeboat backup / list / restore (no config)", () => {
  it("backs up to a folder with a manifest whose sha256 matches the stored object", () => {
    const dir = tempDir();
    const db = join(dir, "shop.db");
    makeShop(db);
    const result = cli(["backup", db, "--to", join(dir, "backups"), "--reason", "before-upgrade", "--json"]);
    expect(result.code, result.stderr).toBe(0);
    const out = json(result);
    expect(out.ok).toBe(true);
    const manifestFile = findFiles(join(dir, "backups", "shop"), ".json").find((f) => f.includes("/snapshots/"))!;
    const manifest = JSON.parse(readFileSync(manifestFile, "utf8"));
    expect(manifest.reason).toBe("before-upgrade");
    expect(manifest.source.userVersion).toBe(7);
    expect(manifest.source.tables).toEqual(
      expect.arrayContaining([
        { name: "customers", rows: 50 },
        { name: "orders", rows: 1000 },
      ]),
    );
    expect(manifest.integrity.ok).toBe(true);
    expect(manifest.tool.version).toMatch(/^\d+\.\d+\.\d+/);
    const object = join(dir, "backups", manifest.object.key);
    const bytes = readFileSync(object);
    expect(bytes.length).toBe(manifest.object.size);
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(manifest.object.sha256);
    expect(bytes.subarray(0, 16).toString("latin1")).toBe("SQLite format 3\0");
    expect(statSync(object).mode & 0o777).toBe(0o600);

    const list = cli(["list", db, "--to", join(dir, "backups")]);
    expect(list.code).toBe(0);
    expect(list.stdout).toContain(manifest.id);
    expect(list.stdout).toContain("before-upgrade");
  });

  it("backs up a large live database (integrity checked on a second thread) and restores it exactly", () => {
    const dir = tempDir();
    const db = join(dir, "large.db");
    const conn = new Database(db);
    conn.pragma("journal_mode = WAL");
    conn.exec(`CREATE TABLE big(id INTEGER PRIMARY KEY, b BLOB);
      WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 18000)
      INSERT INTO big(b) SELECT randomblob(4000) FROM s;`);
    conn.exec("UPDATE big SET b = randomblob(10) WHERE id % 1000 = 0"); // in the WAL, not checkpointed
    const hash = (path: string) => {
      const c = new Database(path, { readonly: true });
      try {
        const h = createHash("sha256");
        for (const row of c.prepare("SELECT id, b FROM big ORDER BY id").iterate() as Iterable<{
          id: number;
          b: Buffer;
        }>)
          h.update(`${row.id}:`).update(row.b);
        return h.digest("hex");
      } finally {
        c.close();
      }
    };
    const expected = hash(db);
    const backups = join(dir, "backups");
    const result = cli(["backup", db, "--to", backups, "--json"]);
    conn.close();
    expect(result.code, result.stderr).toBe(0);
    const manifest = json(result).backups[0].manifest;
    expect(manifest.integrity).toEqual({ check: "quick_check", ok: true, messages: [] });
    expect(manifest.source.tables).toEqual([{ name: "big", rows: 18000 }]);
    const output = join(dir, "restored.db");
    const restored = cli(["restore", db, "--to", backups, "--output", output, "--yes"]);
    expect(restored.code, restored.stderr).toBe(0);
    expect(hash(output)).toBe(expected);
  });

  it("refuses to back up a database that fails its integrity check and stores nothing", () => {
    const dir = tempDir();
    const db = join(dir, "broken.db");
    const conn = new Database(db);
    conn.exec("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(100));");
    for (let i = 0; i < 6; i++) conn.exec("INSERT INTO t SELECT randomblob(100) FROM t");
    conn.close();
    const bytes = readFileSync(db);
    bytes.fill(0x41, 4096 * 2 + 8, 4096 * 2 + 64); // cell pointers of a b-tree page
    writeFileSync(db, bytes);
    const backups = join(dir, "backups");
    const result = cli(["backup", db, "--to", backups]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/broken\.db fails quick_check/);
    expect(existsSync(backups) ? findFiles(backups, ".snap") : []).toEqual([]);
    expect(existsSync(backups) ? findFiles(backups, ".json").filter((f) => f.includes("/snapshots/")) : []).toEqual([]);
  });

  it("restores over a damaged database, keeping the damaged one as a safety copy", () => {
    const dir = tempDir();
    const db = join(dir, "shop.db");
    const backups = join(dir, "backups");
    makeShop(db);
    expect(cli(["backup", db, "--to", backups]).code).toBe(0);
    writeFileSync(join(dir, "marker"), "x");
    // The "bad migration".
    const conn = new Database(db);
    conn.exec("DELETE FROM orders WHERE id > 10; PRAGMA user_version = 8;");
    conn.close();
    expect(count(db, "orders")).toBe(10);

    const dry = cli(["restore", db, "--to", backups, "--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/orders\s+10\s+1000\s+\+990/);
    expect(dry.stdout).toContain("user_version: 8 -> 7");
    expect(count(db, "orders")).toBe(10);

    const refused = cli(["restore", db, "--to", backups]);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain("CONFIRMATION_REQUIRED");
    expect(refused.stderr).toContain("--yes");
    expect(count(db, "orders")).toBe(10);

    const restored = cli(["restore", db, "--to", backups, "--yes", "--json"]);
    expect(restored.code, restored.stderr).toBe(0);
    const out = json(restored);
    expect(count(db, "orders")).toBe(1000);
    expect(existsSync(`${db}-wal`)).toBe(false);
    expect(out.restore.safetyCopy).toBeTruthy();
    expect(count(out.restore.safetyCopy, "orders")).toBe(10);
  });

  it("refuses a corrupt backup object, names it, and changes nothing", () => {
    const dir = tempDir();
    const db = join(dir, "shop.db");
    const backups = join(dir, "backups");
    makeShop(db);
    expect(cli(["backup", db, "--to", backups]).code).toBe(0);
    const object = findFiles(backups, ".snap")[0]!;
    const bytes = readFileSync(object);
    bytes[bytes.length - 100]! ^= 0xff;
    writeFileSync(object, bytes);
    const before = readFileSync(db);
    const result = cli(["restore", db, "--to", backups, "--yes"]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("CORRUPT_BACKUP");
    expect(result.stderr).toContain(".snap");
    expect(readFileSync(db).equals(before)).toBe(true);
    expect(readdirSync(dir).filter((f) => f.includes("lifeboat-restore"))).toEqual([]);

    const verify = cli(["verify", db, "--to", backups]);
    expect(verify.code).toBe(1);
    expect(verify.stdout).toMatch(/FAILED .*\.snap: sha256/);
  });

  it("refuses to restore over a database another process has open", async () => {
    const dir = tempDir();
    const db = join(dir, "shop.db");
    const backups = join(dir, "backups");
    makeShop(db);
    expect(cli(["backup", db, "--to", backups]).code).toBe(0);
    const holder = await holdOpen(db, false);
    try {
      const result = cli(["restore", db, "--to", backups, "--yes"]);
      expect(result.code).toBe(3);
      expect(result.stderr).toContain("DATABASE_LOCKED");
    } finally {
      holder.stop();
    }
    expect(count(db, "orders")).toBe(1000);
  });

  it("restores to another path with --output and verifies", () => {
    const dir = tempDir();
    const db = join(dir, "shop.db");
    const backups = join(dir, "backups");
    makeShop(db, 300);
    expect(cli(["backup", db, "--to", backups]).code).toBe(0);
    const copy = join(dir, "copy.db");
    const result = cli(["restore", db, "--to", backups, "--output", copy]);
    expect(result.code, result.stderr).toBe(0);
    expect(count(copy, "orders")).toBe(300);
    const verify = cli(["verify", db, "--to", backups, "--json"]);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
    expect(json(verify).databases[0].restores[0].integrity.check).toBe("integrity_check");
  });

  it("works through a symlinked database path: backs up the real file and restores into it, keeping the link", () => {
    const dir = tempDir();
    mkdirSync(join(dir, "real"));
    const real = join(dir, "real", "shop.db");
    const link = join(dir, "shop.db");
    const backups = join(dir, "backups");
    makeShop(real, 200);
    symlinkSync(real, link);
    const backup = cli(["backup", link, "--to", backups]);
    expect(backup.code, backup.stderr).toBe(0);
    const db = new Database(real);
    db.exec("DELETE FROM orders WHERE id > 50");
    db.close();
    const restore = cli(["restore", link, "--to", backups, "--yes"]);
    expect(restore.code, restore.stderr).toBe(0);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
    expect(count(real, "orders")).toBe(200);
    expect(readdirSync(join(dir, "real", ".lifeboat-safety"))).toHaveLength(1); // the replaced file, beside the real one
  });

  it("the restore's table summary includes tables only the replaced database had", () => {
    const dir = tempDir();
    const db = join(dir, "shop.db");
    const backups = join(dir, "backups");
    makeShop(db, 20);
    expect(cli(["backup", db, "--to", backups]).code).toBe(0);
    const app = new Database(db);
    app.exec("CREATE TABLE added_later (x); INSERT INTO added_later VALUES (1), (2), (3);");
    app.close();
    const restore = cli(["restore", db, "--to", backups, "--yes", "--json"]);
    expect(restore.code, restore.stderr).toBe(0);
    const tables = json(restore).restore.tables as { name: string; currentRows: number; backupRows: number | null }[];
    expect(tables.find((t) => t.name === "added_later")).toMatchObject({
      currentRows: 3,
      backupRows: null,
      difference: -3,
    });
    expect(tables.find((t) => t.name === "orders")).toMatchObject({ currentRows: 20, backupRows: 20 });
  });
});
