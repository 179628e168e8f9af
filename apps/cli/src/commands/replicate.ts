import { type ChildProcess, spawn } from "node:child_process";
import { constants } from "node:os";
import { ErrorCodes, isLifeboatError, parseDuration } from "@lifeboat/core";
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
  readonly exec?: string;
  readonly segmentInterval?: string;
}

/** Signals `--exec` passes on to the app (it runs in its own process group, so none reaches it twice). */
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP"] as const;

/** The exit code a shell reports for a process: its code, or 128 + the number of the signal that ended it. */
export function exitCodeOf(code: number | null, signal: NodeJS.Signals | null): number {
  if (code !== null) return code;
  return 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
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
      return `${event.database}: ${event.mode} checkpoint, ${event.checkpointed} of ${event.frames} frames in the database${event.complete ? "" : " (partial: readers)"}, write lock held ${event.writeLockMs.toFixed(1)} ms`;
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
    .description(
      "archive every committed transaction continuously (until SIGINT/SIGTERM, or until the --exec app exits); runs the config's schedules",
    )
    .option("--serve", "also serve /health and /metrics")
    .argument("[db]", "database name or path; default: every database in the config")
    .option("--to <location...>", "archive here instead of the config's targets (a directory or a URL)")
    .option("-v, --verbose", "print every shipped segment and checkpoint")
    .option(
      "--segment-interval <duration>",
      "cut a segment at most this often (overrides replication.segmentInterval; e.g. 1s: fewer storage requests, more lag)",
    )
    .option(
      "--exec <command>",
      "once archiving runs, run this command (through the shell) as a child; SIGINT/SIGTERM/SIGHUP go to it; when it exits, ship everything and exit with its exit code",
    )
    .action(async (db: string | undefined, flags: Flags) => {
      const segmentIntervalMs =
        flags.segmentInterval === undefined ? undefined : parseDuration(flags.segmentInterval, "--segment-interval");
      const lb = await loadLifeboat(db, flags);
      const names = flags.to ? [lb.databases[0]!] : db === undefined ? lb.databases : [db];
      const replicators: Replicator[] = [];
      const daemon = createDaemon(
        daemonOptionsFrom(lb, names, flags, { serve: Boolean(flags.serve), onLog: daemonLogPrinter(flags.json) }),
      );
      const say = (text: string, json: Record<string, unknown>) => {
        const time = new Date().toISOString();
        process.stdout.write(flags.json ? `${JSON.stringify({ time, ...json })}\n` : `${time} ${text}\n`);
      };
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
      let app: ChildProcess | undefined;
      let stopping = false;
      /** Ships what is left, releases the leases, closes, and exits with `exitCode`. */
      const stop = async (why: string, exitCode: number) => {
        if (stopping) {
          process.stderr.write(`lifeboat: ${why} again, exiting without waiting\n`);
          process.exit(1);
        }
        stopping = true;
        if (!flags.json)
          process.stdout.write(`${new Date().toISOString()} ${why}: shipping what is left and releasing the leases\n`);
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
        process.exit(exitCode);
      };
      const onSignal = (signal: NodeJS.Signals) => {
        if (app && app.exitCode === null && app.signalCode === null) {
          // The app decides how to stop; its exit stops the archiving.
          forward(app, signal);
          return;
        }
        void stop(signal, flags.exec ? exitCodeOf(null, signal) : 0);
      };
      // Installed before start-up: a signal during start-up also ships, releases and exits cleanly.
      for (const signal of flags.exec ? FORWARDED : (["SIGINT", "SIGTERM"] as const)) process.on(signal, onSignal);
      /** Databases that did not exist at start-up: archiving each starts once its file appears. */
      const waiting: Replicator[] = [];
      const archiving = (replicator: Replicator, late = false) => {
        daemon.attachReplicator(replicator);
        if (flags.json && !late) return; // the "started" event lists them
        say(
          `${replicator.db.name}: archiving ${replicator.db.path} -> ${replicator.db.targets.map((t) => `${t.name} (${t.target.location})`).join(", ")}`,
          { type: "archiving", database: replicator.db.name, path: replicator.db.path },
        );
      };
      try {
        for (const name of names) {
          const context = await lb.database(name);
          const replicator = new Replicator(context, {
            ...replicatorOptionsFrom(context),
            ...(segmentIntervalMs !== undefined ? { segmentIntervalMs } : {}),
            snapshotIntervalMs: undefined, // the daemon schedules snapshots (schedule.snapshot, else snapshot.interval)
            onEvent: (event) => {
              print(event);
              daemon.observe(event);
            },
          });
          replicators.push(replicator); // before start(): a signal during start-up stops it too
          try {
            await replicator.start();
          } catch (error) {
            // Not created yet: with other databases to archive, or an app to start that may
            // create it (--exec), the others go on and this one starts once the file exists. A
            // lone database that is missing is more likely a wrong path: that fails.
            if (!isLifeboatError(error, ErrorCodes.DATABASE_NOT_FOUND) || (names.length === 1 && !flags.exec))
              throw error;
            say(
              `${context.name}: ${context.path} does not exist (yet); archiving it starts once it does (checked every ${WAIT_FOR_DATABASE_MS / 1000} s)`,
              { type: "waiting", database: context.name, path: context.path, error: error.toJSON() },
            );
            waiting.push(replicator);
            continue;
          }
          archiving(replicator);
        }
        await daemon.start();
        if (waiting.length > 0) {
          let trying = false;
          const timer = setInterval(async () => {
            if (trying || stopping) return;
            trying = true;
            for (const replicator of [...waiting]) {
              try {
                await replicator.start();
              } catch (error) {
                if (isLifeboatError(error, ErrorCodes.DATABASE_NOT_FOUND)) continue;
                say(`${replicator.db.name}: archiving could not start: ${(error as Error).message}`, {
                  type: "error",
                  database: replicator.db.name,
                  error: isLifeboatError(error) ? error.toJSON() : { message: String(error) },
                });
                continue;
              }
              waiting.splice(waiting.indexOf(replicator), 1);
              if (stopping) break;
              archiving(replicator, true);
            }
            if (waiting.length === 0) clearInterval(timer);
            trying = false;
          }, WAIT_FOR_DATABASE_MS);
          timer.unref();
        }
      } catch (error) {
        if (flags.exec)
          process.stderr.write(`lifeboat: archiving did not start, so \`${flags.exec}\` was not started\n`);
        await daemon.stop().catch(() => {});
        for (const r of replicators) await r.stop(5000).catch(() => {});
        await lb.close();
        throw error;
      }
      if (stopping) await new Promise(() => {}); // a signal arrived during start-up; stop() exits
      if (flags.json) say("", { type: "started", databases: names });
      if (flags.exec) {
        const command = flags.exec;
        // Its own process group (detached): a Ctrl-C reaches only lifeboat, which passes it on
        // to the whole group once. The shell catches the signals with a no-op trap so it stays to
        // report the app's own exit status (a caught signal is reset to default in the app).
        const child = spawn("/bin/sh", ["-c", `trap : INT TERM HUP\n${command}`], {
          stdio: "inherit",
          detached: true,
        });
        app = child;
        // Should lifeboat die of an error, the app does not live on unarchived.
        const killApp = () => {
          if (child.exitCode === null && child.signalCode === null) forward(child, "SIGTERM");
        };
        process.once("exit", killApp);
        child.once("spawn", () =>
          say(`started \`${command}\` (pid ${child.pid})`, { type: "exec", command, pid: child.pid }),
        );
        child.once("error", (error) => {
          if (stopping) return;
          process.stderr.write(`lifeboat: cannot start \`${command}\`: ${error.message}\n`);
          void stop("the app did not start", 127);
        });
        child.once("exit", (code, signal) => {
          if (stopping) return;
          const exitCode = exitCodeOf(code, signal);
          say(`\`${command}\` exited ${signal ? `on ${signal}` : `with code ${code}`}`, {
            type: "exec-exit",
            command,
            code,
            signal,
            exitCode,
          });
          void stop("the app exited", exitCode);
        });
      }
      await new Promise(() => {}); // runs until a signal or the app's exit
    });
}

/** Sends `signal` to the app's process group (the shell and what it started), else to the app. */
function forward(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid !== undefined) process.kill(-child.pid, signal);
  } catch {
    child.kill(signal);
  }
}

/** How often a database that did not exist at start-up is looked for again (ms). */
const WAIT_FOR_DATABASE_MS = 2000;
