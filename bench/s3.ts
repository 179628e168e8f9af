/**
 * Backup and restore to S3, side by side in one run: Lifeboat's CLI with the @lifeboat/storage-s3
 * target, rclone copying the same database file, and the S3 target alone (s3Storage put/get of the
 * file, no backup logic), all against one radosgw started by @lifeboat/testkit.
 *
 *   node --import tsx bench/s3.ts [--size-mb 1024] [--runs 3] [--warm] [--out bench/results/s3.md]
 *
 * Every measured command is a real process, timed from spawn to exit, with its peak RSS from GNU
 * time. Peers are interleaved within each repetition and the page cache is dropped before every
 * run when permitted. The gateway keeps objects in memory (memstore), so the server is not the
 * bottleneck it would be on disks: the figures compare clients. Needs the built CLI (pnpm build),
 * packages/storage-s3 built (this script builds it when missing), GNU time and rclone (apt).
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, freemem, loadavg, release, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { createFixtureDatabase, startS3Server } from "@lifeboat/testkit";
import { s3Storage } from "../packages/storage-s3/src/index.js";
import { dropCaches, pause, runTimed, type TimedRun } from "./lib/run-timed.js";
import { markdownTable, mbPerS, median, mib } from "./lib/stats.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..");
const CLI = join(repoRoot, "apps/cli/dist/bin.js");
const S3_PACKAGE = join(repoRoot, "packages/storage-s3");
const S3_PLUGIN = join(S3_PACKAGE, "dist/index.js");
const RCLONE = "/usr/bin/rclone";

const { values } = parseArgs({
  options: {
    "size-mb": { type: "string", default: "1024" },
    runs: { type: "string", default: "3" },
    warm: { type: "boolean", default: false },
    out: { type: "string", default: join(here, "results/s3.md") },
  },
});
const sizeMB = Number(values["size-mb"]);
const runs = Number(values.runs);
if (!(sizeMB > 0) || !(Number.isInteger(runs) && runs > 0)) {
  console.error("usage: s3.ts [--size-mb N] [--runs N] [--warm] [--out FILE]");
  process.exit(2);
}

interface Sample {
  readonly wallMs: number;
  readonly maxRssBytes: number;
  readonly cpuS: number;
}

interface Peer {
  readonly name: string;
  /** Runs once (run number `n`); returns its timing. Throws if the result is wrong. */
  run(n: number): Promise<TimedRun>;
}

function prerequisites(): void {
  if (!existsSync(CLI)) fail(`the built CLI (${CLI}) is missing: run \`pnpm build\` in ${repoRoot}.`);
  if (!existsSync("/usr/bin/time")) fail("GNU time is missing: apt-get install -y time.");
  if (!existsSync(RCLONE)) {
    if (process.getuid?.() !== 0) fail("rclone is missing: sudo apt-get install -y rclone.");
    console.log("installing rclone (apt-get)");
    const r = spawnSync(
      "sh",
      ["-c", "apt-get install -y -q rclone || (apt-get update -q && apt-get install -y -q rclone)"],
      {
        stdio: "inherit",
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      },
    );
    if (r.status !== 0 || !existsSync(RCLONE)) fail("installing rclone failed.");
  }
  // The CLI loads the S3 target as a plugin by path (as a third-party plugin would be): it needs JavaScript.
  if (!existsSync(S3_PLUGIN) || statSync(S3_PLUGIN).mtimeMs < statSync(join(S3_PACKAGE, "src/s3-storage.ts")).mtimeMs) {
    console.log("building packages/storage-s3");
    const r = spawnSync("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: S3_PACKAGE, stdio: "inherit" });
    if (r.status !== 0) fail("building packages/storage-s3 failed.");
  }
}

function fail(message: string): never {
  console.error(`s3 bench: ${message}`);
  process.exit(2);
}

function sha256File(path: string): Promise<string> {
  return new Promise((resolvePromise, reject) => {
    const hash = createHash("sha256");
    createReadStream(path)
      .on("data", (chunk) => hash.update(chunk))
      .on("end", () => resolvePromise(hash.digest("hex")))
      .on("error", reject);
  });
}

function version(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: "utf8" });
  return (r.stdout || r.stderr || "").trim().split("\n")[0] ?? "?";
}

async function main(): Promise<void> {
  prerequisites();
  const startedAt = new Date();
  const loadBefore = loadavg();
  const root = mkdtempSync("/tmp/lifeboat-bench-s3-");
  const server = await startS3Server({ memoryBytes: 8 * 1024 ** 3, bucket: "bench" });
  try {
    console.log(`# S3 backup/restore benchmark, ${sizeMB} MiB, ${runs} runs per peer`);
    console.log(`work directory ${root}; radosgw at ${server.endpoint}`);

    const dbPath = join(root, "app.db");
    const fixtureStarted = Date.now();
    const fixture = await createFixtureDatabase({ path: dbPath, sizeMB, seed: 1, journalMode: "wal" });
    const sizeBytes = statSync(dbPath).size;
    const sourceHash = await sha256File(dbPath);
    console.log(
      `fixture: ${fixture.pageCount} pages of ${fixture.pageSize} B = ${mib(sizeBytes)} MiB, generated in ${((Date.now() - fixtureStarted) / 1000).toFixed(0)} s`,
    );

    // rclone (aws-sdk-go) refuses to start when AWS_CA_BUNDLE is set and its transport is its own;
    // the endpoint is plain http on loopback, so no CA bundle is needed by anyone.
    const { AWS_CA_BUNDLE: _unused, ...inherited } = process.env;
    const env = {
      ...inherited,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: "true",
      BENCH_KEY_ID: server.accessKeyId,
      BENCH_SECRET: server.secretAccessKey,
      // rclone's remote "rgw", configured from the environment
      RCLONE_CONFIG_RGW_TYPE: "s3",
      RCLONE_CONFIG_RGW_PROVIDER: "Ceph",
      RCLONE_CONFIG_RGW_ENDPOINT: server.endpoint,
      RCLONE_CONFIG_RGW_ACCESS_KEY_ID: server.accessKeyId,
      RCLONE_CONFIG_RGW_SECRET_ACCESS_KEY: server.secretAccessKey,
      RCLONE_CONFIG_RGW_REGION: server.region,
    };
    const target = (prefix: string) =>
      s3Storage({
        bucket: server.bucket,
        prefix,
        endpoint: server.endpoint,
        forcePathStyle: true,
        accessKeyId: server.accessKeyId,
        secretAccessKey: server.secretAccessKey,
      });
    const removePrefix = async (prefix: string) => {
      const t = target(prefix);
      const keys: string[] = [];
      for await (const info of t.list("")) keys.push(info.key);
      await t.delete(keys);
      await t.close();
    };
    const configFor = (prefix: string): string => {
      const file = join(root, `lifeboat-${prefix.replaceAll("/", "-")}.yml`);
      writeFileSync(
        file,
        [
          "version: 1",
          "databases:",
          `  - path: ${JSON.stringify(dbPath)}`,
          "    name: app",
          "    targets:",
          `      - type: ${JSON.stringify(S3_PLUGIN)}`,
          `        bucket: ${server.bucket}`,
          `        prefix: ${prefix}`,
          `        endpoint: ${JSON.stringify(server.endpoint)}`,
          "        forcePathStyle: true",
          "        accessKeyIdEnv: BENCH_KEY_ID",
          "        secretAccessKeyEnv: BENCH_SECRET",
          "",
        ].join("\n"),
      );
      return file;
    };
    const putScript = join(root, "target-put.mjs");
    const getScript = join(root, "target-get.mjs");
    const targetSetup = `import { s3Storage } from ${JSON.stringify(pathToFileURL(S3_PLUGIN).href)};
      const [file, prefix] = process.argv.slice(2);
      const target = s3Storage({ bucket: ${JSON.stringify(server.bucket)}, prefix, endpoint: ${JSON.stringify(server.endpoint)},
        forcePathStyle: true, accessKeyIdEnv: "BENCH_KEY_ID", secretAccessKeyEnv: "BENCH_SECRET" });`;
    writeFileSync(
      putScript,
      `import { createReadStream, statSync } from "node:fs";
      ${targetSetup}
      await target.put("app.db", createReadStream(file, { highWaterMark: 1024 * 1024 }), { contentLength: statSync(file).size });
      await target.close();`,
    );
    writeFileSync(
      getScript,
      `import { open } from "node:fs/promises";
      ${targetSetup}
      const out = await open(file, "w");
      for await (const chunk of (await target.get("app.db")).body) await out.write(chunk);
      await out.sync(); await out.close(); await target.close();`,
    );

    // Sources for the restore runs (taken once, not timed).
    await runTimed(process.execPath, [CLI, "backup", "--config", configFor("source/lifeboat"), "--json"], { env });
    await runTimed(RCLONE, ["copy", "--s3-no-check-bucket", dbPath, `rgw:${server.bucket}/source/rclone/`], { env });
    await runTimed(process.execPath, [putScript, dbPath, "source/target"], { env });

    const outDir = join(root, "out");
    const freshOut = () => {
      rmSync(outDir, { recursive: true, force: true });
      mkdirSync(outDir);
    };
    const checkCopy = async (file: string) => {
      if ((await sha256File(file)) !== sourceHash) throw new Error(`${file} differs from the database file`);
    };
    const lifeboatJson = (timing: TimedRun) => JSON.parse(timing.stdout) as { ok?: boolean };

    const uploads: Peer[] = [
      {
        name: "lifeboat backup (CLI, s3 target)",
        async run(n) {
          const timing = await runTimed(
            process.execPath,
            [CLI, "backup", "--config", configFor(`up/lifeboat/${n}`), "--json"],
            {
              env,
            },
          );
          if (lifeboatJson(timing).ok !== true) throw new Error(`lifeboat backup failed: ${timing.stdout}`);
          await removePrefix(`up/lifeboat/${n}`);
          return timing;
        },
      },
      {
        name: "rclone copy (upload)",
        async run(n) {
          const timing = await runTimed(
            RCLONE,
            ["copy", "--s3-no-check-bucket", dbPath, `rgw:${server.bucket}/up/rclone/${n}/`],
            { env },
          );
          await removePrefix(`up/rclone/${n}`);
          return timing;
        },
      },
      {
        name: "s3Storage.put of the file (target alone)",
        async run(n) {
          const timing = await runTimed(process.execPath, [putScript, dbPath, `up/target/${n}`], { env });
          await removePrefix(`up/target/${n}`);
          return timing;
        },
      },
    ];
    const downloads: Peer[] = [
      {
        name: "lifeboat restore (CLI, --output, integrity quick)",
        async run() {
          freshOut();
          const file = join(outDir, "restored.db");
          const timing = await runTimed(
            process.execPath,
            [CLI, "restore", "app", "--config", configFor("source/lifeboat"), "--output", file, "--yes", "--json"],
            { env },
          );
          if (statSync(file).size !== sizeBytes) throw new Error("the restored database has the wrong size");
          return timing;
        },
      },
      {
        name: "rclone copy (download) + sync",
        async run() {
          freshOut();
          const timing = await runTimed(
            "sh",
            [
              "-c",
              'rclone copy "$1" "$2" && sync -- "$2/app.db"',
              "sh",
              `rgw:${server.bucket}/source/rclone/app.db`,
              outDir,
            ],
            { env },
          );
          await checkCopy(join(outDir, "app.db"));
          return timing;
        },
      },
      {
        name: "s3Storage.get of the file + fsync (target alone)",
        async run() {
          freshOut();
          const file = join(outDir, "app.db");
          const timing = await runTimed(process.execPath, [getScript, file, "source/target"], { env });
          await checkCopy(file);
          return timing;
        },
      },
    ];

    let cachesDropped = !values.warm;
    const measure = async (peers: Peer[], label: string) => {
      const samples = new Map<string, Sample[]>(peers.map((p) => [p.name, []]));
      for (let n = 1; n <= runs; n++) {
        for (const peer of peers) {
          if (!values.warm) cachesDropped &&= dropCaches();
          await pause(300);
          const timing = await peer.run(n);
          const sample = { wallMs: timing.wallMs, maxRssBytes: timing.maxRssBytes, cpuS: timing.userS + timing.sysS };
          samples.get(peer.name)!.push(sample);
          console.log(
            `  ${label} run ${n}: ${peer.name}: ${(sample.wallMs / 1000).toFixed(2)} s, ${mbPerS(sizeBytes, sample.wallMs)} MB/s, RSS ${mib(sample.maxRssBytes)} MiB`,
          );
        }
      }
      return samples;
    };
    console.log("\nupload runs:");
    const up = await measure(uploads, "upload");
    console.log("\ndownload runs:");
    const down = await measure(downloads, "download");

    const table = (samples: Map<string, Sample[]>) => {
      const baseline = median(samples.get([...samples.keys()][1]!)!.map((s) => s.wallMs)); // rclone
      return markdownTable(
        ["peer", "median s", "MB/s", "vs rclone", "runs (s)", "CPU s", "peak RSS MiB"],
        [...samples.entries()].map(([name, list]) => {
          const wall = median(list.map((s) => s.wallMs));
          return [
            name,
            (wall / 1000).toFixed(2),
            mbPerS(sizeBytes, wall),
            `${(wall / baseline).toFixed(2)}x`,
            list.map((s) => (s.wallMs / 1000).toFixed(2)).join(" / "),
            median(list.map((s) => s.cpuS)).toFixed(2),
            mib(median(list.map((s) => s.maxRssBytes))),
          ];
        }),
      );
    };

    const report = [
      `# S3 backup and restore: Lifeboat vs rclone (${mib(sizeBytes)} MiB database, radosgw)`,
      "",
      "Generated by `node --import tsx bench/s3.ts` (see its header for the method). One radosgw",
      "(Ceph 16, in-memory object store) on 127.0.0.1; every peer is a separate process timed from",
      "spawn to exit, interleaved within each repetition; medians of the runs.",
      "",
      "## Machine and method",
      "",
      markdownTable(
        ["fact", "value"],
        [
          ["date", startedAt.toISOString()],
          ["CPU", `${cpus()[0]?.model ?? "?"} x ${cpus().length}`],
          ["RAM", `${(totalmem() / 2 ** 30).toFixed(1)} GiB (free at end ${(freemem() / 2 ** 30).toFixed(1)} GiB)`],
          ["kernel", release()],
          ["node", process.version],
          ["rclone", version(RCLONE, ["version"])],
          ["radosgw", version("radosgw", ["--version"])],
          ["lifeboat S3 target", "partSize 8 MiB, queueSize 4, checksum when_required (defaults with an endpoint)"],
          ["rclone", "defaults: 5 MiB chunks, upload concurrency 4, MD5 of the file computed before upload"],
          [
            "database",
            `${fixture.pageCount} pages x ${fixture.pageSize} B = ${mib(sizeBytes)} MiB, generated (seed 1)`,
          ],
          ["page cache", cachesDropped ? "dropped before every run (cold)" : "NOT dropped (no permission, or --warm)"],
          ["runs", `${runs} per peer, interleaved; medians`],
          [
            "load average",
            `${loadBefore.map((l) => l.toFixed(2)).join(" ")} at start, ${loadavg()
              .map((l) => l.toFixed(2))
              .join(" ")} at end`,
          ],
        ],
        [1],
      ),
      "",
      "## Upload: backup of the database / copy of the file to S3",
      "",
      table(up),
      "",
      "## Download: restore to a new file / copy back",
      "",
      table(down),
      "",
      "What the peers do differs: `lifeboat backup` takes a consistent snapshot inside a read",
      "transaction, runs `PRAGMA quick_check`, hashes it (sha256) and writes a manifest; `lifeboat",
      "restore` downloads, verifies the sha256, writes and fsyncs a new file, runs quick_check and",
      "renames it into place. rclone copies bytes (and fsyncs only through the `sync` added here). The",
      '"target alone" rows isolate the S3 target from the backup logic.',
      "",
    ].join("\n");
    console.log(`\n${report}`);
    mkdirSync(dirname(values.out), { recursive: true });
    writeFileSync(values.out, report);
    console.log(`written to ${values.out}`);
  } finally {
    await server.stop();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
