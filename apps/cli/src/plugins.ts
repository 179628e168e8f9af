/** The plugins the CLI knows by short name. Third-party plugins are loaded by package name. */

import { codecPlugins } from "@lifeboat/codecs";
import type { LifeboatPlugin } from "@lifeboat/core";
import { guardPlugins } from "@lifeboat/guards";
import { sqliteSourcePlugin } from "@lifeboat/sqlite";
import { localStoragePlugin } from "@lifeboat/storage-local";
import { s3StoragePlugin } from "@lifeboat/storage-s3";

export const builtinPlugins: readonly LifeboatPlugin[] = [
  sqliteSourcePlugin,
  localStoragePlugin,
  s3StoragePlugin,
  ...codecPlugins,
  ...guardPlugins,
];
