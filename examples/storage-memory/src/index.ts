/**
 * `lifeboat-storage-memory`: an example third-party storage plugin. In lifeboat.yml:
 *
 * ```yaml
 * targets:
 *   - type: lifeboat-storage-memory   # the package name, installed next to lifeboat.yml
 *     namespace: demo
 *     maxBytes: 100000000
 * ```
 *
 * The CLI imports the package from the config file's directory and uses its default export.
 * Options are validated by `optionsSchema`, any Standard Schema (https://standardschema.dev)
 * validator; this one is written by hand to show the interface (zod, valibot or arktype schemas
 * implement it too).
 */
import { defineStoragePlugin, type StandardSchemaV1 } from "@lifeboat/core";
import { type MemoryStorageOptions, memoryStorage } from "./memory-storage.js";

export { clearMemoryStorage, type MemoryStorageOptions, memoryStorage } from "./memory-storage.js";

/** Validates `{ namespace?: string, maxBytes?: number }`, rejecting anything else. */
export const memoryOptionsSchema: StandardSchemaV1<unknown, MemoryStorageOptions> = {
  "~standard": {
    version: 1,
    vendor: "lifeboat-storage-memory",
    validate(value) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        return { issues: [{ message: "expected an object with namespace and maxBytes" }] };
      }
      const issues: { message: string; path: string[] }[] = [];
      const { namespace, maxBytes, ...rest } = value as Record<string, unknown>;
      if (namespace !== undefined && (typeof namespace !== "string" || namespace === "")) {
        issues.push({ message: "namespace must be a non-empty string", path: ["namespace"] });
      }
      if (maxBytes !== undefined && !(typeof maxBytes === "number" && Number.isSafeInteger(maxBytes) && maxBytes > 0)) {
        issues.push({ message: "maxBytes must be a positive whole number of bytes", path: ["maxBytes"] });
      }
      for (const unknown of Object.keys(rest)) {
        issues.push({ message: `unknown option (known: namespace, maxBytes)`, path: [unknown] });
      }
      if (issues.length > 0) return { issues };
      return {
        value: {
          ...(namespace === undefined ? {} : { namespace: namespace as string }),
          ...(maxBytes === undefined ? {} : { maxBytes: maxBytes as number }),
        },
      };
    },
  },
};

export const memoryStoragePlugin = defineStoragePlugin<MemoryStorageOptions>({
  name: "lifeboat-storage-memory",
  optionsSchema: memoryOptionsSchema,
  create(options) {
    return memoryStorage(options);
  },
  urlSchemes: ["memory"],
  fromUrl(url) {
    // memory://<namespace>
    return url.hostname ? { namespace: url.hostname } : {};
  },
});

/** The CLI loads a plugin package's default export. */
export default memoryStoragePlugin;
