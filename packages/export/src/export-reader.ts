/** Reading an export back: a directory, or a ZIP read by random access (its central directory). */
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { ErrorCodes, fsError, LifeboatError } from "@lifeboat/core";
import yauzl from "yauzl";

export interface ExportArchive {
  /** The export's path, for messages. */
  readonly where: string;
  readonly format: "dir" | "zip";
  /** Whether the export holds `name`. */
  has(name: string): Promise<boolean>;
  /** A stream of the file's bytes (inflated, for a ZIP). */
  open(name: string): Promise<Readable>;
  close(): Promise<void>;
}

function corrupt(message: string, cause?: unknown): LifeboatError {
  return new LifeboatError(ErrorCodes.CORRUPT_BACKUP, message, {
    plugin: "export",
    operation: "import",
    ...(cause === undefined ? {} : { cause }),
    hint: "The export is damaged or incomplete; use an untouched copy, or export the database again.",
  });
}

/** Opens `path` as an export: a directory, or a ZIP file. Throws NOT_FOUND, CORRUPT_BACKUP. */
export async function openExport(path: string): Promise<ExportArchive> {
  const info = await stat(path).catch((error: unknown) => {
    throw fsError(error, "read", path, "export");
  });
  if (info.isDirectory()) return directoryArchive(path);
  if (!info.isFile()) throw corrupt(`${path} is neither a directory nor a file.`);
  return zipArchive(path);
}

function directoryArchive(dir: string): ExportArchive {
  return {
    where: dir,
    format: "dir",
    async has(name) {
      return (await stat(join(dir, name)).catch(() => null))?.isFile() ?? false;
    },
    async open(name) {
      const path = join(dir, name);
      const stream = createReadStream(path, { highWaterMark: 1 << 20 });
      await new Promise<void>((resolve, reject) => {
        stream.once("open", () => resolve());
        stream.once("error", reject);
      }).catch((error: unknown) => {
        throw (error as { code?: string }).code === "ENOENT"
          ? corrupt(`${path} is missing from the export.`, error)
          : fsError(error, "read", path, "export");
      });
      return stream;
    },
    async close() {},
  };
}

async function zipArchive(path: string): Promise<ExportArchive> {
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) => {
    yauzl.open(path, { lazyEntries: true, autoClose: false, validateEntrySizes: true }, (error, file) =>
      error ? reject(error) : resolve(file),
    );
  }).catch((error: unknown) => {
    throw corrupt(`${path} is not a readable ZIP file (${(error as Error).message}).`, error);
  });
  const entries = new Map<string, yauzl.Entry>();
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on("entry", (entry: yauzl.Entry) => {
        entries.set(entry.fileName, entry);
        zip.readEntry();
      });
      zip.once("end", () => resolve());
      zip.once("error", reject);
      zip.readEntry();
    });
  } catch (error) {
    zip.close();
    throw corrupt(`${path}: the ZIP's directory is damaged (${(error as Error).message}).`, error);
  }
  return {
    where: path,
    format: "zip",
    async has(name) {
      return entries.has(name);
    },
    async open(name) {
      const entry = entries.get(name);
      if (!entry) throw corrupt(`${path} has no ${name}.`);
      const stream = await new Promise<Readable>((resolve, reject) => {
        zip.openReadStream(entry, (error, s) => (error ? reject(error) : resolve(s)));
      }).catch((error: unknown) => {
        throw corrupt(`${path}: cannot read ${name} (${(error as Error).message}).`, error);
      });
      return stream;
    },
    async close() {
      zip.close();
    },
  };
}

/** Reads a whole (small) file of the export as UTF-8, refusing more than `limit` bytes. */
export async function readSmallFile(archive: ExportArchive, name: string, limit: number): Promise<string> {
  const stream = await archive.open(name);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw corrupt(`${archive.where}: ${name} is larger than ${limit} bytes.`);
      chunks.push(chunk);
    }
  } catch (error) {
    stream.destroy();
    if (error instanceof LifeboatError) throw error;
    throw corrupt(`${archive.where}: cannot read ${name} (${(error as Error).message}).`, error);
  }
  return Buffer.concat(chunks).toString("utf8");
}
