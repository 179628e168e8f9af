/**
 * CSV export of one generated database, Lifeboat's exporter side by side with `sqlite3 -csv` per
 * table piped into `zip` (and, for reference, Lifeboat's uncompressed directory export and the
 * import of its ZIP back into a database), in one run.
 *
 *   node --import tsx bench/export.ts [--size-mb 1024] [--runs 2] [--db PATH] [--keep] [--baseline DIST]
 *
 * `--baseline` names another build of the package (a directory holding its compiled index.js, e.g.
 * made with `npx tsc -p tsconfig.build.json --outDir dist-baseline` in packages/export before a
 * change): its ZIP and directory exports then run as two more peers in the same repetitions, for a
 * before/after comparison under the same load. The directory must sit inside packages/export so
 * that its imports resolve.
 *
 * Needs the built package (`pnpm build`, or `npx tsc -p tsconfig.build.json` in packages/export),
 * because the product runs compiled JavaScript. Every measured command is a real process timed
 * from spawn to exit, with its peak RSS from GNU time. Lifeboat runs as a plain `node` process that
 * calls `exportDatabase` / `importExport` of packages/export/dist (what `lifeboat export` and
 * `lifeboat import` call). Peers are
 * interleaved within each repetition, the page cache is dropped before every run when permitted
 * (the output says whether it was), and the tables give medians. Results go to
 * bench/results/export.md; work files live in /tmp/lifeboat-bench-export-* and are deleted.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { dropCaches, pause, runTimed, type TimedRun } from "./lib/run-timed.js";
import { markdownTable, mbPerS, median, mib, ratio, seconds } from "./lib/stats.js";

const here = dirname(fileURLToPath(import.meta.url));
const EXPORT_PACKAGE = resolve(here, "../packages/export");
const DIST = join(EXPORT_PACKAGE, "dist/index.js");
const SQLITE3 = "/usr/bin/sqlite3";
const ZIP = "/usr/bin/zip";

const { values } = parseArgs({
  options: {
    "size-mb": { type: "string", default: "1024" },
    runs: { type: "string", default: "2" },
    db: { type: "string" },
    keep: { type: "boolean", default: false },
    baseline: { type: "string" },
  },
});

/** The program a measured Lifeboat process runs: one export or import, nothing else. */
function childProgram(call: string, dist: string): string {
  return `const lib = await import(${JSON.stringify(pathToFileURL(dist).href)});
const started = Date.now();
const r = await lib.${call};
process.stdout.write(JSON.stringify({ ms: Date.now() - started }) + "\\n");`;
}

/** Newest modification time of the package's source files (to refuse a stale build). */
function newestSource(): number {
  const dir = join(EXPORT_PACKAGE, "src");
  return Math.max(...readdirSync(dir).map((f) => statSync(join(dir, f)).mtimeMs));
}

interface Peer {
  readonly name: string;
  run(out: string): Promise<{ timing: TimedRun; file: string }>;
}

function sizeOf(path: string): number {
  const info = statSync(path);
  if (!info.isDirectory()) return info.size;
  return readdirSync(path).reduce((n, f) => n + statSync(join(path, f)).size, 0);
}

async function main(): Promise<void> {
  const sizeMB = Number(values["size-mb"]);
  const runs = Number(values.runs);
  if (!(sizeMB > 0) || !(Number.isInteger(runs) && runs > 0)) {
    console.error("usage: export.ts [--size-mb N] [--runs N] [--db PATH] [--keep] [--baseline DIST]");
    process.exit(2);
  }
  for (const [what, path, fix] of [
    ["the sqlite3 CLI", SQLITE3, "apt-get install -y sqlite3"],
    ["zip", ZIP, "apt-get install -y zip"],
    ["GNU time", "/usr/bin/time", "apt-get install -y time"],
    ["the built @lifeboat/export", DIST, "run `pnpm build` in /work/main"],
  ] as const) {
    if (!existsSync(path)) {
      console.error(`Missing ${what} (${path}): ${fix}.`);
      process.exit(2);
    }
  }
  const baseline = values.baseline ? join(resolve(values.baseline), "index.js") : undefined;
  if (baseline !== undefined && !existsSync(baseline)) {
    console.error(`Missing the baseline build ${baseline}.`);
    process.exit(2);
  }
  if (statSync(DIST).mtimeMs < newestSource()) {
    console.error(`${DIST} is older than packages/export/src: rebuild it (pnpm build).`);
    process.exit(2);
  }
  const root = mkdtempSync("/tmp/lifeboat-bench-export-");
  const dbPath = values.db ? resolve(values.db) : join(root, "app.db");
  const outRoot = join(root, "out");
  mkdirSync(outRoot);
  const loadBefore = loadavg();
  const startedAt = new Date();
  console.log(`# Export benchmark, work directory ${root}`);
  const generated = Date.now();
  if (!values.db) {
    const { createFixtureDatabase } = await import("@lifeboat/testkit");
    await createFixtureDatabase({ path: dbPath, sizeMB, seed: 1 });
  }
  const db = new Database(dbPath, { readonly: true, fileMustExist: true });
  const pageBytes =
    (db.pragma("page_size", { simple: true }) as number) * (db.pragma("page_count", { simple: true }) as number);
  const tables = db
    .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
    .pluck()
    .all() as string[];
  const rows = tables.map((t) =>
    Number(
      db
        .prepare(`SELECT count(*) FROM "${t.replaceAll('"', '""')}"`)
        .pluck()
        .get(),
    ),
  );
  db.close();
  console.log(
    `fixture: ${(pageBytes / 1e6).toFixed(0)} MB (${mib(pageBytes)} MiB), ${tables.length} tables, ${rows.reduce((a, b) => a + b, 0)} rows${values.db ? " (given)" : `, generated in ${((Date.now() - generated) / 1000).toFixed(0)} s`}`,
  );

  const node = (call: string, dist = DIST) =>
    [process.execPath, ["--input-type=module", "-e", childProgram(call, dist)]] as const;
  const lifeboat = (format: "zip" | "dir", dist = DIST): Peer => ({
    name: `${dist === DIST ? "" : "baseline build: "}lifeboat export (${format === "zip" ? "CSV ZIP, deflate 6" : "CSV directory"})`,
    async run(out) {
      const file = join(out, format === "zip" ? "export.zip" : "export");
      const [cmd, args] = node(`exportDatabase(${JSON.stringify({ database: dbPath, output: file, format })})`, dist);
      return { timing: await runTimed(cmd, args, { cwd: resolve(here, "..") }), file };
    },
  });
  // The usual do-it-yourself route: one sqlite3 process per table writing CSV into a FIFO that
  // zip reads (zip -FI), so nothing is staged on disk; one zip process deflates every entry.
  const sqliteZip: Peer = {
    name: "sqlite3 -csv piped into zip (deflate 6)",
    async run(out) {
      const file = join(out, "sqlite3.zip");
      const script = `
        set -e
        cd "$1"; db="$2"; shift 2
        i=0; names=""
        for t in "$@"; do
          i=$((i + 1)); f="t$i.csv"; mkfifo "$f"; names="$names $f"
          q=$(printf '%s' "$t" | sed 's/"/""/g')
          ${SQLITE3} -csv -header -readonly "$db" "SELECT * FROM \\"$q\\"" > "$f" &
        done
        ${ZIP} -q -6 -FI sqlite3.zip $names
        wait
        rm -f $names`;
      const timing = await runTimed("sh", ["-c", script, "sh", out, dbPath, ...tables]);
      return { timing, file };
    },
  };
  const peers = [
    lifeboat("zip"),
    sqliteZip,
    lifeboat("dir"),
    ...(baseline ? [lifeboat("zip", baseline), lifeboat("dir", baseline)] : []),
  ];
  const samples = new Map<string, { timing: TimedRun; bytes: number }[]>(peers.map((p) => [p.name, []]));
  const imports: TimedRun[] = [];
  let dropped = true;
  for (let run = 1; run <= runs; run++) {
    for (const peer of peers) {
      const out = join(outRoot, `${run}-${samples.get(peer.name)!.length}`);
      mkdirSync(out);
      dropped = dropCaches() && dropped;
      await pause(2000);
      const { timing, file } = await peer.run(out);
      const bytes = sizeOf(file);
      samples.get(peer.name)!.push({ timing, bytes });
      console.log(
        `run ${run} ${peer.name}: ${seconds(timing.wallMs)} s, ${mib(timing.maxRssBytes)} MiB peak RSS, output ${mib(bytes)} MiB`,
      );
      if (peer === peers[0]) {
        // The import of this ZIP back into a database (reference; not a peer).
        dropped = dropCaches() && dropped;
        await pause(2000);
        const [cmd, args] = node(`importExport(${JSON.stringify({ input: file, output: join(out, "imported.db") })})`);
        const imported = await runTimed(cmd, args, { cwd: resolve(here, "..") });
        imports.push(imported);
        console.log(
          `run ${run} lifeboat import of that ZIP: ${seconds(imported.wallMs)} s, ${mib(imported.maxRssBytes)} MiB peak RSS`,
        );
      }
      rmSync(out, { recursive: true, force: true });
    }
  }

  const base = median(samples.get(sqliteZip.name)!.map((s) => s.timing.wallMs));
  const table = markdownTable(
    [
      "route",
      "wall s (median)",
      "MB/s of database",
      "vs sqlite3 + zip",
      "peak RSS MiB (max)",
      "CPU s (median)",
      "output MiB",
    ],
    [
      ...peers.map((peer) => {
        const s = samples.get(peer.name)!;
        const wall = median(s.map((x) => x.timing.wallMs));
        return [
          peer.name,
          seconds(wall),
          mbPerS(pageBytes, wall),
          ratio(wall, base),
          mib(Math.max(...s.map((x) => x.timing.maxRssBytes))),
          median(s.map((x) => x.timing.userS + x.timing.sysS)).toFixed(1),
          mib(median(s.map((x) => x.bytes))),
        ];
      }),
      [
        "lifeboat import of the ZIP (reference)",
        seconds(median(imports.map((t) => t.wallMs))),
        mbPerS(pageBytes, median(imports.map((t) => t.wallMs))),
        "",
        mib(Math.max(...imports.map((t) => t.maxRssBytes))),
        median(imports.map((t) => t.userS + t.sysS)).toFixed(1),
        "",
      ],
    ],
  );
  const sqliteVersion = spawnSync(SQLITE3, ["--version"], { encoding: "utf8" }).stdout.trim().split(" ")[0];
  const report = `# Export benchmark

Run ${startedAt.toISOString()} on ${cpus().length} cores (${cpus()[0]?.model ?? "?"}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM,
load average before ${loadBefore.map((l) => l.toFixed(1)).join(" ")}, after ${loadavg()
    .map((l) => l.toFixed(1))
    .join(
      " ",
    )}. Node ${process.version}, sqlite3 CLI ${sqliteVersion}, ${spawnSync(ZIP, ["-v"], { encoding: "utf8" }).stdout.split("\n")[1]?.trim() ?? "zip"}.
Page cache ${dropped ? "dropped before every run" : "NOT dropped (not permitted here): inputs were read warm"}; ${runs} runs per route, interleaved.

Database: the testkit fixture (seed 1), ${(pageBytes / 1e6).toFixed(0)} MB (${mib(pageBytes)} MiB), ${tables.length} tables, ${rows.reduce((a, b) => a + b, 0)} rows.

${table}

- sqlite3 piped into zip: one \`sqlite3 -csv -header\` per table writing into a FIFO that one
  \`zip -6 -FI\` reads; each table in its own transaction (not one consistent snapshot), NULL and
  '' both written as an empty field, BLOBs written as raw bytes cut at their first NUL byte, REALs
  with 15 significant digits: fast, but not a faithful copy, not importable, and less CSV to
  compress. Lifeboat's export reads every table in one transaction, encodes every value with its
  type (BLOBs in base64), and hashes every file.
- On a shared, loaded machine wall times swing from run to run; CPU seconds are the steadier
  comparison of the work each route does.
- Peak RSS is GNU time's maximum resident set of the measured process (for the sqlite3 route, of
  the largest process in the pipeline).
${baseline ? `- "baseline build" rows: the same export run from another build of the package (${baseline}), in the same repetitions.\n` : ""}`;
  const resultsDir = join(here, "results");
  mkdirSync(resultsDir, { recursive: true });
  writeFileSync(join(resultsDir, "export.md"), report);
  console.log(`\n${report}`);
  if (!values.keep) rmSync(root, { recursive: true, force: true });
}

await main();
