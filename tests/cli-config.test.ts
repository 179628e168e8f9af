import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cli, json, makeShop, tempDir } from "./helpers.js";

describe("lifeboat with a config file", () => {
  it("init writes a config that backup, list, verify and prune use", () => {
    const dir = tempDir("config");
    makeShop(join(dir, "app.db"));
    const init = cli(["init", "./app.db"], { cwd: dir });
    expect(init.code, init.stderr).toBe(0);
    expect(readFileSync(join(dir, "lifeboat.yml"), "utf8")).toContain("type: local");
    expect(cli(["init", "./app.db"], { cwd: dir }).code).toBe(2);

    for (let i = 0; i < 3; i++) expect(cli(["backup", "--reason", `run-${i}`], { cwd: dir }).code).toBe(0);
    const list = json(cli(["list", "--json"], { cwd: dir }));
    const backups = list.databases[0].targets[0].backups;
    expect(backups.map((b: { reason: string }) => b.reason)).toEqual(["run-0", "run-1", "run-2"]);

    expect(cli(["verify"], { cwd: dir }).code).toBe(0);

    const dry = cli(["prune", "--keep-last", "1", "--dry-run"], { cwd: dir });
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain("delete 2");
    expect(json(cli(["list", "--json"], { cwd: dir })).databases[0].targets[0].backups).toHaveLength(3);

    const noTty = cli(["prune", "--keep-last", "1"], { cwd: dir });
    expect(noTty.stdout).toContain("pass --yes");
    expect(json(cli(["list", "--json"], { cwd: dir })).databases[0].targets[0].backups).toHaveLength(3);

    expect(cli(["prune", "--keep-last", "1", "--yes"], { cwd: dir }).code).toBe(0);
    const left = json(cli(["list", "--json"], { cwd: dir })).databases[0].targets[0].backups;
    expect(left.map((b: { reason: string }) => b.reason)).toEqual(["run-2"]);
  });

  it("several databases in one file: backup with no name backs up each", () => {
    const dir = tempDir("multi");
    makeShop(join(dir, "a.db"), 10);
    makeShop(join(dir, "b.db"), 20);
    writeFileSync(
      join(dir, "lifeboat.yml"),
      `databases:
  - path: ./a.db
    targets: [{ type: local, path: ./backups }]
  - name: bee
    path: ./b.db
    targets: [{ type: local, path: ./backups }]
`,
    );
    const result = cli(["backup", "--json"], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(
      json(result).backups.map((b: { manifest: { database: { name: string } } }) => b.manifest.database.name),
    ).toEqual(["a", "bee"]);
    expect(cli(["list", "bee"], { cwd: dir }).stdout).toContain("bee on local");
    expect(cli(["restore", "--dry-run"], { cwd: dir }).stderr).toContain("say which one");
  });

  it("loads a third-party storage plugin installed next to the config", () => {
    const dir = tempDir("plugin");
    makeShop(join(dir, "app.db"), 10);
    const pkg = join(dir, "node_modules", "lifeboat-storage-mirror");
    mkdirSync(pkg, { recursive: true });
    writeFileSync(
      join(pkg, "package.json"),
      JSON.stringify({ name: "lifeboat-storage-mirror", type: "module", exports: "./index.js" }),
    );
    // A plugin that depends on nothing: it wraps the built-in local target found through the CLI's own install.
    writeFileSync(
      join(pkg, "index.js"),
      `import { localStorage } from ${JSON.stringify(new URL("../packages/storage-local/dist/index.js", import.meta.url).href)};
export default {
  kind: "storage",
  name: "lifeboat-storage-mirror",
  optionsSchema: { "~standard": { version: 1, vendor: "test", validate: (v) =>
    typeof v?.dir === "string" && Object.keys(v).length === 1 ? { value: v } : { issues: [{ message: "dir: required (and nothing else)", path: [] }] } } },
  create(options, context) {
    const inner = localStorage({ path: options.dir, baseDir: context.baseDir });
    return {
      apiVersion: 1,
      type: "lifeboat-storage-mirror",
      location: "mirror:" + inner.location,
      capabilities: inner.capabilities,
      init: (o) => inner.init(o),
      put: (k, b, o) => inner.put(k, b, o),
      get: (k, o) => inner.get(k, o),
      head: (k, o) => inner.head(k, o),
      list: (p, o) => inner.list(p, o),
      delete: (k, o) => inner.delete(k, o),
    };
  },
};
`,
    );
    writeFileSync(
      join(dir, "lifeboat.yml"),
      "databases:\n  - path: ./app.db\n    targets:\n      - type: lifeboat-storage-mirror\n        dir: ./mirror\n",
    );
    const result = cli(["backup"], { cwd: dir });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain("lifeboat-storage-mirror");

    writeFileSync(
      join(dir, "lifeboat.yml"),
      "databases:\n  - path: ./app.db\n    targets:\n      - type: lifeboat-storage-mirror\n        folder: ./mirror\n",
    );
    const bad = cli(["backup"], { cwd: dir });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("databases[0].targets[0]");
  });
});
