import { spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { type ByteStream, ErrorCodes, LifeboatError, parsePluginOptions } from "@lifeboat/core";
import { createFixtureDatabase } from "@lifeboat/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NamedCodec, type OpenpgpCodecOptions, openpgpCodec, openpgpCodecPlugin } from "./index.js";

const root = mkdtempSync(join(tmpdir(), "lifeboat-codecs-pgp-"));
const home = join(root, "gnupg");
const OBJECT = "app/generations/0001/wal/00000001-00000009.seg.gpg";
const PASS_B = "b-passphrase 91c2";

let db: Buffer;
interface TestKey {
  email: string;
  fingerprint: string;
  publicFile: string;
  publicArmor: string;
  secretArmor: string;
}
const keys: Record<"a" | "b" | "c", TestKey> = {} as Record<"a" | "b" | "c", TestKey>;

function gpg(args: string[], input?: string | Buffer) {
  const run = spawnSync("gpg", ["--batch", "--yes", "--no-tty", ...args], {
    env: { ...process.env, GNUPGHOME: home },
    input,
    maxBuffer: 64 * 1024 * 1024,
    timeout: 60_000,
  });
  if (run.status !== 0) throw new Error(`gpg ${args.join(" ")} failed: ${String(run.stderr)}`);
  return run.stdout;
}

beforeAll(async () => {
  mkdirSync(home);
  chmodSync(home, 0o700);
  db = readFileSync((await createFixtureDatabase({ path: join(root, "fixture.db"), sizeMB: 2, seed: 5 })).path);
  // a: no passphrase; b: protected by PASS_B; c: never a recipient.
  for (const [name, passphrase] of [
    ["a", ""],
    ["b", PASS_B],
    ["c", ""],
  ] as const) {
    const email = `${name}@example.com`;
    gpg([
      "--pinentry-mode",
      "loopback",
      "--passphrase",
      passphrase,
      "--quick-gen-key",
      `Key ${name} <${email}>`,
      "future-default",
      "default",
      "never",
    ]);
    const fingerprint = String(gpg(["--with-colons", "--list-keys", email]))
      .split("\n")
      .find((line) => line.startsWith("fpr:"))!
      .split(":")[9]!;
    const publicArmor = String(gpg(["--armor", "--export", email]));
    const publicFile = join(root, `${name}.pub.asc`);
    writeFileSync(publicFile, publicArmor);
    const secretArmor = String(
      gpg(["--pinentry-mode", "loopback", "--passphrase", passphrase, "--armor", "--export-secret-keys", email]),
    );
    keys[name] = { email, fingerprint, publicFile, publicArmor, secretArmor };
  }
});

afterAll(() => {
  spawnSync("gpgconf", ["--kill", "gpg-agent"], { env: { ...process.env, GNUPGHOME: home } });
  rmSync(root, { recursive: true, force: true });
});

async function collect(stream: ByteStream): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return Buffer.concat(parts);
}

async function* chunks(data: Uint8Array, size = 64 * 1024): ByteStream {
  for (let offset = 0; offset < data.byteLength; offset += size) yield data.subarray(offset, offset + size);
}

function codec(options: OpenpgpCodecOptions, env: Record<string, string> = {}): NamedCodec {
  return openpgpCodec(options, { baseDir: root, env });
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

function visible(error: LifeboatError): string {
  return JSON.stringify({ ...error.toJSON(), cause: error.cause === undefined ? undefined : String(error.cause) });
}

describe("openpgp codec", () => {
  it("encrypts to several keys; each private key decrypts; the spec records gpg's fingerprints", async () => {
    const encoder = codec({ recipients: [keys.a.publicArmor], recipientsFile: keys.b.publicFile });
    expect(encoder.extension).toBe(".gpg");
    expect(encoder.spec).toEqual({ type: "openpgp", params: { recipients: [keys.a.fingerprint, keys.b.fingerprint] } });
    const encoded = await collect(encoder.encode(chunks(db, 5000)));
    const byEnv = codec({ privateKeyEnv: "PGP_KEY" }, { PGP_KEY: keys.a.secretArmor });
    expect((await collect(byEnv.decode(chunks(encoded, 3333)))).equals(db)).toBe(true);
    writeFileSync(join(root, "b.sec.asc"), keys.b.secretArmor);
    const byFile = codec({ privateKeyFile: "b.sec.asc", passphraseEnv: "PGP_PASS" }, { PGP_PASS: PASS_B });
    expect((await collect(byFile.decode(chunks(encoded)))).equals(db)).toBe(true);
    const spec = JSON.stringify(encoder.spec);
    expect(spec).not.toContain("PRIVATE");
    expect(spec).not.toContain(PASS_B);
  });

  it.each([
    ["empty", 0],
    ["1 byte", 1],
    ["300,000 bytes", 300_000],
    ["the fixture database", -1],
  ])("writes messages gpg decrypts and reads messages gpg wrote (%s)", async (_label, size) => {
    const plain = size < 0 ? db : db.subarray(0, size);
    const ours = join(root, `ours-${size}.gpg`);
    writeFileSync(
      ours,
      await collect(codec({ recipientsFile: [keys.a.publicFile, keys.b.publicFile] }).encode(chunks(plain))),
    );
    expect(gpg(["--decrypt", ours]).equals(plain)).toBe(true);

    writeFileSync(join(root, "plain.bin"), plain);
    const theirs = gpg([
      "--trust-model",
      "always",
      "-r",
      keys.a.email,
      "-r",
      keys.b.email,
      "--output",
      "-",
      "--encrypt",
      join(root, "plain.bin"),
    ]);
    const decoder = codec({ privateKeyEnv: "K", passphraseEnv: "P" }, { K: keys.b.secretArmor, P: PASS_B });
    expect((await collect(decoder.decode(chunks(theirs, 4096)))).equals(plain)).toBe(true);
  });

  it("reports tampered or truncated messages as CORRUPT_BACKUP naming the object", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.publicArmor] }).encode(chunks(db)));
    const decoder = codec({ privateKeyEnv: "K" }, { K: keys.a.secretArmor });
    for (const at of [Math.floor(encoded.byteLength / 2), encoded.byteLength - 5]) {
      const tampered = Buffer.from(encoded);
      tampered[at]! ^= 0x01;
      const error = await decodeError(decoder, tampered);
      expect(error.code, `flipped byte ${at}`).toBe(ErrorCodes.CORRUPT_BACKUP);
      expect(error.message).toContain(OBJECT);
    }
    for (const keep of [0, 40, Math.floor(encoded.byteLength / 2), encoded.byteLength - 1]) {
      const error = await decodeError(decoder, encoded.subarray(0, keep));
      expect(error.code, `kept ${keep} of ${encoded.byteLength}`).toBe(ErrorCodes.CORRUPT_BACKUP);
    }
  });

  it("reports a wrong, missing or locked private key as CONFIG_INVALID without quoting secrets", async () => {
    const encoded = await collect(codec({ recipients: [keys.a.publicArmor] }).encode(chunks(db)));
    const wrong = await decodeError(codec({ privateKeyEnv: "K" }, { K: keys.c.secretArmor }), encoded);
    expect(wrong.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(wrong.message).toContain(OBJECT);
    expect(wrong.message).toContain(keys.c.fingerprint);
    expect(visible(wrong)).not.toContain("PRIVATE KEY");

    const none = openpgpCodecPlugin.fromSpec(
      { type: "openpgp", params: { recipients: [keys.a.fingerprint] } },
      undefined,
      { baseDir: root, databaseName: "app", env: {} },
    ) as NamedCodec;
    const missing = await decodeError(none, encoded);
    expect(missing.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(missing.message).toContain(keys.a.fingerprint);
    expect(missing.hint).toContain("privateKeyFile");

    const toB = await collect(codec({ recipientsFile: keys.b.publicFile }).encode(chunks(db)));
    const locked = await decodeError(codec({ privateKeyEnv: "K" }, { K: keys.b.secretArmor }), toB);
    expect(locked.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(locked.message).toContain("passphrase");
    const badPass = await decodeError(
      codec({ privateKeyEnv: "K", passphraseEnv: "P" }, { K: keys.b.secretArmor, P: "guess-123" }),
      toB,
    );
    expect(badPass.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(visible(badPass)).not.toContain("guess-123");
    const unset = await decodeError(codec({ privateKeyEnv: "LIFEBOAT_PGP_KEY" }), toB);
    expect(unset.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(unset.message).toContain("LIFEBOAT_PGP_KEY");
  });

  it("keeps private keys out of the config and the recipients", async () => {
    const error = await parsePluginOptions(openpgpCodecPlugin, { recipients: [keys.a.secretArmor] }, "codecs[1]").catch(
      (e: unknown) => e as LifeboatError,
    );
    expect(error).toBeInstanceOf(LifeboatError);
    expect((error as LifeboatError).code).toBe(ErrorCodes.CONFIG_INVALID);
    expect((error as LifeboatError).message).toContain("codecs[1].recipients");
    expect((error as LifeboatError).message).not.toContain(keys.a.secretArmor.slice(100, 160));
    writeFileSync(join(root, "oops.asc"), keys.a.secretArmor);
    const fromFile = await collect(codec({ recipientsFile: "oops.asc" }).encode(chunks(db))).catch(
      (e: unknown) => e as LifeboatError,
    );
    expect((fromFile as LifeboatError).code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(visible(fromFile as LifeboatError)).not.toContain(keys.a.secretArmor.slice(100, 160));
    const empty = await parsePluginOptions(openpgpCodecPlugin, {}, "codecs[1]").catch((e: unknown) => e);
    expect((empty as LifeboatError).code).toBe(ErrorCodes.CONFIG_INVALID);
  });

  it("reads the private key from standard input once", async () => {
    const encoded = join(root, "stdin.gpg");
    writeFileSync(encoded, await collect(codec({ recipients: [keys.a.publicArmor] }).encode(chunks(db))));
    const script = join(root, "stdin-child.mts");
    writeFileSync(
      script,
      `import { readFileSync } from "node:fs";
import { openpgpCodec } from ${JSON.stringify(join(import.meta.dirname, "index.ts"))};
const codec = openpgpCodec({ keyFromStdin: true });
async function* body() { yield readFileSync(${JSON.stringify(encoded)}); }
let size = 0;
for (let round = 0; round < 2; round++) for await (const chunk of codec.decode(body(), "obj")) size += chunk.byteLength;
console.log(size);
`,
    );
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
    const run = spawnSync(process.execPath, ["--conditions", "source", "--import", tsx, script], {
      input: keys.a.secretArmor,
      encoding: "utf8",
      cwd: root,
      timeout: 60_000,
    });
    expect(run.stdout.trim(), run.stderr).toBe(String(2 * db.byteLength));
    // --key-stdin (useStdinForKeys) does the same for a codec configured with recipients only.
    writeFileSync(
      script,
      readFileSync(script, "utf8")
        .replace("import { openpgpCodec }", "import { openpgpCodec, useStdinForKeys }")
        .replace(
          "const codec = openpgpCodec({ keyFromStdin: true });",
          `useStdinForKeys();\nconst codec = openpgpCodec({ recipients: [${JSON.stringify(keys.a.publicArmor)}] });`,
        ),
    );
    const flagged = spawnSync(process.execPath, ["--conditions", "source", "--import", tsx, script], {
      input: keys.a.secretArmor,
      encoding: "utf8",
      cwd: root,
      timeout: 60_000,
    });
    expect(flagged.stdout.trim(), flagged.stderr).toBe(String(2 * db.byteLength));
  });
});
