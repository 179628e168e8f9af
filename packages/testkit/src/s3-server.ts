/**
 * A real S3 server for tests: Ceph's RADOS Gateway (radosgw) on a throwaway single-node Ceph
 * cluster (one monitor, one in-memory OSD), all on 127.0.0.1 in a per-run temp directory.
 *
 * ```ts
 * const s3 = await startS3Server();          // ~4 s; installs the Debian packages when root
 * const target = s3Storage({ bucket: s3.bucket, endpoint: s3.endpoint, forcePathStyle: true, ... });
 * await s3.stopGateway(); await s3.startGateway();   // an outage of the S3 endpoint only
 * await s3.stop();                            // kills the daemons, removes the directory
 * ```
 *
 * Every port is chosen free on 127.0.0.1, including the monitor's (`mon host = v1:127.0.0.1:PORT`
 * with msgr2 off), and every socket, pid and data file lives in the run directory, so concurrent
 * runs never collide and no lock is needed. The daemons are killed and the directory removed by
 * `stop()`, by an exit handler if the process ends without it, and by the next start if a run was
 * killed outright (its owner pid is gone).
 *
 * Two settings make start-up fast: Paxos proposes every 10 ms instead of every second (each pool
 * that radosgw creates is a monitor proposal; with the default the gateway takes ~10 s to come up)
 * and pools get 8 placement groups with the autoscaler off.
 *
 * The launcher talks to the gateway with its own small SigV4 signer, so the testkit does not depend
 * on the AWS SDK.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request as httpRequest } from "node:http";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/** The Debian packages that provide the server. */
export const S3_SERVER_PACKAGES = ["radosgw", "ceph-mon", "ceph-osd", "ceph-common"] as const;

const BINARIES = ["ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "monmaptool", "ceph", "rados"] as const;
const RUN_DIR_PREFIX = "lifeboat-rgw-";
/** Messages of the zero-fsid race (see `#ceph`), from the CLI or an OSD. */
const FSID_RACE = /problem getting command descriptions|wrong fsid/;
const GATEWAY = "client.rgw.gw";

export interface StartS3ServerOptions {
  /** The bucket created at start (>= 3 characters, S3 naming rules). Default `lifeboat-test`. */
  bucket?: string;
  /** The region clients sign for; radosgw accepts any. Default `us-east-1`. */
  region?: string;
  /** The gateway's port on 127.0.0.1. Default: a free port. */
  port?: number;
  /** Capacity of the in-memory object store. Memory is used only as objects are stored. Default 4 GiB. */
  memoryBytes?: number;
  /** Give up (and say why) if the server is not serving after this long. Default 120 s. */
  startTimeoutMs?: number;
  /** Extra `key = value` settings for the gateway's section of ceph.conf. */
  gatewayConfig?: Readonly<Record<string, string | number | boolean>>;
  /** Where the run directory is created. Default `os.tmpdir()`. */
  parentDir?: string;
  /** Install the Debian packages if missing (only possible as root). Default true. */
  install?: boolean;
  /**
   * Storage classes besides STANDARD that the gateway accepts (`x-amz-storage-class`), e.g.
   * `["COLD"]`; each gets its own pool. Adds about half a second to the start. Default none.
   */
  storageClasses?: readonly string[];
}

export interface S3Server {
  /** `http://127.0.0.1:PORT`. Use path-style addressing (`forcePathStyle: true`). */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** The bucket created at start. */
  readonly bucket: string;
  readonly region: string;
  /** The run directory (config, logs, data); removed by `stop()`. */
  readonly dir: string;
  /** A key id for `ServerSideEncryption: "aws:kms"` (radosgw's built-in testing KMS). */
  readonly kmsKeyId: string;
  /** The storage classes configured besides STANDARD (see `StartS3ServerOptions.storageClasses`). */
  readonly storageClasses: readonly string[];
  /** Creates a bucket (idempotent for a bucket this user owns). */
  createBucket(name: string): Promise<void>;
  /** Stops only the gateway (the S3 endpoint refuses connections until `startGateway()`). */
  stopGateway(options?: { kill?: boolean }): Promise<void>;
  /** Starts the gateway again on the same port and waits until it serves. */
  startGateway(): Promise<void>;
  /** Whether the gateway process is running. */
  gatewayRunning(): boolean;
  /** Kills every daemon and removes the run directory. Idempotent. */
  stop(): Promise<void>;
  /** The last lines of every daemon's log (for failure messages). */
  logTail(lines?: number): string;
}

/**
 * Starts radosgw on a fresh single-node Ceph cluster, creates a user (random access and secret
 * keys) and a bucket, and resolves when the gateway serves S3 requests. Rejects with an error that
 * says why (including the tail of the daemon logs) when the packages are missing and cannot be
 * installed, or when a daemon fails to start; nothing is left running in that case.
 */
export async function startS3Server(options: StartS3ServerOptions = {}): Promise<S3Server> {
  const bucket = options.bucket ?? "lifeboat-test";
  assertBucketName(bucket);
  await ensureCephInstalled(options.install ?? true);
  await sweepAbandonedRuns(options.parentDir ?? tmpdir());
  // A port picked free can be taken by someone else before the daemon binds it: try again then.
  for (let attempt = 1; ; attempt++) {
    const cluster = new Cluster(options, bucket);
    try {
      await cluster.start();
      return cluster.handle();
    } catch (error) {
      const logs = cluster.logTail(25);
      const errorLines = cluster.errorLines(12);
      await cluster.stop();
      const portTaken = /Address already in use|EADDRINUSE|bind.*failed|failed to bind/i.test(logs);
      if (portTaken && attempt < 3 && options.port === undefined) continue;
      if (FSID_RACE.test(`${errorText(error)}\n${logs}`) && attempt < 3) continue;
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(
        `startS3Server: the S3 server (Ceph radosgw) did not start: ${reason}\n` +
          `Errors the daemons logged:\n${errorLines || "(none)"}\n` +
          `Run directory (removed): ${cluster.dir}\nLast lines of the daemon logs:\n${logs}`,
        { cause: error },
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Installation

/** Checks the Ceph binaries are on PATH; installs the Debian packages when root, else throws. */
export async function ensureCephInstalled(install = true): Promise<void> {
  if (missingBinaries().length === 0) return;
  const packages = S3_SERVER_PACKAGES.join(" ");
  const isRoot = process.getuid?.() === 0;
  if (!install || !isRoot || !findOnPath("apt-get")) {
    throw new Error(
      `The S3 tests need Ceph's radosgw (missing: ${missingBinaries().join(", ")}). Install it with ` +
        `\`sudo apt-get install -y --no-install-recommends ${packages}\` (Debian/Ubuntu), or run ` +
        "`sh scripts/setup.sh` as root, which installs it." +
        (isRoot ? "" : " It was not installed automatically because this process is not root."),
    );
  }
  const aptInstall = () =>
    run(
      "apt-get",
      ["install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600", ...S3_SERVER_PACKAGES],
      {
        timeoutMs: 900_000,
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      },
    );
  try {
    await aptInstall();
  } catch {
    // Usually "Unable to locate package": the package lists were never downloaded.
    try {
      await run("apt-get", ["update", "-q", "-o", "DPkg::Lock::Timeout=600"], { timeoutMs: 600_000 });
      await aptInstall();
    } catch (error) {
      throw new Error(`Installing the S3 server packages failed (apt-get install ${packages}): ${errorText(error)}`, {
        cause: error,
      });
    }
  }
  const still = missingBinaries();
  if (still.length > 0) {
    throw new Error(
      `apt-get installed ${packages}, but ${still.join(", ")} is still not on PATH (${process.env.PATH}).`,
    );
  }
}

function missingBinaries(): string[] {
  return BINARIES.filter((name) => !findOnPath(name));
}

function findOnPath(name: string): string | undefined {
  // Only PATH: it is where spawn() will look.
  const dirs = (process.env.PATH ?? "").split(delimiter);
  for (const dir of dirs) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The cluster

interface Daemon {
  readonly name: string;
  readonly child: ChildProcess;
  exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
}

/** Servers not yet stopped, killed by the exit handler if the process ends first. */
const live = new Set<Cluster>();
let exitHandlersInstalled = false;

function installExitHandlers(): void {
  if (exitHandlersInstalled) return;
  exitHandlersInstalled = true;
  process.once("exit", () => {
    for (const cluster of live) cluster.killNow();
  });
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    const onSignal = () => {
      for (const cluster of live) cluster.killNow();
      // Only re-raise if nobody else handles the signal, so the default action (exit) happens.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    };
    process.once(signal, onSignal);
  }
}

class Cluster {
  readonly bucket: string;
  readonly region: string;
  readonly accessKeyId = `LBT${randomBytes(9).toString("hex").toUpperCase()}`;
  readonly secretAccessKey = randomBytes(24).toString("base64url");
  readonly kmsKeyId = "lifeboat-test-key";
  dir = "";
  #options: StartS3ServerOptions;
  #monPort = 0;
  #port = 0;
  #daemons = new Map<string, Daemon>();
  #stopped = false;

  constructor(options: StartS3ServerOptions, bucket: string) {
    this.#options = options;
    this.bucket = bucket;
    this.region = options.region ?? "us-east-1";
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.#port}`;
  }

  async start(): Promise<void> {
    const deadline = Date.now() + (this.#options.startTimeoutMs ?? 120_000);
    this.dir = await mkdtemp(join(this.#options.parentDir ?? tmpdir(), RUN_DIR_PREFIX));
    live.add(this);
    installExitHandlers();
    for (const sub of ["run", "log", "mon", "osd/0", "rgw", "crash", "pids"]) {
      await mkdir(join(this.dir, sub), { recursive: true });
    }
    await writeFile(join(this.dir, "owner.json"), JSON.stringify({ pid: process.pid }));
    this.#monPort = await freePort();
    this.#port = this.#options.port ?? (await freePort([this.#monPort]));
    const fsid = randomUUID();
    await writeFile(this.#conf, this.#config(fsid));

    const step = async <T>(what: string, action: () => Promise<T>): Promise<T> => {
      try {
        return await action();
      } catch (error) {
        throw new Error(`${what}: ${errorText(error)}`, { cause: error });
      }
    };
    const monmap = join(this.dir, "monmap");
    await step("monmaptool --create", () =>
      run("monmaptool", ["--create", "--fsid", fsid, "--addv", "a", `[v1:127.0.0.1:${this.#monPort}]`, monmap]),
    );
    await step("ceph-mon --mkfs", () => run("ceph-mon", ["-c", this.#conf, "--mkfs", "-i", "a", "--monmap", monmap]));
    this.#spawn("mon.a", "ceph-mon", ["-f", "-c", this.#conf, "-i", "a"]);
    const osdUuid = randomUUID();
    await step("ceph osd new (is the monitor up?)", () => this.#ceph(["osd", "new", osdUuid], deadline));
    // Placed in the CRUSH map here rather than by the OSD at boot: with auth off, the OSD can send
    // that command before it knows the cluster's fsid, and the monitor refuses it ("wrong fsid").
    await step("ceph osd crush add", () =>
      this.#ceph(["osd", "crush", "add", "osd.0", "1.0", "host=lifeboat", "root=default"], deadline),
    );
    await step("ceph-osd --mkfs", () =>
      run("ceph-osd", ["-c", this.#conf, "-i", "0", "--mkfs", "--osd-uuid", osdUuid], { timeoutMs: 60_000 }),
    );
    this.#spawn("osd.0", "ceph-osd", ["-f", "-c", this.#conf, "-i", "0"]);
    await step("waiting for the OSD to come up", () => this.#waitForOsd(deadline));
    await step("starting radosgw", () => this.startGateway(deadline));
    await step("radosgw-admin user create", () =>
      run(
        "radosgw-admin",
        [
          "-c",
          this.#conf,
          "user",
          "create",
          "--uid=lifeboat",
          "--display-name=Lifeboat tests",
          `--access-key=${this.accessKeyId}`,
          `--secret-key=${this.secretAccessKey}`,
        ],
        { timeoutMs: Math.max(5_000, deadline - Date.now()) },
      ),
    );
    const classes = this.#options.storageClasses ?? [];
    if (classes.length > 0) {
      await step("adding storage classes", async () => {
        for (const name of classes) {
          if (!/^[A-Z][A-Z0-9_]*$/.test(name)) throw new Error(`invalid storage class name ${JSON.stringify(name)}`);
          const placement = ["--placement-id", "default-placement", "--storage-class", name];
          await run("radosgw-admin", [
            "-c",
            this.#conf,
            "zonegroup",
            "placement",
            "add",
            "--rgw-zonegroup",
            "default",
            ...placement,
          ]);
          await run("radosgw-admin", [
            "-c",
            this.#conf,
            "zone",
            "placement",
            "add",
            "--rgw-zone",
            "default",
            ...placement,
            "--data-pool",
            `default.rgw.${name.toLowerCase()}.data`,
          ]);
        }
        // Without a realm the gateway reads the zone's placement only at start.
        await this.stopGateway(false);
        await this.startGateway(deadline);
      });
    }
    await step(`creating the bucket ${this.bucket}`, () => this.createBucket(this.bucket));
    // The first object write creates the data pool (a second or two); do it now, not in a test.
    await step("warm-up write", async () => {
      await this.#expectStatus("PUT", `/${this.bucket}/lifeboat-warm-up`, [200], Buffer.from("warm-up"));
      await this.#expectStatus("DELETE", `/${this.bucket}/lifeboat-warm-up`, [204, 200]);
    });
  }

  handle(): S3Server {
    return {
      endpoint: this.endpoint,
      accessKeyId: this.accessKeyId,
      secretAccessKey: this.secretAccessKey,
      bucket: this.bucket,
      region: this.region,
      dir: this.dir,
      kmsKeyId: this.kmsKeyId,
      storageClasses: [...(this.#options.storageClasses ?? [])],
      createBucket: (name) => this.createBucket(name),
      stopGateway: (options) => this.stopGateway(options?.kill ?? false),
      startGateway: () => this.startGateway(),
      gatewayRunning: () => this.#running(GATEWAY),
      stop: () => this.stop(),
      logTail: (lines) => this.logTail(lines),
    };
  }

  async createBucket(name: string): Promise<void> {
    assertBucketName(name);
    const response = await this.#signed("PUT", `/${name}`);
    if (response.status === 200) return;
    if (response.status === 409 && response.body.includes("BucketAlreadyOwnedByYou")) return;
    throw new Error(`CreateBucket ${name} failed: HTTP ${response.status} ${response.body.slice(0, 500)}`);
  }

  async startGateway(deadline = Date.now() + 60_000): Promise<void> {
    this.#checkNotStopped();
    if (this.#running(GATEWAY)) return;
    if (this.#daemons.has(GATEWAY)) await this.#forgetDeadGateway();
    const daemon = this.#spawn(GATEWAY, "radosgw", ["-f", "-c", this.#conf, "-n", GATEWAY]);
    for (;;) {
      if (daemon.exited) {
        throw new Error(
          `radosgw exited (${daemon.exited.signal ?? `code ${daemon.exited.code}`}) before serving on ${this.endpoint}`,
        );
      }
      const status = await probe(`${this.endpoint}/`);
      if (status !== undefined && status < 500) return;
      if (Date.now() > deadline) throw new Error(`radosgw did not answer on ${this.endpoint} in time`);
      await sleep(100);
    }
  }

  async stopGateway(kill: boolean): Promise<void> {
    this.#checkNotStopped();
    await this.#stopDaemon(GATEWAY, kill ? "SIGKILL" : "SIGTERM");
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    // The data is throwaway: SIGKILL spares the in-memory OSD from saving its store on shutdown.
    for (const name of [GATEWAY, "osd.0", "mon.a"]) await this.#stopDaemon(name, "SIGKILL");
    live.delete(this);
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }

  /** Synchronous teardown for the exit handler. */
  killNow(): void {
    for (const daemon of this.#daemons.values()) {
      if (!daemon.exited && daemon.child.pid) {
        try {
          process.kill(daemon.child.pid, "SIGKILL");
        } catch {
          // already gone
        }
      }
    }
    live.delete(this);
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }

  /** The last lines at Ceph's error level (` -1 `) or saying ERROR, from every log, oldest first. */
  errorLines(count: number): string {
    const found: string[] = [];
    for (const name of safeReaddir(join(this.dir, "log")).filter((file) => file.endsWith(".log"))) {
      try {
        for (const line of readFileSync(join(this.dir, "log", name), "utf8").split("\n")) {
          if (/ -1 |ERROR/.test(line)) found.push(`${name}: ${line.trim()}`);
        }
      } catch {
        // unreadable: skip
      }
    }
    return found
      .sort((a, b) => timeOf(a).localeCompare(timeOf(b)))
      .slice(-count)
      .join("\n");
  }

  logTail(lines = 20): string {
    if (!this.dir) return "(no run directory)";
    const logDir = join(this.dir, "log");
    let names: string[];
    try {
      names = readdirSync(logDir).sort();
    } catch {
      return "(no logs)";
    }
    const parts: string[] = [];
    for (const name of names) {
      try {
        const text = readFileSync(join(logDir, name), "utf8").trimEnd();
        if (!text) continue;
        const tail = text.split("\n").slice(-lines).join("\n");
        parts.push(`--- ${name} ---\n${tail}`);
      } catch {
        // unreadable log: skip
      }
    }
    return parts.join("\n") || "(the logs are empty)";
  }

  get #conf(): string {
    return join(this.dir, "ceph.conf");
  }

  #config(fsid: string): string {
    const d = this.dir;
    const kmsKey = createHash("sha256").update("lifeboat-test-kms").digest("base64");
    const gateway: Record<string, string | number | boolean> = {
      "rgw frontends": `beast endpoint=127.0.0.1:${this.#port}`,
      "rgw data": `${d}/rgw`,
      "rgw thread pool size": 64,
      // Deleted objects' data is freed by garbage collection, after two hours by default: in an
      // in-memory store that fills the memory of a long test run or a benchmark.
      "rgw gc obj min wait": 1,
      "rgw gc processor period": 2,
      // radosgw's built-in test KMS, so aws:kms server-side encryption works over plain http.
      "rgw crypt s3 kms backend": "testing",
      "rgw crypt s3 kms encryption keys": `${this.kmsKeyId}=${kmsKey}`,
      "rgw crypt require ssl": false,
      ...this.#options.gatewayConfig,
    };
    return [
      "[global]",
      `fsid = ${fsid}`,
      `mon host = v1:127.0.0.1:${this.#monPort}`,
      "mon initial members = a",
      "public addr = 127.0.0.1",
      "cluster addr = 127.0.0.1",
      "ms bind msgr2 = false",
      "auth cluster required = none",
      "auth service required = none",
      "auth client required = none",
      "osd pool default size = 1",
      "osd pool default min size = 1",
      "mon allow pool size one = true",
      "osd pool default pg num = 8",
      "osd pool default pgp num = 8",
      "osd pool default pg autoscale mode = off",
      "paxos propose interval = 0.01",
      "paxos min wait = 0.01",
      "mon data avail crit = 0",
      "mon data avail warn = 0",
      "osd crush update on start = false",
      "osd class update on start = false",
      "osd objectstore = memstore",
      `memstore device bytes = ${this.#options.memoryBytes ?? 4 * 1024 ** 3}`,
      "osd max object name len = 2048", // S3 keys go up to 1024 bytes, plus the bucket marker
      "osd max object namespace len = 64",
      `run dir = ${d}/run`,
      `admin socket = ${d}/run/$name.asok`,
      `pid file = ${d}/run/$name.pid`,
      `log file = ${d}/log/$name.log`,
      `mon data = ${d}/mon/$id`,
      `osd data = ${d}/osd/$id`,
      `crash dir = ${d}/crash`,
      "",
      // Clients and OSDs start from the monmap file, which carries the fsid: built from `mon host`
      // alone, their first commands can go out with a zero fsid and be refused (EPERM).
      "[client]",
      `monmap = ${d}/monmap`,
      "[osd]",
      `monmap = ${d}/monmap`,
      "",
      `[${GATEWAY}]`,
      ...Object.entries(gateway).map(([key, value]) => `${key} = ${String(value)}`),
      "",
    ].join("\n");
  }

  #spawn(name: string, command: string, args: string[]): Daemon {
    const out = openSync(join(this.dir, "log", `${name}.out`), "a");
    let child: ChildProcess;
    try {
      child = spawn(command, args, {
        stdio: ["ignore", out, out],
        env: { ...process.env, CEPH_CONF: this.#conf },
      });
    } finally {
      closeSync(out);
    }
    const daemon: Daemon = { name, child, exited: undefined };
    child.on("exit", (code, signal) => {
      daemon.exited = { code, signal };
    });
    child.on("error", (error) => {
      daemon.exited = { code: -1, signal: null };
      void writeFile(join(this.dir, "log", `${name}.spawn-error`), String(error)).catch(() => undefined);
    });
    child.unref();
    this.#daemons.set(name, daemon);
    if (child.pid) void writeFile(join(this.dir, "pids", `${name}.pid`), String(child.pid)).catch(() => undefined);
    return daemon;
  }

  #running(name: string): boolean {
    const daemon = this.#daemons.get(name);
    return daemon !== undefined && daemon.exited === undefined;
  }

  async #stopDaemon(name: string, signal: NodeJS.Signals): Promise<void> {
    const daemon = this.#daemons.get(name);
    if (!daemon || daemon.exited) return;
    const exited = new Promise<void>((resolve) => daemon.child.once("exit", () => resolve()));
    daemon.child.kill(signal);
    if (!(await settlesWithin(exited, 15_000))) {
      daemon.child.kill("SIGKILL");
      await exited;
    }
  }

  /**
   * A killed gateway's RADOS watches linger until the OSD times them out (30 s), and every bucket
   * or user change waits for them to acknowledge meanwhile. Blocklisting its address drops them.
   */
  async #forgetDeadGateway(): Promise<void> {
    const watchers = await run("rados", [
      "-c",
      this.#conf,
      "-p",
      "default.rgw.control",
      "listwatchers",
      "notify.0",
    ]).catch(() => "");
    for (const match of watchers.matchAll(/watcher=(\S+)/g)) {
      await this.#ceph(["osd", "blocklist", "add", match[1]!], Date.now() + 30_000);
    }
  }

  async #ceph(args: string[], deadline: number): Promise<string> {
    for (let attempt = 1; ; attempt++) {
      const timeoutSeconds = Math.max(5, Math.ceil((deadline - Date.now()) / 1000));
      try {
        return await run("ceph", ["-c", this.#conf, "--connect-timeout", String(timeoutSeconds), ...args], {
          timeoutMs: timeoutSeconds * 1000 + 5_000,
        });
      } catch (error) {
        // With auth off, a client's first command can race its monmap and carry a zero fsid; the
        // monitor refuses it with EPERM. A second try has the map.
        if (!FSID_RACE.test(errorText(error)) || attempt >= 5 || Date.now() > deadline) throw error;
        await sleep(200 * attempt);
      }
    }
  }

  async #waitForOsd(deadline: number): Promise<void> {
    for (;;) {
      const osd = this.#daemons.get("osd.0");
      if (osd?.exited) throw new Error(`ceph-osd exited (${osd.exited.signal ?? `code ${osd.exited.code}`})`);
      const stat = JSON.parse(await this.#ceph(["osd", "stat", "-f", "json"], deadline)) as { num_up_osds?: number };
      if ((stat.num_up_osds ?? 0) >= 1) return;
      if (Date.now() > deadline) throw new Error("the OSD did not come up in time");
      await sleep(200);
    }
  }

  #checkNotStopped(): void {
    if (this.#stopped) throw new Error("this S3 server was stopped");
  }

  async #expectStatus(method: string, path: string, ok: number[], body?: Buffer): Promise<void> {
    const response = await this.#signed(method, path, body);
    if (!ok.includes(response.status)) {
      throw new Error(`${method} ${path}: HTTP ${response.status} ${response.body.slice(0, 500)}`);
    }
  }

  #signed(method: string, path: string, body: Buffer = Buffer.alloc(0)): Promise<{ status: number; body: string }> {
    const url = new URL(path, this.endpoint);
    const headers = signV4({
      method,
      url,
      body,
      region: this.region,
      accessKeyId: this.accessKeyId,
      secretAccessKey: this.secretAccessKey,
    });
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        url,
        { method, headers: { ...headers, "content-length": String(body.length) } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }));
          res.on("error", reject);
        },
      );
      req.setTimeout(30_000, () => req.destroy(new Error(`${method} ${path} timed out`)));
      req.on("error", reject);
      req.end(body);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Abandoned runs (a test process killed with SIGKILL cannot run its exit handler)

async function sweepAbandonedRuns(parent: string): Promise<void> {
  let names: string[];
  try {
    names = readdirSync(parent).filter((name) => name.startsWith(RUN_DIR_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    const dir = join(parent, name);
    try {
      const owner = JSON.parse(await readFile(join(dir, "owner.json"), "utf8")) as { pid?: number };
      if (typeof owner.pid !== "number" || isAlive(owner.pid)) continue;
    } catch {
      // No owner file: a run that is just starting, or not ours. Leave it unless it is old.
      try {
        if (Date.now() - statSync(dir).mtimeMs < 3600_000) continue;
      } catch {
        continue;
      }
    }
    for (const file of safeReaddir(join(dir, "pids"))) {
      const pid = Number(readFileSync(join(dir, "pids", file), "utf8"));
      // Only a process whose command line names this run's directory is one of its daemons.
      if (Number.isInteger(pid) && pid > 0 && commandLineOf(pid).includes(dir)) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // gone meanwhile
        }
      }
    }
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** The ISO time stamp a Ceph log line starts with (after our `file: ` tag). */
function timeOf(line: string): string {
  return /\d{4}-\d\d-\d\dT[\d:.]+/.exec(line)?.[0] ?? "";
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

function commandLineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " ");
  } catch {
    return "";
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

// ---------------------------------------------------------------------------------------------
// Helpers

function run(
  command: string,
  args: string[],
  options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      { timeout: options.timeoutMs ?? 30_000, env: options.env, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          const output = `${stderr}\n${stdout}`.trim().split("\n").slice(-15).join("\n");
          reject(new Error(`${command} ${args.join(" ")} failed (${error.message.split("\n")[0]}):\n${output}`));
        } else {
          resolve(stdout);
        }
      },
    );
  });
}

/** Whether `promise` settles within `ms` (the timer does not keep the process alive). */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A port that was free on 127.0.0.1 a moment ago. */
function freePort(avoid: readonly number[] = []): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => {
        if (avoid.includes(port)) freePort(avoid).then(resolve, reject);
        else resolve(port);
      });
    });
  });
}

/** The HTTP status of an anonymous GET, or undefined when nothing answers. */
function probe(url: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method: "GET", agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.setTimeout(2_000, () => req.destroy());
    req.on("error", () => resolve(undefined));
    req.end();
  });
}

function assertBucketName(name: string): void {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(name)) {
    throw new Error(
      `Invalid bucket name ${JSON.stringify(name)}: use 3-63 lower-case letters, digits, '.' and '-', starting and ending with a letter or digit.`,
    );
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** AWS Signature Version 4 headers for a request to S3 (path-style URL, body hashed in full). */
function signV4(request: {
  method: string;
  url: URL;
  body: Buffer;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
}): Record<string, string> {
  const amzDate = new Date()
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
  const day = amzDate.slice(0, 8);
  const payloadHash = sha256Hex(request.body);
  const host = request.url.host;
  const headers: Record<string, string> = {
    host,
    "x-amz-content-sha256": payloadHash,
    "x-amz-date": amzDate,
  };
  const signedHeaders = Object.keys(headers).sort();
  const canonicalQuery = [...request.url.searchParams.entries()]
    .map(([key, value]) => [rfc3986(key), rfc3986(value)] as const)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, value]) => `${key}=${value}`)
    .join("&");
  const canonicalRequest = [
    request.method,
    request.url.pathname, // already percent-encoded by URL
    canonicalQuery,
    ...signedHeaders.map((name) => `${name}:${headers[name]}`),
    "",
    signedHeaders.join(";"),
    payloadHash,
  ].join("\n");
  const scope = `${day}/${request.region}/s3/aws4_request`;
  const stringToSign = ["AWS4-HMAC-SHA256", amzDate, scope, sha256Hex(Buffer.from(canonicalRequest))].join("\n");
  let key: Buffer = hmac(`AWS4${request.secretAccessKey}`, day);
  for (const part of [request.region, "s3", "aws4_request"]) key = hmac(key, part);
  const signature = createHmac("sha256", key).update(stringToSign).digest("hex");
  const { host: _host, ...rest } = headers;
  return {
    ...rest,
    authorization: `AWS4-HMAC-SHA256 Credential=${request.accessKeyId}/${scope}, SignedHeaders=${signedHeaders.join(";")}, Signature=${signature}`,
  };
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac("sha256", key).update(data).digest();
}

function sha256Hex(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

function rfc3986(text: string): string {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}
