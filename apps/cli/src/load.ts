/** Builds a Lifeboat from --config, or from a database path and --to locations without a config. */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import {
  createLifeboat,
  ErrorCodes,
  type Lifeboat,
  type LifeboatConfig,
  LifeboatError,
  loadConfigFile,
  PluginRegistry,
} from "@lifeboat/core";
import { builtinPlugins } from "./plugins.js";

export interface LoadOptions {
  readonly config?: string;
  /** Storage locations given on the command line (directories or URLs); no config needed. */
  readonly to?: readonly string[];
}

export const DEFAULT_CONFIG = "lifeboat.yml";

export async function loadLifeboat(database: string | undefined, options: LoadOptions): Promise<Lifeboat> {
  if (options.to && options.to.length > 0) {
    if (!database) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "--to needs the database path too.", {
        hint: "Example: lifeboat backup app.db --to ./backups",
      });
    }
    const registry = new PluginRegistry(builtinPlugins);
    const targets = options.to.map((spec) => targetFromSpec(spec, registry));
    const config: LifeboatConfig = { databases: [{ path: resolve(database), targets }] };
    return createLifeboat({ config, plugins: builtinPlugins, baseDir: process.cwd() });
  }
  const path = resolve(options.config ?? DEFAULT_CONFIG);
  if (!options.config && !existsSync(path) && database) {
    throw new LifeboatError(
      ErrorCodes.CONFIG_INVALID,
      `No ${DEFAULT_CONFIG} here (${path}) and no --to location given.`,
      {
        hint: `Say where the backups are: lifeboat <command> ${database} --to ./backups, or write a config with \`lifeboat init\`.`,
      },
    );
  }
  const loaded = loadConfigFile(path);
  return createLifeboat({ config: loaded.config, plugins: builtinPlugins, baseDir: loaded.baseDir });
}

/** `./backups` or `/abs/dir` is a local target; `scheme://...` goes to the plugin for that scheme. */
function targetFromSpec(spec: string, registry: PluginRegistry): { type: string; [key: string]: unknown } {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(spec)?.[1]?.toLowerCase();
  if (!scheme) return { type: "local", path: resolve(spec) };
  const plugin = registry.forUrlScheme(scheme);
  if (!plugin?.fromUrl) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `No storage plugin handles ${scheme}:// URLs (${spec}).`, {
      hint: "Use a directory path, or a URL scheme of an installed storage plugin (file://, s3://).",
    });
  }
  const options = plugin.fromUrl(new URL(spec), { baseDir: process.cwd(), databaseName: "", env: process.env });
  return { type: plugin.name, ...(options as Record<string, unknown>) };
}
