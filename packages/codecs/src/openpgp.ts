/**
 * The `openpgp` codec: OpenPGP public-key encryption through the openpgp package, `.gpg`.
 * Objects are binary OpenPGP messages that `gpg --decrypt` opens (for GnuPG keys: SEIPDv1 with
 * MDC, AES-256), and messages `gpg --encrypt` made decode here. Public keys come armored, inline
 * or from files; the private key (and its passphrase) only from an environment variable, a file
 * or standard input, and only when decrypting. The spec records the keys' fingerprints.
 */
import { type ByteStream, type CodecSpec, defineCodecPlugin, isLifeboatError } from "@lifeboat/core";
import type * as openpgp from "openpgp";
import { z } from "zod";
import { configError, corruptError, keyError, messageOf } from "./codec-errors.js";
import {
  hasSource,
  type KeyContext,
  readKeyFile,
  readSecrets,
  type SecretSources,
  stripTrailingNewline,
} from "./key-sources.js";
import { loadOpenpgp } from "./lazy-libs.js";
import type { NamedCodec } from "./named-codec.js";
import { armoredBlocks, dearmor, primaryFingerprints } from "./openpgp-armor.js";
import { fromWebStream, InputWatch, toWebStream } from "./stream-adapters.js";

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name");
const path = z.string().min(1, "must be a file path");
const armoredPublicKey = z
  .string()
  .refine(
    (text) => !text.includes("PRIVATE KEY BLOCK"),
    "is a private key: private keys never go in the config; use privateKeyFile, privateKeyEnv or keyFromStdin",
  )
  .refine(
    (text) => text.includes("-----BEGIN PGP PUBLIC KEY BLOCK-----"),
    "must be an ASCII-armored public key (gpg --armor --export KEYID)",
  );

const openpgpOptionsSchema = z
  .strictObject({
    /** Armored public keys to encrypt to, inline. */
    recipients: z.array(armoredPublicKey).optional(),
    /** File(s) of armored public keys (`gpg --armor --export`); a file may hold several. */
    recipientsFile: z.union([path, z.array(path).min(1)]).optional(),
    /** File holding the armored private key(s), needed to decrypt. */
    privateKeyFile: path.optional(),
    /** Environment variable holding the armored private key(s). */
    privateKeyEnv: envName.optional(),
    /** Read the armored private key from standard input, once. */
    keyFromStdin: z.boolean().optional(),
    /** File holding the passphrase that unlocks a protected private key. */
    passphraseFile: path.optional(),
    /** Environment variable holding that passphrase. */
    passphraseEnv: envName.optional(),
  })
  .superRefine((options, ctx) => {
    const toRecipients = Boolean(options.recipients?.length || options.recipientsFile);
    if (!toRecipients && !options.privateKeyFile && !options.privateKeyEnv && !options.keyFromStdin) {
      ctx.addIssue({
        code: "custom",
        path: ["recipients"],
        message:
          "give recipients (armored public keys) or recipientsFile to encrypt to, or privateKeyFile / privateKeyEnv / keyFromStdin to decrypt with",
      });
    }
  });

/** Options of a `type: openpgp` codec. */
export type OpenpgpCodecOptions = z.output<typeof openpgpOptionsSchema>;

const KEY_HINT =
  "Set privateKeyFile or privateKeyEnv on the openpgp codec in lifeboat.yml (gpg --armor --export-secret-keys KEYID), or pipe the key in with --key-stdin.";
const PASSPHRASE_HINT =
  "Set passphraseEnv or passphraseFile on the openpgp codec in lifeboat.yml to the passphrase of the private key.";

/**
 * An OpenPGP codec. Encodes to every key in `recipients` and `recipientsFile`; decodes with the
 * private key(s) from `privateKeyEnv` / `privateKeyFile` / standard input, unlocked with the
 * passphrase from `passphraseEnv` / `passphraseFile` when protected, read when the first object
 * is decoded. `recordedSpec` is the spec of a stored object, when rebuilding a decoder for it.
 */
export function openpgpCodec(
  options: OpenpgpCodecOptions,
  context: KeyContext = { baseDir: process.cwd(), env: process.env },
  recordedSpec?: CodecSpec,
): NamedCodec {
  let armored: string[] | undefined;
  const loadArmored = (): string[] => {
    armored ??= publicBlocks(options, context);
    return armored;
  };
  let publicKeys: Promise<openpgp.PublicKey[]> | undefined;
  const loadPublicKeys = (): Promise<openpgp.PublicKey[]> => {
    publicKeys ??= readPublicKeys(loadArmored());
    publicKeys.catch(() => {
      publicKeys = undefined;
    });
    return publicKeys;
  };
  const secretSources: SecretSources = {
    env: options.privateKeyEnv,
    file: options.privateKeyFile,
    stdin: options.keyFromStdin,
    stdinOnRequest: true,
  };
  const passphraseSources: SecretSources = { env: options.passphraseEnv, file: options.passphraseFile };
  let privateKeys: Promise<openpgp.PrivateKey[]> | undefined;
  const loadPrivateKeys = (name: string | undefined): Promise<openpgp.PrivateKey[]> => {
    privateKeys ??= readPrivateKeys(secretSources, passphraseSources, context, name);
    privateKeys.catch(() => {
      privateKeys = undefined;
    });
    return privateKeys;
  };
  let spec: CodecSpec | undefined = recordedSpec;
  return {
    get spec(): CodecSpec {
      spec ??= { type: "openpgp", params: { recipients: loadArmored().flatMap(fingerprintsOf) } };
      return spec;
    },
    extension: ".gpg",
    encode: (input) => encrypt(input, loadPublicKeys),
    decode: (input, name) => {
      const stored = recordedSpec?.params?.recipients;
      const known = Array.isArray(stored) ? stored.filter((r): r is string => typeof r === "string") : [];
      return decrypt(input, name, () => loadPrivateKeys(name), known, hasSource(secretSources));
    },
  };
}

/** Every armored public key block of the inline recipients and the recipients files. */
function publicBlocks(options: OpenpgpCodecOptions, context: KeyContext): string[] {
  const blocks = (options.recipients ?? []).flatMap((text) => armoredBlocks(text, "PUBLIC KEY BLOCK"));
  const files = options.recipientsFile === undefined ? [] : [options.recipientsFile].flat();
  for (const file of files) {
    const text = readKeyFile("openpgp", "OpenPGP public keys", "recipientsFile", file, context);
    if (armoredBlocks(text, "PRIVATE KEY BLOCK").length > 0) {
      throw configError(
        "openpgp",
        `${file} (recipientsFile) holds a private key`,
        "recipientsFile lists public keys only (gpg --armor --export KEYID); keep private keys off the backup host.",
      );
    }
    const found = armoredBlocks(text, "PUBLIC KEY BLOCK");
    if (found.length === 0) {
      throw configError(
        "openpgp",
        `${file} (recipientsFile) holds no armored public key`,
        "Export it with gpg --armor --export KEYID > file.",
      );
    }
    blocks.push(...found);
  }
  return blocks;
}

function fingerprintsOf(block: string): string[] {
  try {
    const list = primaryFingerprints(dearmor(block));
    if (list.length === 0) throw new Error("no public key packet");
    return list;
  } catch (error) {
    throw configError(
      "openpgp",
      `a recipient is not a readable OpenPGP public key (${messageOf(error)})`,
      "Export the key again with gpg --armor --export KEYID.",
    );
  }
}

async function readPublicKeys(blocks: string[]): Promise<openpgp.PublicKey[]> {
  if (blocks.length === 0) {
    throw configError(
      "openpgp",
      "there are no recipients to encrypt to (this codec has only keys to decrypt with)",
      "Add recipients or recipientsFile (gpg --armor --export KEYID) to the openpgp codec.",
    );
  }
  const pgp = await loadOpenpgp();
  const keys: openpgp.PublicKey[] = [];
  for (const block of blocks) {
    let parsed: openpgp.Key[];
    try {
      parsed = await pgp.readKeys({ armoredKeys: block });
    } catch (error) {
      throw configError(
        "openpgp",
        `a recipient is not a valid OpenPGP public key (${messageOf(error)})`,
        "Export the key again with gpg --armor --export KEYID.",
      );
    }
    for (const key of parsed) {
      try {
        await key.getEncryptionKey();
      } catch (error) {
        throw configError(
          "openpgp",
          `the key ${key.getFingerprint().toUpperCase()} cannot encrypt (${messageOf(error)})`,
          "Use a key with a valid, unexpired encryption subkey.",
        );
      }
      keys.push(key.toPublic());
    }
  }
  return keys;
}

async function readPrivateKeys(
  sources: SecretSources,
  passphraseSources: SecretSources,
  context: KeyContext,
  name: string | undefined,
): Promise<openpgp.PrivateKey[]> {
  if (!hasSource(sources)) {
    throw keyError("openpgp", name, "no OpenPGP private key is configured to decrypt it", KEY_HINT);
  }
  const texts = await readSecrets("openpgp", "the OpenPGP private key", "privateKey", sources, context);
  const pgp = await loadOpenpgp();
  let passphrases: string[] | undefined;
  const keys: openpgp.PrivateKey[] = [];
  for (const text of texts) {
    const blocks = armoredBlocks(text, "PRIVATE KEY BLOCK");
    if (blocks.length === 0) {
      throw configError("openpgp", "a private key source holds no armored private key", KEY_HINT);
    }
    for (const block of blocks) {
      let parsed: openpgp.PrivateKey[];
      try {
        parsed = await pgp.readPrivateKeys({ armoredKeys: block });
      } catch {
        // No cause: a parser's message could quote key material.
        throw configError("openpgp", "a configured private key is not a valid OpenPGP private key", KEY_HINT);
      }
      for (const key of parsed) {
        if (key.isDecrypted()) {
          keys.push(key);
          continue;
        }
        const fingerprint = key.getFingerprint().toUpperCase();
        passphrases ??= hasSource(passphraseSources)
          ? (await readSecrets("openpgp", "the private key passphrase", "passphrase", passphraseSources, context)).map(
              stripTrailingNewline,
            )
          : [];
        if (passphrases.length === 0) {
          throw keyError(
            "openpgp",
            name,
            `the private key ${fingerprint} is protected by a passphrase`,
            PASSPHRASE_HINT,
          );
        }
        try {
          keys.push(await pgp.decryptKey({ privateKey: key, passphrase: passphrases }));
        } catch {
          throw keyError(
            "openpgp",
            name,
            `the configured passphrase does not unlock the private key ${fingerprint}`,
            PASSPHRASE_HINT,
          );
        }
      }
    }
  }
  return keys;
}

async function* encrypt(input: ByteStream, loadKeys: () => Promise<openpgp.PublicKey[]>): ByteStream {
  const keys = await loadKeys();
  const pgp = await loadOpenpgp();
  const watch = new InputWatch();
  try {
    const message = await pgp.createMessage({ binary: toWebStream(watch.watch(input)), format: "binary" });
    // SEIPDv1 (what GnuPG reads) unless every key advertises RFC 9580 SEIPDv2.
    const encrypted = await pgp.encrypt({ message, encryptionKeys: keys, format: "binary" });
    yield* fromWebStream(encrypted);
  } catch (error) {
    if (watch.failed) throw watch.error;
    throw error;
  }
}

async function* decrypt(
  input: ByteStream,
  name: string | undefined,
  loadKeys: () => Promise<openpgp.PrivateKey[]>,
  recorded: readonly string[],
  haveKeySource: boolean,
): ByteStream {
  const pgp = await loadOpenpgp();
  const watch = new InputWatch();
  let message: openpgp.Message<ReadableStream<Uint8Array>>;
  try {
    message = await pgp.readMessage({ binaryMessage: toWebStream(watch.watch(input)) });
  } catch (error) {
    if (watch.failed) throw watch.error;
    throw corruptError("openpgp", name, `it is not a readable OpenPGP message (${messageOf(error)})`, error);
  }
  const to = message.getEncryptionKeyIDs();
  const toText = to.map((id) => id.toHex().toUpperCase()).join(", ");
  if (to.length === 0) {
    throw corruptError("openpgp", name, "it holds no public-key encrypted session key (not written by this codec)");
  }
  if (!haveKeySource) {
    const fingerprints = recorded.length > 0 ? recorded.join(", ") : `key IDs ${toText}`;
    throw keyError(
      "openpgp",
      name,
      `no OpenPGP private key is configured; it is encrypted to ${fingerprints}`,
      KEY_HINT,
    );
  }
  const keys = await loadKeys();
  const ours = keys.flatMap((key) => key.getKeyIDs());
  if (!to.some((target) => ours.some((id) => id.equals(target, true)))) {
    const configured = keys.map((key) => key.getFingerprint().toUpperCase()).join(", ");
    throw keyError(
      "openpgp",
      name,
      `it is encrypted to key IDs ${toText}, and none of the configured private keys (${configured}) has one of them (wrong key)`,
      KEY_HINT,
    );
  }
  let data: ReadableStream<Uint8Array>;
  try {
    // SEIPDv1 is only authenticated at its end (the MDC): stream the plaintext and fail at the
    // end if it does not check, instead of buffering a whole backup in memory. Callers write to
    // a temporary file and discard it on error.
    ({ data } = await pgp.decrypt({
      message,
      decryptionKeys: keys,
      format: "binary",
      config: { allowUnauthenticatedStream: true },
    }));
  } catch (error) {
    if (watch.failed) throw watch.error;
    if (isLifeboatError(error)) throw error;
    throw corruptError("openpgp", name, `its encrypted session key does not decrypt (${messageOf(error)})`, error);
  }
  try {
    yield* fromWebStream(data);
  } catch (error) {
    if (watch.failed) throw watch.error;
    throw corruptError("openpgp", name, `the encrypted data is damaged (${messageOf(error)})`, error);
  }
}

/** The `openpgp` codec plugin: `codecs: [{ type: openpgp, recipientsFile: ./backup-key.asc }]`. */
export const openpgpCodecPlugin = defineCodecPlugin<OpenpgpCodecOptions>({
  name: "openpgp",
  optionsSchema: openpgpOptionsSchema,
  create: (options, context) => openpgpCodec(options, context),
  fromSpec: (spec, options, context) => openpgpCodec(options ?? {}, context, spec),
});
