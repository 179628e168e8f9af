/**
 * Plugins. A plugin is a plain object with a `kind`, a `name` and a factory. The CLI registers
 * the built-in ones; a config file may also name any package (or a relative path), which is
 * resolved from the config file's directory and must export a plugin (or an array of them) as
 * its default export or as `plugin` / `plugins`.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { Codec, CodecSpec } from "./codec.js";
import { ErrorCodes, LifeboatError } from "./errors.js";
import type { Guard } from "./guard.js";
import { formatIssuePath, type StandardSchemaV1 } from "./schema.js";
import type { SourceDriver } from "./source.js";
import { STORAGE_API_VERSION, type StorageTarget } from "./storage.js";

export interface PluginContext {
  /** Directory of the config file (or the working directory without one): relative paths start here. */
  readonly baseDir: string;
  /** The database the plugin instance serves. */
  readonly databaseName: string;
  /** Environment variables (for credentials and keys); never logged. */
  readonly env: Readonly<Record<string, string | undefined>>;
}

interface PluginBase<O> {
  /** The name used in `type:` in lifeboat.yml: `local`, `s3`, or the package name. */
  readonly name: string;
  /** Validates the options from the config (everything but `type` and `name`). Strict. */
  readonly optionsSchema: StandardSchemaV1<unknown, O>;
}

export interface StoragePlugin<O = unknown> extends PluginBase<O> {
  readonly kind: "storage";
  create(options: O, context: PluginContext): StorageTarget;
  /** Parses a target URL (`s3://bucket/prefix?...`, `file:///dir`) into options, if it handles its scheme. */
  readonly urlSchemes?: readonly string[];
  fromUrl?(url: URL, context: PluginContext): O;
}

export interface CodecPlugin<O = unknown> extends PluginBase<O> {
  readonly kind: "codec";
  create(options: O, context: PluginContext): Codec;
  /** Rebuilds a decoder from a manifest's spec (keys come from `options` of the current config or env). */
  fromSpec(spec: CodecSpec, options: O | undefined, context: PluginContext): Codec;
}

export interface GuardPlugin<O = unknown> extends PluginBase<O> {
  readonly kind: "guard";
  create(options: O, context: PluginContext): Guard;
}

export interface SourcePlugin {
  readonly kind: "source";
  readonly name: string;
  create(): SourceDriver;
}

export type LifeboatPlugin = StoragePlugin<any> | CodecPlugin<any> | GuardPlugin<any> | SourcePlugin;
export type PluginKind = LifeboatPlugin["kind"];
type PluginOfKind<K extends PluginKind> = Extract<LifeboatPlugin, { kind: K }>;

/** Typed helpers so plugin authors get inference on their options. */
export function defineStoragePlugin<O>(plugin: Omit<StoragePlugin<O>, "kind">): StoragePlugin<O> {
  return { kind: "storage", ...plugin };
}
export function defineCodecPlugin<O>(plugin: Omit<CodecPlugin<O>, "kind">): CodecPlugin<O> {
  return { kind: "codec", ...plugin };
}
export function defineGuardPlugin<O>(plugin: Omit<GuardPlugin<O>, "kind">): GuardPlugin<O> {
  return { kind: "guard", ...plugin };
}

/** Validates `value` with a plugin's schema; errors name the config path. */
export async function parsePluginOptions<O>(plugin: PluginBase<O>, value: unknown, configPath: string): Promise<O> {
  const result = await plugin.optionsSchema["~standard"].validate(value);
  if (result.issues) {
    const lines = result.issues.map((issue) => `${formatIssuePath(configPath, issue.path)}: ${issue.message}`);
    throw new LifeboatError(
      ErrorCodes.CONFIG_INVALID,
      `Invalid options for the ${plugin.name} plugin:\n  ${lines.join("\n  ")}`,
      {
        plugin: plugin.name,
        hint: `See the ${plugin.name} plugin's documentation for its options.`,
      },
    );
  }
  return result.value;
}

export class PluginRegistry {
  readonly #plugins = new Map<string, LifeboatPlugin>();

  constructor(plugins: readonly LifeboatPlugin[] = []) {
    for (const plugin of plugins) this.register(plugin);
  }

  register(plugin: LifeboatPlugin): void {
    assertPluginShape(plugin, plugin?.name ?? "(unnamed)");
    this.#plugins.set(`${plugin.kind}:${plugin.name}`, plugin);
  }

  list(): LifeboatPlugin[] {
    return [...this.#plugins.values()];
  }

  /** The storage plugin that handles a URL scheme (`s3:`, `file:`), if any. */
  forUrlScheme(scheme: string): StoragePlugin | undefined {
    for (const plugin of this.#plugins.values()) {
      if (plugin.kind === "storage" && plugin.urlSchemes?.includes(scheme)) return plugin;
    }
    return undefined;
  }

  /**
   * Finds a plugin by built-in name, or loads the package / relative path `name` from `baseDir`
   * and registers what it exports. `where` is the config path for messages.
   */
  async resolve<K extends PluginKind>(kind: K, name: string, baseDir: string, where: string): Promise<PluginOfKind<K>> {
    const found = this.#plugins.get(`${kind}:${name}`);
    if (found) return found as PluginOfKind<K>;
    if (!looksLikeModule(name)) {
      const known = this.list()
        .filter((p) => p.kind === kind)
        .map((p) => p.name);
      throw new LifeboatError(ErrorCodes.PLUGIN_NOT_FOUND, `${where}: unknown ${kind} plugin "${name}".`, {
        hint: `Built-in ${kind} plugins: ${known.join(", ") || "none"}. A third-party plugin is named by its package name (installed next to the config file) or a relative path.`,
      });
    }
    const exported = await importPlugin(name, baseDir, where);
    for (const plugin of exported) this.register(plugin);
    const loaded = exported.find((p) => p.kind === kind);
    if (!loaded) {
      throw new LifeboatError(ErrorCodes.PLUGIN_INVALID, `${where}: "${name}" does not export a ${kind} plugin.`, {
        hint: "Export a plugin object (e.g. from defineStoragePlugin) as the module's default export.",
      });
    }
    return loaded as PluginOfKind<K>;
  }
}

function looksLikeModule(name: string): boolean {
  return (
    name.startsWith("@") || name.startsWith(".") || name.startsWith("/") || name.includes("-") || name.includes("/")
  );
}

function assertPluginShape(plugin: unknown, where: string): asserts plugin is LifeboatPlugin {
  const p = plugin as Partial<LifeboatPlugin> | undefined;
  const ok =
    typeof p === "object" &&
    p !== null &&
    typeof p.name === "string" &&
    (p.kind === "storage" || p.kind === "codec" || p.kind === "guard" || p.kind === "source") &&
    typeof p.create === "function" &&
    (p.kind === "source" || typeof (p as PluginBase<unknown>).optionsSchema?.["~standard"]?.validate === "function");
  if (!ok) {
    throw new LifeboatError(ErrorCodes.PLUGIN_INVALID, `${where} is not a Lifeboat plugin.`, {
      hint: "A plugin is an object with kind ('storage' | 'codec' | 'guard' | 'source'), name, optionsSchema and create().",
    });
  }
}

async function importPlugin(name: string, baseDir: string, where: string): Promise<LifeboatPlugin[]> {
  const file = resolveModule(name, baseDir);
  if (!file) {
    throw new LifeboatError(
      ErrorCodes.PLUGIN_NOT_FOUND,
      `${where}: cannot find the plugin "${name}" from ${baseDir}.`,
      {
        hint: name.startsWith(".")
          ? "Check the path; it is relative to the config file's directory."
          : `Install it next to the config file (npm install ${name}) or give a relative path.`,
      },
    );
  }
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (error) {
    throw new LifeboatError(
      ErrorCodes.PLUGIN_INVALID,
      `${where}: loading the plugin "${name}" (${file}) failed: ${String(error)}`,
      {
        cause: error,
        hint: "The plugin module threw while loading; check that it is built and its dependencies are installed.",
      },
    );
  }
  const candidate = mod.default ?? mod.plugins ?? mod.plugin;
  const list = Array.isArray(candidate) ? candidate : [candidate];
  for (const plugin of list) assertPluginShape(plugin, `${where}: the export of "${name}"`);
  return list as LifeboatPlugin[];
}

/** Resolves a package name (through node_modules, honouring `exports`) or a relative path to a file. */
function resolveModule(name: string, baseDir: string): string | undefined {
  if (name.startsWith(".") || isAbsolute(name)) {
    const file = resolve(baseDir, name);
    return existsSync(file) ? file : undefined;
  }
  const parts = name.split("/");
  const pkgName = name.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] ?? name);
  const subpath = parts.slice(name.startsWith("@") ? 2 : 1).join("/");
  for (let dir = resolve(baseDir); ; dir = dirname(dir)) {
    const pkgDir = join(dir, "node_modules", pkgName);
    if (existsSync(join(pkgDir, "package.json"))) return entryOf(pkgDir, subpath);
    if (dirname(dir) === dir) return undefined;
  }
}

function entryOf(pkgDir: string, subpath: string): string | undefined {
  const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")) as {
    exports?: unknown;
    module?: string;
    main?: string;
  };
  const key = subpath ? `./${subpath}` : ".";
  let target: unknown = pkg.exports;
  if (target !== undefined) {
    if (typeof target === "object" && target !== null && !Array.isArray(target)) {
      const map = target as Record<string, unknown>;
      target = Object.keys(map).some((k) => k.startsWith(".")) ? map[key] : key === "." ? map : undefined;
    } else if (key !== ".") {
      target = undefined;
    }
    const file = pickCondition(target);
    return file ? join(pkgDir, file) : undefined;
  }
  const file = join(pkgDir, subpath || pkg.module || pkg.main || "index.js");
  return existsSync(file) && statSync(file).isFile() ? file : undefined;
}

function pickCondition(target: unknown): string | undefined {
  if (typeof target === "string") return target;
  if (Array.isArray(target)) return target.map(pickCondition).find(Boolean);
  if (typeof target === "object" && target !== null) {
    const map = target as Record<string, unknown>;
    for (const condition of ["import", "node", "default", "require"]) {
      if (condition in map) {
        const file = pickCondition(map[condition]);
        if (file) return file;
      }
    }
  }
  return undefined;
}

/** Core refuses targets written against a newer contract than it knows. */
export function assertStorageApi(target: StorageTarget, where: string): void {
  if (target.apiVersion !== STORAGE_API_VERSION) {
    throw new LifeboatError(
      ErrorCodes.PLUGIN_INVALID,
      `${where}: the storage target "${target.type}" implements storage API v${String(target.apiVersion)}, this Lifeboat supports v${STORAGE_API_VERSION}.`,
      { hint: "Upgrade Lifeboat or use a plugin version made for this one." },
    );
  }
}
