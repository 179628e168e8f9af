import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type ByteStream, ErrorCodes, LifeboatError, parsePluginOptions } from "@lifeboat/core";
import { createFixtureDatabase } from "@lifeboat/testkit";
import { generateIdentity, identityToRecipient } from "age-encryption";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type AgeCodecOptions, ageCodec, ageCodecPlugin, type NamedCodec } from "./index.js";

const root = mkdtempSync(join(tmpdir(), "lifeboat-codecs-age-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const OBJECT = "app/generations/0001/snapshots/00000000.snap.age";
const PASSPHRASE = "correct horse battery staple 7f3a";

let db: Buffer;
/** Two identities made by age-keygen, and one made by the library (never a recipient). */
const keys = { a: { file: "", secret: "", public: "" }, b: { file: "", secret: "", public: "" }, stranger: "" };
beforeAll(async () => {
  db = readFileSync((await createFixtureDatabase({ path: join(root, "fixture.db"), sizeMB: 2, seed: 4 })).path);
  for (const name of ["a", "b"] as const) {
    const file = join(root, `${name}.key`);
    const made = spawnSync("age-keygen", ["-o", file], { encoding: "utf8" });
    expect(made.status, made.stderr).toBe(0);
    const secret = readFileSync(file, "utf8").match(/AGE-SECRET-KEY-1[0-9A-Z]+/)![0];
    keys[name] = { file, secret, public: spawnSync("age-keygen", ["-y", file], { encoding: "utf8" }).stdout.trim() };
  }
  keys.stranger = await generateIdentity();
});

async function collect(stream: ByteStream): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return Buffer.concat(parts);
}

async function* chunks(data: Uint8Array, size = 64 * 1024): ByteStream {
  for (let offset = 0; offset < data.byteLength; offset += size) yield data.subarray(offset, offset + size);
}

function codec(options: AgeCodecOptions, env: Record<string, string> = {}): NamedCodec {
  return ageCodec(options, { baseDir: root, env });
}

async function decodeError(decoder: NamedCodec, data: Uint8Array, name: string | undefined = OBJECT) {
  try {
    await collect(decoder.decode(chunks(data, 10_000), name));
  } catch (error) {
    expect(error).toBeInstanceOf(LifeboatError);
    return error as LifeboatError;
  }
  throw new Error("decode did not fail");
}

/** Everything about an error a user or a log could see. */
function visible(error: LifeboatError): string {
  return JSON.stringify({ ...error.toJSON(), cause: error.cause === undefined ? undefined : String(error.cause) });
}

/** Runs the age CLI under a pseudo-terminal (it reads passphrases only from a terminal). */
function ageWithTerminal(args: string[], typed: string): { status: number | null; output: string } {
  const command = ["age", ...args].map((arg) => `'${arg}'`).join(" ");
  const run = spawnSync("script", ["-qec", command, "/dev/null"], { input: typed, encoding: "utf8", timeout: 60_000 });
  return { status: run.status, output: run.stdout + run.stderr };
}

const sizes = [0, 1, 65_535, 65_536, 65_537, 2 * 65_536, 300_000];

describe("age codec: recipients", () => {
  it("encrypts to several recipients; each identity alone decrypts; the spec holds only public keys", async () => {
    writeFileSync(join(root, "recipients.txt"), `# backup keys\n${keys.b.public}\n\n`);
    const encoder = codec({ recipients: [keys.a.public], recipientsFile: "recipients.txt" });
    expect(encoder.extension).toBe(".age");
    expect(encoder.spec).toEqual({ type: "age", params: { recipients: [keys.a.public, keys.b.public] } });
    const encoded = await collect(encoder.encode(chunks(db, 3000)));
    expect(encoded.byteLength).toBeGreaterThan(db.byteLength);
    const byFile = codec({ recipients: [keys.a.public], identityFile: keys.a.file });
    expect((await collect(byFile.decode(chunks(encoded, 777)))).equals(db)).toBe(true);
    const byEnv = codec({ identityEnv: "AGE_KEY" }, { AGE_KEY: `# comment\n${keys.b.secret}\n` });
    expect((await collect(byEnv.decode(chunks(encoded)))).equals(db)).toBe(true);
    const spec = JSON.stringify(encoder.spec);
    for (const secret of [keys.a.secret, keys.b.secret]) {
      expect(spec).not.toContain(secret);
      expect(encoded.includes(secret)).toBe(false);
    }
  });

  it.each(sizes)("writes files `age -d` opens and reads files `age -r` wrote (%i bytes)", async (size) => {
    const plain = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) db.copy(plain, i, i % db.byteLength, Math.min(size, i + 4096));
    const ours = join(root, `ours-${size}.age`);
    writeFileSync(ours, await collect(codec({ recipients: [keys.a.public, keys.b.public] }).encode(chunks(plain))));
    for (const key of [keys.a, keys.b]) {
      const opened = spawnSync("age", ["-d", "-i", key.file, ours], { maxBuffer: 64 * 1024 * 1024 });
      expect(opened.status, String(opened.stderr)).toBe(0);
      expect(opened.stdout.equals(plain)).toBe(true);
    }
    const theirs = spawnSync("age", ["-r", keys.a.public, "-r", keys.b.public], { input: plain, maxBuffer: 64 << 20 });
    expect(theirs.status, String(theirs.stderr)).toBe(0);
    const decoded = await collect(codec({ identityFile: keys.b.file }).decode(chunks(theirs.stdout, 5000)));
    expect(decoded.equals(plain)).toBe(true);
  });

  it("reports a tampered payload, nonce or header MAC as CORRUPT_BACKUP naming the object", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.public] }).encode(chunks(db)));
    const decoder = codec({ identityFile: keys.a.file });
    const headerEnd = encoded.indexOf("\n", encoded.indexOf("\n--- ") + 1) + 1;
    const macByte = encoded.indexOf("\n--- ") + 8;
    for (const [what, at] of [
      ["payload, first chunk", headerEnd + 16 + 100],
      ["payload, last chunk", encoded.byteLength - 3],
      ["nonce", headerEnd + 2],
      ["header MAC", macByte],
    ] as const) {
      const tampered = Buffer.from(encoded);
      tampered[at] = tampered[at] === 0x41 ? 0x42 : 0x41;
      const error = await decodeError(decoder, tampered);
      expect(error.code, what).toBe(ErrorCodes.CORRUPT_BACKUP);
      expect(error.message, what).toContain(OBJECT);
      expect(error.hint, what).toBeTruthy();
    }
  });

  it("reports truncation anywhere, even at a chunk boundary, as CORRUPT_BACKUP", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.public] }).encode(chunks(db)));
    const decoder = codec({ identityFile: keys.a.file });
    const headerEnd = encoded.indexOf("\n", encoded.indexOf("\n--- ") + 1) + 1;
    const cuts = [
      0,
      10,
      headerEnd - 5,
      headerEnd,
      headerEnd + 16,
      headerEnd + 16 + 65_552,
      headerEnd + 16 + 3 * 65_552,
    ];
    for (const keep of [...cuts, encoded.byteLength - 1]) {
      const error = await decodeError(decoder, encoded.subarray(0, keep));
      expect(error.code, `kept ${keep} of ${encoded.byteLength}`).toBe(ErrorCodes.CORRUPT_BACKUP);
    }
    const extended = Buffer.concat([encoded, Buffer.from("x")]);
    expect((await decodeError(decoder, extended)).code).toBe(ErrorCodes.CORRUPT_BACKUP);
    const notAge = await decodeError(decoder, Buffer.from("SQLite format 3\0 and more bytes"));
    expect(notAge.code).toBe(ErrorCodes.CORRUPT_BACKUP);
  });

  it("reports a wrong identity as CONFIG_INVALID naming the object and the public keys involved", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.public] }).encode(chunks(db)));
    const decoder = ageCodecPlugin.fromSpec(
      { type: "age", params: { recipients: [keys.a.public] } },
      { identityEnv: "KEY" },
      { baseDir: root, databaseName: "app", env: { KEY: keys.stranger } },
    ) as NamedCodec;
    const error = await decodeError(decoder, encoded);
    expect(error.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(error.message).toContain(OBJECT);
    expect(error.message).toContain(keys.a.public);
    expect(error.message).toContain(await identityToRecipient(keys.stranger));
    expect(visible(error)).not.toContain(keys.stranger);
  });

  it("reports a missing identity as CONFIG_INVALID saying where to put it", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.public] }).encode(chunks(db)));
    const noConfig = ageCodecPlugin.fromSpec({ type: "age", params: { recipients: [keys.a.public] } }, undefined, {
      baseDir: root,
      databaseName: "app",
      env: {},
    }) as NamedCodec;
    const none = await decodeError(noConfig, encoded);
    expect(none.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(none.message).toContain(keys.a.public);
    expect(none.hint).toContain("identityFile");
    const unset = await decodeError(codec({ recipients: [keys.a.public], identityEnv: "LIFEBOAT_AGE_KEY" }), encoded);
    expect(unset.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(unset.message).toContain("LIFEBOAT_AGE_KEY");
    const noFile = await decodeError(codec({ identityFile: "missing.key" }), encoded);
    expect(noFile.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(noFile.message).toContain(join(root, "missing.key"));
  });

  it("never quotes a malformed secret key in an error", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.public] }).encode(chunks(db)));
    const broken = `${keys.a.secret.slice(0, -3)}QQQ`;
    const error = await decodeError(codec({ identityEnv: "KEY" }, { KEY: broken }), encoded);
    expect(error.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(visible(error)).not.toContain(broken.slice(16, 40));
    expect(error.cause).toBeUndefined();
  });
});

describe("age codec: passphrase", () => {
  it("round-trips with a passphrase from the environment or a file; the spec holds no secret", async () => {
    writeFileSync(join(root, "pass.txt"), `${PASSPHRASE}\n`);
    const encoder = codec({ passphraseEnv: "PASS", workFactor: 12 }, { PASS: PASSPHRASE });
    expect(encoder.spec).toEqual({ type: "age", params: { passphrase: true, workFactor: 12 } });
    const encoded = await collect(encoder.encode(chunks(db)));
    expect(encoded.includes(PASSPHRASE)).toBe(false);
    const decoded = await collect(codec({ passphraseFile: "pass.txt" }).decode(chunks(encoded)));
    expect(decoded.equals(db)).toBe(true);
  });

  it("interoperates with `age -p` both ways", async () => {
    const plain = db.subarray(0, 200_000);
    const ours = join(root, "ours-pass.age");
    const encoder = codec({ passphraseEnv: "P", workFactor: 15 }, { P: PASSPHRASE });
    writeFileSync(ours, await collect(encoder.encode(chunks(plain))));
    const out = join(root, "ours-pass.out");
    const opened = ageWithTerminal(["-d", "-o", out, ours], `${PASSPHRASE}\n`);
    expect(opened.status, opened.output).toBe(0);
    expect(readFileSync(out).equals(plain)).toBe(true);

    writeFileSync(join(root, "plain.bin"), plain);
    const theirs = join(root, "theirs-pass.age");
    const made = ageWithTerminal(["-p", "-o", theirs, join(root, "plain.bin")], `${PASSPHRASE}\n${PASSPHRASE}\n`);
    expect(made.status, made.output).toBe(0);
    const decoded = await collect(
      codec({ passphraseEnv: "P" }, { P: PASSPHRASE }).decode(chunks(readFileSync(theirs))),
    );
    expect(decoded.equals(plain)).toBe(true);
  });

  it("reports a wrong or missing passphrase as CONFIG_INVALID, without quoting it", async () => {
    const encoded = await collect(codec({ passphraseEnv: "P", workFactor: 10 }, { P: PASSPHRASE }).encode(chunks(db)));
    const wrong = await decodeError(codec({ passphraseEnv: "P" }, { P: "not it" }), encoded);
    expect(wrong.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(wrong.message).toContain("wrong passphrase");
    expect(visible(wrong)).not.toContain("not it");
    const onlyIdentity = await decodeError(codec({ identityFile: keys.a.file }), encoded);
    expect(onlyIdentity.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(onlyIdentity.message).toContain("passphrase");
  });
});

describe("age codec: configuration", () => {
  async function optionsError(options: unknown): Promise<string> {
    const error = await parsePluginOptions(ageCodecPlugin, options, "databases[0].codecs[1]").then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error, JSON.stringify(options)).toBeInstanceOf(LifeboatError);
    expect((error as LifeboatError).code).toBe(ErrorCodes.CONFIG_INVALID);
    return (error as LifeboatError).message;
  }

  it("rejects a secret key where a recipient belongs, without echoing it", async () => {
    const message = await optionsError({ recipients: [keys.a.secret] });
    expect(message).toContain("databases[0].codecs[1].recipients");
    expect(message).not.toContain(keys.a.secret);
    writeFileSync(join(root, "oops.txt"), readFileSync(keys.a.file));
    const fromFile = codec({ recipientsFile: "oops.txt" });
    const error = await collect(fromFile.encode(chunks(db))).catch((e: unknown) => e as LifeboatError);
    expect(error).toBeInstanceOf(LifeboatError);
    expect((error as LifeboatError).code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(visible(error as LifeboatError)).not.toContain(keys.a.secret);
  });

  it("rejects unknown options, recipients with a passphrase, and no key at all", async () => {
    expect(await optionsError({ recipients: [keys.a.public], identity: "x" })).toContain("identity");
    expect(await optionsError({ recipients: [keys.a.public], passphraseEnv: "P" })).toContain("not both");
    expect(await optionsError({})).toContain("recipients");
    expect(await optionsError({ passphraseEnv: "P", workFactor: 30 })).toContain("workFactor");
    const ok = await parsePluginOptions(ageCodecPlugin, { recipients: [keys.a.public] }, "c");
    expect(ok).toEqual({ recipients: [keys.a.public] });
  });

  it("refuses to encrypt with only decryption keys configured", async () => {
    const error = await collect(codec({ identityFile: keys.a.file }).encode(chunks(db))).catch((e: unknown) => e);
    expect((error as LifeboatError).code).toBe(ErrorCodes.CONFIG_INVALID);
  });
});

describe("age codec: keyFromStdin", () => {
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  const index = join(import.meta.dirname, "index.ts");

  /** Decodes `input` in a fresh process whose standard input is `stdin`; prints the decoded size. */
  function decodeInChild(options: AgeCodecOptions, input: string, stdin: string, keyStdin = false) {
    const script = join(root, "stdin-child.mts");
    writeFileSync(
      script,
      `import { readFileSync } from "node:fs";
import { ageCodec, useStdinForKeys } from ${JSON.stringify(index)};
${keyStdin ? "useStdinForKeys();" : ""}
const codec = ageCodec(${JSON.stringify(options)}, { baseDir: ${JSON.stringify(root)}, env: {} });
async function* body() { yield readFileSync(${JSON.stringify(input)}); }
let size = 0;
try {
  for (let round = 0; round < 2; round++) for await (const chunk of codec.decode(body(), "obj")) size += chunk.byteLength;
  console.log(size);
} catch (error) { console.log(error.code, error.message); process.exitCode = 3; }
`,
    );
    return spawnSync(process.execPath, ["--conditions", "source", "--import", tsx, script], {
      input: stdin,
      encoding: "utf8",
      cwd: root,
      timeout: 60_000,
    });
  }

  it("reads the identity (or the passphrase) from standard input once, for every object", async () => {
    const withKey = join(root, "stdin-key.age");
    writeFileSync(withKey, await collect(codec({ recipients: [keys.a.public] }).encode(chunks(db))));
    const byKey = decodeInChild(
      { recipients: [keys.a.public], keyFromStdin: true },
      withKey,
      readFileSync(keys.a.file, "utf8"),
    );
    expect(byKey.stdout.trim(), byKey.stderr).toBe(String(2 * db.byteLength));

    const withPass = join(root, "stdin-pass.age");
    writeFileSync(
      withPass,
      await collect(codec({ passphraseEnv: "P", workFactor: 10 }, { P: PASSPHRASE }).encode(chunks(db))),
    );
    const byPass = decodeInChild({ keyFromStdin: true }, withPass, `${PASSPHRASE}\n`);
    expect(byPass.stdout.trim(), byPass.stderr).toBe(String(2 * db.byteLength));

    const empty = decodeInChild({ recipients: [keys.a.public], keyFromStdin: true }, withKey, "");
    expect(empty.stdout).toContain("CONFIG_INVALID");
    expect(empty.stdout).toContain("standard input");
  });

  it("useStdinForKeys (--key-stdin) adds standard input to a config that has no keyFromStdin", async () => {
    const withKey = join(root, "flag-key.age");
    writeFileSync(withKey, await collect(codec({ recipients: [keys.a.public, keys.b.public] }).encode(chunks(db))));
    const config: AgeCodecOptions = { recipients: [keys.a.public, keys.b.public] };
    // Without the flag the same config has no key: standard input is not read.
    const without = decodeInChild(config, withKey, readFileSync(keys.a.file, "utf8"));
    expect(without.stdout).toContain("CONFIG_INVALID");
    expect(without.stdout).toContain("no age identity is configured");
    const byKey = decodeInChild(config, withKey, readFileSync(keys.a.file, "utf8"), true);
    expect(byKey.stdout.trim(), byKey.stderr).toBe(String(2 * db.byteLength));
    // In addition to the configured identity: a wrong configured key and the right one piped in.
    writeFileSync(join(root, "stranger.key"), `${keys.stranger}\n`);
    const both = decodeInChild(
      { ...config, identityFile: "stranger.key" },
      withKey,
      readFileSync(keys.b.file, "utf8"),
      true,
    );
    expect(both.stdout.trim(), both.stderr).toBe(String(2 * db.byteLength));
    // A passphrase-encrypted object takes standard input as its passphrase.
    const withPass = join(root, "flag-pass.age");
    writeFileSync(
      withPass,
      await collect(codec({ passphraseEnv: "P", workFactor: 10 }, { P: PASSPHRASE }).encode(chunks(db))),
    );
    const byPass = decodeInChild(config, withPass, `${PASSPHRASE}\n`, true);
    expect(byPass.stdout.trim(), byPass.stderr).toBe(String(2 * db.byteLength));
    const empty = decodeInChild(config, withKey, "", true);
    expect(empty.stdout).toContain("CONFIG_INVALID");
    expect(empty.stdout).toContain("(--key-stdin), which was empty");
  });
});
