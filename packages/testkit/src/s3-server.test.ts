/**
 * The S3 test server launcher: it serves, runs beside another instance, survives a gateway
 * restart, explains a failed start, and leaves nothing behind however the test process ends.
 * (Its S3 behaviour is exercised in depth by packages/storage-s3's tests.)
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { type S3Server, startS3Server } from "./s3-server.js";

const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const launcher = pathToFileURL(fileURLToPath(new URL("./s3-server.ts", import.meta.url))).href;

const started: S3Server[] = [];
const scratch: string[] = [];
afterAll(async () => {
  for (const server of started) await server.stop();
  for (const dir of scratch) await rm(dir, { recursive: true, force: true });
});

async function start(options?: Parameters<typeof startS3Server>[0]): Promise<S3Server> {
  const server = await startS3Server(options);
  started.push(server);
  return server;
}

/** Status and body of an anonymous request. */
function anonymous(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }));
    });
    req.on("error", reject);
    req.end();
  });
}

function errnoOf(promise: Promise<unknown>): Promise<string | undefined> {
  return promise.then(
    () => undefined,
    (error: NodeJS.ErrnoException) => error.code,
  );
}

/** Pids of running processes whose command line mentions `text`. */
function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
      const state = readFileSync(`/proc/${entry}/stat`, "utf8").split(") ")[1]?.[0];
      if (cmdline.includes(text) && state !== "Z") pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

function daemonPids(server: S3Server): number[] {
  return readdirSync(join(server.dir, "pids")).map((file) =>
    Number(readFileSync(join(server.dir, "pids", file), "utf8")),
  );
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z");
  } catch {
    return false;
  }
}

async function waitFor(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return condition();
}

/** Runs a script in a child Node process that starts a server; resolves with what it printed first. */
async function childWithServer(
  ending: string,
): Promise<{ child: ReturnType<typeof spawn>; info: { dir: string; pids: number[]; endpoint: string } }> {
  const dir = await mkdtemp(join(tmpdir(), "lifeboat-s3-child-"));
  scratch.push(dir);
  const script = join(dir, "child.mjs");
  await writeFile(
    script,
    `import { readdirSync, readFileSync } from "node:fs";
     import { join } from "node:path";
     import { startS3Server } from ${JSON.stringify(launcher)};
     const server = await startS3Server();
     const pids = readdirSync(join(server.dir, "pids")).map((f) => Number(readFileSync(join(server.dir, "pids", f), "utf8")));
     process.stdout.write(JSON.stringify({ dir: server.dir, pids, endpoint: server.endpoint }) + "\\n");
     ${ending}`,
  );
  const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", script], {
    cwd: repoRoot,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const info = await new Promise<{ dir: string; pids: number[]; endpoint: string }>((resolve, reject) => {
    let out = "";
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const line = out.split("\n")[0];
      if (out.includes("\n") && line) resolve(JSON.parse(line));
    });
    child.on("exit", (code) => reject(new Error(`the child exited (${code}) before starting a server:\n${stderr}`)));
  });
  return { child, info };
}

describe("startS3Server", () => {
  it("serves S3 on a free port with a user and a bucket, and stop() removes every trace", async () => {
    const server = await start({ bucket: "first-bucket" });
    expect(server.endpoint).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.bucket).toBe("first-bucket");
    expect(server.accessKeyId).toMatch(/^LBT[0-9A-F]{18}$/);
    expect(server.secretAccessKey.length).toBeGreaterThanOrEqual(32);
    expect((await anonymous(`${server.endpoint}/`)).status).toBe(200);
    // The bucket exists and is private; a bucket never created does not.
    const privateBucket = await anonymous(`${server.endpoint}/first-bucket`);
    expect(privateBucket.status).toBe(403);
    expect(privateBucket.body).toContain("AccessDenied");
    expect((await anonymous(`${server.endpoint}/never-created`)).body).toContain("NoSuchBucket");
    await server.createBucket("second-bucket");
    await server.createBucket("second-bucket"); // idempotent
    expect((await anonymous(`${server.endpoint}/second-bucket`)).status).toBe(403);
    await expect(server.createBucket("No_Such")).rejects.toThrow(/Invalid bucket name/);

    const pids = daemonPids(server);
    expect(pids).toHaveLength(3); // monitor, OSD, gateway
    for (const pid of pids) expect(isAlive(pid)).toBe(true);
    await server.stop();
    await server.stop(); // idempotent
    for (const pid of pids) expect(isAlive(pid)).toBe(false);
    expect(existsSync(server.dir)).toBe(false);
    expect(await errnoOf(anonymous(`${server.endpoint}/`))).toBe("ECONNREFUSED");
  });

  it("runs two servers side by side: separate ports for the gateway and the monitor", async () => {
    const [a, b] = await Promise.all([start(), start()]);
    const monitor = (server: S3Server) =>
      /mon host = v1:127\.0\.0\.1:(\d+)/.exec(readFileSync(join(server.dir, "ceph.conf"), "utf8"))?.[1];
    expect(a!.endpoint).not.toBe(b!.endpoint);
    expect(monitor(a!)).toBeDefined();
    expect(monitor(a!)).not.toBe(monitor(b!));
    expect(monitor(a!)).not.toBe("6789");
    await a!.createBucket("only-in-a");
    expect((await anonymous(`${a!.endpoint}/only-in-a`)).status).toBe(403);
    expect((await anonymous(`${b!.endpoint}/only-in-a`)).body).toContain("NoSuchBucket");
    await Promise.all([a!.stop(), b!.stop()]);
  });

  it("stopGateway() refuses connections until startGateway(); data and quick metadata changes survive", async () => {
    const server = await start();
    await server.createBucket("kept");
    await server.stopGateway({ kill: true });
    expect(server.gatewayRunning()).toBe(false);
    expect(await errnoOf(anonymous(`${server.endpoint}/`))).toBe("ECONNREFUSED");
    await server.startGateway();
    expect(server.gatewayRunning()).toBe(true);
    expect((await anonymous(`${server.endpoint}/kept`)).status).toBe(403);
    // A killed gateway's watches would hold bucket changes for 30 s; the restart drops them.
    const before = Date.now();
    await server.createBucket("after-restart");
    expect(Date.now() - before).toBeLessThan(5000);
    await server.stopGateway(); // graceful
    await server.startGateway();
    expect((await anonymous(`${server.endpoint}/after-restart`)).status).toBe(403);
    await server.stop();
  });

  it("explains a failed start with the daemon logs, and leaves nothing running", async () => {
    const blocker: Server = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve));
    const port = (blocker.address() as { port: number }).port;
    try {
      let message = "";
      try {
        await start({ port, startTimeoutMs: 60_000 });
      } catch (error) {
        message = (error as Error).message;
      }
      expect(message).toContain("the S3 server (Ceph radosgw) did not start");
      expect(message).toContain("starting radosgw");
      expect(message).toContain("Last lines of the daemon logs");
      // The cause, either from radosgw's log (when it flushed it before exiting) or its exit code
      // (98 = EADDRINUSE).
      expect(message).toMatch(
        /client\.rgw\.gw\.log: .*failed to bind address 127\.0\.0\.1:\d+: Address already in use|radosgw exited \(code 98\)/,
      );
      const dir = /Run directory \(removed\): (\S+)/.exec(message)?.[1];
      expect(dir).toBeDefined();
      expect(existsSync(dir!)).toBe(false);
      expect(processesMentioning(dir!)).toEqual([]);
    } finally {
      blocker.close();
    }
  });

  it("says how to install the server when its packages are missing and may not be installed", async () => {
    const saved = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      await expect(startS3Server({ install: false })).rejects.toThrow(
        /The S3 tests need Ceph's radosgw \(missing: ceph-mon, .*\)\. Install it with `sudo apt-get install -y --no-install-recommends radosgw ceph-mon ceph-osd ceph-common`/,
      );
    } finally {
      process.env.PATH = saved;
    }
  });
});

describe("startS3Server cleanup when the test process ends", () => {
  it("a process that exits without stop() takes its daemons and directory with it", async () => {
    const { child, info } = await childWithServer("process.exit(0);");
    await new Promise((resolve) => child.once("exit", resolve));
    expect(await waitFor(() => info.pids.every((pid) => !isAlive(pid)), 5000)).toBe(true);
    expect(existsSync(info.dir)).toBe(false);
  });

  it("a process ended by SIGTERM does too", async () => {
    const { child, info } = await childWithServer("setInterval(() => {}, 1000);");
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
    expect(await waitFor(() => info.pids.every((pid) => !isAlive(pid)), 5000)).toBe(true);
    expect(existsSync(info.dir)).toBe(false);
  });

  it("the daemons of a process killed with SIGKILL are cleaned up by the next start", async () => {
    const { child, info } = await childWithServer("setInterval(() => {}, 1000);");
    child.kill("SIGKILL");
    await new Promise((resolve) => child.once("exit", resolve));
    // Nothing could run in the killed process: its daemons are orphans now.
    expect(info.pids.some((pid) => isAlive(pid))).toBe(true);
    await start();
    expect(await waitFor(() => info.pids.every((pid) => !isAlive(pid)), 5000)).toBe(true);
    expect(existsSync(info.dir)).toBe(false);
  });
});
