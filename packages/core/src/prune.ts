/** Applies retention to every target of a database. A dry run unless `apply` is set. */
import type { DatabaseContext, OperationOptions } from "./context.js";
import { keys } from "./layout.js";
import { Repository } from "./repository.js";
import { planRetention, type RetentionPolicy } from "./retention.js";

export interface PruneOptions extends OperationOptions {
  readonly policy: RetentionPolicy;
  /** Delete for real. Without it nothing is deleted (dry run). */
  readonly apply?: boolean;
}

export interface PruneTargetResult {
  readonly target: string;
  readonly keep: readonly { readonly id: string; readonly createdAt: string; readonly reasons: readonly string[] }[];
  readonly remove: readonly { readonly id: string; readonly createdAt: string; readonly sizeBytes: number }[];
  readonly deletedObjects: number;
}

export interface PruneResult {
  readonly dryRun: boolean;
  readonly targets: readonly PruneTargetResult[];
}

export async function prune(db: DatabaseContext, options: PruneOptions): Promise<PruneResult> {
  const results: PruneTargetResult[] = [];
  for (const named of db.targets) {
    const repo = new Repository(named, db.name);
    const { snapshots } = await repo.listSnapshots({ signal: options.signal });
    const plan = planRetention(
      snapshots.map((s) => ({
        id: s.manifest.id,
        createdAt: Date.parse(s.manifest.createdAt),
        ok: s.manifest.integrity.ok && (s.verification?.ok ?? true),
      })),
      options.policy,
    );
    const byId = new Map(snapshots.map((s) => [s.manifest.id, s]));
    const removing = plan.remove.map((id) => byId.get(id)!);
    let deletedObjects = 0;
    if (options.apply && removing.length > 0) {
      const generationsLeft = new Set(
        snapshots.filter((s) => !plan.remove.includes(s.manifest.id)).map((s) => s.manifest.generation),
      );
      // Manifests go first: a snapshot without its manifest is invisible, never half-listed.
      await repo.target.delete(
        removing.map((s) => s.manifestKey),
        { signal: options.signal },
      );
      await repo.target.delete(
        removing.flatMap((s) => [s.manifest.object.key, s.verificationKey]),
        { signal: options.signal },
      );
      deletedObjects += removing.length * 2;
      // A generation with no snapshot left cannot be restored: its segments go too.
      for (const generation of new Set(removing.map((s) => s.manifest.generation))) {
        if (generationsLeft.has(generation)) continue;
        const rest: string[] = [];
        for await (const info of repo.target.list(keys.generation(db.name, generation), { signal: options.signal }))
          rest.push(info.key);
        if (rest.length > 0) await repo.target.delete(rest, { signal: options.signal });
        deletedObjects += rest.length;
      }
    }
    results.push({
      target: named.name,
      keep: plan.keep.map((k) => ({ id: k.id, createdAt: byId.get(k.id)!.manifest.createdAt, reasons: k.reasons })),
      remove: removing.map((s) => ({
        id: s.manifest.id,
        createdAt: s.manifest.createdAt,
        sizeBytes: s.manifest.object.size,
      })),
      deletedObjects,
    });
  }
  return { dryRun: !options.apply, targets: results };
}
