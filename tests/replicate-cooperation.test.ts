import { spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { BIN, cli, json, makeShop, tempDir } from "./helpers.js";
import { startReplicator } from "./replication-helpers.js";

describe("lifeboat backup while lifeboat replicate runs", () => {
  it("asks the replicator for a snapshot in its generation instead of competing with it", async () => {
    const dir = tempDir("coop");
    makeShop(join(dir, "app.db"), 100);
    writeFileSync(
      join(dir, "lifeboat.yml"),
      "databases:\n  - path: ./app.db\n    targets: [{ type: local, path: ./backups }]\n",
    );
    const replicator = spawn(process.execPath, [BIN, "replicate", "--json"], {
      cwd: dir,
      stdio: ["ignore", "pipe", "inherit"],
    });
    const events: { type: string; generation?: string; position?: number }[] = [];
    let buffer = "";
    replicator.stdout.on("data", (d: Buffer) => {
      buffer += d.toString("utf8");
      const lines = buffer.split("\n");
      buffer = lines.pop()!;
      for (const line of lines) if (line.trim()) events.push(JSON.parse(line));
    });
    const exited = new Promise<number | null>((r) => replicator.on("exit", r));
    try {
      const deadline = Date.now() + 30_000;
      while (!events.some((e) => e.type === "snapshot") && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 50));
      const generation = events.find((e) => e.type === "generation")!.generation!;
      const app = new Database(join(dir, "app.db"));
      for (let i = 0; i < 5; i++) app.exec(`INSERT INTO orders (customer_id, total) VALUES (1, ${i})`);
      app.close();

      const backup = cli(["backup", "--reason", "pre-migration", "--json"], { cwd: dir });
      expect(backup.code, backup.stderr).toBe(0);
      const out = json(backup);
      expect(out.replicatorSnapshots).toHaveLength(1);
      expect(out.replicatorSnapshots[0].generation).toBe(generation);
      expect(out.replicatorSnapshots[0].position).toBe(5);

      const list = json(cli(["list", "--json"], { cwd: dir }));
      const snapshot = list.databases[0].targets[0].backups.find(
        (b: { reason: string }) => b.reason === "pre-migration",
      );
      expect(snapshot.generation).toBe(generation);
      expect(snapshot.position).toBe(5);
    } finally {
      replicator.kill("SIGTERM");
    }
    expect(await exited).toBe(0);
  });

  it("list shows a replicator's generation before its first segment, and no window for a one-off backup", async () => {
    const dir = tempDir("coop-list");
    makeShop(join(dir, "app.db"), 10);
    makeShop(join(dir, "other.db"), 10);
    const backups = join(dir, "backups");
    expect(cli(["backup", join(dir, "other.db"), "--to", backups]).code).toBe(0);
    const replicator = startReplicator([join(dir, "app.db"), "--to", backups]);
    const { generation } = await replicator.waitFor((e) => e.type === "snapshot", "the first snapshot", 30_000);
    expect((await replicator.kill("SIGTERM")).code).toBe(0);

    const listed = json(cli(["list", join(dir, "app.db"), "--to", backups, "--json"]));
    const gens = listed.databases[0].targets[0].generations;
    expect(gens.map((g: { generation: string }) => g.generation)).toEqual([generation]);
    expect(gens[0].windows.map((w: { fromTxn: number; toTxn: number }) => [w.fromTxn, w.toTxn])).toEqual([[0, 0]]);
    const human = cli(["list", join(dir, "app.db"), "--to", backups]);
    expect(human.stdout).toContain("point-in-time recovery windows");
    expect(human.stdout).toMatch(new RegExp(`${generation}\\s.*\\s0-0\\s`));
    const other = json(cli(["list", join(dir, "other.db"), "--to", backups, "--json"]));
    expect(other.databases[0].targets[0].backups).toHaveLength(1);
    expect(other.databases[0].targets[0].generations).toEqual([]);
  });
});
