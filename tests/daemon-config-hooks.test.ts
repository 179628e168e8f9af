/**
 * Config hooks through the CLI, as an operator writes them in lifeboat.yml: a webhook reaches a
 * local HTTP server (and is retried after a 500), a failing `beforeBackup` exec hook vetoes the
 * backup with its stderr in the message, and an `afterBackup` exec hook gets the event in its
 * environment.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { cli, json, makeShop, tempDir } from "./helpers.js";
import { runCli } from "./replication-helpers.js";

/** A directory with app.db and a lifeboat.yml backing it up to ./backups with `hooks` (YAML lines). */
function project(hooks: string): string {
  const dir = tempDir("hooks");
  makeShop(join(dir, "app.db"), 20);
  writeFileSync(
    join(dir, "lifeboat.yml"),
    `databases:
  - name: app
    path: ./app.db
    targets: [{ type: local, path: ./backups }]
    hooks:
${hooks}`,
  );
  return dir;
}

function storedBackups(dir: string): { id: string }[] {
  return json(cli(["list", "--json"], { cwd: dir })).databases[0].targets[0].backups;
}

interface Received {
  readonly method: string | undefined;
  readonly url: string | undefined;
  readonly headers: IncomingHttpHeaders;
  readonly body: Record<string, any>;
}

describe("config hooks from lifeboat.yml", () => {
  it("an afterBackup webhook POSTs the event as JSON, and is sent again after a 500", async () => {
    const received: Received[] = [];
    const server = createServer((request, response) => {
      let text = "";
      request.setEncoding("utf8").on("data", (d: string) => {
        text += d;
      });
      request.on("end", () => {
        received.push({ method: request.method, url: request.url, headers: request.headers, body: JSON.parse(text) });
        // The first delivery fails the way a restarting alert service does.
        response.writeHead(received.length === 1 ? 500 : 204).end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const dir = project(`      - on: afterBackup
        webhook: http://127.0.0.1:${port}/lifeboat/events
        timeout: 5s
`);
      // Asynchronously: this process serves the webhook while the CLI runs.
      const run = await runCli(["backup", "--reason", "nightly", "--json"], { cwd: dir });
      expect(run.code, run.stderr).toBe(0);
      const backupId: string = JSON.parse(run.stdout).backups[0].id;

      expect(received).toHaveLength(2);
      for (const delivery of received) {
        expect(delivery.method).toBe("POST");
        expect(delivery.url).toBe("/lifeboat/events");
        expect(delivery.headers["content-type"]).toBe("application/json");
        expect(delivery.body).toMatchObject({
          event: "afterBackup",
          database: { name: "app", path: join(dir, "app.db") },
          backupId,
          sizeBytes: expect.any(Number),
          targets: [{ name: "local", ok: true }],
          sentAt: expect.any(String),
        });
        expect(Date.parse(delivery.body.sentAt)).not.toBeNaN();
      }
      expect(received[1]!.body).toEqual(received[0]!.body);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("a beforeBackup exec hook that exits non-zero vetoes the backup and its stderr is shown", () => {
    const dir = project(`      - on: beforeBackup
        exec: 'echo "maintenance window: no backups until 06:00" >&2; exit 4'
`);
    const run = cli(["backup"], { cwd: dir });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("HOOK_VETOED");
    expect(run.stderr).toMatch(/exited 4: maintenance window: no backups until 06:00/);
    expect(storedBackups(dir)).toEqual([]);
  });

  it("an afterBackup exec hook sees LIFEBOAT_EVENT, LIFEBOAT_DB and LIFEBOAT_BACKUP_ID", () => {
    const dir = project(`      - on: afterBackup
        exec: 'printf "%s|%s|%s|%s" "$LIFEBOAT_EVENT" "$LIFEBOAT_DB" "$LIFEBOAT_BACKUP_ID" "$LIFEBOAT_DB_PATH" > seen.txt'
`);
    const run = cli(["backup", "--json"], { cwd: dir });
    expect(run.code, run.stderr).toBe(0);
    const backupId: string = json(run).backups[0].id;
    expect(storedBackups(dir).map((b) => b.id)).toEqual([backupId]);
    expect(readFileSync(join(dir, "seen.txt"), "utf8")).toBe(`afterBackup|app|${backupId}|${join(dir, "app.db")}`);
  });
});
