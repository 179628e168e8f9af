/**
 * The programmatic API: build a `Lifeboat` from a config and the plugins to use, then call the
 * operations by database name. The CLI is a thin layer over this.
 */
import { realpathSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { type BackupOptions, type BackupResult, backup } from "./backup.js";
import type { Codec } from "./codec.js";
import { type DatabaseConfig, databaseNameOf, type LifeboatConfig, type ParsedConfig, parseConfig } from "./config.js";
import { hooksFromConfig } from "./config-hooks.js";
import type { DatabaseContext, OperationOptions } from "./context.js";
import { parseDuration } from "./duration.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import type { Guard } from "./guard.js";
import { HookRunner, type Hooks } from "./hooks.js";
import {
  assertStorageApi,
  type LifeboatPlugin,
  type PluginContext,
  PluginRegistry,
  parsePluginOptions,
} from "./plugin.js";
import { type PruneOptions, type PruneResult, prune } from "./prune.js";
import { type NamedTarget, Repository, type StoredSnapshot } from "./repository.js";
import { type RestoreOptions, type RestoreResult, restore } from "./restore.js";
import { isEmptyPolicy, policyFromConfig } from "./retention.js";
import { type VerifyOptions, type VerifyResult, verify } from "./verify.js";

export interface CreateLifeboatOptions {
  /** A config object (validated here) or an already parsed one. */
  readonly config: LifeboatConfig | ParsedConfig;
  /** Relative paths in the config start here (the config file's directory). Default: cwd. */
  readonly baseDir?: string;
  /** Plugins to register (the built-ins plus any extra); more are loaded by package name. */
  readonly plugins?: readonly LifeboatPlugin[];
  /** Programmatic hooks, for every database. */
  readonly hooks?: Hooks;
  /** Where observer-hook failures go (default: stderr). */
  readonly onHookError?: (hook: string, source: string, error: unknown) => void;
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export interface ListEntry {
  readonly target: string;
  readonly location: string;
  readonly snapshots: readonly StoredSnapshot[];
  readonly problems: readonly string[];
  readonly error?: LifeboatError;
}

export class Lifeboat {
  readonly config: ParsedConfig;
  readonly registry: PluginRegistry;
  readonly #baseDir: string;
  readonly #options: CreateLifeboatOptions;
  readonly #contexts = new Map<string, Promise<DatabaseContext>>();

  constructor(options: CreateLifeboatOptions) {
    this.config = parseConfig(options.config);
    this.registry = new PluginRegistry(options.plugins ?? []);
    this.#baseDir = resolve(options.baseDir ?? process.cwd());
    this.#options = options;
  }

  /** Database names, in config order. */
  get databases(): string[] {
    return this.config.databases.map(databaseNameOf);
  }

  /** The database called `name`; with no name, the only one (an error if there are several). */
  database(name?: string): Promise<DatabaseContext> {
    const index = this.#indexOf(name);
    const key = this.databases[index]!;
    let context = this.#contexts.get(key);
    if (!context) {
      context = this.#resolve(this.config.databases[index]!, index);
      this.#contexts.set(key, context);
      context.catch(() => this.#contexts.delete(key));
    }
    return context;
  }

  /** Finds a database by name or by path (as typed on the command line). */
  #indexOf(nameOrPath: string | undefined): number {
    const names = this.databases;
    if (nameOrPath === undefined) {
      if (names.length === 1) return 0;
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `The config has ${names.length} databases; say which one.`, {
        hint: `Databases: ${names.join(", ")}.`,
      });
    }
    const byName = names.indexOf(nameOrPath);
    if (byName >= 0) return byName;
    const asPath = canonicalPath(resolve(nameOrPath));
    const byPath = this.config.databases.findIndex((db) => canonicalPath(resolve(this.#baseDir, db.path)) === asPath);
    if (byPath >= 0) return byPath;
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `No database "${nameOrPath}" in the config.`, {
      hint: `Databases: ${names.join(", ")}. Give a name from the config or the path of its file.`,
    });
  }

  async #resolve(db: DatabaseConfig, index: number): Promise<DatabaseContext> {
    const where = `databases[${index}]`;
    const name = databaseNameOf(db);
    const context: PluginContext = {
      baseDir: this.#baseDir,
      databaseName: name,
      env: this.#options.env ?? process.env,
    };
    const source = await this.registry.resolve("source", "sqlite", this.#baseDir, where);
    const driver = source.create();
    const targets: NamedTarget[] = [];
    const counts = new Map<string, number>();
    for (const [i, entry] of db.targets.entries()) {
      const entryWhere = `${where}.targets[${i}]`;
      const { type, name: targetName, ...rest } = entry;
      const plugin = await this.registry.resolve("storage", type, this.#baseDir, `${entryWhere}.type`);
      const options = await parsePluginOptions(plugin, rest, entryWhere);
      const target = plugin.create(options, context);
      assertStorageApi(target, entryWhere);
      const n = (counts.get(type) ?? 0) + 1;
      counts.set(type, n);
      const label = targetName ?? (db.targets.filter((t) => t.type === type).length > 1 ? `${type}-${n}` : type);
      if (targets.some((t) => t.name === label)) {
        throw new LifeboatError(
          ErrorCodes.CONFIG_INVALID,
          `${entryWhere}.name: "${label}" is used twice for ${name}.`,
          {
            hint: "Give each target of a database a unique name.",
          },
        );
      }
      targets.push({ name: label, target });
    }
    const codecs: Codec[] = [];
    for (const [i, entry] of db.codecs.entries()) {
      const { type, name: _n, ...rest } = entry;
      const plugin = await this.registry.resolve("codec", type, this.#baseDir, `${where}.codecs[${i}].type`);
      codecs.push(plugin.create(await parsePluginOptions(plugin, rest, `${where}.codecs[${i}]`), context));
    }
    const guards: Guard[] = [];
    for (const [i, entry] of db.guards.entries()) {
      const { type, name: _n, ...rest } = entry;
      const plugin = await this.registry.resolve("guard", type, this.#baseDir, `${where}.guards[${i}].type`);
      guards.push(plugin.create(await parsePluginOptions(plugin, rest, `${where}.guards[${i}]`), context));
    }
    const hooks = new HookRunner(
      this.#options.onHookError ??
        ((hook, src, error) => {
          process.stderr.write(
            `lifeboat: ${hook} hook (${src}) failed: ${error instanceof Error ? error.message : String(error)}\n`,
          );
        }),
    );
    if (this.#options.hooks) hooks.add("programmatic hooks", this.#options.hooks);
    for (const [i, h] of hooksFromConfig(db.hooks).entries()) hooks.add(`${where}.hooks[${i}]`, h);
    const codecForSpec = async (spec: { type: string }) => {
      const plugin = await this.registry.resolve(
        "codec",
        spec.type,
        this.#baseDir,
        `codec "${spec.type}" of a stored object`,
      );
      const configured = db.codecs.find((c) => c.type === spec.type);
      let options: unknown;
      if (configured) {
        const { type: _t, name: _n, ...rest } = configured;
        options = await parsePluginOptions(plugin, rest, where);
      }
      return plugin.fromSpec(spec, options, context);
    };
    return {
      name,
      explicitName: Boolean(db.name),
      fileName: basename(db.path),
      // Through symlinks: SQLite keeps the -wal and -shm next to the real file, and a restore
      // must replace the real file, not the link.
      path: canonicalPath(isAbsolute(db.path) ? db.path : resolve(this.#baseDir, db.path)),
      declaredEnvironment: db.environment ?? null,
      driver,
      targets,
      codecs,
      codecForSpec,
      guards,
      hooks,
      integrity: db.snapshot.integrity,
      retention: db.retention,
      replication: db.replication,
      snapshotIntervalMs: db.snapshot.interval ? parseDuration(db.snapshot.interval) : undefined,
      pluginContext: context,
    };
  }

  async backup(database?: string, options?: BackupOptions): Promise<BackupResult> {
    return backup(await this.database(database), options);
  }

  async restore(database?: string, options?: RestoreOptions): Promise<RestoreResult> {
    return restore(await this.database(database), options);
  }

  async verify(database?: string, options?: VerifyOptions): Promise<VerifyResult> {
    return verify(await this.database(database), options);
  }

  /** Prunes with `policy`, or the database's configured retention when no policy is given. */
  async prune(database: string | undefined, options: PruneOptions = {}): Promise<PruneResult> {
    const db = await this.database(database);
    const policy = options.policy && !isEmptyPolicy(options.policy) ? options.policy : policyFromConfig(db.retention);
    return prune(db, { ...options, policy });
  }

  /** Backups on each target (or only `from`), oldest first. A failing target is reported, not thrown. */
  async list(database?: string, options: OperationOptions & { from?: string } = {}): Promise<ListEntry[]> {
    const db = await this.database(database);
    const targets = options.from ? db.targets.filter((t) => t.name === options.from) : db.targets;
    if (targets.length === 0) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `No target named "${options.from}" for ${db.name}.`, {
        hint: `Targets: ${db.targets.map((t) => t.name).join(", ")}.`,
      });
    }
    return Promise.all(
      targets.map(async (named): Promise<ListEntry> => {
        try {
          const { snapshots, problems } = await new Repository(named, db.name).listSnapshots({
            signal: options.signal,
          });
          return { target: named.name, location: named.target.location, snapshots, problems };
        } catch (error) {
          const wrapped =
            error instanceof LifeboatError
              ? error
              : new LifeboatError(ErrorCodes.STORAGE_ERROR, String(error), { cause: error });
          return { target: named.name, location: named.target.location, snapshots: [], problems: [], error: wrapped };
        }
      }),
    );
  }

  /** Closes every target. */
  async close(): Promise<void> {
    const contexts = await Promise.allSettled(this.#contexts.values());
    for (const result of contexts) {
      if (result.status === "fulfilled") await Promise.all(result.value.targets.map((t) => t.target.close?.()));
    }
  }
}

export function createLifeboat(options: CreateLifeboatOptions): Lifeboat {
  return new Lifeboat(options);
}

/** `path` with symlinks resolved; for a file that does not exist yet, its directory's. */
function canonicalPath(path: string): string {
  try {
    return realpathSync(path);
  } catch {
    try {
      return join(realpathSync(dirname(path)), basename(path));
    } catch {
      return path;
    }
  }
}
