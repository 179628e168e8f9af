import { describe, expect, it } from "vitest";
import { parseDuration, parseTime } from "./duration.js";

describe("durations and times", () => {
  it("parses durations with units", () => {
    expect(parseDuration("90s")).toBe(90_000);
    expect(parseDuration("1h30m")).toBe(5_400_000);
    expect(parseDuration("7d")).toBe(7 * 86_400_000);
    expect(() => parseDuration("7 days")).toThrow(/not a duration/);
    expect(() => parseDuration("")).toThrow(/not a duration/);
  });

  it("parses ISO and relative times", () => {
    const now = Date.UTC(2026, 10, 22, 10, 30);
    expect(parseTime("2026-11-22T10:15:00Z", now)).toBe(Date.UTC(2026, 10, 22, 10, 15));
    expect(parseTime("10 minutes ago", now)).toBe(now - 600_000);
    expect(parseTime("2h ago", now)).toBe(now - 7_200_000);
    expect(parseTime("1 day ago", now)).toBe(now - 86_400_000);
    expect(parseTime("1795342500", now)).toBe(Date.UTC(2026, 10, 22, 10, 15));
    expect(parseTime("@1795342500.25", now)).toBe(Date.UTC(2026, 10, 22, 10, 15) + 250);
    expect(parseTime("1795342500250", now)).toBe(Date.UTC(2026, 10, 22, 10, 15) + 250);
    expect(parseTime("2026-11-22T11:15:00+01:00", now)).toBe(Date.UTC(2026, 10, 22, 10, 15));
    expect(() => parseTime("12345", now)).toThrow(/not a point in time/);
    expect(() => parseTime("last tuesday-ish", now)).toThrow(/not a point in time/);
  });
});
