/**
 * The `age` codec: encryption to age X25519 recipients (`age1...`) or to a passphrase (scrypt),
 * `.age`. Objects are standard age v1 files: `age -d -i key.txt` opens them, and objects made by
 * `age -r`/`age -p` decode here. Secret keys are read from an environment variable, a file or
 * standard input only when decrypting; the manifest spec records only the public recipients.
 */
import { type ByteStream, type CodecSpec, defineCodecPlugin, isLifeboatError } from "@lifeboat/core";
import type { Decrypter, Encrypter } from "age-encryption";
import { z } from "zod";
import {
  AgeFormatError,
  fileKeyCapture,
  isPassphraseHeader,
  MAX_WORK_FACTOR,
  MIN_WORK_FACTOR,
  openPayload,
  payloadKey,
  readHeader,
  scryptIdentity,
  scryptRecipient,
  sealPayload,
} from "./age-format.js";
import { configError, corruptError, keyError, messageOf } from "./codec-errors.js";
import {
  hasSource,
  type KeyContext,
  readKeyFile,
  readSecrets,
  type SecretSources,
  stripTrailingNewline,
} from "./key-sources.js";
import { loadAge } from "./lazy-libs.js";
import type { NamedCodec } from "./named-codec.js";
import { InputWatch } from "./stream-adapters.js";

/** scrypt work factor (log2 N) for passphrase files: age's own default. */
export const AGE_DEFAULT_WORK_FACTOR = 18;

const RECIPIENT = /^age1[0-9a-z]+$/;
const NOT_A_RECIPIENT =
  "must be an age public key (age1...); secret keys never go in the config: use identityFile, identityEnv or keyFromStdin";
const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "must be an environment variable name");
const path = z.string().min(1, "must be a file path");

const ageOptionsSchema = z
  .strictObject({
    /** Public keys to encrypt to, inline. */
    recipients: z.array(z.string().regex(RECIPIENT, NOT_A_RECIPIENT)).optional(),
    /** File(s) of public keys, one per line, `#` comments allowed (as `age -R`). */
    recipientsFile: z.union([path, z.array(path).min(1)]).optional(),
    /** Identity file (`age-keygen` output), needed to decrypt. */
    identityFile: path.optional(),
    /** Environment variable holding identity lines (`AGE-SECRET-KEY-1...`). */
    identityEnv: envName.optional(),
    /** Passphrase file: encrypt to a passphrase instead of recipients. */
    passphraseFile: path.optional(),
    /** Environment variable holding the passphrase. */
    passphraseEnv: envName.optional(),
    /** Read the identity (or, for a passphrase codec, the passphrase) from standard input, once. */
    keyFromStdin: z.boolean().optional(),
    /** scrypt work factor for passphrase encryption (default 18). */
    workFactor: z.number().int().min(MIN_WORK_FACTOR).max(MAX_WORK_FACTOR).optional(),
  })
  .superRefine((options, ctx) => {
    const toRecipients = Boolean(options.recipients?.length || options.recipientsFile);
    const passphrase = Boolean(options.passphraseFile || options.passphraseEnv);
    if (toRecipients && passphrase) {
      ctx.addIssue({
        code: "custom",
        path: ["passphraseFile"],
        message:
          "age encrypts either to recipients or to a passphrase, not both (the age format allows a passphrase only on its own); drop the passphrase or the recipients",
      });
    }
    if (!toRecipients && !passphrase && !options.identityFile && !options.identityEnv && !options.keyFromStdin) {
      ctx.addIssue({
        code: "custom",
        path: ["recipients"],
        message:
          "give recipients (age1...) or recipientsFile to encrypt to, or passphraseEnv / passphraseFile (or keyFromStdin) to encrypt with a passphrase",
      });
    }
  });

/** Options of a `type: age` codec. */
export type AgeCodecOptions = z.output<typeof ageOptionsSchema>;

/**
 * An age codec. Encodes to the recipients (inline and from `recipientsFile`), or to the
 * passphrase when one is configured (or when `keyFromStdin` is the only key source). Decodes with
 * the identities or passphrase from `identityEnv` / `identityFile` / `passphraseEnv` /
 * `passphraseFile` / standard input, read when the first object is decoded. `recordedSpec` is the
 * spec of a stored object, when rebuilding a decoder for it.
 */
export function ageCodec(
  options: AgeCodecOptions,
  context: KeyContext = { baseDir: process.cwd(), env: process.env },
  recordedSpec?: CodecSpec,
): NamedCodec {
  const toRecipients = Boolean(options.recipients?.length || options.recipientsFile);
  const passphraseMode =
    !toRecipients &&
    Boolean(
      options.passphraseFile ||
        options.passphraseEnv ||
        (options.keyFromStdin && !options.identityFile && !options.identityEnv),
    );
  const workFactor = options.workFactor ?? AGE_DEFAULT_WORK_FACTOR;
  let recipients: string[] | undefined;
  const loadRecipients = (): string[] => {
    recipients ??= [...(options.recipients ?? []), ...recipientsFromFiles(options.recipientsFile, context)];
    return recipients;
  };
  const passphraseSources: SecretSources = {
    env: options.passphraseEnv,
    file: options.passphraseFile,
    stdin: options.keyFromStdin,
    stdinOnRequest: true,
  };
  const identitySources: SecretSources = {
    env: options.identityEnv,
    file: options.identityFile,
    stdin: options.keyFromStdin && !passphraseMode,
    stdinOnRequest: true,
  };
  let spec: CodecSpec | undefined = recordedSpec;
  return {
    get spec(): CodecSpec {
      spec ??= passphraseMode
        ? { type: "age", params: { passphrase: true, workFactor } }
        : { type: "age", params: { recipients: loadRecipients() } };
      return spec;
    },
    extension: ".age",
    encode(input) {
      return passphraseMode
        ? encrypt(input, async (encrypter, capture) => {
            const [passphrase] = await readPassphrases(passphraseSources, context);
            encrypter.addRecipient(scryptRecipient(passphrase!, workFactor, capture));
          })
        : encrypt(input, async (encrypter, capture) => {
            const list = loadRecipients();
            if (list.length === 0) {
              throw configError(
                "age",
                "there are no recipients to encrypt to (this codec has only keys to decrypt with)",
                "Add recipients (age1..., e.g. from age-keygen -y key.txt) or recipientsFile to the age codec.",
              );
            }
            for (const recipient of list) {
              try {
                encrypter.addRecipient(recipient);
              } catch (error) {
                throw configError(
                  "age",
                  `${recipient} is not a valid age recipient (${messageOf(error)})`,
                  "Copy the public key again from age-keygen -y.",
                );
              }
            }
            encrypter.addRecipient(fileKeyCapture(capture));
          });
    },
    decode(input, name) {
      const stored = recordedSpec?.params?.recipients;
      const known = Array.isArray(stored) ? stored.filter((r): r is string => typeof r === "string") : undefined;
      return decrypt(input, name, { passphraseSources, identitySources, context, recipients: known });
    },
  };
}

/** Adds the recipients to `encrypter`; the recipient that sees the file key hands it to `capture`. */
type Setup = (encrypter: Encrypter, capture: (fileKey: Uint8Array) => void) => Promise<void>;

async function* encrypt(input: ByteStream, setup: Setup): ByteStream {
  let fileKey: Uint8Array | undefined;
  const age = await loadAge();
  const encrypter = new age.Encrypter();
  await setup(encrypter, (key) => {
    fileKey = key;
  });
  // The library writes the header (stanzas and MAC); of an empty file it adds only the nonce and
  // one 16-byte tag, which are replaced by the natively encrypted payload.
  const empty = await encrypter.encrypt(new Uint8Array(0));
  if (!fileKey) throw new Error("age: the file key was not captured");
  const headerAndNonce = empty.subarray(0, empty.byteLength - 16);
  yield headerAndNonce;
  yield* sealPayload(input, payloadKey(fileKey, headerAndNonce.subarray(headerAndNonce.byteLength - 16)));
}

interface DecryptKeys {
  readonly passphraseSources: SecretSources;
  readonly identitySources: SecretSources;
  readonly context: KeyContext;
  /** The recipients the manifest says the object was encrypted to, for messages. */
  readonly recipients: readonly string[] | undefined;
}

const KEY_HINT =
  "Set identityFile or identityEnv on the age codec in lifeboat.yml (the secret key made by age-keygen, whose public key is a recipient of the backup), or pipe it in with --key-stdin.";
const PASSPHRASE_HINT =
  "Set passphraseEnv or passphraseFile on the age codec in lifeboat.yml to the passphrase the backup was written with, or pipe it in with --key-stdin.";

async function* decrypt(input: ByteStream, name: string | undefined, keys: DecryptKeys): ByteStream {
  const watch = new InputWatch();
  let header: Buffer;
  let nonce: Buffer;
  let rest: AsyncIterable<Uint8Array>;
  try {
    ({ header, nonce, rest } = await readHeader(watch.watch(input)));
  } catch (error) {
    if (watch.failed) throw watch.error;
    throw corruptError("age", name, messageOf(error), error);
  }
  const age = await loadAge();
  const decrypter = new age.Decrypter();
  const passphrase = isPassphraseHeader(header);
  let publicKeys: string[] = [];
  if (passphrase) {
    if (!hasSource(keys.passphraseSources)) {
      throw keyError(
        "age",
        name,
        "it is encrypted with a passphrase, and no passphrase is configured",
        PASSPHRASE_HINT,
      );
    }
    for (const text of await readPassphrases(keys.passphraseSources, keys.context)) {
      decrypter.addIdentity(scryptIdentity(text));
    }
  } else {
    if (!hasSource(keys.identitySources)) {
      const to = keys.recipients?.length ? ` (it is encrypted to ${keys.recipients.join(", ")})` : "";
      throw keyError("age", name, `no age identity is configured to decrypt it${to}`, KEY_HINT);
    }
    publicKeys = await addIdentities(decrypter, keys.identitySources, keys.context);
  }
  let fileKey: Uint8Array;
  try {
    fileKey = await decrypter.decryptHeader(header);
  } catch (error) {
    if (isLifeboatError(error)) throw error;
    if (messageOf(error).includes("no identity matched")) {
      const to = keys.recipients?.length ? `; it is encrypted to ${keys.recipients.join(", ")}` : "";
      throw passphrase
        ? keyError("age", name, "the configured passphrase does not open it (wrong passphrase)", PASSPHRASE_HINT)
        : keyError(
            "age",
            name,
            `none of the configured identities (public keys ${publicKeys.join(", ")}) opens it${to}`,
            `${KEY_HINT} If the key is right, the object's header is damaged: restore another backup.`,
          );
    }
    throw corruptError("age", name, `its age header is damaged (${messageOf(error)})`, error);
  }
  try {
    yield* openPayload(rest, payloadKey(fileKey, nonce));
  } catch (error) {
    if (watch.failed) throw watch.error;
    if (!(error instanceof AgeFormatError)) throw error;
    throw corruptError("age", name, messageOf(error), error);
  }
}

async function readPassphrases(sources: SecretSources, context: KeyContext): Promise<string[]> {
  const texts = (await readSecrets("age", "the age passphrase", "passphrase", sources, context)).map(
    stripTrailingNewline,
  );
  if (texts.length === 0) {
    throw configError("age", "no passphrase is configured", PASSPHRASE_HINT);
  }
  return texts;
}

/** Adds every identity line of every source; returns their public keys (for messages). */
async function addIdentities(decrypter: Decrypter, sources: SecretSources, context: KeyContext): Promise<string[]> {
  const texts = await readSecrets("age", "the age identity", "identity", sources, context);
  const age = await loadAge();
  const publicKeys: string[] = [];
  for (const text of texts) {
    const lines = keyLines(text);
    if (lines.length === 0) {
      throw configError("age", "an identity source holds no identity (AGE-SECRET-KEY-1... line)", KEY_HINT);
    }
    for (const [index, line] of lines.entries()) {
      // Library errors may quote the key: replace them, and never pass them on as a cause.
      let publicKey: string;
      try {
        if (!line.startsWith("AGE-SECRET-KEY-")) throw new Error();
        decrypter.addIdentity(line);
        publicKey = await age.identityToRecipient(line);
      } catch {
        throw configError(
          "age",
          `identity line ${index + 1} of a configured identity source is not an age secret key (AGE-SECRET-KEY-1...)`,
          "Give the file written by age-keygen (plugin identities are not supported).",
        );
      }
      publicKeys.push(publicKey);
    }
  }
  return publicKeys;
}

/** Non-empty lines that are not `#` comments, trimmed. */
function keyLines(text: string): string[] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"));
}

function recipientsFromFiles(files: string | string[] | undefined, context: KeyContext): string[] {
  const list = files === undefined ? [] : Array.isArray(files) ? files : [files];
  const recipients: string[] = [];
  for (const file of list) {
    const text = readKeyFile("age", "age recipients", "recipientsFile", file, context);
    const lines = text.split(/\r?\n/);
    lines.forEach((raw, index) => {
      const line = raw.trim();
      if (line === "" || line.startsWith("#")) return;
      if (!RECIPIENT.test(line)) {
        throw configError(
          "age",
          line.startsWith("AGE-SECRET-KEY-")
            ? `${file} (recipientsFile) holds a secret key on line ${index + 1}`
            : `line ${index + 1} of ${file} (recipientsFile) is not an age recipient (age1...)`,
          "recipientsFile lists public keys only (age-keygen -y key.txt prints one); keep secret keys off the backup host.",
        );
      }
      recipients.push(line);
    });
  }
  if (list.length > 0 && recipients.length === 0) {
    throw configError("age", `${list.join(", ")} (recipientsFile) lists no recipient`, "Add age1... lines.");
  }
  return recipients;
}

/** The `age` codec plugin: `codecs: [{ type: age, recipients: [age1...] }]`. */
export const ageCodecPlugin = defineCodecPlugin<AgeCodecOptions>({
  name: "age",
  optionsSchema: ageOptionsSchema,
  create: (options, context) => ageCodec(options, context),
  fromSpec: (spec, options, context) => ageCodec(options ?? {}, context, spec),
});
