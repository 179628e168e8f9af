/**
 * Codecs on a realistic database: ratio and throughput of every compression level and encryption
 * codec, then a real Lifeboat backup (core API, sqlite source, local target) with no codecs, with
 * zstd, and with the default chain (zstd + age), interleaved in one run.
 *
 *   node --conditions source --import tsx bench/codecs.ts [--size-mb 1024] [--runs 3] [--db PATH] [--keep]
 *
 * The database file is read once before timing (page cache warm for every peer). Wall time is
 * what a user waits; CPU seconds (user + system of this process, all threads) are less sensitive
 * to a busy machine. Results go to stdout and to bench/results/codecs.md. Work files live in
 * /tmp/lifeboat-bench-codecs-* and are deleted at the end (unless --keep).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { pipeline } from "node:stream/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type ByteStream, type Codec, createLifeboat, decodeChain, encodeChain } from "@lifeboat/core";
import { sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { createFixtureDatabase } from "@lifeboat/testkit";
import {
  ageCodec,
  codecPlugins,
  gzipCodec,
  openpgpCodec,
  ZSTD_DEFAULT_WORKERS,
  zstdCodec,
} from "../packages/codecs/src/index.js";
import { markdownTable, median, mib } from "./lib/stats.js";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    "size-mb": { type: "string", default: "1024" },
    runs: { type: "string", default: "3" },
    db: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const sizeMB = Number(values["size-mb"]);
const runs = Number(values.runs);
if (!(sizeMB > 0) || !(Number.isInteger(runs) && runs > 0)) {
  console.error("usage: codecs.ts [--size-mb N] [--runs N] [--db PATH] [--keep]");
  process.exit(2);
}

const root = mkdtempSync("/tmp/lifeboat-bench-codecs-");
const dbPath = values.db ? resolve(values.db) : join(root, "app.db");
const MB = 1e6;
/** The backup peer that uses the codecs' defaults (zstd level 3, workers as ZSTD_DEFAULT_WORKERS). */
const DEFAULT_CHAIN =
  ZSTD_DEFAULT_WORKERS === 0
    ? "zstd 3 + age"
    : `zstd 3, ${ZSTD_DEFAULT_WORKERS} worker${ZSTD_DEFAULT_WORKERS > 1 ? "s" : ""} + age`;

interface Measured {
  wallMs: number;
  cpuS: number;
}

async function timed(work: () => Promise<void>): Promise<Measured> {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await work();
  const used = process.cpuUsage(cpu);
  return { wallMs: performance.now() - started, cpuS: (used.user + used.system) / 1e6 };
}

function fileStream(path: string): ByteStream {
  return createReadStream(path, { highWaterMark: 1024 * 1024 }) as AsyncIterable<Uint8Array>;
}

async function* hashing(source: ByteStream, hash: ReturnType<typeof createHash>): ByteStream {
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
}

async function sha256(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of fileStream(path)) hash.update(chunk);
  return hash.digest("hex");
}

async function main(): Promise<void> {
  const load = loadavg();
  console.log(`# Lifeboat codecs benchmark, ${sizeMB} MiB database, ${runs} backup runs per peer`);
  console.log(`work directory: ${root}`);
  const fixtureStarted = Date.now();
  if (!values.db) await createFixtureDatabase({ path: dbPath, sizeMB, seed: 1, journalMode: "wal" });
  const size = statSync(dbPath).size;
  console.log(
    `fixture: ${mib(size)} MiB (${(size / MB).toFixed(0)} MB), made in ${((Date.now() - fixtureStarted) / 1000).toFixed(0)} s`,
  );
  const original = await sha256(dbPath); // also warms the page cache

  const keyFile = join(root, "age.key");
  if (spawnSync("age-keygen", ["-o", keyFile]).status !== 0)
    throw new Error("age-keygen failed (apt-get install -y age)");
  const recipient = spawnSync("age-keygen", ["-y", keyFile], { encoding: "utf8" }).stdout.trim();
  const pgpHome = join(root, "gnupg");
  mkdirSync(pgpHome, { mode: 0o700 });
  const gpg = (args: string[]) =>
    spawnSync("gpg", ["--batch", "--yes", "--no-tty", ...args], { env: { ...process.env, GNUPGHOME: pgpHome } });
  let pgp: Codec | undefined;
  if (
    gpg(["--passphrase", "", "--quick-gen-key", "Bench <bench@example.com>", "future-default", "default", "never"])
      .status === 0
  ) {
    writeFileSync(join(root, "pgp.pub"), gpg(["--armor", "--export", "bench@example.com"]).stdout);
    const secret = gpg(["--armor", "--export-secret-keys", "bench@example.com"]).stdout.toString();
    pgp = openpgpCodec({ recipientsFile: "pgp.pub", privateKeyEnv: "K" }, { baseDir: root, env: { K: secret } });
    spawnSync("gpgconf", ["--kill", "gpg-agent"], { env: { ...process.env, GNUPGHOME: pgpHome } });
  }
  const age = ageCodec({ recipients: [recipient], identityFile: keyFile }, { baseDir: root, env: {} });

  // 1. Each codec (or chain) alone on the database file: encode to a file, decode it back, check.
  const chains: Array<[string, Codec[]]> = [
    ["gzip level 1", [gzipCodec({ level: 1 })]],
    ["gzip level 6", [gzipCodec({ level: 6 })]],
    ["zstd level 1", [zstdCodec({ level: 1 })]],
    ["zstd level 3", [zstdCodec({ level: 3, workers: 0 })]],
    ["zstd level 3, calling thread", [zstdCodec({ level: 3, workers: 0, thread: false })]],
    ["zstd level 9", [zstdCodec({ level: 9 })]],
    ["zstd level 3, 1 worker thread", [zstdCodec({ level: 3, workers: 1 })]],
    ["zstd level 3, 2 worker threads", [zstdCodec({ level: 3, workers: 2 })]],
    ["age", [age]],
    ...(pgp ? ([["openpgp", [pgp]]] as Array<[string, Codec[]]>) : []),
    [`${DEFAULT_CHAIN} (default chain)`, [zstdCodec({ level: 3 }), age]],
  ];
  const codecRows: string[][] = [];
  let gzip6Bytes = 0;
  for (const [name, codecs] of chains) {
    const out = join(root, "encoded");
    const encode = await timed(() => pipeline(encodeChain(codecs, fileStream(dbPath)), createWriteStream(out)));
    const stored = statSync(out).size;
    const hash = createHash("sha256");
    const decode = await timed(async () => {
      for await (const _ of hashing(decodeChain(codecs, fileStream(out)), hash));
    });
    if (hash.digest("hex") !== original) throw new Error(`${name}: the round trip changed the data`);
    rmSync(out);
    if (name === "gzip level 6") gzip6Bytes = stored;
    const row = [
      name,
      mib(stored),
      (size / stored).toFixed(3),
      (size / MB / (encode.wallMs / 1000)).toFixed(0),
      encode.cpuS.toFixed(1),
      (size / MB / (decode.wallMs / 1000)).toFixed(0),
    ];
    codecRows.push(row);
    console.log(row.join("\t"));
  }

  // 2. Real backups through core: no codecs vs zstd vs the default chain, interleaved.
  const ageEntry = { type: "age", recipients: [recipient] };
  const peers: Array<[string, Array<Record<string, unknown>>]> = [
    ["no codecs", []],
    ["zstd 3 + age", [{ type: "zstd", level: 3, workers: 0 }, ageEntry]],
    ["zstd 3, calling thread + age", [{ type: "zstd", level: 3, workers: 0, thread: false }, ageEntry]],
    ["zstd 3, 2 workers + age", [{ type: "zstd", level: 3, workers: 2 }, ageEntry]],
  ];
  const samples = new Map<string, { wall: number[]; cpu: number[]; stored: number }>();
  for (let run = 0; run < runs; run++) {
    for (const [name, codecs] of peers) {
      const target = join(root, `backup-${run}-${samples.size}-${name.replace(/\W+/g, "-")}`);
      const lifeboat = createLifeboat({
        config: { databases: [{ name: "app", path: dbPath, targets: [{ type: "local", path: target }], codecs }] },
        plugins: [sqliteSourcePlugin, localStoragePlugin, ...codecPlugins],
        baseDir: root,
        env: {},
      });
      let stored = 0;
      const measured = await timed(async () => {
        const result = await lifeboat.backup("app");
        stored = result.targets[0]?.storedBytes ?? 0;
      });
      await lifeboat.close();
      rmSync(target, { recursive: true, force: true });
      const entry = samples.get(name) ?? { wall: [], cpu: [], stored };
      entry.wall.push(measured.wallMs);
      entry.cpu.push(measured.cpuS);
      samples.set(name, entry);
      console.log(
        `backup ${run + 1}/${runs} ${name}: ${(measured.wallMs / 1000).toFixed(2)} s, ${measured.cpuS.toFixed(1)} CPU s, ${mib(stored)} MiB`,
      );
    }
  }
  const plain = samples.get("no codecs")!;
  const backupRows = peers.map(([name]) => {
    const s = samples.get(name)!;
    return [
      name,
      (median(s.wall) / 1000).toFixed(2),
      `${(median(s.wall) / median(plain.wall)).toFixed(2)}x`,
      median(s.cpu).toFixed(1),
      `${(median(s.cpu) / median(plain.cpu)).toFixed(2)}x`,
      mib(s.stored),
      gzip6Bytes ? `${(s.stored / gzip6Bytes).toFixed(3)}` : "-",
    ];
  });
  const chain = samples.get(DEFAULT_CHAIN)!;
  const timeRatio = median(chain.wall) / median(plain.wall);
  const cpuRatio = median(chain.cpu) / median(plain.cpu);
  const loadAfter = loadavg();

  const report = [
    `# Codecs benchmark`,
    "",
    `${new Date().toISOString()}; ${mib(size)} MiB ${values.db ? `database ${values.db}` : "fixture database (createFixtureDatabase, seed 1)"}; ${cpus().length} CPUs (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM; Node ${process.version}; load average ${load[0]!.toFixed(1)} before, ${loadAfter[0]!.toFixed(1)} after (the machine is shared: wall times are noisy, CPU seconds less so).`,
    "",
    "## Each codec on the database file",
    "",
    "Encode from the (cached) file to a file, then decode and check the SHA-256. MB/s are decimal megabytes of database per second.",
    "",
    markdownTable(["codec", "stored MiB", "ratio", "encode MB/s", "encode CPU s", "decode MB/s"], codecRows),
    "",
    "## Backups through Lifeboat",
    "",
    `\`lifeboat.backup()\` (sqlite source with its quick integrity check, local target with fsync), ${runs} interleaved runs each, medians. "vs gzip -6" is the stored size over gzip level 6's.`,
    "",
    markdownTable(["codecs", "wall s", "vs none", "CPU s", "vs none", "stored MiB", "vs gzip -6"], backupRows),
    "",
    "## Goals (issue 7)",
    "",
    `- Default chain (${DEFAULT_CHAIN}) time at most 1.5x a plain backup: wall ${timeRatio.toFixed(2)}x, CPU ${cpuRatio.toFixed(2)}x -> ${timeRatio <= 1.5 ? "met" : "NOT met"} (wall).`,
    `- Output no larger than gzip -6: ${gzip6Bytes ? `${(chain.stored / gzip6Bytes).toFixed(3)} of gzip -6 -> ${chain.stored <= gzip6Bytes ? "met" : "NOT met"}` : "gzip -6 not measured"}.`,
    "",
  ].join("\n");
  const resultsDir = join(here, "results");
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, "codecs.md"), report);
  console.log(`\n${report}`);
}

try {
  await main();
} finally {
  if (!values.keep) rmSync(root, { recursive: true, force: true });
}
