/**
 * The same conformance suite under Node's built-in test runner, to show it needs no vitest:
 *   node --conditions=source --import tsx --test src/conformance.node.ts
 * (`--conditions=source` only matters inside the Lifeboat repository, where workspace packages
 * resolve to their TypeScript sources.)
 */
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { storageConformance } from "@lifeboat/testkit";
import { memoryStorage } from "./index.js";

storageConformance({
  name: "lifeboat-storage-memory (node:test)",
  runner: { describe, it: (name, fn, timeout) => it(name, { timeout }, fn), beforeAll: before, afterAll: after },
  createTarget: () => memoryStorage({ namespace: randomUUID() }),
  largeObjectBytes: 8 * 1024 * 1024,
});
