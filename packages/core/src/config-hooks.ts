/**
 * Config-level hooks: `exec` runs a shell command with the event in LIFEBOAT_* environment
 * variables; `webhook` POSTs the event as JSON. On `sequential` events (before*) a failure vetoes.
 */
import { spawn } from "node:child_process";
import type { HookConfig } from "./config.js";
import { parseDuration } from "./duration.js";
import { type HookEvents, type HookHandler, type HookName, type HookResult, type Hooks, hookKinds } from "./hooks.js";

export function hooksFromConfig(configs: readonly HookConfig[]): Hooks[] {
  return configs.map((config) => {
    const timeoutMs = parseDuration(config.timeout);
    const handler: HookHandler<HookName> = async (event) =>
      config.exec !== undefined
        ? runExec(config.on, config.exec, event, timeoutMs)
        : runWebhook(config.on, config.webhook!, event, timeoutMs);
    return { [config.on]: handler } as Hooks;
  });
}

function eventEnv(name: HookName, event: HookEvents[HookName]): Record<string, string> {
  const e = event as Partial<Record<string, unknown>> & { database?: { name: string; path: string } | null };
  const env: Record<string, string> = {
    LIFEBOAT_EVENT: name,
    LIFEBOAT_EVENT_JSON: JSON.stringify(event, errorReplacer),
  };
  if (e.database) {
    env.LIFEBOAT_DB = e.database.name;
    env.LIFEBOAT_DB_PATH = e.database.path;
  }
  if (typeof e.backupId === "string") env.LIFEBOAT_BACKUP_ID = e.backupId;
  if (typeof e.output === "string") env.LIFEBOAT_OUTPUT = e.output;
  if (typeof e.reason === "string") env.LIFEBOAT_REASON = e.reason;
  return env;
}

function errorReplacer(_key: string, value: unknown): unknown {
  return value instanceof Error ? { message: value.message, code: (value as { code?: string }).code } : value;
}

function runExec(name: HookName, command: string, event: HookEvents[HookName], timeoutMs: number): Promise<HookResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("/bin/sh", ["-c", command], {
      env: { ...process.env, ...eventEnv(name, event) },
      stdio: ["ignore", "inherit", "pipe"],
      detached: true, // its own process group, so a timeout kills the command's children too
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr = (stderr + d.toString("utf8")).slice(-4000);
      process.stderr.write(d);
    });
    const timer = setTimeout(() => {
      try {
        if (child.pid) process.kill(-child.pid, "SIGKILL");
      } catch {
        child.kill("SIGKILL");
      }
    }, timeoutMs);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run \`${command}\`: ${error.message}`));
    });
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve(undefined);
      const why = signal
        ? `was killed (${signal}${signal === "SIGKILL" ? `, timeout ${timeoutMs} ms` : ""})`
        : `exited ${code}`;
      const detail = stderr.trim() ? `: ${stderr.trim()}` : "";
      if (hookKinds[name] === "sequential") return resolve({ veto: `\`${command}\` ${why}${detail}` });
      reject(new Error(`\`${command}\` ${why}${detail}`));
    });
  });
}

async function runWebhook(
  name: HookName,
  url: string,
  event: HookEvents[HookName],
  timeoutMs: number,
): Promise<HookResult> {
  const body = JSON.stringify({ event: name, ...event, sentAt: new Date().toISOString() }, errorReplacer);
  let lastError = "";
  for (let attempt = 0; attempt < 3; attempt++) {
    if (attempt > 0) await new Promise((r) => setTimeout(r, 250 * 2 ** attempt));
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", "user-agent": "lifeboat" },
        body,
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (response.ok) return undefined;
      lastError = `HTTP ${response.status}`;
      if (response.status < 500 && response.status !== 429) break;
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
    }
  }
  const hostOnly = new URL(url).host;
  if (hookKinds[name] === "sequential") return { veto: `webhook ${hostOnly} answered ${lastError}` };
  throw new Error(`webhook ${hostOnly} failed: ${lastError}`);
}
