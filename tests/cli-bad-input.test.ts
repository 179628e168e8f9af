import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { BIN, cli, makeShop, tempDir } from "./helpers.js";

describe("bad input: a clear message, a non-zero exit, nothing changed", () => {
  const dir = tempDir("bad");
  const db = join(dir, "shop.db");
  makeShop(db, 100);
  const backups = join(dir, "backups");

  it.each([
    ["a missing database", [join(dir, "nope.db")], "DATABASE_NOT_FOUND", 1],
    ["a file that is not SQLite", [join(dir, "notes.txt")], "NOT_A_DATABASE", 1],
    ["a directory", [dir], "NOT_A_DATABASE", 1],
  ])("backup of %s", (_label, args, code, exit) => {
    writeFileSync(join(dir, "notes.txt"), "hello, I am not a database\n".repeat(20));
    const result = cli(["backup", ...args, "--to", backups]);
    expect(result.code).toBe(exit);
    expect(result.stderr).toContain(code);
    expect(result.stderr).toContain("what to do:");
    expect(result.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it("malformed YAML, unknown keys, unknown plugins", () => {
    const cfg = join(dir, "bad.yml");
    writeFileSync(cfg, "databases:\n  - path: ./shop.db\n   targets: x\n");
    let r = cli(["backup", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/not valid YAML \(line \d+/);

    writeFileSync(
      cfg,
      "databases:\n  - path: ./shop.db\n    targets: [{ type: local, path: ./b }]\n    retention: { keeplast: 3 }\n",
    );
    r = cli(["backup", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("databases[0].retention.keeplast: unknown key");

    writeFileSync(cfg, "databases:\n  - path: ./shop.db\n    targets: [{ type: ftp, path: ./b }]\n");
    r = cli(["backup", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('databases[0].targets[0].type: unknown storage plugin "ftp"');

    writeFileSync(cfg, "databases:\n  - path: ./shop.db\n    targets: [{ type: '@acme/lifeboat-ftp' }]\n");
    r = cli(["backup", "--config", cfg]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("cannot find the plugin");

    r = cli(["list", "--config", join(dir, "missing.yml")]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("lifeboat init");
  });

  it.each([
    ["a hex transaction number", ["--to-txn", "0x3"], /--to-txn must be a transaction number, not "0x3"/],
    ["an exponent", ["--to-txn", "1e1"], /--to-txn must be a transaction number/],
    ["both a time and a transaction", ["--to-txn", "3", "--to-time", "1 minute ago"], /each pick the point/],
    ["a bare number that is no Unix time", ["--to-time", "12345"], /"12345" is not a point in time/],
  ])("restore with %s", (_label, args, message) => {
    const r = cli(["restore", db, "--to", backups, "--output", join(dir, "never.db"), ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(readdirSync(dir)).not.toContain("never.db");
  });

  it("two database files whose names map to one archive folder do not share it", () => {
    const spaced = join(dir, "my app.db");
    const underscored = join(dir, "my_app.db");
    makeShop(spaced, 30);
    makeShop(underscored, 60);
    const shared = join(dir, "shared");
    expect(cli(["backup", spaced, "--to", shared]).code).toBe(0);
    const stored = () => readdirSync(shared, { recursive: true }).length;
    const before = stored();

    let r = cli(["backup", underscored, "--to", shared]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("ARCHIVE_MISMATCH");
    expect(r.stderr).toContain('holds the archive of "my app.db", not of "my_app.db"');
    expect(stored()).toBe(before);
    r = cli(["replicate", underscored, "--to", shared]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain("ARCHIVE_MISMATCH");
    expect(stored()).toBe(before);

    // A restore into my_app.db would have returned my app.db's 30 rows.
    for (const how of [[], ["--latest"]]) {
      r = cli(["restore", underscored, "--to", shared, "--output", join(dir, "never.db"), "--yes", ...how]);
      expect(r.code).toBe(3);
      expect(r.stderr).toContain('holds the archive of "my app.db"');
    }
    expect(readdirSync(dir)).not.toContain("never.db");

    // An explicit name is the user's choice: a renamed file keeps its archive.
    const cfg = join(dir, "renamed.yml");
    writeFileSync(
      cfg,
      `databases:\n  - path: ./my_app.db\n    name: my_app\n    targets: [{ type: local, path: ./shared }]\n`,
    );
    expect(cli(["backup", "--config", cfg]).code).toBe(0);
  });

  it("readers refuse a folder written in a newer repository format", () => {
    const newer = join(dir, "newer");
    expect(cli(["backup", db, "--to", newer]).code).toBe(0);
    const marker = join(newer, "shop", "lifeboat.json");
    writeFileSync(marker, JSON.stringify({ ...JSON.parse(readFileSync(marker, "utf8")), formatVersion: 99 }));
    for (const args of [
      ["restore", db, "--to", newer, "--output", join(dir, "never.db"), "--yes"],
      ["verify", db, "--to", newer],
      ["list", db, "--to", newer],
    ]) {
      const r = cli(args);
      expect(r.code, args[0]).not.toBe(0);
      expect(r.stdout + r.stderr, args[0]).toContain("written by a newer Lifeboat (repository format 99");
    }
    expect(readdirSync(dir)).not.toContain("never.db");
  });

  it("an unusable target directory", () => {
    writeFileSync(join(dir, "afile"), "x");
    const r = cli(["backup", db, "--to", join(dir, "afile", "sub")]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(join(dir, "afile"));
  });

  const mounts: string[] = [];
  afterAll(() => {
    for (const m of mounts) execFileSync("umount", ["-l", m]);
  });

  it("disk full during backup leaves no partial object and keeps older backups", () => {
    const small = join(tempDir("full"), "mnt");
    mkdirSync(small);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=400k", "tmpfs", small]);
    mounts.push(small);
    const tiny = join(dir, "tiny.db");
    makeShop(tiny, 10);
    expect(cli(["backup", tiny, "--to", small]).code).toBe(0);
    makeShop(join(dir, "big.db"), 20_000);
    const r = cli(["backup", join(dir, "big.db"), "--to", small]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("DISK_FULL");
    const files = readdirSync(small, { recursive: true, encoding: "utf8" });
    const isFile = (f: string) => statSync(join(small, f)).isFile();
    expect(files.filter((f) => f.startsWith("big/") && f.includes("/snapshots/"))).toEqual([]);
    expect(files.filter((f) => f.includes("tmp") && isFile(f))).toEqual([]);
    expect(files.filter((f) => f.startsWith("tiny/") && f.endsWith(".snap"))).toHaveLength(1);
  });

  it("a reader that stops reading (`| head -1`) neither fails the command nor prints a stack trace", async () => {
    const child = spawn(process.execPath, [BIN, "backup", db, "--to", backups], { stdio: ["ignore", "pipe", "pipe"] });
    child.stdout.destroy(); // the pipe's reader is gone before the first line
    let stderr = "";
    child.stderr.on("data", (d) => {
      stderr += String(d);
    });
    const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
    expect(stderr).not.toMatch(/EPIPE|\n\s+at /);
    expect(code).toBe(0);
    const listed = cli(["list", db, "--to", backups, "--json"]);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toContain('"reason": "manual"');
  });

  it("every command has --help", () => {
    for (const command of ["init", "backup", "list", "restore", "verify", "prune"]) {
      const r = cli([command, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain("--json");
      expect(r.stdout).toContain("--config");
    }
  });
});
