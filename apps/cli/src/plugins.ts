/** The plugins the CLI knows by short name. Third-party plugins are loaded by package name. */
import type { LifeboatPlugin } from "@lifeboat/core";
import { guardPlugins } from "@lifeboat/guards";
import { sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";

export const builtinPlugins: readonly LifeboatPlugin[] = [sqliteSourcePlugin, localStoragePlugin, ...guardPlugins];
