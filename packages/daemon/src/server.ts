/**
 * The health and metrics endpoints, on node:http. Loopback by default; with a token every path
 * but `/health/ping` needs `Authorization: Bearer <token>`.
 *
 *   GET /health/ping             200 "ok" while the process serves (liveness; never authenticated)
 *   GET /health                  200 healthy / 503 unhealthy, with the reasons (JSON)
 *   GET /health/database         every database's facts (JSON); 503 if any is unhealthy
 *   GET /health/database/<name>  one database's facts; 404 if unknown
 *   GET /metrics                 Prometheus text format
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import type { HealthReport } from "./health.js";

export const DEFAULT_PORT = 9391;
export const DEFAULT_HOST = "127.0.0.1";

export interface ServeOptions {
  /** Address to bind. Default 127.0.0.1 (loopback only). `0.0.0.0` or `::` for every interface. */
  readonly host?: string;
  /** Port; 0 picks a free one (see `Daemon.url`). Default 9391. */
  readonly port?: number;
  /** When set, required as `Authorization: Bearer <token>` on every path but /health/ping. */
  readonly token?: string;
}

export interface HealthEndpoints {
  report(): Promise<HealthReport>;
  metrics(report: HealthReport): Promise<{ body: string; contentType: string }>;
}

export interface RunningServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the server; rejects (`INVALID_ARGUMENT`) when the address cannot be bound. */
export async function startServer(endpoints: HealthEndpoints, options: ServeOptions = {}): Promise<RunningServer> {
  const host = options.host ?? DEFAULT_HOST;
  const port = options.port ?? DEFAULT_PORT;
  const token = options.token ? digest(options.token) : null;
  const server: Server = createServer((req, res) => {
    void handle(endpoints, token, req, res).catch((error: unknown) => {
      if (!res.headersSent) {
        send(
          res,
          500,
          "application/json",
          JSON.stringify({ error: error instanceof Error ? error.message : String(error) }),
        );
      } else res.destroy();
    });
  });
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 60_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException) => {
      reject(
        new LifeboatError(
          ErrorCodes.INVALID_ARGUMENT,
          `Cannot serve health and metrics on ${host}:${port}: ${error.message}`,
          {
            cause: error,
            hint:
              error.code === "EADDRINUSE"
                ? "Another process uses that port: choose another (--port), or stop the other daemon."
                : "Check the address (--host) and that this user may bind the port (ports below 1024 need privileges).",
          },
        ),
      );
    };
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${shownHost}:${address.port}`,
    port: address.port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function digest(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

function authorized(token: Buffer | null, req: IncomingMessage): boolean {
  if (!token) return true;
  const header = req.headers.authorization ?? "";
  const match = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (!match) return false;
  // Compare digests: equal length, constant time.
  return timingSafeEqual(digest(match[1]!.trim()), token);
}

async function handle(
  endpoints: HealthEndpoints,
  token: Buffer | null,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const path = new URL(req.url ?? "/", "http://localhost").pathname.replace(/\/+$/, "") || "/";
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("allow", "GET, HEAD");
    return send(res, 405, "application/json", JSON.stringify({ error: "method not allowed" }));
  }
  if (path === "/health/ping") return send(res, 200, "text/plain; charset=utf-8", "ok\n");
  const known =
    path === "/health" || path === "/metrics" || path === "/health/database" || path.startsWith("/health/database/");
  if (!known) return send(res, 404, "application/json", JSON.stringify({ error: `no such path: ${path}` }));
  if (!authorized(token, req)) {
    res.setHeader("www-authenticate", 'Bearer realm="lifeboat"');
    return send(res, 401, "application/json", JSON.stringify({ error: "a valid bearer token is required" }));
  }
  const report = await endpoints.report();
  if (path === "/metrics") {
    const { body, contentType } = await endpoints.metrics(report);
    return send(res, 200, contentType, body);
  }
  if (path === "/health") {
    const summary = {
      status: report.status,
      healthy: report.healthy,
      checkedAt: report.checkedAt,
      reasons: report.reasons,
      warnings: report.warnings,
      databases: report.databases.map((d) => ({ name: d.name, healthy: d.healthy, reasons: d.reasons })),
    };
    return sendJson(res, report.healthy ? 200 : 503, summary);
  }
  if (path === "/health/database") {
    return sendJson(res, report.healthy ? 200 : 503, { checkedAt: report.checkedAt, databases: report.databases });
  }
  const name = decodeURIComponent(path.slice("/health/database/".length));
  const db = report.databases.find((d) => d.name === name);
  if (!db) {
    return sendJson(res, 404, {
      error: `no database named ${name}`,
      databases: report.databases.map((d) => d.name),
    });
  }
  return sendJson(res, db.healthy ? 200 : 503, { checkedAt: report.checkedAt, ...db });
}

function sendJson(res: ServerResponse, status: number, value: unknown): void {
  send(res, status, "application/json", `${JSON.stringify(value, null, 2)}\n`);
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader("content-type", contentType);
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(body));
  res.end(res.req.method === "HEAD" ? undefined : body);
}
