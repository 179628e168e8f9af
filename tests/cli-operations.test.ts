import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { databaseContentHash } from "@lifeboat/testkit";
import { describe, expect, it } from "vitest";
import { cli, count, json, makeShop, tempDir } from "./helpers.js";

describe("safe operations, export and start-up backups from the CLI", () => {
  it("export to a ZIP and import it back gives the same data", () => {
    const dir = tempDir("export");
    const db = join(dir, "shop.db");
    makeShop(db, 500);
    const zip = join(dir, "shop.zip");
    const exported = cli(["export", db, "--format", "zip", "--output", zip, "--json"]);
    expect(exported.code, exported.stderr).toBe(0);
    expect(cli(["export", db, "--format", "zip", "--output", zip]).code).not.toBe(0); // exists: refused without --force
    const copy = join(dir, "copy.db");
    const imported = cli(["import", zip, "--output", copy]);
    expect(imported.code, imported.stderr).toBe(0);
    expect(databaseContentHash(copy)).toBe(databaseContentHash(db));
  });

  it("destructive operations refuse without a terminal unless confirmed, and back up first", () => {
    const dir = tempDir("ops");
    const db = join(dir, "app.db");
    makeShop(db, 50);
    writeFileSync(
      join(dir, "lifeboat.yml"),
      "databases:\n  - path: ./app.db\n    environment: production\n    targets: [{ type: local, path: ./backups }]\n    guards: [{ type: environment }, { type: confirmation }, { type: safety-backup }]\n",
    );
    expect(cli(["mark", "app", "production", "--yes"], { cwd: dir }).code).toBe(0);
    const refused = cli(["delete", "app"], { cwd: dir });
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain("CONFIRMATION_REQUIRED");
    expect(existsSync(db)).toBe(true);
    const phraseOnly = cli(["delete", "app", "--confirm", "delete production"], { cwd: dir });
    expect(phraseOnly.code).toBe(3); // no terminal: the phrase counts only with --yes
    expect(existsSync(db)).toBe(true);

    const deleted = cli(["delete", "app", "--yes", "--confirm", "delete production"], { cwd: dir });
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(existsSync(db)).toBe(false);
    const list = json(cli(["list", "--json"], { cwd: dir }));
    expect(list.databases[0].targets[0].backups.map((b: { reason: string }) => b.reason)).toContain("pre-delete");
    const restored = cli(["restore", "app", "--yes"], { cwd: dir });
    expect(restored.code, restored.stderr).toBe(0);
    expect(count(db, "orders")).toBe(50);
  });

  it("check, health and backup --if-older-than for start-up scripts", () => {
    const dir = tempDir("startup");
    makeShop(join(dir, "app.db"), 10);
    expect(cli(["init", "./app.db"], { cwd: dir }).code).toBe(0);
    const checked = json(cli(["check", "app", "--json"], { cwd: dir }));
    expect(checked.ok).toBe(true);
    expect(cli(["check", join(dir, "missing.db"), "--to", join(dir, "b")]).code).not.toBe(0);

    const first = cli(["backup", "--reason", "startup", "--if-older-than", "1h"], { cwd: dir });
    expect(first.code, first.stderr).toBe(0);
    const second = cli(["backup", "--reason", "startup", "--if-older-than", "1h"], { cwd: dir });
    expect(second.code).toBe(0);
    expect(second.stdout).toContain("no backup needed");
    expect(json(cli(["list", "--json"], { cwd: dir })).databases[0].targets[0].backups).toHaveLength(1);
    expect(cli(["health"], { cwd: dir }).code).toBe(0);
  });
});
