/**
 * `lifeboat serve` against a real S3 server (radosgw): /health turns 503 naming the target while
 * the S3 endpoint is down, and 200 again once it is back. The database's `schedule:` and
 * `health:` sections come from lifeboat.yml.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { type S3Server, startS3Server } from "@lifeboat/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BIN, cli, makeShop, tempDir } from "./helpers.js";
import { waitUntil } from "./replication-helpers.js";

let s3: S3Server;

beforeAll(async () => {
  s3 = await startS3Server();
}, 300_000);

afterAll(async () => {
  await s3?.stop();
});

interface HealthAnswer {
  readonly status: number;
  readonly body: { status: string; healthy: boolean; reasons: string[] };
}

async function health(url: string): Promise<HealthAnswer> {
  const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(10_000) });
  return { status: response.status, body: (await response.json()) as HealthAnswer["body"] };
}

describe("lifeboat serve with an S3 target", () => {
  it("/health is 503 naming the target while the S3 server is stopped, and 200 again when it returns", async () => {
    const dir = tempDir("health-s3");
    makeShop(join(dir, "app.db"), 50);
    const prefix = `health/${randomUUID()}`;
    writeFileSync(
      join(dir, "lifeboat.yml"),
      `databases:
  - name: app
    path: ./app.db
    targets:
      - type: s3
        name: offsite
        bucket: ${s3.bucket}
        prefix: ${prefix}
        endpoint: ${s3.endpoint}
        region: ${s3.region}
        forcePathStyle: true
        accessKeyIdEnv: TEST_S3_KEY_ID
        secretAccessKeyEnv: TEST_S3_SECRET
        maxAttempts: 1
        requestTimeout: 2s
    schedule:
      snapshot: "0 3 * * *"
      timezone: UTC
    health:
      maxSnapshotAge: 2d
`,
    );
    const env = { TEST_S3_KEY_ID: s3.accessKeyId, TEST_S3_SECRET: s3.secretAccessKey };
    const backup = cli(["backup"], { cwd: dir, env });
    expect(backup.code, backup.stderr).toBe(0);

    const serve: ChildProcess = spawn(process.execPath, [BIN, "serve", "--port", "0", "--refresh", "250ms"], {
      cwd: dir,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    serve.stdout!.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    serve.stderr!.setEncoding("utf8").on("data", (d: string) => {
      output += d;
    });
    const exited = new Promise<number | null>((resolve) => serve.on("exit", (code) => resolve(code)));
    try {
      const url = await waitUntil(
        () => /serving \/health and \/metrics on (http:\/\/127\.0\.0\.1:\d+)/.exec(output)?.[1],
        `lifeboat serve to listen:\n${output}`,
      );
      // The schedule came from lifeboat.yml.
      expect(output).toContain("app/snapshot: 0 3 * * *");
      expect(await health(url)).toMatchObject({ status: 200, body: { status: "ok", healthy: true, reasons: [] } });

      await s3.stopGateway();
      const down = await waitUntil(
        async () => {
          const answer = await health(url);
          return answer.status === 503 ? answer : undefined;
        },
        "/health to turn 503",
        60_000,
        200,
      );
      expect(down.body.healthy).toBe(false);
      expect(down.body.reasons.join("\n")).toMatch(
        new RegExp(`app: target offsite \\(s3://${s3.bucket}/${prefix}.*\\) is unreachable`),
      );

      await s3.startGateway();
      const up = await waitUntil(
        async () => {
          const answer = await health(url);
          return answer.status === 200 ? answer : undefined;
        },
        "/health to turn 200 again",
        60_000,
        200,
      );
      expect(up.body).toMatchObject({ status: "ok", healthy: true, reasons: [] });
    } finally {
      if (!s3.gatewayRunning()) await s3.startGateway();
      serve.kill("SIGTERM");
    }
    expect(await exited, output).toBe(0);
  });
});
