/**
 * The storage conformance suite. Every `StorageTarget` (ours and third parties') runs it with its
 * own test runner, the way keyv adapters run `@keyv/test-suite`:
 *
 * ```ts
 * import { afterAll, beforeAll, describe, it } from "vitest";
 * import { storageConformance } from "@lifeboat/testkit";
 * storageConformance({
 *   name: "my-target",
 *   runner: { describe, it, beforeAll, afterAll },
 *   createTarget: () => myTarget({ prefix: `test-${randomUUID()}` }),
 * });
 * ```
 *
 * It imports no test framework: failures are plain `Error`s, and errors from the target are
 * checked by their `code` (not `instanceof`, since the target may bundle its own copy of core).
 * Each test gets a fresh target from `createTarget()`, calls `init()`, and removes what it stored
 * afterwards (through `cleanup`, or by deleting every listed key), then calls `close()`.
 *
 * Capabilities switch assertions, not tests: with `conditionalCreate` racing creators must produce
 * exactly one winner, without it only the sequential precondition is required; with `metadata`
 * head/get must return what put stored, without it put must still accept (and ignore) metadata.
 * Range reads are required of every target (the contract says targets without `rangeReads` honour
 * ranges by skipping). Whole groups are switched off with `skip`.
 *
 * The suite never stores a key that is also a directory prefix of another (`a` and `a/b`), which
 * file-system targets cannot hold; Lifeboat's own layout never does either.
 */
import { createHash } from "node:crypto";
import { endianness } from "node:os";
import { Readable } from "node:stream";
import type { ObjectInfo, StorageTarget } from "@lifeboat/core";

/** The parts of a test runner the suite uses: vitest, jest, mocha and node:test all fit. */
export interface ConformanceRunner {
  describe(name: string, fn: () => void): void;
  it(name: string, fn: () => Promise<void> | void, timeout?: number): void;
  beforeAll?(fn: () => Promise<void> | void): void;
  afterAll?(fn: () => Promise<void> | void): void;
}

/** Names of the groups of tests, for `skip`. */
export const STORAGE_CONFORMANCE_GROUPS = [
  "basics",
  "overwrite",
  "not-found",
  "list",
  "list-many",
  "delete",
  "conditional-create",
  "range-reads",
  "large-object",
  "concurrency",
  "odd-keys",
  "invalid-keys",
  "abort",
  "object-info",
  "metadata",
  "content-length",
] as const;

export type StorageConformanceGroup = (typeof STORAGE_CONFORMANCE_GROUPS)[number];

export interface StorageConformanceOptions {
  /** Shown in the outer `describe`: `storage conformance: <name>`. */
  name: string;
  runner: ConformanceRunner;
  /** A fresh, empty target on every call, e.g. on a new temp dir or under a new random prefix. */
  createTarget(): Promise<StorageTarget> | StorageTarget;
  /**
   * Removes what a test stored, before `close()`. Default: delete every key `list("")` returns.
   * Also called for targets whose test timed out, from `afterAll` when the runner has one.
   */
  cleanup?(target: StorageTarget): Promise<void>;
  /** Size of the streamed large object. Default 64 MiB. */
  largeObjectBytes?: number;
  /** Number of keys in the list/delete volume tests; keep it above one page (S3: 1000). Default 1200. */
  manyKeys?: number;
  /** Groups to switch off (see `STORAGE_CONFORMANCE_GROUPS`). Unknown names are an error. */
  skip?: readonly string[];
  /** Timeout passed to the runner for the slow tests (large object, many keys, races). Default 300 s. */
  slowTestTimeout?: number;
}

/** Registers the conformance tests with `options.runner`. Call it at the top level of a test file. */
export function storageConformance(options: StorageConformanceOptions): void {
  const unknown = (options.skip ?? []).filter(
    (name) => !(STORAGE_CONFORMANCE_GROUPS as readonly string[]).includes(name),
  );
  if (unknown.length > 0) {
    throw new Error(
      `storageConformance: unknown group(s) in skip: ${unknown.join(", ")}. Known groups: ${STORAGE_CONFORMANCE_GROUPS.join(", ")}.`,
    );
  }
  const suite = new Suite(options);
  const { runner } = options;
  runner.describe(`storage conformance: ${options.name}`, () => {
    runner.afterAll?.(() => suite.disposeLeftovers());
    for (const [group, register] of Object.entries(GROUPS) as [StorageConformanceGroup, GroupTests][]) {
      if (options.skip?.includes(group)) continue;
      runner.describe(group, () => register(suite));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Harness

type GroupTests = (suite: Suite) => void;

class Suite {
  readonly largeObjectBytes: number;
  readonly manyKeys: number;
  readonly slow: number;
  readonly #options: StorageConformanceOptions;
  readonly #live = new Set<StorageTarget>();

  constructor(options: StorageConformanceOptions) {
    this.#options = options;
    this.largeObjectBytes = options.largeObjectBytes ?? 64 * 1024 * 1024;
    this.manyKeys = options.manyKeys ?? 1200;
    this.slow = options.slowTestTimeout ?? 300_000;
  }

  /** Registers a test that runs `fn` on a fresh, initialised, empty target. */
  test(name: string, fn: (target: StorageTarget) => Promise<void>, slow = false): void {
    const run = () => this.withTarget(fn);
    if (slow) this.#options.runner.it(name, run, this.slow);
    else this.#options.runner.it(name, run);
  }

  /** A test that manages targets itself. */
  raw(name: string, fn: () => Promise<void>): void {
    this.#options.runner.it(name, fn);
  }

  async createTarget(): Promise<StorageTarget> {
    const target = await this.#options.createTarget();
    check(
      typeof target === "object" && target !== null && typeof target.put === "function",
      "createTarget() must return a StorageTarget",
    );
    return target;
  }

  async withTarget(fn: (target: StorageTarget) => Promise<void>): Promise<void> {
    const target = await this.createTarget();
    this.#live.add(target);
    let failure: { error: unknown } | undefined;
    try {
      await target.init?.();
      const leftover = await first(target.list(""));
      if (leftover) {
        throw new Error(
          `createTarget() returned a target that is not empty (it holds ${JSON.stringify(leftover.key)}); return a fresh, empty target on every call, e.g. on a new temp directory or under a new random prefix.`,
        );
      }
      await fn(target);
    } catch (error) {
      failure = { error };
    }
    this.#live.delete(target);
    try {
      await this.dispose(target);
    } catch (error) {
      // A test failure is more useful than the cleanup failure it may have caused.
      if (!failure) failure = { error };
    }
    if (failure) throw failure.error;
  }

  async dispose(target: StorageTarget): Promise<void> {
    if (this.#options.cleanup) await this.#options.cleanup(target);
    else await deleteEverything(target);
    await target.close?.();
  }

  async disposeLeftovers(): Promise<void> {
    const targets = [...this.#live];
    this.#live.clear();
    for (const target of targets) await this.dispose(target).catch(() => undefined);
  }

  async cleanupOnly(target: StorageTarget): Promise<void> {
    await this.#options.cleanup?.(target);
  }
}

async function deleteEverything(target: StorageTarget): Promise<void> {
  const keys: string[] = [];
  for await (const info of target.list("")) keys.push(info.key);
  for (let i = 0; i < keys.length; i += 1000) await target.delete(keys.slice(i, i + 1000));
}

// ---------------------------------------------------------------------------------------------
// The tests, by group

const GROUPS: Record<StorageConformanceGroup, GroupTests> = {
  basics(suite) {
    suite.test("init() is idempotent and a fresh target lists nothing", async (target) => {
      await target.init?.();
      await target.init?.();
      equal(await keysOf(target, ""), [], 'list("") of a fresh target');
    });

    suite.raw("close() is idempotent", async () => {
      const target = await suite.createTarget();
      await target.init?.();
      await target.close?.();
      await target.close?.();
      await suite.cleanupOnly(target);
    });

    suite.test("declares its contract version, type, location and capabilities", async (target) => {
      equal(target.apiVersion, 1, "apiVersion");
      check(typeof target.type === "string" && target.type.length > 0, "type must be a non-empty string");
      check(typeof target.location === "string" && target.location.length > 0, "location must be a non-empty string");
      for (const name of ["conditionalCreate", "rangeReads", "objectLock", "metadata"] as const) {
        check(typeof target.capabilities?.[name] === "boolean", `capabilities.${name} must be a boolean`);
      }
    });

    suite.test("round-trips an empty body", async (target) => {
      const info = await target.put("empty", new Uint8Array(0));
      equal(info.key, "empty", "put().key");
      equal(info.size, 0, "put().size");
      equal((await target.head("empty")).size, 0, "head().size");
      const got = await target.get("empty");
      equal(got.size, 0, "get().size");
      bytesEqual(await readBody(got.body), new Uint8Array(0), "get() body");
    });

    suite.test("round-trips binary bytes of every value (Uint8Array body)", async (target) => {
      const bytes = patterned(256 * 5 + 3, 7);
      const info = await target.put("bin/all-bytes", bytes);
      equal(info.size, bytes.length, "put().size");
      const got = await target.get("bin/all-bytes");
      equal(got.key, "bin/all-bytes", "get().key");
      equal(got.size, bytes.length, "get().size");
      bytesEqual(await readBody(got.body), bytes, "get() body");
      equal((await target.head("bin/all-bytes")).size, bytes.length, "head().size");
    });

    suite.test("stores only the bytes of a Uint8Array view into a larger buffer", async (target) => {
      const backing = patterned(1000, 3);
      const view = backing.subarray(100, 350);
      await target.put("view", view);
      bytesEqual(await readBody((await target.get("view")).body), Uint8Array.from(view), "body of a subarray put");
    });

    suite.test("round-trips an async-iterable body of uneven chunks, including empty ones", async (target) => {
      const sizes = [0, 1, 3, 0, 65_536, 7, 100_003, 0, 2, 300_000];
      const parts = sizes.map((size, i) => patterned(size, i + 1));
      const info = await target.put("stream/uneven", iterate(parts));
      const expected = concat(parts);
      equal(info.size, expected.length, "put().size");
      bytesEqual(await readBody((await target.get("stream/uneven")).body), expected, "get() body");
    });

    suite.test("round-trips a Node Readable body", async (target) => {
      const parts = [patterned(10_000, 1), patterned(70_000, 2), patterned(5, 3)];
      await target.put("stream/readable", Readable.from(parts.map((part) => Buffer.from(part))));
      bytesEqual(await readBody((await target.get("stream/readable")).body), concat(parts), "get() body");
    });
  },

  overwrite(suite) {
    suite.test("a put replaces the whole object (longer, then shorter)", async (target) => {
      await target.put("obj", patterned(10, 1));
      const longer = patterned(50_000, 2);
      await target.put("obj", iterate([longer.subarray(0, 20_000), longer.subarray(20_000)]));
      bytesEqual(await readBody((await target.get("obj")).body), longer, "body after a longer overwrite");
      const shorter = patterned(17, 3);
      const info = await target.put("obj", shorter);
      equal(info.size, 17, "put().size after a shorter overwrite");
      equal((await target.head("obj")).size, 17, "head().size after a shorter overwrite");
      bytesEqual(await readBody((await target.get("obj")).body), shorter, "body after a shorter overwrite");
      equal(await keysOf(target, ""), ["obj"], "keys after overwrites");
    });

    suite.test("putting an equal body again is idempotent", async (target) => {
      const body = patterned(4096, 5);
      await target.put("same", body);
      await target.put("same", body);
      bytesEqual(await readBody((await target.get("same")).body), body, "body");
      equal(await keysOf(target, ""), ["same"], "keys");
    });
  },

  "not-found"(suite) {
    suite.test("get and head of a missing key fail with NOT_FOUND naming the key", async (target) => {
      await target.put("present", patterned(3, 1));
      for (const [method, call] of [
        ["get", () => target.get("missing/key.bin")],
        ["head", () => target.head("missing/key.bin")],
      ] as const) {
        const error = await expectCode(`${method}("missing/key.bin")`, call, "NOT_FOUND");
        check(
          error.message.includes("missing/key.bin"),
          `${method}("missing/key.bin"): the NOT_FOUND message should name the key, got: ${error.message}`,
        );
      }
    });

    suite.test("a prefix of other keys is not an object", async (target) => {
      await target.put("dir/child", patterned(3, 1));
      for (const key of ["dir", "di", "dir/chil"]) {
        await expectCode(`get(${JSON.stringify(key)})`, () => target.get(key), "NOT_FOUND");
        await expectCode(`head(${JSON.stringify(key)})`, () => target.head(key), "NOT_FOUND");
      }
    });

    suite.test("a deleted object is gone for get, head and list", async (target) => {
      await target.put("gone/soon", patterned(5, 1));
      await target.delete(["gone/soon"]);
      await expectCode('get("gone/soon") after delete', () => target.get("gone/soon"), "NOT_FOUND");
      await expectCode('head("gone/soon") after delete', () => target.head("gone/soon"), "NOT_FOUND");
      equal(await keysOf(target, ""), [], "keys after delete");
    });
  },

  list(suite) {
    suite.test("orders keys by their UTF-8 bytes (case, unicode, separators)", async (target) => {
      const keys = [
        "b",
        "B",
        "Z",
        "a-b",
        "a.b",
        "a/b",
        "a0",
        "a b",
        "a!",
        "ab/c",
        "é",
        "ä/x",
        "日本",
        "\uFF5E", // U+FF5E sorts before U+1F600 in UTF-8, after it in UTF-16
        "😀",
        "😃/a",
        "~",
        "_",
      ];
      await putAll(target, keys);
      const expected = sortByBytes(keys);
      check(
        JSON.stringify(expected) !== JSON.stringify([...keys].sort()),
        "self-check: byte order must differ from JS string order here",
      );
      equal(await keysOf(target, ""), expected, 'list("") order');
    });

    suite.test("a prefix is a plain string prefix, not a directory", async (target) => {
      const keys = ["p/a/1", "p/a/2", "p/a-x", "p/ab", "p/b/1", "p/a/1x", "q/1", "pq"];
      await putAll(target, keys);
      const cases: [string, string[]][] = [
        ["", sortByBytes(keys)],
        ["p", ["p/a-x", "p/a/1", "p/a/1x", "p/a/2", "p/ab", "p/b/1", "pq"]],
        ["p/", ["p/a-x", "p/a/1", "p/a/1x", "p/a/2", "p/ab", "p/b/1"]],
        ["p/a", ["p/a-x", "p/a/1", "p/a/1x", "p/a/2", "p/ab"]],
        ["p/a/", ["p/a/1", "p/a/1x", "p/a/2"]],
        ["p/a/1", ["p/a/1", "p/a/1x"]],
        ["p/a/1x", ["p/a/1x"]],
        ["p/a/1/", []],
        ["p/a/3", []],
        ["p/c", []],
        ["zzz", []],
        ["q/", ["q/1"]],
      ];
      for (const [prefix, expected] of cases) {
        equal(await keysOf(target, prefix), expected, `list(${JSON.stringify(prefix)})`);
      }
    });

    suite.test("startAfter lists only keys strictly after it, in byte order", async (target) => {
      const keys = ["a/1", "a/2", "a/3", "b", "c/x/y", "\uFF5E", "😀"];
      await putAll(target, keys);
      const sorted = sortByBytes(keys);
      for (const after of [...keys, "", "a", "a/", "a/15", "b0", "c/", "c/x/y0", "\uFFFF", "😀😀"]) {
        const expected = sorted.filter((key) => byteCompare(key, after) > 0);
        equal(
          await keysOf(target, "", { startAfter: after }),
          expected,
          `list("", { startAfter: ${JSON.stringify(after)} })`,
        );
      }
    });

    suite.test("prefix and startAfter combine", async (target) => {
      await putAll(target, ["x/1", "x/2", "x/3/a", "x/3/b", "x4", "y/1"]);
      equal(await keysOf(target, "x/", { startAfter: "x/2" }), ["x/3/a", "x/3/b"], 'list("x/", { startAfter: "x/2" })');
      equal(
        await keysOf(target, "x/3/", { startAfter: "x/1" }),
        ["x/3/a", "x/3/b"],
        'list("x/3/", { startAfter: "x/1" })',
      );
      equal(await keysOf(target, "x/", { startAfter: "x/3/a" }), ["x/3/b"], 'list("x/", { startAfter: "x/3/a" })');
      equal(await keysOf(target, "x", { startAfter: "y" }), [], 'list("x", { startAfter: "y" })');
    });

    suite.test("reports each object's size and a lastModified date", async (target) => {
      await target.put("s/one", patterned(1, 1));
      await target.put("s/big", patterned(12_345, 2));
      await target.put("s/zero", new Uint8Array(0));
      const infos = await collect(target.list("s/"));
      equal(
        infos.map((info) => [info.key, info.size]),
        [
          ["s/big", 12_345],
          ["s/one", 1],
          ["s/zero", 0],
        ],
        'list("s/") keys and sizes',
      );
      for (const info of infos) check(isValidDate(info.lastModified), `${info.key}: lastModified must be a valid Date`);
    });
  },

  "list-many"(suite) {
    suite.test(
      "lists more keys than one page, in order, each exactly once",
      async (target) => {
        const keys = manyKeys(suite.manyKeys);
        await forEachLimit(keys, 16, (key) => target.put(key, utf8(key)).then(() => undefined));
        const sorted = sortByBytes(keys);
        const listed = await keysOf(target, "");
        equal(listed.length, keys.length, 'number of keys from list("")');
        for (let i = 1; i < listed.length; i++) {
          check(
            byteCompare(listed[i - 1]!, listed[i]!) < 0,
            `list("") is not strictly ascending at position ${i}: ${JSON.stringify(listed[i - 1])} then ${JSON.stringify(listed[i])}`,
          );
        }
        equal(listed, sorted, 'list("") keys');
        const cut = sorted[Math.min(999, sorted.length - 2)]!;
        equal(
          await keysOf(target, "", { startAfter: cut }),
          sorted.slice(sorted.indexOf(cut) + 1),
          "list after a page boundary",
        );
        const sub = sorted.filter((key) => key.startsWith("many/d3/"));
        equal(await keysOf(target, "many/d3/"), sub, 'list("many/d3/")');
      },
      true,
    );
  },

  delete(suite) {
    suite.test("deleting missing keys, no keys and repeated keys succeeds", async (target) => {
      await target.put("keep", patterned(3, 1));
      await target.delete([]);
      await target.delete(["never/existed", "also-missing"]);
      await target.put("twice", patterned(3, 2));
      await target.delete(["twice", "twice"]);
      await target.delete(["twice"]);
      await expectCode('get("twice")', () => target.get("twice"), "NOT_FOUND");
      equal(await keysOf(target, ""), ["keep"], "keys after deletes");
    });

    suite.test("deletes only the named keys", async (target) => {
      await putAll(target, ["d/a", "d/ab", "d/a-b", "d/b/c", "e"]);
      await target.delete(["d/a", "d/b/c"]);
      equal(await keysOf(target, ""), ["d/a-b", "d/ab", "e"], "keys after delete");
    });

    suite.test(
      "deletes many keys in one call (more than one 1000-key batch)",
      async (target) => {
        const keys = manyKeys(Math.max(suite.manyKeys, 1001));
        await forEachLimit(keys, 16, (key) => target.put(key, utf8(key)).then(() => undefined));
        await target.put("survivor", patterned(3, 1));
        await target.delete(keys);
        equal(await keysOf(target, ""), ["survivor"], "keys after deleting many");
      },
      true,
    );

    suite.test("a deleted key, and its former directory as a key, can be written again", async (target) => {
      await target.put("x/y/z", patterned(5, 1));
      await target.delete(["x/y/z"]);
      await target.put("x/y/z", patterned(6, 2));
      bytesEqual(await readBody((await target.get("x/y/z")).body), patterned(6, 2), "rewritten x/y/z");
      await target.delete(["x/y/z"]);
      // No key starts with "x/y/" any more, so "x/y" is an ordinary key.
      await target.put("x/y", patterned(7, 3));
      equal(await keysOf(target, ""), ["x/y"], "keys");
    });
  },

  "conditional-create"(suite) {
    suite.test(
      "creates a missing key; a second create fails with PRECONDITION_FAILED and keeps the first body",
      async (target) => {
        const firstBody = patterned(1000, 1);
        await target.put("lease", firstBody, { ifNoneMatch: "*" });
        await expectCode(
          'second put("lease", { ifNoneMatch: "*" })',
          () => target.put("lease", patterned(2000, 2), { ifNoneMatch: "*" }),
          "PRECONDITION_FAILED",
        );
        await expectCode(
          'put("lease", <stream>, { ifNoneMatch: "*" })',
          () => target.put("lease", iterate([patterned(10, 3)]), { ifNoneMatch: "*" }),
          "PRECONDITION_FAILED",
        );
        bytesEqual(await readBody((await target.get("lease")).body), firstBody, "body after failed creates");
        equal(await keysOf(target, ""), ["lease"], "keys");
      },
    );

    suite.test("a create after a delete succeeds, and a plain put still overwrites", async (target) => {
      await target.put("k", patterned(10, 1), { ifNoneMatch: "*" });
      await target.delete(["k"]);
      await target.put("k", patterned(20, 2), { ifNoneMatch: "*" });
      await target.put("k", patterned(30, 3));
      bytesEqual(await readBody((await target.get("k")).body), patterned(30, 3), "body");
    });

    suite.test(
      "concurrent creators: exactly one wins (with conditionalCreate)",
      async (target) => {
        const atomic = target.capabilities.conditionalCreate;
        for (let round = 0; round < 5; round++) {
          const key = `race/${round}`;
          const bodies = Array.from({ length: 8 }, (_, i) => patterned(20_000 + i * 101, i + 1));
          const results = await Promise.allSettled(
            bodies.map((body, i) =>
              target.put(key, i % 2 ? body : iterate(chunk(body, 4096), true), { ifNoneMatch: "*" }),
            ),
          );
          const winners = results.flatMap((result, i) => (result.status === "fulfilled" ? [i] : []));
          for (const result of results) {
            if (result.status === "rejected") {
              const code = (result.reason as { code?: unknown } | undefined)?.code;
              check(
                code === "PRECONDITION_FAILED",
                `a losing creator must fail with PRECONDITION_FAILED, got ${describeError(result.reason)}`,
              );
            }
          }
          check(winners.length >= 1, `${key}: no creator won`);
          if (atomic) check(winners.length === 1, `${key}: ${winners.length} creators won, expected exactly one`);
          const stored = await readBody((await target.get(key)).body);
          check(
            winners.some((i) => sameBytes(stored, bodies[i]!)),
            `${key}: the stored body is not the body of a winning creator (stored ${stored.length} bytes)`,
          );
        }
      },
      true,
    );
  },

  "range-reads"(suite) {
    suite.test("reads ranges: from an offset, offset+length, to the end, the last byte", async (target) => {
      const bytes = patterned(1000, 11);
      await target.put("r", bytes);
      const cases: [number, number | undefined][] = [
        [0, undefined],
        [0, 1],
        [10, undefined],
        [10, 20],
        [500, 500],
        [990, 10],
        [999, undefined],
        [999, 1],
      ];
      for (const [offset, length] of cases) {
        const range = length === undefined ? { offset } : { offset, length };
        const got = await target.get("r", { range });
        equal(got.size, 1000, `get("r", ${JSON.stringify(range)}).size (the whole object's size)`);
        const end = length === undefined ? bytes.length : offset + length;
        bytesEqual(
          await readBody(got.body),
          bytes.subarray(offset, end),
          `get("r", { range: ${JSON.stringify(range)} })`,
        );
      }
    });

    suite.test("a length past the end stops at the end", async (target) => {
      const bytes = patterned(300, 5);
      await target.put("r", bytes);
      const got = await target.get("r", { range: { offset: 250, length: 1000 } });
      bytesEqual(await readBody(got.body), bytes.subarray(250), "range past the end");
    });
  },

  "large-object"(suite) {
    suite.test(
      "streams an object larger than memory buffers in and out unchanged",
      async (target) => {
        const total = suite.largeObjectBytes;
        const seed = 0x5eed;
        const upload = createHash("sha256");
        const info = await target.put("large/object.bin", pseudoRandomBody(seed, total, upload));
        const expected = upload.digest("hex");
        equal(info.size, total, "put().size");
        equal((await target.head("large/object.bin")).size, total, "head().size");

        const download = createHash("sha256");
        let received = 0;
        for await (const part of (await target.get("large/object.bin")).body) {
          checkChunk(part);
          download.update(part);
          received += part.byteLength;
        }
        equal(received, total, "bytes read back");
        equal(download.digest("hex"), expected, "sha256 of the bytes read back");

        // A range deep inside, compared with the regenerated stream.
        if (total > 200_000) {
          const offset = total - 150_001;
          const length = 100_000;
          const source = new PseudoRandomBytes(seed);
          source.skip(offset);
          const want = source.take(length);
          const got = await readBody((await target.get("large/object.bin", { range: { offset, length } })).body);
          bytesEqual(got, want, `range { offset: ${offset}, length: ${length} } of the large object`);
        }
      },
      true,
    );
  },

  concurrency(suite) {
    suite.test(
      "concurrent puts to different keys all land intact",
      async (target) => {
        const bodies = Array.from({ length: 24 }, (_, i) => patterned(10_000 + i * 997, i + 1));
        await Promise.all(bodies.map((body, i) => target.put(`many-writers/${i}`, iterate(chunk(body, 1500), true))));
        for (const [i, body] of bodies.entries()) {
          bytesEqual(await readBody((await target.get(`many-writers/${i}`)).body), body, `many-writers/${i}`);
        }
        equal((await keysOf(target, "many-writers/")).length, bodies.length, "number of keys");
      },
      true,
    );

    suite.test(
      "concurrent puts to one key leave one complete body; readers never see a partial one",
      async (target) => {
        // Body w is `length(w)` bytes all equal to w, so any mix or truncation is detectable.
        const writers = 8;
        const length = (w: number) => 150_000 + w * 1_009;
        const bodyOf = (w: number) => new Uint8Array(length(w)).fill(w);
        await target.put("contended", bodyOf(0));
        const valid = (bytes: Uint8Array) => {
          const w = bytes[0];
          return w !== undefined && w <= writers && bytes.length === length(w) && bytes.every((b) => b === w);
        };
        let writing = true;
        const reader = async () => {
          let reads = 0;
          while (writing || reads === 0) {
            const bytes = await readBody((await target.get("contended")).body);
            check(
              valid(bytes),
              `a reader saw a partial or mixed object (${bytes.length} bytes, first byte ${bytes[0]})`,
            );
            reads++;
            // Let the writers run even when the target answers without real I/O.
            await new Promise((resolve) => setImmediate(resolve));
          }
        };
        const readers = Promise.all([reader(), reader()]);
        readers.catch(() => undefined); // awaited below; a failure must not surface as unhandled meanwhile
        try {
          await Promise.all(
            Array.from({ length: writers }, (_, i) =>
              target.put("contended", iterate(chunk(bodyOf(i + 1), 16_384), true)),
            ),
          );
        } finally {
          writing = false;
        }
        await readers;
        const final = await readBody((await target.get("contended")).body);
        check(
          valid(final) && final[0] !== 0,
          `the final object is not one complete writer's body (${final.length} bytes)`,
        );
        equal((await target.head("contended")).size, final.length, "head().size of the final object");
      },
      true,
    );
  },

  "odd-keys"(suite) {
    suite.test("stores keys with unicode, spaces, punctuation and case differences", async (target) => {
      const keys = [
        "with space/file name.txt",
        " leading space",
        "trailing space ",
        "unicode/日本語/ファイル",
        "emoji/😀🎉",
        "nfc/\u00e9", // é precomposed ...
        "nfc/e\u0301", // ... and decomposed: different keys
        "dots/.hidden",
        "dots/..x",
        "dots/x..",
        "dots/...",
        "symbols/!#$&'()*+,;=@[]",
        "symbols/%20%2F%",
        "symbols/a+b",
        "symbols/~tilde",
        'symbols/quote"and<angle>',
        "symbols/question?mark",
        "symbols/colon:key",
        "case/Key",
        "case/key",
        "case/KEY",
        `long/${"x".repeat(200)}`,
        "deep/a/b/c/d/e/f/g/h/i/j/k",
      ];
      for (const key of keys) {
        const info = await target.put(key, utf8(`body of ${key}`));
        equal(info.key, key, `put(${JSON.stringify(key)}).key`);
      }
      for (const key of keys) {
        const got = await target.get(key);
        equal(got.key, key, `get(${JSON.stringify(key)}).key`);
        bytesEqual(await readBody(got.body), utf8(`body of ${key}`), `body of ${JSON.stringify(key)}`);
        equal((await target.head(key)).size, utf8(`body of ${key}`).length, `head(${JSON.stringify(key)}).size`);
        equal(await keysOf(target, key), [key], `list(${JSON.stringify(key)})`);
      }
      equal(await keysOf(target, ""), sortByBytes(keys), 'list("")');
      await target.delete(keys);
      equal(await keysOf(target, ""), [], "keys after deleting them all");
    });
  },

  "invalid-keys"(suite) {
    suite.test("rejects invalid keys with INVALID_KEY on put, get, head and delete", async (target) => {
      const bad = ["", "/abs", "../x", "..", ".", "a/../b", "./a", "a/.", "a//b", "a/", "a\\b", "a\u0000b"];
      for (const key of bad) {
        const name = JSON.stringify(key);
        await expectCode(`put(${name})`, () => target.put(key, patterned(3, 1)), "INVALID_KEY");
        await expectCode(`put(${name}, <stream>)`, () => target.put(key, iterate([patterned(3, 1)])), "INVALID_KEY");
        await expectCode(`get(${name})`, () => target.get(key), "INVALID_KEY");
        await expectCode(`head(${name})`, () => target.head(key), "INVALID_KEY");
        await expectCode(`delete([${name}])`, () => target.delete([key]), "INVALID_KEY");
      }
      equal(await keysOf(target, ""), [], "keys after rejected puts");
    });
  },

  abort(suite) {
    suite.test("an already aborted signal fails with ABORTED and stores nothing", async (target) => {
      const controller = new AbortController();
      controller.abort();
      await expectCode(
        "put with an aborted signal",
        () => target.put("aborted", patterned(100, 1), { signal: controller.signal }),
        "ABORTED",
      );
      await expectCode('get("aborted")', () => target.get("aborted"), "NOT_FOUND");
      equal(await keysOf(target, ""), [], "keys");
    });

    suite.test("aborting mid-stream fails with ABORTED and leaves no object", async (target) => {
      const controller = new AbortController();
      const body = abortingBody(controller, 6, 64 * 1024);
      await expectCode(
        "put aborted mid-stream",
        () => target.put("half", body, { signal: controller.signal }),
        "ABORTED",
      );
      await expectCode('get("half")', () => target.get("half"), "NOT_FOUND");
      equal(await keysOf(target, ""), [], "keys after an aborted put");
    });

    suite.test("aborting mid-stream keeps the previous object intact", async (target) => {
      const old = patterned(70_000, 9);
      await target.put("kept", old);
      const controller = new AbortController();
      await expectCode(
        "overwrite aborted mid-stream",
        () => target.put("kept", abortingBody(controller, 6, 64 * 1024), { signal: controller.signal }),
        "ABORTED",
      );
      bytesEqual(await readBody((await target.get("kept")).body), old, "the previous object");
      equal(await keysOf(target, ""), ["kept"], "keys");
    });

    suite.test("an abort while waiting for a stalled body fails promptly", async (target) => {
      const controller = new AbortController();
      const release = new AbortController();
      async function* stalled(): AsyncGenerator<Uint8Array> {
        yield patterned(1000, 1);
        setTimeout(() => controller.abort(), 20);
        // Stalls far longer than the test allows, unless the test releases it.
        await delay(30_000, release.signal);
        yield patterned(1000, 2);
      }
      const started = Date.now();
      try {
        await expectCode(
          "put aborted during a stall",
          () => target.put("stalled", stalled(), { signal: controller.signal }),
          "ABORTED",
        );
      } finally {
        release.abort();
      }
      const elapsed = Date.now() - started;
      check(elapsed < 10_000, `put took ${elapsed} ms to honour the abort; it must not wait for the body`);
      await expectCode('get("stalled")', () => target.get("stalled"), "NOT_FOUND");
    });
  },

  "object-info"(suite) {
    suite.test("head reports the size and a lastModified near now; get and list agree", async (target) => {
      const before = Date.now();
      await target.put("info/obj", patterned(4321, 1));
      const after = Date.now();
      const head = await target.head("info/obj");
      equal(head.key, "info/obj", "head().key");
      equal(head.size, 4321, "head().size");
      check(isValidDate(head.lastModified), "head().lastModified must be a valid Date");
      const time = head.lastModified.getTime();
      // Servers may round to seconds and clocks may drift a little.
      check(
        time >= before - 120_000 && time <= after + 120_000,
        `head().lastModified ${head.lastModified.toISOString()} is not near the time of the put (${new Date(before).toISOString()})`,
      );
      const got = await target.get("info/obj");
      await readBody(got.body);
      equal(got.size, 4321, "get().size");
      check(
        isValidDate(got.lastModified) && Math.abs(got.lastModified.getTime() - time) < 1000,
        "get().lastModified must match head()",
      );
      const [listed] = await collect(target.list("info/"));
      equal(listed?.size, 4321, "list().size");
      check(
        listed !== undefined &&
          isValidDate(listed.lastModified) &&
          Math.abs(listed.lastModified.getTime() - time) < 1000,
        "list().lastModified must match head()",
      );
    });
  },

  metadata(suite) {
    suite.test("put accepts metadata; with the metadata capability head and get return it", async (target) => {
      const metadata = { purpose: "conformance", "x-count": "42" };
      const body = patterned(64, 1);
      await target.put("meta/obj", body, { metadata });
      const got = await target.get("meta/obj");
      bytesEqual(await readBody(got.body), body, "body stored with metadata");
      if (target.capabilities.metadata) {
        equal(sortedEntries((await target.head("meta/obj")).metadata), sortedEntries(metadata), "head().metadata");
        equal(sortedEntries(got.metadata), sortedEntries(metadata), "get().metadata");
      }
    });
  },

  "content-length"(suite) {
    suite.test("a matching contentLength stores the object", async (target) => {
      const bytes = patterned(10_000, 2);
      await target.put("cl/array", bytes, { contentLength: bytes.length });
      await target.put("cl/stream", iterate(chunk(bytes, 999)), { contentLength: bytes.length });
      bytesEqual(await readBody((await target.get("cl/array")).body), bytes, "cl/array");
      bytesEqual(await readBody((await target.get("cl/stream")).body), bytes, "cl/stream");
    });

    suite.test("a body shorter or longer than contentLength fails and stores nothing", async (target) => {
      const bytes = patterned(10_000, 3);
      const old = patterned(5, 4);
      await target.put("cl/kept", old);
      for (const [what, declared] of [
        ["shorter", bytes.length + 1],
        ["longer", bytes.length - 1],
      ] as const) {
        await expectFailure(`put of a body ${what} than contentLength`, () =>
          target.put("cl/new", iterate(chunk(bytes, 1000)), { contentLength: declared }),
        );
        await expectCode(
          `get("cl/new") after a body ${what} than contentLength`,
          () => target.get("cl/new"),
          "NOT_FOUND",
        );
        await expectFailure(`overwrite with a body ${what} than contentLength`, () =>
          target.put("cl/kept", iterate(chunk(bytes, 1000)), { contentLength: declared }),
        );
        bytesEqual(await readBody((await target.get("cl/kept")).body), old, `cl/kept after a ${what} body`);
      }
    });
  },
};

// ---------------------------------------------------------------------------------------------
// Assertions (plain Errors, so any runner reports them)

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

function equal(actual: unknown, expected: unknown, what: string): void {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${what}: expected ${e}, got ${a}`);
}

function bytesEqual(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (sameBytes(actual, expected)) return;
  let at = 0;
  while (at < actual.length && at < expected.length && actual[at] === expected[at]) at++;
  throw new Error(
    `${what}: expected ${expected.length} bytes, got ${actual.length}; first difference at byte ${at} (expected ${expected[at]}, got ${actual[at]})`,
  );
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

interface CodedError {
  code?: unknown;
  message: string;
}

async function expectFailure(what: string, action: () => unknown): Promise<CodedError> {
  try {
    await action();
  } catch (error) {
    return {
      code: (error as { code?: unknown } | null)?.code,
      message: error instanceof Error ? error.message : String(error),
    };
  }
  throw new Error(`${what}: expected it to fail, but it succeeded`);
}

async function expectCode(what: string, action: () => unknown, code: string): Promise<CodedError> {
  let error: unknown;
  try {
    await action();
  } catch (caught) {
    error = caught;
  }
  if (error === undefined) throw new Error(`${what}: expected an error with code ${code}, but it succeeded`);
  const actual = (error as { code?: unknown } | null)?.code;
  if (actual !== code) throw new Error(`${what}: expected an error with code ${code}, got ${describeError(error)}`);
  return { code: actual, message: error instanceof Error ? error.message : String(error) };
}

function describeError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.name}${code === undefined ? "" : ` (code ${String(code)})`}: ${error.message}`;
  }
  return String(error);
}

function checkChunk(chunk: unknown): asserts chunk is Uint8Array {
  check(chunk instanceof Uint8Array, `a body chunk must be a Uint8Array, got ${typeof chunk}`);
}

function isValidDate(value: unknown): value is Date {
  return Object.prototype.toString.call(value) === "[object Date]" && !Number.isNaN((value as Date).getTime());
}

// ---------------------------------------------------------------------------------------------
// Helpers

async function readBody(body: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const part of body) {
    checkChunk(part);
    parts.push(part);
  }
  return Buffer.concat(parts);
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

async function first<T>(items: AsyncIterable<T>): Promise<T | undefined> {
  for await (const item of items) return item; // leaving the loop closes the iterator
  return undefined;
}

async function keysOf(target: StorageTarget, prefix: string, options?: { startAfter?: string }): Promise<string[]> {
  return (await collect(target.list(prefix, options))).map((info: ObjectInfo) => info.key);
}

async function putAll(target: StorageTarget, keys: readonly string[]): Promise<void> {
  for (const key of keys) await target.put(key, utf8(key));
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8"));
}

function sortByBytes(keys: readonly string[]): string[] {
  return [...keys].sort(byteCompare);
}

function sortedEntries(record: Readonly<Record<string, string>> | undefined): [string, string][] {
  return Object.entries(record ?? {}).sort(([a], [b]) => byteCompare(a, b));
}

function utf8(text: string): Uint8Array {
  return Buffer.from(text, "utf8");
}

/** `length` bytes where byte i is (i * 7 + seed) mod 256: every value appears once per 256 bytes. */
function patterned(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + seed) & 0xff;
  return bytes;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  return Uint8Array.from(Buffer.concat(parts));
}

function chunk(bytes: Uint8Array, size: number): Uint8Array[] {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < bytes.length; i += size) parts.push(bytes.subarray(i, i + size));
  return parts;
}

/** An async iterable of the parts; with `interleave`, yields to the event loop between parts. */
async function* iterate(parts: readonly Uint8Array[], interleave = false): AsyncGenerator<Uint8Array> {
  for (const part of parts) {
    if (interleave) await new Promise((resolve) => setImmediate(resolve));
    yield part;
  }
}

/** Yields `before` chunks, aborts, then keeps yielding (a producer that does not notice). */
async function* abortingBody(controller: AbortController, before: number, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < before; i++) yield patterned(size, i);
  controller.abort(new Error("conformance: aborted mid-stream"));
  for (let i = 0; i < 64; i++) {
    await new Promise((resolve) => setImmediate(resolve));
    yield patterned(size, i);
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}

/** Keys spread over several directories and the top level, numbered without padding. */
function manyKeys(count: number): string[] {
  return Array.from({ length: count }, (_, i) => (i % 3 === 0 ? `many/${i}` : `many/d${i % 7}/${i}`));
}

async function forEachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

const LITTLE_ENDIAN = endianness() === "LE";

/**
 * A deterministic byte stream (mulberry32 words, little-endian), independent of how it is cut
 * into chunks, so a range of it can be regenerated.
 */
class PseudoRandomBytes {
  static readonly BLOCK = 64 * 1024;
  #state: number;
  #block = Buffer.alloc(0);
  #position = 0;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  take(length: number): Buffer {
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      if (this.#position === this.#block.length) this.#refill();
      const n = Math.min(length - filled, this.#block.length - this.#position);
      this.#block.copy(out, filled, this.#position, this.#position + n);
      this.#position += n;
      filled += n;
    }
    return out;
  }

  skip(length: number): void {
    let left = length;
    while (left > 0) {
      if (this.#position === this.#block.length) this.#refill();
      const n = Math.min(left, this.#block.length - this.#position);
      this.#position += n;
      left -= n;
    }
  }

  #refill(): void {
    const words = new Uint32Array(PseudoRandomBytes.BLOCK / 4);
    let a = this.#state;
    for (let i = 0; i < words.length; i++) {
      a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      words[i] = (t ^ (t >>> 14)) >>> 0;
    }
    this.#state = a;
    // Fixed little-endian bytes, whatever the host's endianness.
    if (LITTLE_ENDIAN) {
      this.#block = Buffer.from(words.buffer, 0, PseudoRandomBytes.BLOCK);
    } else {
      const block = Buffer.allocUnsafe(PseudoRandomBytes.BLOCK);
      for (let i = 0; i < words.length; i++) block.writeUInt32LE(words[i]!, i * 4);
      this.#block = block;
    }
    this.#position = 0;
  }
}

/**
 * `total` pseudo-random bytes in chunks of varied size (1 byte to 256 KiB), generated as they are
 * pulled, so the body never exists in memory; each chunk is fed to `hash` on the way.
 */
async function* pseudoRandomBody(
  seed: number,
  total: number,
  hash: { update(data: Uint8Array): unknown },
): AsyncGenerator<Uint8Array> {
  const source = new PseudoRandomBytes(seed);
  let sizes = (seed ^ 0x9e3779b9) >>> 0;
  let sent = 0;
  let n = 0;
  while (sent < total) {
    sizes = (Math.imul(sizes, 1_664_525) + 1_013_904_223) >>> 0;
    const size = n++ % 9 === 8 ? 1 + (sizes % 17) : 1 + (sizes % (256 * 1024));
    const part = source.take(Math.min(size, total - sent));
    hash.update(part);
    sent += part.length;
    yield part;
  }
}
