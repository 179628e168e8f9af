import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLifeboat, type Lifeboat } from "@lifeboat/core";
import { execSql, sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { afterEach, describe, expect, it } from "vitest";
import { backupIfOlderThan, newestBackup } from "./backup-freshness.js";
import { startDaemon } from "./daemon.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function setup(targets = 1): { dir: string; lb: Lifeboat } {
  const dir = mkdtempSync(join(tmpdir(), "lifeboat-fresh-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, "app.db");
  execSql(path, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a');");
  const lb = createLifeboat({
    config: {
      databases: [
        {
          name: "app",
          path,
          targets: Array.from({ length: targets }, (_, i) => ({
            type: "local",
            name: `disk${i}`,
            path: join(dir, `backups${i}`),
          })),
        },
      ],
    },
    plugins: [sqliteSourcePlugin, localStoragePlugin],
  });
  cleanups.push(() => lb.close());
  return { dir, lb };
}

async function count(lb: Lifeboat): Promise<number> {
  return (await lb.list("app"))[0]!.snapshots.length;
}

describe("backupIfOlderThan", () => {
  it("backs up when there is no backup, does nothing while the newest is recent, backs up once it is old", async () => {
    const { lb } = setup();
    const first = await backupIfOlderThan(lb, "app", 3_600_000, "startup");
    expect(first).toMatchObject({ taken: true, via: "backup", previous: null });
    expect(await count(lb)).toBe(1);

    const started = performance.now();
    const second = await backupIfOlderThan(lb, "app", 3_600_000, "startup");
    const elapsed = performance.now() - started;
    expect(second.taken).toBe(false);
    if (!second.taken) {
      expect(second.newest.id).toBe(first.taken ? first.id : "");
      expect(second.newest.reason).toBe("startup");
      expect(second.ageMs).toBeLessThan(3_600_000);
    }
    expect(await count(lb)).toBe(1);
    expect(elapsed).toBeLessThan(1000); // one listing and one manifest read

    await new Promise((r) => setTimeout(r, 30));
    const third = await backupIfOlderThan(lb, "app", 20, "startup");
    expect(third).toMatchObject({ taken: true, via: "backup" });
    if (third.taken) expect(third.previous?.id).toBe(first.taken ? first.id : "");
    expect(await count(lb)).toBe(2);
  });

  it("skips a snapshot that verify found damaged", async () => {
    const { dir, lb } = setup();
    const older = await lb.backup("app");
    await new Promise((r) => setTimeout(r, 20));
    const newer = await lb.backup("app");
    expect((await newestBackup(await lb.database("app"))).newest?.id).toBe(newer.id);

    const snaps = join(dir, "backups0", "app", "generations", newer.id.split("-")[0]!, "snapshots");
    const file = join(snaps, readdirSync(snaps).find((f) => f.endsWith(".snap"))!);
    const bytes = readFileSync(file);
    bytes[100]! ^= 0x55;
    writeFileSync(file, bytes);
    await lb.verify("app", { checksumsOnly: true }); // records the damage next to the snapshot
    expect((await newestBackup(await lb.database("app"))).newest?.id).toBe(older.id);
  });

  it("lets the first target decide: a new, empty first target gets a backup", async () => {
    const { dir, lb } = setup(2);
    await lb.backup("app");
    rmSync(join(dir, "backups0"), { recursive: true }); // as if disk0 were just added to the config
    const found = await newestBackup(await lb.database("app"));
    expect(found).toMatchObject({ target: "disk0", newest: null, skipped: [] });
    const result = await backupIfOlderThan(lb, "app", 3_600_000, "startup");
    expect(result).toMatchObject({ taken: true, via: "backup", previous: null });
    expect((await lb.list("app")).map((e) => e.snapshots.length)).toEqual([1, 2]);
  });
});

describe("start-up backups in the daemon", () => {
  it("take a snapshot at start only when the newest good one is older than the limit", async () => {
    const { lb } = setup();
    const daemon = await startDaemon({
      lifeboat: lb,
      schedules: { app: { startupBackup: "1h" } },
      processMetrics: false,
    });
    cleanups.push(() => daemon.stop());
    await daemon.startupBackups;
    expect(await count(lb)).toBe(1);
    expect(daemon.scheduler.status("app/startup-backup")).toMatchObject({ runs: 1, lastOk: true });
    await daemon.stop();

    const again = await startDaemon({
      lifeboat: lb,
      schedules: { app: { startupBackup: "1h" } },
      processMetrics: false,
    });
    cleanups.push(() => again.stop());
    await again.startupBackups;
    expect(await count(lb)).toBe(1);
    expect(again.scheduler.status("app/startup-backup")!.lastDetail).toMatch(/^not needed: .* on disk0 is .* old$/);
  });
});
