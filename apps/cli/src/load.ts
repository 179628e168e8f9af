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
import { builtinPlugins, pluginNeeds } from "./plugins.js";

export interface LoadOptions {
  readonly config?: string;
  /** Storage locations given on the command line (directories or URLs); no config needed. */
  readonly to?: readonly string[];
  /** `--key-stdin`: key-using codecs also take their secret from standard input. */
  readonly keyStdin?: boolean;
  /**
   * The command never reads stored objects (backup): codec plugins are loaded only if the config
   * lists codecs. Default false: restore, verify and the daemon's drills decode what manifests name.
   */
  readonly writesOnly?: boolean;
}

export const DEFAULT_CONFIG = "lifeboat.yml";

export async function loadLifeboat(database: string | undefined, options: LoadOptions): Promise<Lifeboat> {
  if (options.keyStdin) await keysFromStdin();
  if (options.to && options.to.length > 0) {
    if (!database) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "--to needs the database path too.", {
        hint: "Example: lifeboat backup app.db --to ./backups",
      });
    }
    const plugins = await builtinPlugins(pluginNeeds(undefined, !options.writesOnly, options.to));
    const registry = new PluginRegistry(plugins);
    const targets = options.to.map((spec) => targetFromSpec(spec, registry));
    const config: LifeboatConfig = { databases: [{ path: resolve(database), targets }] };
    return createLifeboat({ config, plugins, baseDir: process.cwd() });
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
  const plugins = await builtinPlugins(pluginNeeds(loaded.config, !options.writesOnly));
  return createLifeboat({ config: loaded.config, plugins, baseDir: loaded.baseDir });
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

/**
 * `--key-stdin`: reads standard input now (once; the codecs reuse the text when they first need a
 * key), so a terminal or an empty pipe is refused before anything is read or changed. The text is
 * kept in memory only and never echoed.
 */
async function keysFromStdin(): Promise<void> {
  const hint =
    "Pipe the key in, e.g. lifeboat restore --key-stdin < key.txt (an age identity from age-keygen, an age passphrase, or an armored OpenPGP private key).";
  const { readStdinOnce, useStdinForKeys } = await import("@lifeboat/codecs");
  if (process.stdin.isTTY) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      "--key-stdin reads the key from standard input, which is a terminal (the key would be echoed and typed by hand).",
      { hint },
    );
  }
  const text = await readStdinOnce();
  if (text.trim() === "") {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, "--key-stdin was given, but standard input was empty.", {
      hint,
    });
  }
  useStdinForKeys();
}
