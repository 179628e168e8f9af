/**
 * Where secret keys come from: an environment variable, a file, or standard input (read once per
 * process, for the CLI's `--key-stdin`). Secrets are only ever held in memory: never written,
 * logged, or put into an error message; errors name the variable or the file, not the content.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { errnoCode } from "@lifeboat/core";
import { configError } from "./codec-errors.js";

/** What a key-using codec needs from the plugin context. */
export interface KeyContext {
  /** Relative file paths start here (the config file's directory). */
  readonly baseDir: string;
  /** Environment variables to read `...Env` options from. */
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** Where one secret may come from; several may be set and all are used. */
export interface SecretSources {
  readonly env?: string | undefined;
  readonly file?: string | undefined;
  /** `keyFromStdin` in the options. */
  readonly stdin?: boolean | undefined;
  /** The secret `--key-stdin` supplies (`useStdinForKeys`): the identity or private key, not a key's passphrase. */
  readonly stdinOnRequest?: boolean | undefined;
}

/** Whether `sources` reads standard input, by option or by `useStdinForKeys()`. */
function readsStdin(sources: SecretSources): boolean {
  return Boolean(sources.stdin || (sources.stdinOnRequest && stdinForKeys));
}

let stdinText: Promise<string> | undefined;
let stdinForKeys = false;

/**
 * Makes every key-using codec of this process also take its secret from standard input (the
 * CLI's `--key-stdin`), in addition to the sources its options name: the age identity or
 * passphrase (whichever the object was encrypted with), the OpenPGP private key. Call it before
 * decoding; standard input is still read only once, when the first key is needed.
 */
export function useStdinForKeys(enabled = true): void {
  stdinForKeys = enabled;
}

/** True when `useStdinForKeys()` is in effect. */
export function stdinKeysRequested(): boolean {
  return stdinForKeys;
}

/**
 * Reads standard input to its end, once per process: every later call gets the same text (a
 * second read would find the pipe empty). Used for `keyFromStdin: true`.
 */
export function readStdinOnce(): Promise<string> {
  stdinText ??= (async () => {
    const parts: Buffer[] = [];
    for await (const chunk of process.stdin) parts.push(chunk as Buffer);
    return Buffer.concat(parts).toString("utf8");
  })();
  return stdinText;
}

/** True if any source is configured. */
export function hasSource(sources: SecretSources): boolean {
  return Boolean(sources.env || sources.file || readsStdin(sources));
}

/**
 * The text of every configured source, in the order env, file, stdin. `what` names the secret in
 * errors ("the age identity"); `optionPrefix` names the options (`identity` for identityEnv...).
 */
export async function readSecrets(
  plugin: string,
  what: string,
  optionPrefix: string,
  sources: SecretSources,
  context: KeyContext,
): Promise<string[]> {
  const texts: string[] = [];
  if (sources.env) {
    const value = context.env[sources.env];
    if (value === undefined || value.trim() === "") {
      throw configError(
        plugin,
        `${what} is to come from the environment variable ${sources.env} (${optionPrefix}Env), which is not set`,
        `Export ${sources.env} in the environment that runs lifeboat, or use ${optionPrefix}File.`,
      );
    }
    texts.push(value);
  }
  if (sources.file) texts.push(readKeyFile(plugin, what, `${optionPrefix}File`, sources.file, context));
  if (readsStdin(sources)) {
    const text = await readStdinOnce();
    if (text.trim() === "") {
      throw configError(
        plugin,
        `${what} is to come from standard input (${sources.stdin ? "keyFromStdin" : "--key-stdin"}), which was empty`,
        "Pipe the key into lifeboat (lifeboat restore --key-stdin < key.txt), or configure a file or environment variable.",
      );
    }
    texts.push(text);
  }
  return texts;
}

/** Reads a key file (public or secret) given in the config; errors name the path, never the content. */
export function readKeyFile(plugin: string, what: string, option: string, path: string, context: KeyContext): string {
  const file = resolve(context.baseDir, path);
  try {
    return readFileSync(file, "utf8");
  } catch (error) {
    const errno = errnoCode(error);
    throw configError(
      plugin,
      `cannot read ${what} from ${file} (${option}): ${errno === "ENOENT" ? "no such file" : (errno ?? String(error))}`,
      "Check the path (relative paths start at the config file's directory) and that the user running lifeboat may read it.",
    );
  }
}

/** One trailing newline off a passphrase read from a file or a pipe (`echo pass > file` adds one). */
export function stripTrailingNewline(text: string): string {
  return text.replace(/\r?\n$/, "");
}
