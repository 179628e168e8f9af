/**
 * The `local` storage plugin: `targets: [{ type: local, path: ./backups }]` in lifeboat.yml, or
 * the URL `file:///var/backups/app`. A relative path is resolved from the config file's directory.
 */
import { fileURLToPath } from "node:url";
import { defineStoragePlugin, ErrorCodes, LifeboatError } from "@lifeboat/core";
import { z } from "zod";
import { localStorage } from "./local-storage.js";

/** Accepts 0o600 / 384 as numbers, or "600", "0600", "0o600" as strings (YAML reads 0600 as decimal). */
const permissionMode = (name: string, required: number) =>
  z
    .union([
      z.number().int(`${name} must be a whole number`),
      z
        .string()
        .regex(/^(0o?)?[0-7]{3}$/, `${name} must be an octal mode like "0600"`)
        .transform((text) => Number.parseInt(text.replace(/^0o?/, ""), 8)),
    ])
    .refine(
      (mode) => mode >= 0 && mode <= 0o777 && (mode & required) === required,
      `${name} must be a mode up to 0o777 that includes 0o${required.toString(8)} (the owner must keep access)`,
    );

const optionsSchema = z.strictObject({
  path: z.string().min(1, "path must name a directory"),
  fileMode: permissionMode("fileMode", 0o600).optional(),
  dirMode: permissionMode("dirMode", 0o700).optional(),
});

/** The options of a `type: local` target in the config file. */
export type LocalStoragePluginOptions = z.output<typeof optionsSchema>;

export const localStoragePlugin = defineStoragePlugin<LocalStoragePluginOptions>({
  name: "local",
  optionsSchema,
  create(options, context) {
    return localStorage({ ...options, baseDir: context.baseDir });
  },
  urlSchemes: ["file"],
  fromUrl(url) {
    if (url.search !== "" || url.hash !== "") {
      throw urlError(url, "it has a query or fragment, which the local target does not use");
    }
    let path: string;
    try {
      path = fileURLToPath(url);
    } catch (error) {
      throw urlError(url, error instanceof Error ? error.message : String(error));
    }
    return { path };
  },
});

function urlError(url: URL, problem: string): LifeboatError {
  return new LifeboatError(ErrorCodes.CONFIG_INVALID, `Invalid local target URL ${url.href}: ${problem}.`, {
    plugin: "local",
    hint: "Write an absolute directory as file:///var/backups/app (three slashes, no host).",
  });
}
