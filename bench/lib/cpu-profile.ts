/**
 * Summarises a V8 `.cpuprofile` (written by `node --cpu-prof`): self time per function of the
 * main thread, heaviest first. Time spent waiting (I/O on the thread pool, fsync) shows up as
 * "(idle)"; native calls (better-sqlite3, crypto hash updates) as their JavaScript entry point.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly endTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface SelfTime {
  /** `function (file:line)`. */
  readonly name: string;
  readonly ms: number;
}

export interface ProfileSummary {
  /** Profiled wall time of the main thread, ms. */
  readonly totalMs: number;
  readonly top: readonly SelfTime[];
}

/** Self time by function in the profile at `file`; `limit` heaviest entries. */
export function summariseCpuProfile(file: string, limit = 12): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  // timeDeltas[i] is the time before sample i; attribute it to the node sampled at i.
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    if (!node) return;
    const { functionName, url, lineNumber } = node.callFrame;
    const where = url ? ` (${basename(url)}:${lineNumber + 1})` : "";
    const name = `${functionName || "(anonymous)"}${where}`;
    self.set(name, (self.get(name) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  });
  const top = [...self.entries()]
    .map(([name, ms]) => ({ name, ms }))
    .sort((a, b) => b.ms - a.ms)
    .slice(0, limit);
  return { totalMs: (profile.endTime - profile.startTime) / 1000, top };
}
