/**
 * Schedules: when a job runs. A schedule is written either as a duration (`6h`, `30m`: every so
 * often, counted from the start of the daemon) or as a cron expression (`0 *\/6 * * *`, five
 * fields; six with seconds; `@daily` and friends), evaluated by croner. The `Scheduler` runs jobs
 * on their schedules, never two runs of one job at once, and at most `concurrency` heavy jobs
 * together (snapshots and restore drills compete for the same disk and CPU).
 */
import { ErrorCodes, formatDuration, LifeboatError, parseDuration } from "@lifeboat/core";
import { Cron } from "croner";

/** setTimeout's longest delay; longer waits are re-armed in steps. */
const MAX_TIMER_MS = 2_147_483_647;

export interface Schedule {
  /** As written: `6h`, `0 3 * * *`. */
  readonly spec: string;
  /** `off`: never by itself (only when asked: start-up backups, manual runs). */
  readonly kind: "interval" | "cron" | "off";
  /**
   * The first run strictly after `after` (epoch ms). For an interval that is `after + interval`;
   * for a cron expression the next matching moment. Null when a cron expression never matches again.
   */
  next(after: number): number | null;
  /** The usual time between runs (ms): the interval, or the gap between the next two cron runs. */
  readonly periodMs: number;
}

export interface ScheduleOptions {
  /** Time zone for cron expressions (IANA name such as `Europe/Berlin`). Default: the process's. */
  readonly timezone?: string;
}

/**
 * Parses a schedule: a duration (`90s`, `15m`, `6h`, `1d`) or a cron expression. Throws
 * `INVALID_ARGUMENT` naming `where` when it is neither.
 */
export function parseSchedule(spec: string, where = "schedule", options: ScheduleOptions = {}): Schedule {
  const text = spec.trim();
  if (/^\d/.test(text) && !/\s/.test(text)) {
    let ms: number | undefined;
    try {
      ms = parseDuration(text, where);
    } catch {
      ms = undefined;
    }
    if (ms !== undefined) {
      if (ms < 10) {
        throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${where}: "${spec}" is too short an interval.`, {
          hint: "Use at least 10ms (in practice minutes or hours: 15m, 6h, 1d).",
        });
      }
      const interval = ms;
      return { spec: text, kind: "interval", next: (after) => after + interval, periodMs: interval };
    }
  }
  let cron: Cron;
  try {
    cron = new Cron(text, { paused: true, ...(options.timezone ? { timezone: options.timezone } : {}) });
  } catch (error) {
    throw new LifeboatError(
      ErrorCodes.INVALID_ARGUMENT,
      `${where}: "${spec}" is neither a duration nor a cron expression (${error instanceof Error ? error.message : String(error)}).`,
      {
        hint: 'Use a duration such as "6h" or "1d", or a cron expression such as "0 */6 * * *" (minute hour day month weekday).',
      },
    );
  }
  const next = (after: number): number | null => cron.nextRun(new Date(after))?.getTime() ?? null;
  const first = next(Date.now());
  const second = first === null ? null : next(first);
  return {
    spec: text,
    kind: "cron",
    next,
    periodMs: first !== null && second !== null ? second - first : Number.POSITIVE_INFINITY,
  };
}

export type JobOutcome =
  | { readonly ok: true; readonly detail?: string }
  | { readonly ok: false; readonly error: LifeboatError };

export interface JobStatus {
  readonly name: string;
  readonly schedule: string;
  readonly running: boolean;
  readonly runs: number;
  readonly failures: number;
  /** Epoch ms, or null before the first run. */
  readonly lastStartedAt: number | null;
  readonly lastFinishedAt: number | null;
  readonly lastDurationMs: number | null;
  readonly lastOk: boolean | null;
  readonly lastError: LifeboatError | null;
  readonly lastDetail: string | null;
  readonly nextRunAt: number | null;
}

export interface JobDefinition {
  /** Unique, e.g. `app/snapshot`. */
  readonly name: string;
  readonly schedule: Schedule;
  /** Heavy jobs share the scheduler's concurrency limit; light ones (health probes) never wait. */
  readonly heavy?: boolean;
  /** Resolves with an optional one-line detail for the status; a rejection marks the run failed. */
  readonly run: (signal: AbortSignal) => Promise<string | undefined | void>;
}

export interface SchedulerOptions {
  /** Heavy jobs running at once. Default 1. */
  readonly concurrency?: number;
  /** Told about every finished run. */
  readonly onRun?: (job: string, outcome: JobOutcome, durationMs: number) => void;
  readonly now?: () => number;
}

interface JobState {
  readonly def: JobDefinition;
  status: {
    running: boolean;
    runs: number;
    failures: number;
    lastStartedAt: number | null;
    lastFinishedAt: number | null;
    lastDurationMs: number | null;
    lastOk: boolean | null;
    lastError: LifeboatError | null;
    lastDetail: string | null;
    nextRunAt: number | null;
  };
  timer: NodeJS.Timeout | null;
  /** A run was asked for while one was running or waiting: do not queue a second. */
  queued: boolean;
  current: Promise<JobOutcome> | null;
}

/**
 * Runs jobs on their schedules. A run that is due while the previous run of the same job is
 * still going is skipped (the next one is planned from the schedule), so a slow job never piles
 * up. `runNow` runs a job at once (or returns the run in progress).
 */
export class Scheduler {
  readonly #jobs = new Map<string, JobState>();
  readonly #concurrency: number;
  readonly #onRun: SchedulerOptions["onRun"];
  readonly #now: () => number;
  readonly #abort = new AbortController();
  #active = 0;
  readonly #waiting: (() => void)[] = [];
  #started = false;
  #stopped = false;

  constructor(options: SchedulerOptions = {}) {
    this.#concurrency = Math.max(1, options.concurrency ?? 1);
    this.#onRun = options.onRun;
    this.#now = options.now ?? Date.now;
  }

  /** Adds a job; it is armed at once if the scheduler runs. Names must be unique. */
  add(def: JobDefinition): void {
    if (this.#jobs.has(def.name)) {
      throw new LifeboatError(ErrorCodes.INTERNAL, `A job named ${def.name} is already scheduled.`);
    }
    const state: JobState = {
      def,
      status: {
        running: false,
        runs: 0,
        failures: 0,
        lastStartedAt: null,
        lastFinishedAt: null,
        lastDurationMs: null,
        lastOk: null,
        lastError: null,
        lastDetail: null,
        nextRunAt: null,
      },
      timer: null,
      queued: false,
      current: null,
    };
    this.#jobs.set(def.name, state);
    if (this.#started && !this.#stopped) this.#arm(state, this.#now());
  }

  /** Arms every job: the first run of each is its schedule's next moment after now. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    const now = this.#now();
    for (const state of this.#jobs.values()) this.#arm(state, now);
  }

  has(name: string): boolean {
    return this.#jobs.has(name);
  }

  status(name: string): JobStatus | undefined {
    const state = this.#jobs.get(name);
    return state ? { name, schedule: state.def.schedule.spec, ...state.status } : undefined;
  }

  statuses(): JobStatus[] {
    return [...this.#jobs.keys()].map((name) => this.status(name)!);
  }

  /** Runs `name` now (waiting for a heavy slot); joins the run in progress if there is one. */
  runNow(name: string): Promise<JobOutcome> {
    const state = this.#jobs.get(name);
    if (!state) {
      return Promise.reject(
        new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `No job named ${name}.`, {
          hint: `Jobs: ${[...this.#jobs.keys()].join(", ") || "none"}.`,
        }),
      );
    }
    return state.current ?? this.#run(state);
  }

  /** Stops every timer, aborts the runs in progress (their signal), and waits for them to end. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const state of this.#jobs.values()) {
      if (state.timer) clearTimeout(state.timer);
      state.timer = null;
      state.status.nextRunAt = null;
    }
    this.#abort.abort();
    for (const release of this.#waiting.splice(0)) {
      this.#active++;
      release();
    }
    await Promise.allSettled([...this.#jobs.values()].map((s) => s.current));
  }

  #arm(state: JobState, after: number): void {
    if (this.#stopped) return;
    const at = state.def.schedule.next(after);
    state.status.nextRunAt = at;
    if (at === null) return;
    const wait = (): void => {
      const delay = at - this.#now();
      if (delay > MAX_TIMER_MS) {
        state.timer = setTimeout(wait, MAX_TIMER_MS);
        return;
      }
      state.timer = setTimeout(
        () => {
          state.timer = null;
          // A run still going (a slow job, or one started by runNow) makes this one redundant.
          const done = state.current ? state.current : this.#run(state);
          void done.finally(() => this.#arm(state, Math.max(at, this.#now())));
        },
        Math.max(0, delay),
      );
    };
    wait();
  }

  #run(state: JobState): Promise<JobOutcome> {
    const run = (async (): Promise<JobOutcome> => {
      if (state.def.heavy) await this.#acquire();
      if (this.#stopped) {
        if (state.def.heavy) this.#release();
        return {
          ok: false,
          error: new LifeboatError(ErrorCodes.ABORTED, `${state.def.name}: the scheduler stopped.`),
        };
      }
      const started = this.#now();
      state.status.running = true;
      state.status.lastStartedAt = started;
      let outcome: JobOutcome;
      try {
        const detail = await state.def.run(this.#abort.signal);
        outcome = typeof detail === "string" ? { ok: true, detail } : { ok: true };
      } catch (error) {
        outcome = { ok: false, error: asLifeboatError(error, state.def.name) };
      } finally {
        state.status.running = false;
        if (state.def.heavy) this.#release();
      }
      const finished = this.#now();
      state.status.runs++;
      state.status.lastFinishedAt = finished;
      state.status.lastDurationMs = finished - started;
      state.status.lastOk = outcome.ok;
      state.status.lastError = outcome.ok ? null : outcome.error;
      state.status.lastDetail = outcome.ok ? (outcome.detail ?? null) : null;
      if (!outcome.ok) state.status.failures++;
      this.#onRun?.(state.def.name, outcome, finished - started);
      return outcome;
    })();
    state.current = run;
    void run.finally(() => {
      if (state.current === run) state.current = null;
    });
    return run;
  }

  async #acquire(): Promise<void> {
    if (this.#active < this.#concurrency) {
      this.#active++;
      return;
    }
    // The releasing run hands its slot over directly (so no newcomer can slip in between).
    await new Promise<void>((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#active--;
  }
}

export function asLifeboatError(error: unknown, what: string): LifeboatError {
  if (error instanceof LifeboatError) return error;
  return new LifeboatError(ErrorCodes.INTERNAL, `${what}: ${error instanceof Error ? error.message : String(error)}`, {
    cause: error,
    hint: "This is a bug in Lifeboat; please report it with the daemon's output.",
  });
}

/** A schedule that never fires: the job runs only through `runNow`. */
export function offSchedule(spec = "off"): Schedule {
  return { spec, kind: "off", next: () => null, periodMs: Number.POSITIVE_INFINITY };
}

/** `every 6h` / `cron 0 3 * * *` / `off`, for status lines. */
export function describeSchedule(schedule: Schedule): string {
  if (schedule.kind === "off") return schedule.spec;
  return schedule.kind === "interval" ? `every ${formatDuration(schedule.periodMs)}` : `cron "${schedule.spec}"`;
}
