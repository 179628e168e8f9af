/**
 * How `lifeboat backup` cooperates with a running replicator instead of competing with it: the
 * replicator announces itself in its queue directory (`replicator.json`) and takes snapshot
 * requests there (`requests/<id>.json`), answering in `responses/<id>.json`. The snapshot then
 * lands in the replicator's generation, where point-in-time restores can start from it.
 */
import { randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { type DatabaseContext, type ErrorCode, ErrorCodes, LifeboatError } from "@lifeboat/core";

export interface ReplicatorAnnouncement {
  readonly pid: number;
  readonly host: string;
  readonly startedAt: string;
  readonly targets: readonly string[];
}

export interface SnapshotResponse {
  readonly ok: boolean;
  readonly generation?: string;
  readonly position?: number;
  readonly id?: string;
  readonly error?: { readonly code: string; readonly message: string; readonly hint?: string };
}

/** The queue directory the replicator of `db` uses (config `replication.queueDir`, or next to the database). */
export function queueDirOf(db: DatabaseContext): string {
  return db.replication?.queueDir
    ? resolve(db.pluginContext.baseDir, db.replication.queueDir)
    : join(dirname(db.path), `.${basename(db.path)}.lifeboat`);
}

export function targetSignature(db: DatabaseContext): string[] {
  return db.targets.map((t) => `${t.target.type}:${t.target.location}`);
}

export async function announce(queueDir: string, db: DatabaseContext): Promise<void> {
  await mkdir(join(queueDir, "requests"), { recursive: true, mode: 0o700 });
  await mkdir(join(queueDir, "responses"), { recursive: true, mode: 0o700 });
  const value: ReplicatorAnnouncement = {
    pid: process.pid,
    host: hostname(),
    startedAt: new Date().toISOString(),
    targets: targetSignature(db),
  };
  await writeFile(join(queueDir, "replicator.json"), `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
}

export async function withdraw(queueDir: string): Promise<void> {
  await rm(join(queueDir, "replicator.json"), { force: true });
}

/** Pending requests, oldest first; each is removed as it is returned. */
export async function takeRequests(queueDir: string): Promise<{ id: string; reason: string }[]> {
  const dir = join(queueDir, "requests");
  const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith(".json")).sort();
  const out: { id: string; reason: string }[] = [];
  for (const name of names) {
    const file = join(dir, name);
    const text = await readFile(file, "utf8").catch(() => undefined);
    await rm(file, { force: true });
    if (!text) continue;
    try {
      const parsed = JSON.parse(text) as { reason?: string };
      out.push({ id: name.slice(0, -5), reason: parsed.reason ?? "manual" });
    } catch {
      // a half-written request file: its writer times out and falls back
    }
  }
  return out;
}

export async function answer(queueDir: string, id: string, response: SnapshotResponse): Promise<void> {
  const file = join(queueDir, "responses", `${id}.json`);
  await writeFile(`${file}.tmp`, JSON.stringify(response), { mode: 0o600 });
  await rename(`${file}.tmp`, file);
}

/**
 * Asks a running replicator of `db` (same host, same targets) for a snapshot. Returns null when
 * none runs, so the caller takes a standalone backup; throws if it runs but the snapshot failed.
 */
export async function requestSnapshot(
  db: DatabaseContext,
  reason: string,
  timeoutMs = 600_000,
): Promise<SnapshotResponse | null> {
  const queueDir = queueDirOf(db);
  let announcement: ReplicatorAnnouncement;
  try {
    announcement = JSON.parse(await readFile(join(queueDir, "replicator.json"), "utf8")) as ReplicatorAnnouncement;
  } catch {
    return null;
  }
  if (announcement.host !== hostname() || !alive(announcement.pid)) return null;
  if (JSON.stringify([...announcement.targets].sort()) !== JSON.stringify(targetSignature(db).sort())) return null;
  const id = `${Date.now().toString(16).padStart(12, "0")}-${randomUUID()}`;
  const request = join(queueDir, "requests", `${id}.json`);
  await writeFile(`${request}.tmp`, JSON.stringify({ reason, pid: process.pid }), { mode: 0o600 });
  await rename(`${request}.tmp`, request);
  const response = join(queueDir, "responses", `${id}.json`);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = await readFile(response, "utf8").catch(() => undefined);
    if (text) {
      await rm(response, { force: true });
      const parsed = JSON.parse(text) as SnapshotResponse;
      if (!parsed.ok) {
        throw new LifeboatError(
          (parsed.error?.code as ErrorCode) ?? ErrorCodes.INTERNAL,
          `The running replicator (pid ${announcement.pid}) could not take the snapshot: ${parsed.error?.message}`,
          {
            hint: parsed.error?.hint ?? "See the replicator's output.",
          },
        );
      }
      return parsed;
    }
    if (!alive(announcement.pid)) {
      await rm(request, { force: true });
      return null;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  await rm(request, { force: true });
  throw new LifeboatError(
    ErrorCodes.INTERNAL,
    `The running replicator (pid ${announcement.pid}) did not answer a snapshot request within ${timeoutMs / 1000} s.`,
    {
      hint: "Check that it is healthy (its output); stop it to take a standalone backup.",
    },
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
