/**
 * The replicator lease: one replicator per database per target. Acquired with a conditional
 * create of `<db>/locks/replicator.json`; renewed by rewriting it while it is still ours; taken
 * over only when it has expired (its holder stopped renewing: crashed or cut off).
 */
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { ErrorCodes, isLifeboatError, keys, LifeboatError, readAll, type StorageTarget } from "@lifeboat/core";

export interface LeaseRecord {
  readonly owner: string;
  readonly host: string;
  readonly pid: number;
  readonly since: string;
  readonly renewedAt: string;
  readonly expiresAt: string;
}

export class Lease {
  readonly owner = randomUUID();
  readonly since = new Date().toISOString();
  #held = false;

  constructor(
    readonly target: StorageTarget,
    readonly targetName: string,
    readonly database: string,
    readonly ttlMs: number,
  ) {}

  get key(): string {
    return keys.lease(this.database);
  }

  #record(): LeaseRecord {
    const now = Date.now();
    return {
      owner: this.owner,
      host: hostname(),
      pid: process.pid,
      since: this.since,
      renewedAt: new Date(now).toISOString(),
      expiresAt: new Date(now + this.ttlMs).toISOString(),
    };
  }

  async #read(): Promise<LeaseRecord | undefined> {
    try {
      return JSON.parse((await readAll((await this.target.get(this.key)).body)).toString("utf8")) as LeaseRecord;
    } catch (error) {
      if (isLifeboatError(error, ErrorCodes.NOT_FOUND)) return undefined;
      if (error instanceof SyntaxError) return undefined;
      throw error;
    }
  }

  /** Takes the lease or throws `LEASE_HELD` naming the holder. */
  async acquire(): Promise<void> {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        await this.target.put(this.key, Buffer.from(JSON.stringify(this.#record(), null, 2)), { ifNoneMatch: "*" });
        this.#held = true;
        return;
      } catch (error) {
        if (!isLifeboatError(error, ErrorCodes.PRECONDITION_FAILED)) throw error;
      }
      const current = await this.#read();
      if (current && current.owner === this.owner) {
        this.#held = true;
        return;
      }
      // A holder on this host whose process is gone (killed, crashed) cannot write any more.
      const holderGone = current?.host === hostname() && current.pid !== process.pid && !processAlive(current.pid);
      if (current && !holderGone && Date.parse(current.expiresAt) > Date.now()) {
        throw new LifeboatError(
          ErrorCodes.LEASE_HELD,
          `Another replicator holds ${this.database} on target "${this.targetName}" (${this.target.location}): host ${current.host}, pid ${current.pid}, since ${current.since}, lease valid until ${current.expiresAt}.`,
          {
            plugin: "wal",
            hint: "Stop that replicator first (one replicator per database and target). If it is gone, the lease expires by itself at that time.",
            details: { holder: current },
          },
        );
      }
      // Expired (or unreadable): remove it and race for it again; the conditional create decides.
      await this.target.delete([this.key]);
    }
    throw new LifeboatError(
      ErrorCodes.LEASE_HELD,
      `Could not take the replicator lease of ${this.database} on "${this.targetName}": other replicators keep racing for it.`,
      {
        plugin: "wal",
        hint: "Make sure only one replicator runs per database and target.",
      },
    );
  }

  /**
   * Extends the lease; throws `LEASE_HELD` if someone else took it over meanwhile. False when the
   * lease object was gone (deleted from the target: the caller checks what else went with it).
   */
  async renew(): Promise<boolean> {
    const current = await this.#read();
    if (current && current.owner !== this.owner) {
      this.#held = false;
      throw new LifeboatError(
        ErrorCodes.LEASE_HELD,
        `The replicator lease of ${this.database} on "${this.targetName}" was taken over by host ${current.host}, pid ${current.pid}.`,
        { plugin: "wal", hint: "This replicator stops shipping to that target; check why two replicators run." },
      );
    }
    await this.target.put(this.key, Buffer.from(JSON.stringify(this.#record(), null, 2)));
    this.#held = true;
    return current !== undefined;
  }

  /** Gives the lease up if it is still ours. */
  async release(): Promise<void> {
    if (!this.#held) return;
    const current = await this.#read().catch(() => undefined);
    if (current?.owner === this.owner) await this.target.delete([this.key]).catch(() => {});
    this.#held = false;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
