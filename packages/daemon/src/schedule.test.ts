import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import { afterEach, describe, expect, it } from "vitest";
import { parseSchedule, Scheduler } from "./schedule.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const schedulers: Scheduler[] = [];
afterEach(async () => {
  for (const s of schedulers.splice(0)) await s.stop();
});

function scheduler(options: ConstructorParameters<typeof Scheduler>[0] = {}): Scheduler {
  const s = new Scheduler(options);
  schedulers.push(s);
  return s;
}

describe("parseSchedule", () => {
  it("reads durations as intervals and cron expressions as cron", () => {
    const every = parseSchedule("6h");
    expect(every.kind).toBe("interval");
    expect(every.periodMs).toBe(6 * 3_600_000);
    expect(every.next(1000)).toBe(1000 + 6 * 3_600_000);

    const cron = parseSchedule("0 */6 * * *", "schedule", { timezone: "UTC" });
    expect(cron.kind).toBe("cron");
    expect(cron.periodMs).toBe(6 * 3_600_000);
    expect(new Date(cron.next(Date.parse("2026-03-01T07:30:00Z"))!).toISOString()).toBe("2026-03-01T12:00:00.000Z");

    const daily = parseSchedule("@daily", "schedule", { timezone: "UTC" });
    expect(daily.periodMs).toBe(86_400_000);
  });

  it("rejects what is neither, naming where", () => {
    for (const bad of ["6 hours", "every day", "61 * * * *", "0"]) {
      let error: unknown;
      try {
        parseSchedule(bad, "schedule.snapshot of app");
      } catch (e) {
        error = e;
      }
      expect(error, bad).toBeInstanceOf(LifeboatError);
      expect((error as LifeboatError).code).toBe(ErrorCodes.INVALID_ARGUMENT);
      expect((error as LifeboatError).message).toContain("schedule.snapshot of app");
    }
  });
});

describe("Scheduler", () => {
  it("runs a job on its interval until stopped", async () => {
    const s = scheduler();
    let runs = 0;
    s.add({ name: "app/snapshot", schedule: parseSchedule("40ms"), run: async () => void runs++ });
    s.start();
    expect(s.status("app/snapshot")!.nextRunAt).not.toBeNull();
    await sleep(330);
    await s.stop();
    const counted = runs;
    expect(counted).toBeGreaterThanOrEqual(3);
    expect(counted).toBeLessThanOrEqual(9);
    await sleep(120);
    expect(runs).toBe(counted);
    expect(s.status("app/snapshot")!.runs).toBe(counted);
    expect(s.status("app/snapshot")!.lastOk).toBe(true);
  });

  it("never runs a job twice at once, and heavy jobs share the concurrency limit", async () => {
    const s = scheduler({ concurrency: 1 });
    let active = 0;
    let maxActive = 0;
    const slow = async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await sleep(60);
      active--;
    };
    s.add({ name: "a/verify", schedule: parseSchedule("10ms"), heavy: true, run: slow });
    s.add({ name: "b/verify", schedule: parseSchedule("10ms"), heavy: true, run: slow });
    s.start();
    await sleep(400);
    await s.stop();
    expect(maxActive).toBe(1);
    expect(s.status("a/verify")!.runs + s.status("b/verify")!.runs).toBeGreaterThanOrEqual(3);
  });

  it("runs cron expressions with seconds", async () => {
    const s = scheduler();
    const times: number[] = [];
    s.add({ name: "app/prune", schedule: parseSchedule("* * * * * *"), run: async () => void times.push(Date.now()) });
    s.start();
    await sleep(2300);
    await s.stop();
    expect(times.length).toBeGreaterThanOrEqual(2);
    for (const t of times) expect(t % 1000).toBeLessThan(800); // at the top of a second (timers run late under load)
  });

  it("records failures with their error and keeps the schedule going", async () => {
    const outcomes: boolean[] = [];
    const s = scheduler({ onRun: (_job, outcome) => outcomes.push(outcome.ok) });
    let n = 0;
    s.add({
      name: "app/snapshot",
      schedule: parseSchedule("30ms"),
      run: async () => {
        n++;
        if (n === 1) throw new LifeboatError(ErrorCodes.STORAGE_ERROR, "target down");
        return "ok";
      },
    });
    s.start();
    await sleep(200);
    await s.stop();
    expect(outcomes[0]).toBe(false);
    expect(outcomes.slice(1).every(Boolean)).toBe(true);
    const status = s.status("app/snapshot")!;
    expect(status.failures).toBe(1);
    expect(status.lastOk).toBe(true);
    expect(status.lastDetail).toBe("ok");
  });

  it("runNow joins a run in progress instead of starting a second", async () => {
    const s = scheduler();
    let runs = 0;
    s.add({
      name: "app/verify",
      schedule: parseSchedule("1h"),
      run: async () => {
        runs++;
        await sleep(50);
      },
    });
    s.start();
    const [a, b] = await Promise.all([s.runNow("app/verify"), s.runNow("app/verify")]);
    expect(a.ok && b.ok).toBe(true);
    expect(runs).toBe(1);
    await expect(s.runNow("nope")).rejects.toMatchObject({ code: ErrorCodes.INVALID_ARGUMENT });
  });
});
