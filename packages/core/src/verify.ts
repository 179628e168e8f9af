/**
 * Verification: re-reads every stored object and checks it against its manifest, then restores
 * the newest backup into a temp directory and checks it with `integrity_check`.
 */
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { newTally, tally } from "./byte-streams.js";
import type { DatabaseContext, OperationOptions } from "./context.js";
import { removeQuietly } from "./fs-atomic.js";
import { MANIFEST_FORMAT_VERSION, type VerificationRecord } from "./layout.js";
import { mapLimit, Repository, type StoredSnapshot } from "./repository.js";
import { download } from "./restore.js";
import type { IntegrityResult } from "./source.js";

export interface VerifyOptions extends OperationOptions {
  /** Only this target. */
  readonly from?: string;
  /** Skip the trial restore (only checksums). */
  readonly checksumsOnly?: boolean;
}

export interface ObjectCheck {
  readonly target: string;
  readonly id: string;
  readonly key: string;
  readonly ok: boolean;
  readonly problem?: string;
}

export interface TrialRestore {
  readonly target: string;
  readonly id: string;
  readonly ok: boolean;
  readonly integrity: IntegrityResult | null;
  readonly problems: readonly string[];
}

export interface VerifyResult {
  readonly ok: boolean;
  readonly objects: readonly ObjectCheck[];
  readonly restores: readonly TrialRestore[];
  readonly problems: readonly string[];
}

export async function verify(db: DatabaseContext, options: VerifyOptions = {}): Promise<VerifyResult> {
  const objects: ObjectCheck[] = [];
  const restores: TrialRestore[] = [];
  const problems: string[] = [];
  const targets = options.from ? db.targets.filter((t) => t.name === options.from) : db.targets;
  if (targets.length === 0) problems.push(`no target named ${options.from}`);
  for (const named of targets) {
    const repo = new Repository(named, db.name, db);
    let snapshots: StoredSnapshot[];
    try {
      const listed = await repo.listSnapshots({ signal: options.signal });
      snapshots = listed.snapshots;
      problems.push(...listed.problems.map((p) => `${named.name}: ${p}`));
    } catch (error) {
      problems.push(`${named.name}: cannot list backups: ${error instanceof Error ? error.message : String(error)}`);
      continue;
    }
    if (snapshots.length === 0) problems.push(`${named.name}: no backups of ${db.name}`);
    const checks = await mapLimit(snapshots, 4, (s) => checkObject(repo, s, options));
    objects.push(...checks);
    if (options.checksumsOnly) continue;
    const newest = [...snapshots]
      .reverse()
      .find((s, i) => s.manifest.integrity.ok && checks[snapshots.length - 1 - i]?.ok);
    if (newest) restores.push(await trialRestore(db, repo, newest, options));
  }
  const failed = objects.filter((o) => !o.ok).length + restores.filter((r) => !r.ok).length;
  const ok = failed === 0 && problems.length === 0;
  for (const check of objects.filter((o) => !o.ok)) {
    await db.hooks.run("onVerifyFailed", {
      database: { name: db.name, path: db.path },
      backupId: check.id,
      problems: [check.problem ?? "unknown problem"],
    });
  }
  return { ok, objects, restores, problems };
}

async function checkObject(
  repo: Repository,
  snapshot: StoredSnapshot,
  options: OperationOptions,
): Promise<ObjectCheck> {
  const { manifest } = snapshot;
  const base = { target: repo.named.name, id: manifest.id, key: manifest.object.key };
  let problem: string | undefined;
  try {
    const object = await repo.target.get(manifest.object.key, { signal: options.signal });
    const stored = newTally();
    for await (const _ of tally(object.body, stored)) {
      options.onProgress?.({ phase: "verify", bytes: stored.bytes, total: manifest.object.size, label: manifest.id });
    }
    const sha = stored.hash.digest("hex");
    if (stored.bytes !== manifest.object.size)
      problem = `size is ${stored.bytes}, manifest says ${manifest.object.size}`;
    else if (sha !== manifest.object.sha256) problem = `sha256 is ${sha}, manifest says ${manifest.object.sha256}`;
  } catch (error) {
    problem = error instanceof Error ? error.message : String(error);
  }
  const record: VerificationRecord = {
    format: "lifeboat.verification",
    formatVersion: MANIFEST_FORMAT_VERSION,
    verifiedAt: new Date().toISOString(),
    ok: problem === undefined,
    problems: problem ? [problem] : [],
  };
  await repo.writeJson(snapshot.verificationKey, record, { signal: options.signal }).catch(() => {});
  return problem === undefined ? { ...base, ok: true } : { ...base, ok: false, problem };
}

async function trialRestore(
  db: DatabaseContext,
  repo: Repository,
  snapshot: StoredSnapshot,
  options: OperationOptions,
): Promise<TrialRestore> {
  const { manifest } = snapshot;
  const dir = await mkdtemp(join(tmpdir(), "lifeboat-verify-"));
  const file = join(dir, `${db.name}.db`);
  const problems: string[] = [];
  let integrity: IntegrityResult | null = null;
  try {
    await download(db, repo, manifest, file, options);
    integrity = await db.driver.checkIntegrity(file, "full");
    if (!integrity.ok) problems.push(`integrity_check: ${integrity.messages.slice(0, 3).join("; ")}`);
    const restored = await db.driver.describe(file);
    for (const table of manifest.source.tables) {
      const rows = restored.tables.find((t) => t.name === table.name)?.rows;
      if (rows !== table.rows)
        problems.push(`table ${table.name}: ${rows ?? "missing"} rows, manifest says ${table.rows}`);
    }
    if (restored.userVersion !== manifest.source.userVersion) {
      problems.push(`user_version ${restored.userVersion}, manifest says ${manifest.source.userVersion}`);
    }
  } catch (error) {
    problems.push(error instanceof Error ? error.message : String(error));
  } finally {
    await removeQuietly(dir);
  }
  if (problems.length > 0) {
    await db.hooks.run("onVerifyFailed", {
      database: { name: db.name, path: db.path },
      backupId: manifest.id,
      problems,
    });
  }
  return { target: repo.named.name, id: manifest.id, ok: problems.length === 0, integrity, problems };
}
