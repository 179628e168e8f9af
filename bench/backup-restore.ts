/**
 * Backup and restore of one generated database, Lifeboat's CLI side by side with the physical
 * limit (cp + fsync) and the SQLite online-backup routes, in one run.
 *
 *   node --import tsx bench/backup-restore.ts [--size-mb 1024] [--runs 3]
 *     [--skip-phases]        only the side-by-side tables, not the breakdown and CPU profiles
 *     [--warm]               do not drop the page cache before each run
 *     [--min-idle 0.75] [--max-wait 60]  before each run wait (at most max-wait s) for an idle machine
 *     [--autogroup-nice=-10] CPU weight of this benchmark's session on a busy machine (all peers alike)
 *     [--cli PATH]           measure another build of the CLI (e.g. a frozen copy of the checkout)
 *     [--db PATH]            back up this existing database instead of generating one
 *     [--keep]               keep the work directory
 *
 * Every measured command is a real process, timed from spawn to exit; its peak RSS and CPU time
 * come from GNU time. Peers are interleaved within each repetition (A B C D E, A B C D E, ...),
 * the page cache is dropped before every run (unless --warm, or when not permitted: the output
 * says which), and the tables give medians and the ratio to cp + sync measured in the same run.
 * Work files live in /tmp/lifeboat-bench-* and are deleted at the end.
 */
import { spawnSync } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { cpus, freemem, loadavg, release, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { createFixtureDatabase } from "@lifeboat/testkit";
import Database from "better-sqlite3";
import { measurePhases, operationTimelines, profileCli } from "./lib/backup-phases.js";
import { dropCaches, pause, runTimed, type TimedRun, waitForQuiet } from "./lib/run-timed.js";
import { markdownTable, mbPerS, median, mib, ratio, seconds } from "./lib/stats.js";

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(here, "..");
const DEFAULT_CLI = join(repoRoot, "apps/cli/dist/bin.js");
const BACKUP_API_CHILD = join(here, "lib/backup-api-child.mjs");
const SQLITE3 = "/usr/bin/sqlite3";

const { values } = parseArgs({
  options: {
    "size-mb": { type: "string", default: "1024" },
    runs: { type: "string", default: "3" },
    "skip-phases": { type: "boolean", default: false },
    warm: { type: "boolean", default: false },
    keep: { type: "boolean", default: false },
    cli: { type: "string", default: DEFAULT_CLI },
    db: { type: "string" },
    /** Before each run wait (at most --max-wait s) until the machine is this idle over 1 s (0..1; 0 = never wait). */
    "min-idle": { type: "string", default: "0.75" },
    "max-wait": { type: "string", default: "60" },
    /**
     * CPU weight of this benchmark's scheduling autogroup (Linux autogroup nice, -20..19), set for
     * the run and restored after: on a machine saturated by other sessions, a negative value keeps
     * every peer's wall time closer to what an idle machine gives. Applies to all peers alike.
     */
    "autogroup-nice": { type: "string" },
  },
});
/** The CLI to measure (default: this repository's build; another path to compare a patched build). */
const CLI = resolve(values.cli);
const sizeMB = Number(values["size-mb"]);
const runs = Number(values.runs);
if (!(sizeMB > 0) || !(Number.isInteger(runs) && runs > 0)) {
  console.error(
    "usage: backup-restore.ts [--size-mb N] [--runs N] [--skip-phases] [--warm] [--keep] [--cli PATH] [--db PATH] [--min-idle 0.75] [--max-wait 60] [--autogroup-nice N]",
  );
  process.exit(2);
}
for (const [what, path, fix] of [
  ["the built CLI", CLI, "run `pnpm build` in /work/main"],
  ["the sqlite3 CLI", SQLITE3, "apt-get install -y sqlite3"],
  ["GNU time", "/usr/bin/time", "apt-get install -y time"],
] as const) {
  if (!existsSync(path)) {
    console.error(`Missing ${what} (${path}): ${fix}.`);
    process.exit(2);
  }
}

interface Peer {
  readonly name: string;
  /** Runs once, writing its output under `out`; returns the timing and the output file. */
  run(out: string): Promise<{ timing: TimedRun; file: string }>;
}

interface Sample {
  readonly wallMs: number;
  readonly maxRssBytes: number;
  /** CPU seconds of the process and its children (user + system): less sensitive to a busy machine than wall time. */
  readonly cpuS: number;
  /** Lifeboat's own `durationMs` (from --json), when the peer reports one. */
  readonly innerMs?: number;
}

/** The autogroup nice before this run (restored at the end), and the one in effect. */
let autogroupBefore: string | undefined;
let autogroupInEffect = "not changed";
if (values["autogroup-nice"] !== undefined) {
  const wanted = Number(values["autogroup-nice"]);
  if (!(Number.isInteger(wanted) && wanted >= -20 && wanted <= 19)) {
    console.error("--autogroup-nice takes an integer from -20 to 19.");
    process.exit(2);
  }
  try {
    autogroupBefore = /nice (-?\d+)/.exec(readFileSync("/proc/self/autogroup", "utf8"))?.[1];
    writeFileSync("/proc/self/autogroup", `${wanted}\n`);
    autogroupInEffect = `autogroup nice ${wanted} (was ${autogroupBefore ?? "?"})`;
  } catch (error) {
    autogroupInEffect = `could not set autogroup nice ${wanted}: ${(error as Error).message}`;
  }
}

const root = mkdtempSync("/tmp/lifeboat-bench-");
/** --db: an existing database to back up (kept), instead of a generated one (e.g. to iterate faster). */
const dbPath = values.db ? resolve(values.db) : join(root, "app.db");
const outRoot = join(root, "out");
mkdirSync(outRoot);

/** The `.snap` object under a repository directory (exactly one). */
function findSnapshotObject(dir: string): string {
  const found = (readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith(".snap"));
  if (found.length !== 1) throw new Error(`Expected one .snap object under ${dir}, found ${found.length}.`);
  return join(dir, found[0]!);
}

function sh(script: string, ...args: string[]): [string, string[]] {
  return ["sh", ["-c", script, "sh", ...args]];
}

/** Newest modification time of the built code the CLI runs (its dist and the packages' dist), ISO. */
function newestBuild(cli: string): string {
  const checkout = resolve(dirname(cli), "../../..");
  const dirs = [
    dirname(cli),
    ...readdirSafe(join(checkout, "packages")).map((p) => join(checkout, "packages", p, "dist")),
  ];
  let newest = 0;
  for (const dir of dirs) {
    for (const file of readdirSafe(dir, true)) {
      const m = statSync(join(dir, file), { throwIfNoEntry: false })?.mtimeMs ?? 0;
      if (m > newest) newest = m;
    }
  }
  return new Date(newest).toISOString();
}

function readdirSafe(dir: string, recursive = false): string[] {
  try {
    return readdirSync(dir, { recursive }) as string[];
  } catch {
    return [];
  }
}

function describeExisting(path: string): { pageSize: number; pageCount: number } {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return {
      pageSize: db.pragma("page_size", { simple: true }) as number,
      pageCount: db.pragma("page_count", { simple: true }) as number,
    };
  } finally {
    db.close();
  }
}

function commandVersion(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: "utf8" });
  return (r.stdout || r.stderr || "").trim().split("\n")[0] ?? "";
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const buildAtStart = newestBuild(CLI);
  const loadBefore = loadavg();
  console.log(`# Lifeboat backup/restore benchmark, ${sizeMB} MiB, ${runs} runs per peer`);
  console.log(`work directory: ${root}`);

  const fixtureStarted = Date.now();
  const fixture = values.db
    ? describeExisting(dbPath)
    : await createFixtureDatabase({ path: dbPath, sizeMB, seed: 1, journalMode: "wal" });
  const sizeBytes = fixture.pageSize * fixture.pageCount;
  const walBytes = existsSync(`${dbPath}-wal`) ? statSync(`${dbPath}-wal`).size : 0;
  console.log(
    `fixture: ${fixture.pageCount} pages of ${fixture.pageSize} B = ${(sizeBytes / 1e6).toFixed(0)} MB (${mib(sizeBytes)} MiB), WAL mode, -wal ${walBytes} B, generated in ${((Date.now() - fixtureStarted) / 1000).toFixed(0)} s`,
  );

  // The backup that every restore run restores (taken once, not timed).
  const repoDir = join(root, "restore-source");
  await runTimed(process.execPath, [CLI, "backup", dbPath, "--to", repoDir, "--json"]);
  const snapFile = findSnapshotObject(repoDir);
  if (statSync(snapFile).size !== sizeBytes) throw new Error(`${snapFile} has the wrong size.`);

  const lifeboatJson = (timing: TimedRun, key: "backups" | "restore"): number | undefined => {
    const parsed = JSON.parse(timing.stdout) as {
      backups?: { durationMs: number }[];
      restore?: { durationMs: number };
    };
    return key === "backups" ? parsed.backups?.[0]?.durationMs : parsed.restore?.durationMs;
  };

  const backupPeers: Peer[] = [
    {
      name: "cp + sync (physical limit)",
      async run(out) {
        const file = join(out, "copy.db");
        const [cmd, args] = sh('cp -- "$1" "$2" && sync -- "$2"', dbPath, file);
        return { timing: await runTimed(cmd, args), file };
      },
    },
    {
      name: "lifeboat backup (integrity quick, default)",
      async run(out) {
        const repo = join(out, "repo");
        const timing = await runTimed(process.execPath, [CLI, "backup", dbPath, "--to", repo, "--json"]);
        return { timing, file: findSnapshotObject(repo) };
      },
    },
    {
      name: "lifeboat backup (integrity off)",
      async run(out) {
        const repo = join(out, "repo");
        const config = join(out, "lifeboat.yml");
        writeFileSync(
          config,
          [
            "version: 1",
            "databases:",
            `  - path: ${JSON.stringify(dbPath)}`,
            "    targets:",
            `      - { type: local, path: ${JSON.stringify(repo)} }`,
            '    snapshot: { integrity: "off" }',
            "",
          ].join("\n"),
        );
        const timing = await runTimed(process.execPath, [CLI, "backup", "--config", config, "--json"]);
        return { timing, file: findSnapshotObject(repo) };
      },
    },
    {
      name: "sqlite3 CLI .backup (+ sync)",
      async run(out) {
        const file = join(out, "sqlite3-backup.db");
        const [cmd, args] = sh(`${SQLITE3} "$1" ".backup '$2'" && sync -- "$2"`, dbPath, file);
        return { timing: await runTimed(cmd, args), file };
      },
    },
    {
      name: "better-sqlite3 db.backup() (+ fsync)",
      async run(out) {
        const file = join(out, "better-sqlite3-backup.db");
        return { timing: await runTimed(process.execPath, [BACKUP_API_CHILD, dbPath, file]), file };
      },
    },
  ];

  const restorePeers: Peer[] = [
    {
      name: "cp + sync of the backup object (physical limit)",
      async run(out) {
        const file = join(out, "copy.db");
        const [cmd, args] = sh('cp -- "$1" "$2" && sync -- "$2"', snapFile, file);
        return { timing: await runTimed(cmd, args), file };
      },
    },
    {
      name: "lifeboat restore (integrity quick, default)",
      async run(out) {
        const file = join(out, "restored.db");
        const timing = await runTimed(process.execPath, [
          CLI,
          "restore",
          dbPath,
          "--to",
          repoDir,
          "--output",
          file,
          "--yes",
          "--json",
        ]);
        return { timing, file };
      },
    },
    {
      name: "lifeboat restore (--integrity off)",
      async run(out) {
        const file = join(out, "restored.db");
        const timing = await runTimed(process.execPath, [
          CLI,
          "restore",
          dbPath,
          "--to",
          repoDir,
          "--output",
          file,
          "--yes",
          "--integrity",
          "off",
          "--json",
        ]);
        return { timing, file };
      },
    },
  ];

  let cachesDropped = !values.warm;
  const minIdle = Number(values["min-idle"]);
  const maxWaitMs = Number(values["max-wait"]) * 1000;
  /** Idle fraction of the machine in the second before each run. */
  const idleBefore: number[] = [];
  const prepare = async () => {
    if (!values.warm) cachesDropped &&= dropCaches();
    else spawnSync("sync", { stdio: "ignore" });
    await pause(300);
    idleBefore.push(minIdle > 0 ? await waitForQuiet(minIdle, maxWaitMs) : Number.NaN);
  };

  const measure = async (peers: Peer[], label: string): Promise<Map<string, Sample[]>> => {
    const samples = new Map<string, Sample[]>(peers.map((p) => [p.name, []]));
    for (let rep = 1; rep <= runs; rep++) {
      for (const peer of peers) {
        const out = join(outRoot, "run");
        mkdirSync(out);
        try {
          await prepare();
          const { timing, file } = await peer.run(out);
          const size = statSync(file).size;
          if (size !== sizeBytes)
            throw new Error(`${peer.name} wrote ${size} bytes to ${file}, expected ${sizeBytes}.`);
          const innerMs = peer.name.startsWith("lifeboat")
            ? lifeboatJson(timing, label === "backup" ? "backups" : "restore")
            : undefined;
          samples.get(peer.name)!.push({
            wallMs: timing.wallMs,
            maxRssBytes: timing.maxRssBytes,
            cpuS: timing.userS + timing.sysS,
            ...(innerMs === undefined ? {} : { innerMs }),
          });
          console.log(
            `  ${label} run ${rep}/${runs}  ${peer.name.padEnd(50)} ${seconds(timing.wallMs).padStart(7)} s  cpu ${(timing.userS + timing.sysS).toFixed(2).padStart(6)} s  rss ${mib(timing.maxRssBytes).padStart(4)} MiB  idle before ${((idleBefore.at(-1) ?? Number.NaN) * 100).toFixed(0)}%`,
          );
        } finally {
          rmSync(out, { recursive: true, force: true });
        }
      }
    }
    return samples;
  };

  console.log("\nbackup runs:");
  const backups = await measure(backupPeers, "backup");
  console.log("\nrestore runs:");
  const restores = await measure(restorePeers, "restore");

  const table = (samples: Map<string, Sample[]>): string => {
    const baseline = median(
      samples
        .values()
        .next()
        .value!.map((s) => s.wallMs),
    );
    return markdownTable(
      ["peer", "median s", "MB/s", "vs cp+sync", "runs (s)", "CPU s", "peak RSS MiB", "lifeboat's own durationMs"],
      [...samples.entries()].map(([name, list]) => {
        const wall = median(list.map((s) => s.wallMs));
        const inner = list.flatMap((s) => (s.innerMs === undefined ? [] : [s.innerMs]));
        return [
          name,
          seconds(wall),
          mbPerS(sizeBytes, wall),
          ratio(wall, baseline),
          list.map((s) => seconds(s.wallMs)).join(" / "),
          median(list.map((s) => s.cpuS)).toFixed(2),
          mib(median(list.map((s) => s.maxRssBytes))),
          inner.length > 0 ? `${seconds(median(inner))} s` : "-",
        ];
      }),
    );
  };

  const bSqlite = new Database(":memory:");
  const betterSqliteVersion = (bSqlite.prepare("SELECT sqlite_version() AS v").get() as { v: string }).v;
  bSqlite.close();
  const buildAtEnd = newestBuild(CLI);
  const distBuilt =
    buildAtStart === buildAtEnd
      ? `newest built file ${buildAtEnd}, unchanged during the run`
      : `WARNING: rebuilt during the run (newest built file ${buildAtStart} at start, ${buildAtEnd} at end)`;
  const lifeboatVersion = commandVersion(process.execPath, [CLI, "--version"]);

  console.log("\n## Machine and method\n");
  console.log(
    markdownTable(
      ["fact", "value"],
      [
        ["date", startedAt.toISOString()],
        ["CPU", `${cpus()[0]?.model ?? "?"} x ${cpus().length}`],
        ["RAM", `${(totalmem() / 2 ** 30).toFixed(1)} GiB (free at end ${(freemem() / 2 ** 30).toFixed(1)} GiB)`],
        ["kernel", release()],
        ["file system of /tmp", commandVersion("findmnt", ["-n", "-o", "FSTYPE,OPTIONS", "-T", "/tmp"])],
        ["node", process.version],
        ["lifeboat CLI", `${lifeboatVersion}, ${CLI} (${distBuilt})`],
        ["sqlite3 CLI", commandVersion(SQLITE3, ["--version"]).split(" ")[0] ?? "?"],
        ["better-sqlite3's SQLite", betterSqliteVersion],
        [
          "database",
          `${fixture.pageCount} pages x ${fixture.pageSize} B = ${mib(sizeBytes)} MiB, ${values.db ? `existing ${dbPath}` : "generated: WAL mode, seed 1"}`,
        ],
        [
          "page cache",
          cachesDropped ? "dropped before every run (cold)" : "NOT dropped (warm runs: no permission or --warm)",
        ],
        ["runs", `${runs} per peer, interleaved; medians`],
        ["CPU priority", autogroupInEffect],
        [
          "machine idle before runs",
          minIdle > 0
            ? `waited up to ${maxWaitMs / 1000} s for >= ${(minIdle * 100).toFixed(0)}% idle; ${idleBefore.filter((i) => i < minIdle).length} of ${idleBefore.length} runs started busier; median idle ${(median(idleBefore) * 100).toFixed(0)}%`
            : "not waited for",
        ],
        [
          "load average",
          `${loadBefore.map((l) => l.toFixed(2)).join(" ")} at start, ${loadavg()
            .map((l) => l.toFixed(2))
            .join(" ")} at end`,
        ],
      ],
      [1],
    ),
  );
  console.log(`\n## Backup of a ${mib(sizeBytes)} MiB database to a local directory\n`);
  console.log(table(backups));
  console.log(`\n## Restore of that backup to a new file\n`);
  console.log(table(restores));

  const med = (m: Map<string, Sample[]>, name: string) => median(m.get(name)!.map((s) => s.wallMs));
  const rss = (m: Map<string, Sample[]>, name: string) => median(m.get(name)!.map((s) => s.maxRssBytes));
  const [bCp, bLb, bLbOff, bSqlite3, bBetter] = backupPeers.map((p) => p.name) as [
    string,
    string,
    string,
    string,
    string,
  ];
  const [rCp, rLb, rLbOff] = restorePeers.map((p) => p.name) as [string, string, string];
  const verdict = (ok: boolean) => (ok ? "met" : "MISSED");
  const goals: [string, string, string][] = [
    [
      "backup within 1.3x of cp+sync (default)",
      ratio(med(backups, bLb), med(backups, bCp)),
      verdict(med(backups, bLb) <= 1.3 * med(backups, bCp)),
    ],
    [
      "backup within 1.3x of cp+sync (integrity off)",
      ratio(med(backups, bLbOff), med(backups, bCp)),
      verdict(med(backups, bLbOff) <= 1.3 * med(backups, bCp)),
    ],
    [
      "backup faster than sqlite3 .backup (default)",
      `${seconds(med(backups, bLb))} s vs ${seconds(med(backups, bSqlite3))} s`,
      verdict(med(backups, bLb) < med(backups, bSqlite3)),
    ],
    [
      "backup faster than better-sqlite3 backup (default)",
      `${seconds(med(backups, bLb))} s vs ${seconds(med(backups, bBetter))} s`,
      verdict(med(backups, bLb) < med(backups, bBetter)),
    ],
    [
      "restore within 1.3x of cp+sync (default)",
      ratio(med(restores, rLb), med(restores, rCp)),
      verdict(med(restores, rLb) <= 1.3 * med(restores, rCp)),
    ],
    [
      "restore within 1.3x of cp+sync (integrity off)",
      ratio(med(restores, rLbOff), med(restores, rCp)),
      verdict(med(restores, rLbOff) <= 1.3 * med(restores, rCp)),
    ],
    [
      "peak RSS < 200 MB, backup (default)",
      `${(rss(backups, bLb) / 1e6).toFixed(0)} MB`,
      verdict(rss(backups, bLb) < 200e6),
    ],
    [
      "peak RSS < 200 MB, restore (default)",
      `${(rss(restores, rLb) / 1e6).toFixed(0)} MB`,
      verdict(rss(restores, rLb) < 200e6),
    ],
  ];
  console.log("\n## Goals (reported, not asserted)\n");
  console.log(markdownTable(["goal", "measured", "verdict"], goals));

  if (!values["skip-phases"]) {
    const work = join(outRoot, "phases");
    mkdirSync(work);
    const inputs = { db: dbPath, snapFile, repoDir, sizeBytes, work, cli: CLI };
    const phases = await measurePhases(inputs);
    console.log("\n## Where the time goes (each piece alone, one run)\n");
    console.log(
      markdownTable(
        ["piece", "s", "CPU s", "MB/s", "note"],
        phases.map((r) => [
          r.phase,
          seconds(r.ms),
          seconds(r.cpuMs),
          r.wholeImage ? mbPerS(sizeBytes, r.ms) : "-",
          r.note,
        ]),
        [4],
      ),
    );
    const timelines = await operationTimelines(inputs);
    console.log("\n## One operation in-process (same API as the CLI, no start-up), cold cache\n");
    console.log(
      markdownTable(
        ["operation", "before first byte s", "streaming s", "after last byte s", "total s"],
        timelines.map((t) => [
          t.operation,
          seconds(t.beforeFirstByteMs),
          seconds(t.streamingMs),
          seconds(t.afterLastByteMs),
          seconds(t.totalMs),
        ]),
      ),
    );
    console.log(
      "\nbackup: before first byte = pin + row counts + integrity check; after last byte = fsync, rename, manifest.",
    );
    console.log(
      "restore: before first byte = listing + first 4 MiB; after last byte = fsync, integrity check, swap, row counts.",
    );
    const profiles = await profileCli(inputs);
    for (const [what, summary, wall] of [
      ["backup", profiles.backup, profiles.backupWallMs],
      ["restore", profiles.restore, profiles.restoreWallMs],
    ] as const) {
      console.log(
        `\n## CPU profile of one default ${what} (node --cpu-prof, main thread, ${seconds(summary.totalMs)} s profiled of ${seconds(wall)} s wall, cold cache)\n`,
      );
      console.log(
        markdownTable(
          ["function (self time)", "s", "share"],
          summary.top.map((t) => [t.name, seconds(t.ms), `${((100 * t.ms) / summary.totalMs).toFixed(0)}%`]),
        ),
      );
    }
  }
}

try {
  await main();
} finally {
  if (values.keep) console.log(`\nkept ${root}`);
  else rmSync(root, { recursive: true, force: true });
  if (autogroupBefore !== undefined) writeFileSync("/proc/self/autogroup", `${autogroupBefore}\n`);
}
