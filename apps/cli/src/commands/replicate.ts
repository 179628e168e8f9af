import { createDaemon } from "@lifeboat/daemon";
import { Replicator, type ReplicatorEvent, replicatorOptionsFrom } from "@lifeboat/wal";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { formatBytes } from "../output.js";
import { addDaemonOptions, type DaemonFlags, daemonLogPrinter, daemonOptionsFrom } from "./serve.js";

interface Flags extends CommonFlags, DaemonFlags {
  readonly to?: string[];
  readonly verbose?: boolean;
  readonly serve?: boolean;
}

function describe(event: ReplicatorEvent): string | null {
  switch (event.type) {
    case "generation":
      return `${event.database}: generation ${event.generation} (${event.reason})`;
    case "snapshot":
      return `${event.database}: snapshot at transaction ${event.position} of ${event.generation} (${formatBytes(event.bytes)}) -> ${event.targets.join(", ") || "no target yet"}`;
    case "shipped":
      return `${event.database}: transactions ${event.firstTxn}-${event.lastTxn} -> ${event.target} (lag ${event.lagMs} ms)`;
    case "spooled":
      return null;
    case "checkpoint":
      return `${event.database}: ${event.mode} checkpoint of ${event.frames} frames${event.complete ? "" : " (partial: readers)"}, write lock held ${event.writeLockMs.toFixed(1)} ms`;
    case "target-error":
      return `${event.database}: target ${event.target} failed: ${event.error.message} (queued locally; retrying in ${Math.round(event.retryInMs / 1000)} s)`;
    case "target-recovered":
      return `${event.database}: target ${event.target} is back; shipping the queue`;
    case "error":
      return `${event.database}: ${event.error.message}${event.error.hint ? ` (${event.error.hint})` : ""}`;
  }
}

export function registerReplicate(program: Command): void {
  addDaemonOptions(withCommon(program.command("replicate")))
    .description("archive every committed transaction continuously (until SIGINT/SIGTERM); runs the config's schedules")
    .option("--serve", "also serve /health and /metrics")
    .argument("[db]", "database name or path; default: every database in the config")
    .option("--to <location...>", "archive here instead of the config's targets (a directory or a URL)")
    .option("-v, --verbose", "print every shipped segment and checkpoint")
    .action(async (db: string | undefined, flags: Flags) => {
      const lb = await loadLifeboat(db, flags);
      const names = flags.to ? [lb.databases[0]!] : db === undefined ? lb.databases : [db];
      const replicators: Replicator[] = [];
      const daemon = createDaemon(
        daemonOptionsFrom(lb, names, flags, { serve: Boolean(flags.serve), onLog: daemonLogPrinter(flags.json) }),
      );
      const print = (event: ReplicatorEvent) => {
        if (flags.json) {
          process.stdout.write(
            `${JSON.stringify({ time: new Date().toISOString(), ...event, ...("error" in event ? { error: event.error.toJSON() } : {}) })}\n`,
          );
          return;
        }
        if (!flags.verbose && (event.type === "shipped" || event.type === "checkpoint")) return;
        const line = describe(event);
        if (line) process.stdout.write(`${new Date().toISOString()} ${line}\n`);
      };
      let stopping = false;
      const stop = async (signal: string) => {
        if (stopping) {
          process.stderr.write(`lifeboat: ${signal} again, exiting without waiting\n`);
          process.exit(1);
        }
        stopping = true;
        if (!flags.json)
          process.stdout.write(
            `${new Date().toISOString()} ${signal}: shipping what is left and releasing the leases\n`,
          );
        let pending = 0;
        await daemon.stop().catch(() => {});
        for (const r of replicators) {
          const result = await r.stop();
          pending += result.pending.length;
          for (const p of result.pending) {
            process.stderr.write(
              `lifeboat: ${r.db.name}: target ${p.target} has transactions up to ${p.shipped} of ${p.txn}; the rest stays queued for the next run\n`,
            );
          }
        }
        await lb.close();
        if (!flags.json)
          process.stdout.write(
            `${new Date().toISOString()} stopped${pending ? " (some targets still behind)" : ", everything shipped"}\n`,
          );
        process.exit(0);
      };
      // Installed before start-up: a signal during start-up also ships, releases and exits cleanly.
      process.on("SIGINT", () => void stop("SIGINT"));
      process.on("SIGTERM", () => void stop("SIGTERM"));
      try {
        for (const name of names) {
          const context = await lb.database(name);
          const replicator = new Replicator(context, {
            ...replicatorOptionsFrom(context),
            snapshotIntervalMs: undefined, // the daemon schedules snapshots (schedule.snapshot, else snapshot.interval)
            onEvent: (event) => {
              print(event);
              daemon.observe(event);
            },
          });
          replicators.push(replicator); // before start(): a signal during start-up stops it too
          await replicator.start();
          daemon.attachReplicator(replicator);
          if (!flags.json)
            process.stdout.write(
              `${new Date().toISOString()} ${context.name}: archiving ${context.path} -> ${context.targets.map((t) => `${t.name} (${t.target.location})`).join(", ")}\n`,
            );
        }
        await daemon.start();
      } catch (error) {
        await daemon.stop().catch(() => {});
        for (const r of replicators) await r.stop(5000).catch(() => {});
        await lb.close();
        throw error;
      }
      if (flags.json)
        process.stdout.write(
          `${JSON.stringify({ time: new Date().toISOString(), type: "started", databases: names })}\n`,
        );
      await new Promise(() => {}); // runs until a signal
    });
}
