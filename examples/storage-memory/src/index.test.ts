/**
 * The example plugin runs the published conformance suite with vitest, the way any third-party
 * storage plugin should, plus checks of its own options and behaviour.
 */
import { randomUUID } from "node:crypto";
import { type LifeboatError, PluginRegistry, parsePluginOptions, readAll } from "@lifeboat/core";
import { storageConformance } from "@lifeboat/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import memoryDefault, { clearMemoryStorage, memoryStorage, memoryStoragePlugin } from "./index.js";

storageConformance({
  name: "lifeboat-storage-memory",
  runner: { describe, it, beforeAll, afterAll },
  // A fresh, empty target for every test: a new namespace.
  createTarget: () => memoryStorage({ namespace: randomUUID() }),
});

describe("lifeboat-storage-memory plugin", () => {
  it("is the default export, a storage plugin named after the package, for memory:// URLs", () => {
    expect(memoryDefault).toBe(memoryStoragePlugin);
    expect(memoryStoragePlugin.kind).toBe("storage");
    expect(memoryStoragePlugin.name).toBe("lifeboat-storage-memory");
    const registry = new PluginRegistry([memoryStoragePlugin]);
    expect(registry.forUrlScheme("memory")).toBe(memoryStoragePlugin);
    const context = { baseDir: "/", databaseName: "app", env: {} };
    expect(memoryStoragePlugin.fromUrl!(new URL("memory://demo"), context)).toEqual({ namespace: "demo" });
  });

  it("validates its options and names the config path in errors", async () => {
    expect(await parsePluginOptions(memoryStoragePlugin, { namespace: "a", maxBytes: 10 }, "t")).toEqual({
      namespace: "a",
      maxBytes: 10,
    });
    let error: LifeboatError | undefined;
    try {
      await parsePluginOptions(memoryStoragePlugin, { maxBytes: -1, colour: "red" }, "databases[0].targets[1]");
    } catch (caught) {
      error = caught as LifeboatError;
    }
    expect(error?.code).toBe("CONFIG_INVALID");
    expect(error?.message).toContain("databases[0].targets[1].maxBytes: maxBytes must be a positive whole number");
    expect(error?.message).toContain("databases[0].targets[1].colour: unknown option");
  });

  it("targets with the same namespace share objects; maxBytes refuses a put that does not fit", async () => {
    const namespace = randomUUID();
    const a = memoryStoragePlugin.create({ namespace, maxBytes: 10 }, { baseDir: "/", databaseName: "x", env: {} });
    const b = memoryStorage({ namespace });
    await a.put("k", Buffer.from("12345"));
    expect((await readAll((await b.get("k")).body)).toString()).toBe("12345");
    const full = await a.put("k2", Buffer.from("123456")).catch((caught: LifeboatError) => caught);
    expect((full as LifeboatError).code).toBe("DISK_FULL");
    await a.put("k", Buffer.from("1234567890")); // replacing an object frees its bytes first
    clearMemoryStorage(namespace);
    const gone = await b.head("k").then(
      () => undefined,
      (caught: LifeboatError) => caught,
    );
    expect(gone?.code).toBe("NOT_FOUND");
  });
});
