/** The daemon prunes with core's `prune`, which keeps WAL chain bases (core retention.ts, `chainProtectedSnapshots`). */
import { type DatabaseContext, type PruneOptions, type PruneResult, prune } from "@lifeboat/core";

export {
  type ChainSegment,
  type ChainSnapshot,
  chainProtectedSnapshots,
  type PruneResult as ChainPruneResult,
  type PruneTargetResult as ChainPruneTargetResult,
  reachFrom,
} from "@lifeboat/core";

export type ChainPruneOptions = PruneOptions;

export function pruneKeepingChains(db: DatabaseContext, options: ChainPruneOptions = {}): Promise<PruneResult> {
  return prune(db, options);
}
