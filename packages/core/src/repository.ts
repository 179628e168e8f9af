/** One database's folder on one storage target: markers, manifests, listings. */
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { basename } from "node:path";
import { ErrorCodes, isLifeboatError, LifeboatError } from "./errors.js";
import {
  keys,
  MANIFEST_FORMAT_VERSION,
  parseManifestKey,
  REPOSITORY_FORMAT_VERSION,
  type RepositoryMarker,
  type SnapshotManifest,
  type VerificationRecord,
} from "./layout.js";
import { type CallOptions, readAll, type StorageTarget } from "./storage.js";

export const TOOL_VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;

export interface StoredSnapshot {
  readonly manifest: SnapshotManifest;
  readonly manifestKey: string;
  readonly verification: VerificationRecord | undefined;
  readonly verificationKey: string;
}

export interface NamedTarget {
  /** `name` from the config, else `<type>` (`local`, `s3`), numbered when repeated. */
  readonly name: string;
  readonly target: StorageTarget;
}

export class Repository {
  readonly #initialised = { done: false };
  #markerChecked = false;
  /** The database's file name as configured (recorded in a new marker). */
  readonly #sourceFile: string | undefined;
  /** The marker must name #sourceFile (the folder's name was derived from it). */
  readonly #checkFile: boolean;

  /**
   * `source` (a DatabaseContext) lets the folder be checked. Created with it, the marker records
   * the database's file name as configured (before symlinks are resolved); a folder whose marker
   * names another file is then refused, unless the folder's name was given explicitly (`name:` in
   * the config): two files whose names map to one folder (`my app.db`, `my_app.db`) must not share
   * it, while an explicit name is the user's choice (a renamed file keeps its archive that way).
   */
  constructor(
    readonly named: NamedTarget,
    readonly database: string,
    source?: { readonly path: string; readonly fileName?: string; readonly explicitName?: boolean },
  ) {
    this.#sourceFile = source && (source.fileName ?? basename(source.path));
    this.#checkFile = source !== undefined && !source.explicitName;
  }

  get target(): StorageTarget {
    return this.named.target;
  }

  /** Where this repository is, for messages: `local (/var/backups)/app`. */
  get where(): string {
    return `target "${this.named.name}" (${this.target.location}) ${this.database}/`;
  }

  /** Initialises the target and creates or checks the repository marker. */
  async open(options: CallOptions = {}): Promise<void> {
    if (this.#initialised.done) return;
    await this.target.init?.(options);
    const key = keys.marker(this.database);
    const marker: RepositoryMarker = {
      format: "lifeboat.repository",
      formatVersion: REPOSITORY_FORMAT_VERSION,
      database: this.database,
      ...(this.#sourceFile === undefined ? {} : { file: this.#sourceFile }),
      createdAt: new Date().toISOString(),
      createdBy: `lifeboat ${TOOL_VERSION} on ${hostname()}`,
    };
    try {
      await this.target.put(key, Buffer.from(`${JSON.stringify(marker, null, 2)}\n`), {
        ...options,
        ifNoneMatch: "*",
      });
    } catch (error) {
      if (!isLifeboatError(error, ErrorCodes.PRECONDITION_FAILED)) throw error;
      const existing = await this.readJson<RepositoryMarker>(key, options);
      if (existing.format !== "lifeboat.repository" || existing.formatVersion > REPOSITORY_FORMAT_VERSION) {
        throw new LifeboatError(
          ErrorCodes.UNSUPPORTED_FORMAT,
          `${this.where} was written by a newer Lifeboat (repository format ${String(existing.formatVersion)}).`,
          { hint: "Upgrade Lifeboat to read it; nothing was changed." },
        );
      }
      this.#checkOwnerFile(existing);
    }
    this.#initialised.done = true;
  }

  /**
   * For readers (every listing runs it once): refuses a folder whose marker says a newer format,
   * or names another database file (see the constructor). A missing or damaged marker does not
   * keep a restore from what the manifests describe; an unreachable target shows in the listing.
   */
  async checkOwner(options: CallOptions = {}): Promise<void> {
    if (this.#markerChecked) return;
    const marker = await this.readJson<RepositoryMarker>(keys.marker(this.database), options).catch(() => null);
    if (typeof marker?.formatVersion === "number" && marker.formatVersion > REPOSITORY_FORMAT_VERSION) {
      throw new LifeboatError(
        ErrorCodes.UNSUPPORTED_FORMAT,
        `${this.where} was written by a newer Lifeboat (repository format ${marker.formatVersion}; this one reads up to ${REPOSITORY_FORMAT_VERSION}).`,
        { hint: "Upgrade Lifeboat to read it; nothing was changed." },
      );
    }
    if (marker) this.#checkOwnerFile(marker);
    this.#markerChecked = true;
  }

  #checkOwnerFile(marker: RepositoryMarker): void {
    const file = this.#sourceFile;
    if (!this.#checkFile || typeof marker.file !== "string" || marker.file === file) return;
    throw new LifeboatError(
      ErrorCodes.ARCHIVE_MISMATCH,
      `${this.where} holds the archive of "${marker.file}", not of "${file}": both file names map to the folder "${this.database}".`,
      {
        hint: `Give this database a name of its own (\`name:\` in its entry of lifeboat.yml), or rename its file. If "${file}" is "${marker.file}" renamed, set \`name: ${this.database}\` in its entry to keep this archive. Nothing was changed.`,
        details: { folder: this.database, archived: marker.file, database: file },
      },
    );
  }

  /** Forgets that the folder was opened: the next `open` checks (or creates) its marker again. */
  forgetOpened(): void {
    this.#initialised.done = false;
  }

  async readJson<T>(key: string, options: CallOptions = {}): Promise<T> {
    const { body } = await this.target.get(key, options);
    const text = (await readAll(body)).toString("utf8");
    try {
      return JSON.parse(text) as T;
    } catch (error) {
      throw new LifeboatError(ErrorCodes.CORRUPT_BACKUP, `${key} on ${this.where} is not valid JSON.`, {
        cause: error,
        hint: "The object was damaged or written by something else; run `lifeboat verify`.",
      });
    }
  }

  async writeJson(key: string, value: unknown, options: CallOptions = {}): Promise<void> {
    await this.target.put(key, Buffer.from(`${JSON.stringify(value, null, 2)}\n`), options);
  }

  /**
   * Every snapshot with a readable manifest, oldest first. Unreadable manifests are reported in
   * `problems`. Runs `checkOwner` first.
   */
  async listSnapshots(options: CallOptions = {}): Promise<{ snapshots: StoredSnapshot[]; problems: string[] }> {
    await this.checkOwner(options);
    const manifestKeys: string[] = [];
    const verified = new Set<string>();
    for await (const info of this.target.list(keys.generations(this.database), options)) {
      if (info.key.endsWith(".verified.json")) verified.add(info.key);
      else if (parseManifestKey(info.key)) manifestKeys.push(info.key);
    }
    const problems: string[] = [];
    const snapshots: StoredSnapshot[] = [];
    const loaded = await mapLimit(manifestKeys, 8, async (key) => {
      const parsed = parseManifestKey(key)!;
      const verificationKey = keys.snapshotVerified(this.database, parsed.generation, parsed.position);
      try {
        const manifest = await this.readJson<SnapshotManifest>(key, options);
        if (manifest.format !== "lifeboat.snapshot" || manifest.formatVersion > MANIFEST_FORMAT_VERSION) {
          problems.push(`${key}: written by a newer Lifeboat (format ${String(manifest.formatVersion)}); skipped`);
          return undefined;
        }
        const verification = verified.has(verificationKey)
          ? await this.readJson<VerificationRecord>(verificationKey, options).catch(() => undefined)
          : undefined;
        return { manifest, manifestKey: key, verification, verificationKey };
      } catch (error) {
        if (isLifeboatError(error, ErrorCodes.NOT_FOUND)) return undefined; // deleted while listing
        problems.push(`${key}: ${error instanceof Error ? error.message : String(error)}`);
        return undefined;
      }
    });
    for (const item of loaded) if (item) snapshots.push(item);
    snapshots.sort(
      (a, b) => a.manifest.createdAt.localeCompare(b.manifest.createdAt) || a.manifest.id.localeCompare(b.manifest.id),
    );
    return { snapshots, problems };
  }
}

/** Runs `fn` over `items` with at most `limit` in flight; keeps order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!, index);
    }
  });
  await Promise.all(workers);
  return results;
}
