/**
 * The plugins the CLI knows by short name. Third-party plugins are loaded by package name.
 * The heavy ones (S3 with the AWS SDK, the codecs with age and OpenPGP, the guards) are imported
 * only when the config or the command needs them: that is most of the CLI's start-up time.
 */
import type { LifeboatPlugin, ParsedConfig } from "@lifeboat/core";
import { sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";

export interface PluginNeeds {
  /** A target of type s3, or a storage URL with a scheme. */
  readonly s3: boolean;
  /** Codecs in the config, or a command that reads stored objects (their manifests name codecs). */
  readonly codecs: boolean;
  readonly guards: boolean;
}

export const ALL_PLUGINS: PluginNeeds = { s3: true, codecs: true, guards: true };

/** What `config` uses; `decodes`: the command reads stored objects, whatever codecs the config lists now. */
export function pluginNeeds(
  config: ParsedConfig | undefined,
  decodes: boolean,
  urls: readonly string[] = [],
): PluginNeeds {
  const databases = config?.databases ?? [];
  const types = (entries: readonly { type: string }[]) => entries.map((e) => e.type);
  const targetTypes = databases.flatMap((d) => types(d.targets));
  return {
    // Any other type may be s3 or a package's plugin: load s3 rather than miss it.
    s3: targetTypes.some((t) => t !== "local") || urls.some((u) => /^[a-z][a-z0-9+.-]*:\/\//i.test(u)),
    codecs: decodes || databases.some((d) => d.codecs.length > 0),
    guards: databases.some((d) => d.guards.length > 0),
  };
}

/** The built-in plugins `needs` asks for (sqlite and local always). */
export async function builtinPlugins(needs: PluginNeeds = ALL_PLUGINS): Promise<LifeboatPlugin[]> {
  const plugins: LifeboatPlugin[] = [sqliteSourcePlugin, localStoragePlugin];
  const [s3, codecs, guards] = await Promise.all([
    needs.s3 ? import("@lifeboat/storage-s3") : undefined,
    needs.codecs ? import("@lifeboat/codecs") : undefined,
    needs.guards ? import("@lifeboat/guards") : undefined,
  ]);
  if (s3) plugins.push(s3.s3StoragePlugin);
  if (codecs) plugins.push(...codecs.codecPlugins);
  if (guards) plugins.push(...guards.guardPlugins);
  return plugins;
}
