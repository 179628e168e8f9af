import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readAll } from "@lifeboat/core";
import { localStorage } from "@lifeboat/storage-local";
import { describe, expect, it } from "vitest";
import { Lease } from "./lease.js";

describe("replicator lease", () => {
  it("a second holder is refused with the holder named; release lets it in", async () => {
    const target = localStorage({ path: mkdtempSync(join(tmpdir(), "lifeboat-lease-")) });
    const first = new Lease(target, "local", "app", 30_000);
    await first.acquire();
    const second = new Lease(target, "local", "app", 30_000);
    await expect(second.acquire()).rejects.toMatchObject({
      code: "LEASE_HELD",
      message: expect.stringContaining(`pid ${process.pid}`),
    });
    await first.renew();
    await first.release();
    await second.acquire();
    await expect(first.renew()).rejects.toMatchObject({ code: "LEASE_HELD" });
  });

  it("takes over at once from a dead process on this host, or after expiry", async () => {
    const target = localStorage({ path: mkdtempSync(join(tmpdir(), "lifeboat-lease-")) });
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    const ghost = new Lease(target, "local", "app", 60_000);
    await ghost.acquire();
    // Rewrite the record as if a process that has exited held it.
    const record = JSON.parse((await readAll((await target.get(ghost.key)).body)).toString());
    await target.put(
      ghost.key,
      Buffer.from(JSON.stringify({ ...record, owner: "someone-else", pid: Number(dead.stdout) })),
    );
    await new Lease(target, "local", "app", 60_000).acquire();

    const other = localStorage({ path: mkdtempSync(join(tmpdir(), "lifeboat-lease-")) });
    const short = new Lease(other, "local", "app", 1);
    await short.acquire();
    await new Promise((r) => setTimeout(r, 5));
    await new Lease(other, "local", "app", 30_000).acquire();
  });
});
