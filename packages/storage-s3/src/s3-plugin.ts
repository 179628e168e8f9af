/**
 * The `s3` storage plugin: `targets: [{ type: s3, bucket: my-backups, prefix: app }]` in
 * lifeboat.yml, or the URL `s3://my-backups/app?endpoint=http://127.0.0.1:7480&pathStyle=true`.
 * Sizes may be written with units (`16MiB`), durations too (`30s`); credentials come from the
 * environment variables the options name, or the standard AWS chain; never from a URL.
 */
import { defineStoragePlugin, ErrorCodes, LifeboatError, parseDuration } from "@lifeboat/core";
import { z } from "zod";
import { MAX_PART_SIZE, MIN_PART_SIZE, s3Storage } from "./s3-storage.js";

const SIZE_UNITS: Record<string, number> = {
  "": 1,
  b: 1,
  k: 1024,
  kb: 1000,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1000 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1000 ** 3,
  gib: 1024 ** 3,
};

/** `16MiB` -> 16777216; `5 MB` -> 5000000; `1024` -> 1024. Undefined if not a size. */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = SIZE_UNITS[match?.[2]?.toLowerCase() ?? "x"];
  if (!match || unit === undefined) return undefined;
  const bytes = Number(match[1]) * unit;
  return Number.isSafeInteger(bytes) ? bytes : Math.round(bytes);
}

const size = (name: string) =>
  z.union([z.number(), z.string()], `${name} must be a size like 8MiB or 8388608`).transform((value, ctx) => {
    const bytes = typeof value === "number" ? value : parseSize(value);
    if (bytes === undefined || !Number.isSafeInteger(bytes)) {
      ctx.addIssue({
        code: "custom",
        message: `${name} must be a size like 8MiB or 8388608, got ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    return bytes;
  });

const duration = (name: string) =>
  z.union([z.number(), z.string()], `${name} must be a duration like 30s or 500ms`).transform((value, ctx) => {
    let ms: number | undefined;
    if (typeof value === "number") ms = value;
    else if (/^\s*\d+\s*$/.test(value)) ms = Number(value);
    else {
      try {
        ms = Math.round(parseDuration(value, name));
      } catch {
        ms = undefined;
      }
    }
    if (ms === undefined || !Number.isSafeInteger(ms) || ms < 0) {
      ctx.addIssue({
        code: "custom",
        message: `${name} must be a duration like 30s or 500ms (or whole milliseconds), got ${JSON.stringify(value)}`,
      });
      return z.NEVER;
    }
    return ms;
  });

const envName = (name: string) =>
  z
    .string()
    .regex(
      /^[A-Za-z_][A-Za-z0-9_]*$/,
      `${name} must be the name of an environment variable (like AWS_SECRET_ACCESS_KEY)`,
    );

const optionsSchema = z
  .strictObject({
    bucket: z
      .string("bucket is required: the name of an existing bucket")
      .regex(
        /^[a-zA-Z0-9][a-zA-Z0-9._-]{2,254}$/,
        "bucket must be a bucket name (3 or more letters, digits, '.', '-')",
      ),
    prefix: z.string().optional(),
    region: z.string().min(1, "region must not be empty").optional(),
    endpoint: z
      .string()
      .refine(
        (text) => /^https?:\/\/[^/]/.test(text) && URL.canParse(text),
        "endpoint must be an http:// or https:// URL",
      )
      .optional(),
    forcePathStyle: z.boolean().optional(),
    accessKeyId: z.string().min(1).optional(),
    secretAccessKey: z.string().min(1).optional(),
    sessionToken: z.string().min(1).optional(),
    accessKeyIdEnv: envName("accessKeyIdEnv").optional(),
    secretAccessKeyEnv: envName("secretAccessKeyEnv").optional(),
    sessionTokenEnv: envName("sessionTokenEnv").optional(),
    profile: z.string().min(1).optional(),
    storageClass: z
      .string()
      .regex(/^[A-Z][A-Z0-9_]*$/, "storageClass must be an S3 storage class like STANDARD_IA or GLACIER_IR")
      .optional(),
    serverSideEncryption: z.enum(["AES256", "aws:kms"]).optional(),
    kmsKeyId: z.string().min(1).optional(),
    checksum: z.enum(["when_required", "when_supported"]).optional(),
    partSize: size("partSize")
      .refine(
        (bytes) => bytes >= MIN_PART_SIZE && bytes <= MAX_PART_SIZE,
        "partSize must be from 5MiB to 5GiB (S3's limits for a part)",
      )
      .optional(),
    queueSize: z
      .number()
      .int()
      .min(1, "queueSize must be at least 1")
      .max(64, "queueSize must be at most 64")
      .optional(),
    readConcurrency: z
      .number()
      .int()
      .min(1, "readConcurrency must be at least 1")
      .max(64, "readConcurrency must be at most 64")
      .optional(),
    requestTimeout: duration("requestTimeout")
      .refine((ms) => ms >= 1, "requestTimeout must be at least 1ms")
      .optional(),
    maxAttempts: z.number().int().min(1, "maxAttempts must be at least 1").max(100).optional(),
    retryBaseDelay: duration("retryBaseDelay").optional(),
    retryMaxDelay: duration("retryMaxDelay").optional(),
  })
  .superRefine((options, ctx) => {
    if (options.kmsKeyId !== undefined && options.serverSideEncryption !== "aws:kms") {
      ctx.addIssue({ code: "custom", path: ["kmsKeyId"], message: 'kmsKeyId needs serverSideEncryption: "aws:kms"' });
    }
    for (const [literal, named] of [
      ["accessKeyId", "accessKeyIdEnv"],
      ["secretAccessKey", "secretAccessKeyEnv"],
      ["sessionToken", "sessionTokenEnv"],
    ] as const) {
      if (options[literal] !== undefined && options[named] !== undefined) {
        ctx.addIssue({ code: "custom", path: [literal], message: `give ${literal} or ${named}, not both` });
      }
    }
    const hasId = options.accessKeyId !== undefined || options.accessKeyIdEnv !== undefined;
    const hasSecret = options.secretAccessKey !== undefined || options.secretAccessKeyEnv !== undefined;
    if (hasId !== hasSecret) {
      ctx.addIssue({
        code: "custom",
        path: [hasId ? "secretAccessKeyEnv" : "accessKeyIdEnv"],
        message: "give both the access key ID and the secret access key (or neither, to use the AWS credential chain)",
      });
    }
  });

/** The options of a `type: s3` target in the config file (after validation). */
export type S3StoragePluginOptions = z.output<typeof optionsSchema>;

/** URL query parameters and the options they set. */
const URL_PARAMETERS: Record<string, keyof S3StoragePluginOptions> = {
  endpoint: "endpoint",
  region: "region",
  pathStyle: "forcePathStyle",
  forcePathStyle: "forcePathStyle",
  checksum: "checksum",
  storageClass: "storageClass",
  sse: "serverSideEncryption",
  serverSideEncryption: "serverSideEncryption",
  kmsKeyId: "kmsKeyId",
  profile: "profile",
  partSize: "partSize",
  queueSize: "queueSize",
  readConcurrency: "readConcurrency",
  requestTimeout: "requestTimeout",
  maxAttempts: "maxAttempts",
  retryBaseDelay: "retryBaseDelay",
  retryMaxDelay: "retryMaxDelay",
  accessKeyIdEnv: "accessKeyIdEnv",
  secretAccessKeyEnv: "secretAccessKeyEnv",
  sessionTokenEnv: "sessionTokenEnv",
};
const SECRET_PARAMETERS = new Set(["accessKeyId", "secretAccessKey", "sessionToken", "accessKey", "secretKey"]);

export const s3StoragePlugin = defineStoragePlugin<S3StoragePluginOptions>({
  name: "s3",
  optionsSchema,
  create(options, context) {
    return s3Storage({ ...options, env: context.env });
  },
  urlSchemes: ["s3"],
  fromUrl(url) {
    if (url.protocol !== "s3:") throw urlError(url, `it is not an s3:// URL`);
    if (url.username || url.password) {
      throw urlError(
        url,
        "it contains credentials",
        "Put credentials in environment variables and name them: ?accessKeyIdEnv=MY_KEY_ID&secretAccessKeyEnv=MY_SECRET.",
      );
    }
    if (url.hash) throw urlError(url, "it has a #fragment");
    if (!url.hostname) throw urlError(url, "it names no bucket");
    const options: Record<string, unknown> = { bucket: decodeURIComponent(url.hostname) };
    const prefix = decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, "");
    if (prefix) options.prefix = prefix;
    for (const [name, value] of url.searchParams) {
      if (SECRET_PARAMETERS.has(name)) {
        throw urlError(
          url,
          `it contains the secret "${name}"`,
          "URLs end up in shell history and process lists. Name environment variables instead: ?accessKeyIdEnv=MY_KEY_ID&secretAccessKeyEnv=MY_SECRET.",
        );
      }
      const option = URL_PARAMETERS[name];
      if (!option) {
        throw urlError(
          url,
          `"${name}" is not a known parameter`,
          `Known parameters: ${Object.keys(URL_PARAMETERS).join(", ")}.`,
        );
      }
      if (option === "forcePathStyle") {
        if (value !== "true" && value !== "false") throw urlError(url, `${name} must be true or false`);
        options[option] = value === "true";
      } else if (option === "queueSize" || option === "readConcurrency" || option === "maxAttempts") {
        if (!/^\d+$/.test(value)) throw urlError(url, `${name} must be a whole number`);
        options[option] = Number(value);
      } else {
        options[option] = value;
      }
    }
    return options as S3StoragePluginOptions;
  },
});

function urlError(url: URL, problem: string, hint?: string): LifeboatError {
  // The URL is shown without user info (it may hold a secret).
  const shown = `s3://${url.host}${url.pathname}`;
  return new LifeboatError(ErrorCodes.CONFIG_INVALID, `Invalid S3 target URL ${shown}: ${problem}.`, {
    plugin: "s3",
    hint:
      hint ??
      "Write s3://bucket/prefix?endpoint=https://host:port&region=...&pathStyle=true&checksum=when_required (all parameters optional).",
  });
}
