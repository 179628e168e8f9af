import { describe, expect, it } from "vitest";
import { hooksFromConfig } from "./config-hooks.js";
import { HookRunner } from "./hooks.js";

const database = { name: "app", path: "/tmp/app.db" };

describe("hooks", () => {
  it("a sequential hook vetoes by returning a veto or throwing", async () => {
    const runner = new HookRunner();
    runner.add("test", { beforeRestore: () => ({ veto: "maintenance window closed" }) });
    await expect(runner.run("beforeRestore", { database, backupId: "x", output: "/tmp/x" })).rejects.toMatchObject({
      code: "HOOK_VETOED",
      message: expect.stringContaining("maintenance window closed"),
    });
  });

  it("parallel hooks only observe: their failures are reported, not thrown", async () => {
    const seen: string[] = [];
    const runner = new HookRunner((hook, source) => seen.push(`${hook}:${source}`));
    runner.add("a", { afterRestore: () => Promise.reject(new Error("down")) });
    runner.add("b", { afterRestore: () => void seen.push("b ran") });
    await runner.run("afterRestore", { database, backupId: "x", output: "/tmp/x" });
    expect(seen.sort()).toEqual(["afterRestore:a", "b ran"]);
  });

  it("an exec hook gets the event in the environment and vetoes with its stderr", async () => {
    const runner = new HookRunner();
    for (const h of hooksFromConfig([
      { on: "beforeBackup", exec: 'test "$LIFEBOAT_DB" = app && test "$LIFEBOAT_REASON" = nightly', timeout: "5s" },
      { on: "beforeBackup", exec: 'echo "disk almost full" >&2; exit 3', timeout: "5s" },
    ])) {
      runner.add("config", h);
    }
    await expect(runner.run("beforeBackup", { database, reason: "nightly" })).rejects.toThrow(
      /exited 3: disk almost full/,
    );
  });

  it("an exec hook that hangs is killed at its timeout", async () => {
    const runner = new HookRunner();
    for (const h of hooksFromConfig([{ on: "beforeBackup", exec: "sleep 30", timeout: "300ms" }]))
      runner.add("config", h);
    const started = Date.now();
    await expect(runner.run("beforeBackup", { database, reason: "x" })).rejects.toThrow(
      /killed \(SIGKILL, timeout 300 ms\)/,
    );
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
