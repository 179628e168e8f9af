/**
 * The codecs as core uses them: built from config options by their plugins, chained
 * (compress, then encrypt), recorded as specs in a manifest and rebuilt from those specs to
 * restore; plus the streaming-memory bound and the rule that secrets end up nowhere.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import {
  type ByteStream,
  type Codec,
  type CodecPlugin,
  type CodecSpec,
  decodeChain,
  encodeChain,
  type PluginContext,
  parsePluginOptions,
} from "@lifeboat/core";
import { createFixtureDatabase } from "@lifeboat/testkit";
import { generateIdentity, identityToRecipient } from "age-encryption";
import * as openpgp from "openpgp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecPlugins } from "./index.js";

const root = mkdtempSync(join(tmpdir(), "lifeboat-codecs-chain-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const PASSPHRASE = "chain passphrase 5d1e";
const PGP_PASSPHRASE = "pgp key passphrase 77b0";
let db: Buffer;
let ageSecret: string;
let agePublic: string;
let pgpPublic: string;
let pgpSecret: string;

beforeAll(async () => {
  db = readFileSync((await createFixtureDatabase({ path: join(root, "fixture.db"), sizeMB: 2, seed: 6 })).path);
  ageSecret = await generateIdentity();
  agePublic = await identityToRecipient(ageSecret);
  const pair = await openpgp.generateKey({
    type: "ecc",
    curve: "curve25519Legacy",
    userIDs: [{ name: "Chain", email: "chain@example.com" }],
    passphrase: PGP_PASSPHRASE,
    format: "armored",
  });
  pgpPublic = pair.publicKey;
  pgpSecret = pair.privateKey;
});

const env = (): Record<string, string> => ({
  AGE_KEY: ageSecret,
  AGE_PASS: PASSPHRASE,
  PGP_KEY: pgpSecret,
  PGP_PASS: PGP_PASSPHRASE,
});
const context = (): PluginContext => ({ baseDir: root, databaseName: "app", env: env() });

/** `codecs:` entries of lifeboat.yml, by the name used in test titles. */
const entries: Record<string, Record<string, unknown> | undefined> = {
  none: undefined,
  gzip: { type: "gzip", level: 6 },
  zstd: { type: "zstd" },
  age: { type: "age", recipients: ["AGE_PUBLIC"], identityEnv: "AGE_KEY" },
  "age passphrase": { type: "age", passphraseEnv: "AGE_PASS", workFactor: 10 },
  openpgp: { type: "openpgp", recipients: ["PGP_PUBLIC"], privateKeyEnv: "PGP_KEY", passphraseEnv: "PGP_PASS" },
};

function entry(name: string): Record<string, unknown> | undefined {
  const raw = entries[name];
  if (!raw) return undefined;
  return JSON.parse(
    JSON.stringify(raw).replace("AGE_PUBLIC", agePublic).replace("PGP_PUBLIC", JSON.stringify(pgpPublic).slice(1, -1)),
  );
}

function pluginFor(type: string): CodecPlugin<unknown> {
  const plugin = codecPlugins.find((p) => p.name === type);
  if (!plugin) throw new Error(`no plugin ${type}`);
  return plugin as CodecPlugin<unknown>;
}

/** What core's Lifeboat does with a database's `codecs:` list. */
async function buildChain(names: string[]): Promise<{ codecs: Codec[]; options: Map<string, unknown> }> {
  const codecs: Codec[] = [];
  const options = new Map<string, unknown>();
  for (const [i, name] of names.entries()) {
    const { type, ...rest } = entry(name) as { type: string };
    const plugin = pluginFor(type);
    const parsed = await parsePluginOptions(plugin, rest, `databases[0].codecs[${i}]`);
    options.set(type, parsed);
    codecs.push(plugin.create(parsed, context()));
  }
  return { codecs, options };
}

async function collect(stream: ByteStream): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const chunk of stream) parts.push(chunk);
  return Buffer.concat(parts);
}

async function* chunks(data: Uint8Array, size = 64 * 1024): ByteStream {
  for (let offset = 0; offset < data.byteLength; offset += size) yield data.subarray(offset, offset + size);
}

const combinations = ["none", "gzip", "zstd"].flatMap((compress) =>
  ["none", "age", "age passphrase", "openpgp"].map((encrypt) => [compress, encrypt] as const),
);

describe("codec chains", () => {
  it.each(combinations)("%s then %s: round-trips, and restores from the recorded specs", async (compress, encrypt) => {
    const names = [compress, encrypt].filter((n) => n !== "none");
    const { codecs, options } = await buildChain(names);
    const extensions = codecs.map((c) => c.extension).join("");
    expect(extensions).toBe(
      names
        .map((n) => ({ gzip: ".gz", zstd: ".zst", age: ".age", "age passphrase": ".age", openpgp: ".gpg" })[n])
        .join(""),
    );
    const stored = await collect(encodeChain(codecs, chunks(db, 12_345)));
    if (names.length > 0) expect(stored.equals(db)).toBe(false);
    if (compress !== "none") expect(stored.byteLength).toBeLessThan(db.byteLength * 0.8);
    // The manifest records the specs as JSON; restore rebuilds decoders from them and the config.
    const specs = JSON.parse(JSON.stringify(codecs.map((c) => c.spec))) as CodecSpec[];
    const decoders = specs.map((spec) => pluginFor(spec.type).fromSpec(spec, options.get(spec.type), context()));
    expect((await collect(decodeChain(decoders, chunks(stored, 9999)))).equals(db)).toBe(true);
    // Segments are decoded with the configured codecs themselves.
    expect((await collect(decodeChain(codecs, chunks(stored)))).equals(db)).toBe(true);
    const recorded = JSON.stringify(specs);
    for (const secret of Object.values(env())) expect(recorded).not.toContain(secret);
  });

  it("encode can run once per target on the same codec (core fans a backup out to every target)", async () => {
    const { codecs } = await buildChain(["zstd", "age"]);
    const [one, two] = await Promise.all([
      collect(encodeChain(codecs, chunks(db))),
      collect(encodeChain(codecs, chunks(db))),
    ]);
    expect(one.equals(two)).toBe(false); // a fresh file key and nonce per object
    for (const stored of [one, two]) expect((await collect(decodeChain(codecs, chunks(stored)))).equals(db)).toBe(true);
  });
});

describe("streaming memory", () => {
  const MiB = 1024 * 1024;

  /** `total` bytes of database pages (with a changing byte per page) and runs of zero pages. */
  async function* pages(total: number): ByteStream {
    let sent = 0;
    let round = 0;
    while (sent < total) {
      const chunk = Buffer.from(db.subarray(0, Math.min(MiB, total - sent)));
      for (let at = 100; at < chunk.byteLength; at += 4096) chunk[at] = round & 0xff;
      if (round % 4 === 3) chunk.fill(0);
      round++;
      sent += chunk.byteLength;
      yield chunk;
    }
  }

  async function measure(names: string[], total: number) {
    const { codecs } = await buildChain(names);
    const inHash = createHash("sha256");
    const outHash = createHash("sha256");
    async function* hashed(): ByteStream {
      for await (const chunk of pages(total)) {
        inHash.update(chunk);
        yield chunk;
      }
    }
    let seen = 0;
    let baseline = 0;
    let peak = 0;
    for await (const chunk of decodeChain(codecs, encodeChain(codecs, hashed()))) {
      outHash.update(chunk);
      seen += chunk.byteLength;
      const rss = process.memoryUsage().rss;
      // Measure from a warmed-up state: libraries and first buffers allocated.
      if (baseline === 0 && seen >= 32 * MiB) baseline = rss;
      if (baseline > 0) peak = Math.max(peak, rss);
    }
    expect(seen).toBe(total);
    expect(outHash.digest("hex")).toBe(inHash.digest("hex"));
    const growth = (peak - baseline) / MiB;
    console.info(`${names.join(" + ")}: ${total / MiB} MiB, RSS growth ${growth.toFixed(1)} MiB`);
    return growth;
  }

  it("zstd + age: 300 MiB through encode and decode with bounded RSS growth", async () => {
    const growth = await measure(["zstd", "age"], 300 * MiB);
    expect(growth).toBeLessThan(64);
  });

  it("zstd + openpgp: 128 MiB through encode and decode with bounded RSS growth", async () => {
    const growth = await measure(["zstd", "openpgp"], 128 * MiB);
    expect(growth).toBeLessThan(64);
  });
});

describe("secrets", () => {
  it("never reach a file: a process that encrypts and decrypts leaves no trace outside its output", async () => {
    const sandbox = join(root, "sandbox");
    for (const dir of ["tmp", "home", "cwd", "out"]) mkdirSync(join(sandbox, dir), { recursive: true });
    const script = join(sandbox, "child.mts");
    writeFileSync(
      script,
      `import { writeFileSync } from "node:fs";
import { ageCodec, openpgpCodec, zstdCodec } from ${JSON.stringify(join(import.meta.dirname, "index.ts"))};
const context = { baseDir: process.cwd(), env: process.env };
const chains = {
  age: [zstdCodec(), ageCodec({ recipients: [${JSON.stringify(agePublic)}], identityEnv: "AGE_KEY" }, context)],
  pass: [ageCodec({ passphraseEnv: "AGE_PASS", workFactor: 10 }, context)],
  pgp: [openpgpCodec({ recipients: [process.env.PGP_PUBLIC], privateKeyEnv: "PGP_KEY", passphraseEnv: "PGP_PASS" }, context)],
};
const encodeChain = (codecs, input) => codecs.reduce((s, c) => c.encode(s), input);
const decodeChain = (codecs, input) => codecs.reduceRight((s, c) => c.decode(s), input);
async function* data() { yield Buffer.from("payload ".repeat(50000)); }
for (const [name, codecs] of Object.entries(chains)) {
  const parts = [];
  for await (const c of encodeChain(codecs, data())) parts.push(c);
  writeFileSync(${JSON.stringify(join(sandbox, "out"))} + "/" + name, Buffer.concat(parts));
  let size = 0;
  async function* stored() { yield Buffer.concat(parts); }
  for await (const c of decodeChain(codecs, stored())) size += c.length;
  console.log(name, size, JSON.stringify(codecs.map((c) => c.spec)));
}
`,
    );
    const tsx = pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
    const run = spawnSync(process.execPath, ["--conditions", "source", "--import", tsx, script], {
      cwd: join(sandbox, "cwd"),
      env: {
        PATH: process.env.PATH,
        TMPDIR: join(sandbox, "tmp"),
        TSX_DISABLE_CACHE: "1", // tsx would cache compiled sources in TMPDIR
        HOME: join(sandbox, "home"),
        ...env(),
        PGP_PUBLIC: pgpPublic,
      },
      encoding: "utf8",
      timeout: 120_000,
    });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.split("\n").filter((l) => l.endsWith("]")).length).toBe(3);
    for (const line of run.stdout.trim().split("\n")) expect(line.split(" ")[1]).toBe("400000");
    const files = (dir: string): string[] =>
      readdirSync(dir).flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
    expect(files(join(sandbox, "tmp"))).toEqual([]);
    expect(files(join(sandbox, "home"))).toEqual([]);
    expect(files(join(sandbox, "cwd"))).toEqual([]);
    const secrets = [ageSecret, PASSPHRASE, PGP_PASSPHRASE, pgpSecret.split("\n").slice(3, 6).join("\n")];
    for (const file of [...files(join(sandbox, "out")), script]) {
      const content = readFileSync(file);
      for (const secret of secrets) expect(content.includes(secret), `${file} holds a secret`).toBe(false);
    }
    for (const secret of secrets) expect(run.stdout + run.stderr).not.toContain(secret);
  });
});
