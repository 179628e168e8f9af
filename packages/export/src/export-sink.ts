/**
 * Where an export's files go while it runs: a temp directory, or a temp ZIP written as a stream.
 * Nothing appears at the output path until `commit`, which fsyncs and renames into place.
 */
import { createHash, type Hash } from "node:crypto";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { PassThrough } from "node:stream";
import { ErrorCodes, fsError, fsyncDir, LifeboatError, removeQuietly, tempPathFor } from "@lifeboat/core";
import archiver from "archiver";
import { EXPORT_FORMAT, MANIFEST_FILE } from "./manifest.js";

export type ExportFormat = "dir" | "zip";

/** One file being written: bytes are counted and hashed on their way to the sink. */
export interface SinkFile {
  write(chunk: Buffer): Promise<void>;
  /** Ends the file; resolves with its size and SHA-256 once the sink has all of it. */
  end(): Promise<{ bytes: number; sha256: string }>;
}

export interface ExportSink {
  readonly format: ExportFormat;
  /** Starts the next file (files are written one after another, never two at once). */
  file(name: string): Promise<SinkFile>;
  /** Makes the export durable and moves it to the output path. */
  commit(): Promise<void>;
  /** Removes everything written so far. */
  abort(): Promise<void>;
}

const WRITE_BUFFER = 256 * 1024;

function countingFile(write: (chunk: Buffer) => Promise<void>, finish: () => Promise<void>): SinkFile & { hash: Hash } {
  const hash = createHash("sha256");
  let bytes = 0;
  return {
    hash,
    async write(chunk) {
      hash.update(chunk);
      bytes += chunk.length;
      await write(chunk);
    },
    async end() {
      await finish();
      return { bytes, sha256: hash.digest("hex") };
    },
  };
}

/**
 * Checks that `output` may be written: its directory exists, and it does not exist unless `force`
 * (and then only when replacing it cannot destroy something that is not an export).
 */
export async function checkOutput(output: string, format: ExportFormat, force: boolean): Promise<boolean> {
  const parent = await stat(dirname(output)).catch(() => null);
  if (!parent?.isDirectory()) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `Cannot write the export to ${output}: ${dirname(output)} is not a directory.`,
      {
        plugin: "export",
        operation: "export",
        hint: "Create the directory first, or choose another --output.",
      },
    );
  }
  const existing = await stat(output).catch(() => null);
  if (!existing) return false;
  if (!force) {
    throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${output} already exists.`, {
      plugin: "export",
      operation: "export",
      hint: "Choose another --output, or pass --force to replace it.",
      details: { path: output },
    });
  }
  if (format === "zip" && !existing.isFile()) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `${output} exists and is not a file; --force replaces only a file with a ZIP.`,
      {
        plugin: "export",
        operation: "export",
        hint: "Choose another --output.",
      },
    );
  }
  if (format === "dir") {
    if (!existing.isDirectory()) {
      throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${output} exists and is not a directory.`, {
        plugin: "export",
        operation: "export",
        hint: "Choose another --output, or --format zip.",
      });
    }
    // --force never deletes a directory full of someone's files: only an earlier export, or nothing.
    const entries = await readdir(output);
    const manifest = entries.length === 0 ? "" : await readFile(join(output, MANIFEST_FILE), "utf8").catch(() => "");
    if (entries.length > 0 && !manifest.includes(`"${EXPORT_FORMAT}"`)) {
      throw new LifeboatError(
        ErrorCodes.INVALID_ARGUMENT,
        `${output} is a directory that does not hold a Lifeboat export; --force replaces only an earlier export or an empty directory.`,
        { plugin: "export", operation: "export", hint: "Choose another --output." },
      );
    }
  }
  return true;
}

/** A directory export: files written into a temp directory next to `output`, then renamed. */
export async function directorySink(output: string, replace: boolean): Promise<ExportSink> {
  const temp = tempPathFor(output, "export");
  try {
    await mkdir(temp, { mode: 0o755 });
  } catch (error) {
    throw fsError(error, "create", temp, "export");
  }
  // The file being written, so that abort can close it when a failure interrupted it.
  let current: FileHandle | undefined;
  return {
    format: "dir",
    async file(name) {
      const path = join(temp, name);
      let handle: FileHandle;
      try {
        handle = await open(path, "wx", 0o644);
      } catch (error) {
        throw fsError(error, "create", path, "export");
      }
      current = handle;
      let buffered: Buffer[] = [];
      let size = 0;
      const flush = async (): Promise<void> => {
        if (size === 0) return;
        const data = buffered.length === 1 ? buffered[0]! : Buffer.concat(buffered, size);
        buffered = [];
        size = 0;
        try {
          await handle.write(data);
        } catch (error) {
          throw fsError(error, "write", path, "export");
        }
      };
      const file = countingFile(
        async (chunk) => {
          buffered.push(chunk);
          size += chunk.length;
          if (size >= WRITE_BUFFER) await flush();
        },
        async () => {
          try {
            await flush();
            await handle.sync();
          } finally {
            current = undefined;
            await handle.close();
          }
        },
      );
      return file;
    },
    async commit() {
      await fsyncDir(temp);
      await swapIntoPlace(temp, output, replace);
    },
    async abort() {
      await current?.close().catch(() => {});
      current = undefined;
      await removeQuietly(temp);
    },
  };
}

/**
 * A ZIP export: archiver streams each file (deflated) into a temp file next to `output`, so memory
 * stays flat whatever the size; the central directory is written by `commit`.
 */
export async function zipSink(output: string, replace: boolean, level = 6): Promise<ExportSink> {
  const temp = tempPathFor(output, "export");
  const stream = createWriteStream(temp, { flags: "wx", mode: 0o644 });
  try {
    await once(stream, "open");
  } catch (error) {
    throw fsError(error, "create", temp, "export");
  }
  const archive = archiver("zip", { zlib: { level } });
  let failure: unknown;
  let rejectFailed: (error: unknown) => void = () => {};
  // Settles only on the first error of the archive or the file, so waits can race against it.
  const failed = new Promise<never>((_, reject) => {
    rejectFailed = reject;
  });
  failed.catch(() => {});
  const fail = (error: unknown): void => {
    if (failure !== undefined) return;
    failure = error;
    rejectFailed(fsError(error, "write", temp, "export"));
  };
  archive.on("error", fail);
  archive.on("warning", fail);
  stream.on("error", fail);
  archive.pipe(stream);
  const check = (): void => {
    if (failure !== undefined) throw fsError(failure, "write", temp, "export");
  };
  const date = new Date();
  let previous: Promise<void> = Promise.resolve();
  return {
    format: "zip",
    async file(name) {
      await previous;
      check();
      const entry = new PassThrough({ highWaterMark: WRITE_BUFFER });
      // archiver reports each entry once it has consumed it completely.
      const consumed = new Promise<void>((resolve) => {
        const onEntry = (data: archiver.EntryData): void => {
          if (data.name !== name) return;
          archive.off("entry", onEntry);
          resolve();
        };
        archive.on("entry", onEntry);
      });
      const done = Promise.race([consumed, failed]);
      previous = done.catch(() => {});
      archive.append(entry, { name, date });
      return countingFile(
        async (chunk) => {
          check();
          if (!entry.write(chunk)) await Promise.race([once(entry, "drain"), failed]);
        },
        async () => {
          entry.end();
          await done;
        },
      );
    },
    async commit() {
      await previous;
      check();
      const closed = once(stream, "close");
      await Promise.race([archive.finalize(), failed]);
      await Promise.race([closed, failed]);
      check();
      const handle = await open(temp, "r+");
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
      await swapIntoPlace(temp, output, replace);
    },
    async abort() {
      archive.abort();
      stream.destroy();
      await removeQuietly(temp);
    },
  };
}

/**
 * Renames `temp` to `output`. A file is renamed over the old one (atomic). A directory cannot be,
 * so the old one is first moved aside, and put back if the second rename fails.
 */
async function swapIntoPlace(temp: string, output: string, replace: boolean): Promise<void> {
  const dir = dirname(output);
  const isDir = (await stat(temp)).isDirectory();
  if (replace && isDir) {
    const aside = join(dir, `.${basename(output)}.lifeboat-replaced-${process.pid}-${Date.now()}.tmp`);
    await rename(output, aside).catch((error: unknown) => {
      throw fsError(error, "move aside", output, "export");
    });
    try {
      await rename(temp, output);
    } catch (error) {
      await rename(aside, output).catch(() => {});
      throw fsError(error, "rename", temp, "export");
    }
    await fsyncDir(dir);
    await rm(aside, { recursive: true, force: true });
    return;
  }
  try {
    await rename(temp, output);
  } catch (error) {
    throw fsError(error, "rename", temp, "export");
  }
  await fsyncDir(dir);
}
