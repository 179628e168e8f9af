/**
 * Encrypted, compressed backups end to end through the built CLI: a config with zstd + age to two
 * recipients (a team key and an offline recovery key), `lifeboat backup`, then what a user relies
 * on: the stored object is unreadable without a key, the standard `age` and `zstd` tools recover
 * it, `restore --key-stdin` and a configured key file both restore it byte for byte, a wrong key
 * or a tampered object is refused without touching the database, no decrypted temp file appears,
 * and archived WAL segments are encrypted too.
 */
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  cpSync,
  existsSync,
  type FSWatcher,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  watch,
  writeFileSync,
} from "node:fs";
import { join, relative } from "node:path";
import Database from "better-sqlite3";
import { beforeAll, describe, expect, it } from "vitest";
import { BIN, type CliResult, cli, makeShop, tempDir } from "./helpers.js";
import { startReplicator } from "./replication-helpers.js";

const SQLITE_HEADER = Buffer.from("SQLite format 3\0", "latin1");

/** Runs `lifeboat ...args` with `stdin` piped in (as `... --key-stdin < key.txt` would). */
function cliWithStdin(args: readonly string[], stdin: string, options: { cwd: string; env?: Record<string, string> }) {
  const child = spawnSync(process.execPath, [BIN, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    input: stdin,
    encoding: "utf8",
    timeout: 120_000,
  });
  return { code: child.status ?? -1, stdout: child.stdout, stderr: child.stderr } satisfies CliResult;
}

/** The same, as a child process the test can watch while it runs. */
function cliWithStdinAsync(
  args: readonly string[],
  stdin: string,
  options: { cwd: string; env: Record<string, string> },
) {
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: options.cwd,
    env: { ...process.env, ...options.env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
  });
  child.stdin.end(stdin);
  return new Promise<CliResult>((resolve) =>
    child.on("close", (code) => resolve({ code: code ?? -1, stdout, stderr })),
  );
}

function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).map((f) => join(dir, f));
}

/** An age key pair made by the standard age-keygen. */
function ageKeygen(file: string): string {
  const made = spawnSync("age-keygen", ["-o", file], { encoding: "utf8" });
  if (made.status !== 0) throw new Error(`age-keygen failed (apt-get install -y age): ${made.stderr}`);
  return spawnSync("age-keygen", ["-y", file], { encoding: "utf8" }).stdout.trim();
}

function config(target: string, ageExtra = ""): string {
  return `databases:
  - name: shop
    path: ./shop.db
    targets: [{ type: local, path: ${target} }]
    codecs:
      - type: zstd
      - type: age
        recipients:
          - ${team.public} # team
          - ${offline.public} # offline recovery
${ageExtra}`;
}

let dir: string;
let team: { file: string; public: string; secret: string };
let offline: { file: string; public: string };
let object: string;
let manifest: { id: string; object: { key: string; codecs: { type: string }[] }; content: { sha256: string } };
/** The snapshot's bytes (the database as `backup` read it), recovered by the standard tools. */
let original: Buffer;

beforeAll(() => {
  dir = tempDir("encryption");
  const teamFile = join(dir, "team.key");
  team = { file: teamFile, public: ageKeygen(teamFile), secret: readFileSync(teamFile, "utf8") };
  // The offline recovery key lives apart from the config (a USB stick in a safe).
  mkdirSync(join(dir, "safe"));
  const offlineFile = join(dir, "safe", "offline.key");
  offline = { file: offlineFile, public: ageKeygen(offlineFile) };
  makeShop(join(dir, "shop.db"), 3000);
  writeFileSync(join(dir, "lifeboat.yml"), config("./backups"));
  const backup = cli(["backup", "--json"], { cwd: dir });
  expect(backup.code, backup.stderr).toBe(0);
  const manifestFile = files(join(dir, "backups")).find((f) => f.includes("/snapshots/") && f.endsWith(".json"))!;
  manifest = JSON.parse(readFileSync(manifestFile, "utf8"));
  object = join(dir, "backups", manifest.object.key);
  const decrypted = spawnSync("age", ["-d", "-i", team.file, object]);
  expect(decrypted.status, decrypted.stderr.toString()).toBe(0);
  original = spawnSync("zstd", ["-d", "-c"], { input: decrypted.stdout, maxBuffer: 64 * 1024 * 1024 }).stdout;
});

describe("lifeboat backup with zstd + age", () => {
  it("stores an object that is not readable without a key", () => {
    expect(manifest.object.key.endsWith(".zst.age")).toBe(true);
    expect(manifest.object.codecs.map((c) => c.type)).toEqual(["zstd", "age"]);
    const stored = readFileSync(object);
    expect(stored.subarray(0, 21).toString("latin1")).toBe("age-encryption.org/v1");
    expect(stored.includes(SQLITE_HEADER)).toBe(false);
    for (const text of ["SQLite format 3", "customers", "orders", "CREATE TABLE", "Customer 1", "quoted"]) {
      expect(stored.includes(Buffer.from(text)), `"${text}" is not in the stored object`).toBe(false);
    }
    // Compressed: the 3000-order database shrinks.
    expect(stored.length).toBeLessThan(original.length / 2);
    // Secrets never reach the config, the manifest or the backup folder.
    const secretLine = team.secret.split("\n").find((l) => l.startsWith("AGE-SECRET-KEY-"))!;
    for (const file of files(join(dir, "backups")).filter((f) => f.endsWith(".json"))) {
      expect(readFileSync(file, "utf8")).not.toContain(secretLine);
    }
  });

  it("decrypts with the standard age CLI and zstd, with either recipient's key, to the exact database bytes", () => {
    for (const key of [team.file, offline.file]) {
      const decrypted = spawnSync("age", ["-d", "-i", key, object]);
      expect(decrypted.status, decrypted.stderr.toString()).toBe(0);
      const plain = spawnSync("zstd", ["-d", "-c"], { input: decrypted.stdout, maxBuffer: 64 * 1024 * 1024 });
      expect(plain.status, plain.stderr.toString()).toBe(0);
      expect(sha256(plain.stdout), "the decrypted, decompressed object is the snapshot the manifest describes").toBe(
        manifest.content.sha256,
      );
      expect(plain.stdout.subarray(0, 16).equals(SQLITE_HEADER)).toBe(true);
      const copy = join(dir, "from-age-cli.db");
      writeFileSync(copy, plain.stdout);
      const conn = new Database(copy, { readonly: true });
      expect(conn.prepare("SELECT count(*) AS n FROM orders").get()).toEqual({ n: 3000 });
      expect(conn.pragma("integrity_check", { simple: true })).toBe("ok");
      conn.close();
    }
  });
});

describe("lifeboat restore of an encrypted backup", () => {
  it("restore --key-stdin with the identity piped in restores byte-identical content", () => {
    const output = join(dir, "restored-stdin.db");
    const restored = cliWithStdin(["restore", "--key-stdin", "--output", output, "--json"], team.secret, { cwd: dir });
    expect(restored.code, restored.stderr).toBe(0);
    expect(readFileSync(output).equals(original)).toBe(true);
    // The point-in-time path (restore without --backup) and the snapshot path (--backup) both work.
    const byId = join(dir, "restored-by-id.db");
    const again = cliWithStdin(["restore", "--key-stdin", "--backup", manifest.id, "--output", byId], team.secret, {
      cwd: dir,
    });
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(byId).equals(original)).toBe(true);
  });

  it("without a key it refuses, naming the object and saying how to give the key", () => {
    const output = join(dir, "restored-nokey.db");
    const refused = cli(["restore", "--backup", manifest.id, "--output", output], { cwd: dir });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("CONFIG_INVALID");
    expect(refused.stderr).toContain("--key-stdin");
    expect(existsSync(output)).toBe(false);
  });

  it("--key-stdin with an empty standard input is a clear error", () => {
    const empty = cliWithStdin(["restore", "--key-stdin", "--output", join(dir, "x.db")], "", { cwd: dir });
    expect(empty.code).not.toBe(0);
    expect(empty.stderr).toContain("--key-stdin was given, but standard input was empty");
    // stdin closed (no pipe at all) is the same.
    const closed = cli(["verify", "--key-stdin"], { cwd: dir });
    expect(closed.code).not.toBe(0);
    expect(closed.stderr).toContain("standard input was empty");
    // A terminal on standard input is refused before anything is read (script(1) gives it a pty).
    const onTerminal = spawnSync("script", ["-qec", `"${process.execPath}" "${BIN}" verify --key-stdin`, "/dev/null"], {
      cwd: dir,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "pipe"],
      timeout: 60_000,
    });
    expect(onTerminal.status).not.toBe(0);
    expect(onTerminal.stdout + onTerminal.stderr).toContain(
      "--key-stdin reads the key from standard input, which is a terminal",
    );
  });

  it("verify --key-stdin trial-restores the encrypted backup", () => {
    const verified = cliWithStdin(["verify", "--key-stdin"], team.secret, { cwd: dir });
    expect(verified.code, `${verified.stdout}\n${verified.stderr}`).toBe(0);
    expect(verified.stdout).toContain(`trial restore of ${manifest.id}`);
    expect(verified.stdout).toContain("All backups verified.");
  });

  it("with the offline recovery key file configured instead, it restores too (no stdin)", () => {
    writeFileSync(join(dir, "recovery.yml"), config("./backups", "        identityFile: ./safe/offline.key\n"));
    const output = join(dir, "restored-offline.db");
    const restored = cli(["restore", "-c", "recovery.yml", "--output", output], { cwd: dir });
    expect(restored.code, restored.stderr).toBe(0);
    expect(readFileSync(output).equals(original)).toBe(true);
  });

  it("the wrong key: non-zero exit, the message says which keys the object needs, the database is unchanged", () => {
    const wrong = join(dir, "wrong.key");
    ageKeygen(wrong);
    changeDatabase();
    const before = readFileSync(join(dir, "shop.db"));
    const refused = cliWithStdin(["restore", "--key-stdin", "--yes"], readFileSync(wrong, "utf8"), { cwd: dir });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/none of the configured identities .* opens it; it is encrypted to/);
    expect(refused.stderr, "the message names the object").toContain(manifest.object.key);
    expect(refused.stderr).toContain(team.public);
    expect(refused.stderr).toContain(offline.public);
    expect(refused.stderr).not.toContain("AGE-SECRET-KEY");
    expect(readFileSync(join(dir, "shop.db")).equals(before)).toBe(true);
    expect(leftovers()).toEqual([]);
  });

  it("a tampered object is refused and nothing changes", () => {
    cpSync(join(dir, "backups"), join(dir, "tampered"), { recursive: true });
    writeFileSync(join(dir, "tampered.yml"), config("./tampered"));
    const copy = join(dir, "tampered", manifest.object.key);
    const bytes = readFileSync(copy);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x01;
    writeFileSync(copy, bytes);
    changeDatabase();
    const before = readFileSync(join(dir, "shop.db"));
    const refused = cliWithStdin(["restore", "-c", "tampered.yml", "--key-stdin", "--yes"], team.secret, { cwd: dir });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("CORRUPT_BACKUP");
    expect(readFileSync(join(dir, "shop.db")).equals(before)).toBe(true);
    expect(leftovers()).toEqual([]);
  });

  it("no file with decrypted data appears during an encrypted restore, except the output itself", async () => {
    const work = join(dir, "watched");
    const tmp = join(work, "tmp");
    const out = join(work, "out");
    mkdirSync(tmp, { recursive: true });
    mkdirSync(out);
    const output = join(out, "restored.db");
    // Watched: TMPDIR, the config's directory (and everything under it, with the backups), the output's.
    const roots = [tmp, dir];
    const plaintext = new Set<string>();
    const look = (file: string) => {
      let fd: number | undefined;
      try {
        fd = openSync(file, "r");
        const head = Buffer.alloc(SQLITE_HEADER.length);
        readSync(fd, head, 0, head.length, 0);
        // Any SQLite page 1, or any piece of the database's text, is decrypted data.
        const sample = Buffer.alloc(64 * 1024);
        const n = readSync(fd, sample, 0, sample.length, 0);
        if (head.equals(SQLITE_HEADER) || sample.subarray(0, n).includes("Customer 1 ")) plaintext.add(file);
      } catch {
        // Gone already, or a directory.
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    };
    const known = new Set(roots.flatMap(files));
    const watchers: FSWatcher[] = roots.map((root) =>
      watch(root, { recursive: true }, (_event, name) => {
        if (name) look(join(root, name.toString()));
      }),
    );
    const poll = setInterval(() => {
      for (const root of roots) for (const file of files(root)) if (!known.has(file)) look(file);
    }, 2);
    let restored: CliResult;
    try {
      restored = await cliWithStdinAsync(["restore", "--key-stdin", "--output", output], team.secret, {
        cwd: dir,
        env: { TMPDIR: tmp, TMP: tmp, TEMP: tmp },
      });
    } finally {
      clearInterval(poll);
      for (const w of watchers) w.close();
    }
    expect(restored.code, restored.stderr).toBe(0);
    look(output);
    expect(readFileSync(output).equals(original)).toBe(true);
    // The watch does see decrypted data: the output itself.
    expect(plaintext.has(output)).toBe(true);
    const ownTemp = /^\.restored\.db\.lifeboat-[a-z]+-[0-9a-f]+\.tmp$/;
    const others = [...plaintext].filter(
      (f) => f !== output && !(f.startsWith(`${out}/`) && ownTemp.test(relative(out, f))),
    );
    expect(others).toEqual([]);
  });
});

describe("archived WAL segments with zstd + age", () => {
  it("replicate encrypts segments; restore --latest and --to-time with --key-stdin give the database back", async () => {
    const wdir = tempDir("encryption-wal");
    const db = join(wdir, "shop.db");
    makeShop(db, 200);
    writeFileSync(join(wdir, "lifeboat.yml"), config("./archive"));
    const replicator = startReplicator([], { cwd: wdir });
    try {
      await replicator.waitFor((e) => e.type === "snapshot", "the generation's snapshot", 60_000);
      const conn = new Database(db);
      const add = conn.prepare("INSERT INTO orders (customer_id, total, note) VALUES (?, ?, ?)");
      for (let i = 0; i < 20; i++) add.run(1, i, `after the snapshot ${i}`);
      // One segment too large to be held in memory on restore (17 MiB that do not compress): it is
      // spilled to a temp file, which must hold ciphertext only.
      conn.exec("CREATE TABLE blobs (b BLOB); INSERT INTO blobs VALUES (randomblob(17 * 1024 * 1024));");
      conn.close();
      await replicator.waitFor((e) => e.type === "shipped" && (e.lastTxn ?? 0) >= 22, "the 22 transactions", 60_000);
    } finally {
      const exit = await replicator.kill("SIGTERM");
      expect(exit.code, replicator.stderr()).toBe(0);
    }
    const atEnd = new Date().toISOString();
    const segments = files(join(wdir, "archive")).filter((f) => f.includes("/wal/") && f.includes(".seg"));
    expect(segments.length).toBeGreaterThan(0);
    for (const segment of segments) {
      expect(segment.endsWith(".zst.age"), segment).toBe(true);
      const bytes = readFileSync(segment);
      expect(bytes.subarray(0, 21).toString("latin1")).toBe("age-encryption.org/v1");
      expect(bytes.includes(Buffer.from("after the snapshot"))).toBe(false);
    }
    const count = (file: string) => {
      const c = new Database(file, { readonly: true });
      try {
        return (c.prepare("SELECT count(*) AS n FROM orders").get() as { n: number }).n;
      } finally {
        c.close();
      }
    };
    // While segments are fetched and applied, every new file but the output holds encrypted data only.
    const known = new Set(files(wdir));
    const heads = new Map<string, string>();
    const look = (file: string) => {
      let fd: number | undefined;
      try {
        fd = openSync(file, "r");
        const head = Buffer.alloc(21);
        const n = readSync(fd, head, 0, head.length, 0);
        if (n > 0) heads.set(file, head.subarray(0, n).toString("latin1"));
      } catch {
        // Gone already, or a directory.
      } finally {
        if (fd !== undefined) closeSync(fd);
      }
    };
    const watcher = watch(wdir, { recursive: true }, (_event, name) => {
      if (name) look(join(wdir, name.toString()));
    });
    const poll = setInterval(() => {
      let now: string[];
      try {
        now = files(wdir);
      } catch {
        return; // a temp directory went away during the scan: the next tick scans again
      }
      for (const file of now) if (!known.has(file)) look(file);
    }, 2);
    const watchedOutput = join(wdir, "restored-watched.db");
    let watched: CliResult;
    try {
      watched = await cliWithStdinAsync(
        ["restore", "--latest", "--key-stdin", "--output", watchedOutput],
        team.secret,
        { cwd: wdir, env: {} },
      );
    } finally {
      clearInterval(poll);
      watcher.close();
    }
    expect(watched.code, watched.stderr).toBe(0);
    const spilled = [...heads.keys()].filter((f) => f.includes(".lifeboat-segments-"));
    expect(spilled.length, "the watch saw the spilled segment").toBeGreaterThan(0);
    const readable = [...heads].filter(
      ([f, head]) =>
        !known.has(f) &&
        f !== watchedOutput &&
        !/\.restored-watched\.db\.lifeboat-[a-z]+-[0-9a-f]+\.tmp$/.test(f) &&
        head !== "age-encryption.org/v1",
    );
    expect(readable, "files with decrypted data besides the output").toEqual([]);

    for (const [name, args] of [
      ["latest", ["--latest"]],
      ["to-time", ["--to-time", atEnd]],
    ] as const) {
      const output = join(wdir, `restored-${name}.db`);
      const restored = cliWithStdin(["restore", ...args, "--key-stdin", "--output", output, "--json"], team.secret, {
        cwd: wdir,
      });
      expect(restored.code, `${name}: ${restored.stderr}`).toBe(0);
      expect(JSON.parse(restored.stdout).restore.segmentsApplied, name).toBeGreaterThan(0);
      expect(count(output), name).toBe(220);
      expect(count(output)).toBe(count(db));
    }
    // verify decrypts and reads back every segment, and test-restores the archive.
    const verified = cliWithStdin(["verify", "--key-stdin"], team.secret, { cwd: wdir });
    expect(verified.code, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(
      new RegExp(`ok {5}shop local generation \\w+: ${segments.length} of ${segments.length} WAL segments read back`),
    );
    expect(verified.stdout).toMatch(/ok {5}shop local trial restore of the latest state: .*transaction 22/);
    // Without the key, the segments cannot be read.
    const refused = cli(["restore", "--latest", "--output", join(wdir, "nokey.db")], { cwd: wdir });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("CONFIG_INVALID");
  }, 120_000);
});

/** Changes the database so a restore would visibly replace it. */
function changeDatabase(): void {
  const conn = new Database(join(dir, "shop.db"));
  conn.exec("DELETE FROM orders WHERE id > 100; PRAGMA wal_checkpoint(TRUNCATE);");
  conn.close();
}

/** Restore temp files left beside the database (there must be none). */
function leftovers(): string[] {
  return readdirSync(dir).filter((f) => f.includes(".lifeboat-") || f.startsWith(".lifeboat-segments-"));
}
