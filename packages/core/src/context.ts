/** What an operation needs about one configured database, with its plugins instantiated. */
import type { Codec, CodecSpec } from "./codec.js";
import type { ReplicationConfig, RetentionConfig } from "./config.js";
import type { Guard } from "./guard.js";
import type { HookRunner } from "./hooks.js";
import type { PluginContext } from "./plugin.js";
import type { NamedTarget } from "./repository.js";
import type { IntegrityMode, SourceDriver } from "./source.js";

export interface DatabaseContext {
  readonly name: string;
  /** `name` was set in the config (else it is derived from the file name). */
  readonly explicitName?: boolean;
  /** The file name as configured, before symlinks are resolved (what a derived `name` comes from). */
  readonly fileName?: string;
  /** Absolute path of the database file. */
  readonly path: string;
  readonly declaredEnvironment: string | null;
  readonly driver: SourceDriver;
  readonly targets: readonly NamedTarget[];
  /** Encoding chain for new objects (compression, then encryption). */
  readonly codecs: readonly Codec[];
  /** Builds the decoder for a manifest's codec spec (keys from the config or environment). */
  readonly codecForSpec: (spec: CodecSpec) => Promise<Codec>;
  readonly guards: readonly Guard[];
  readonly hooks: HookRunner;
  readonly integrity: IntegrityMode;
  readonly retention: RetentionConfig | undefined;
  readonly replication: ReplicationConfig | undefined;
  /** `snapshot.interval` in ms, if set. */
  readonly snapshotIntervalMs: number | undefined;
  readonly pluginContext: PluginContext;
}

export interface Progress {
  readonly phase: "snapshot" | "upload" | "download" | "verify" | "integrity" | "export" | "import";
  readonly bytes: number;
  readonly total: number | undefined;
  readonly label?: string;
}

export interface OperationOptions {
  readonly signal?: AbortSignal;
  readonly onProgress?: (progress: Progress) => void;
}
