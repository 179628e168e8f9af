/**
 * The encryption libraries, loaded on first use. openpgp and age-encryption take ~100 ms each to
 * import; a CLI that only compresses (or does not touch a codec at all) never pays for them.
 * Each loader returns the same promise every time, so the module is imported once per process.
 */
import type * as AgeModule from "age-encryption";
import type * as OpenpgpModule from "openpgp";

let age: Promise<typeof AgeModule> | undefined;
let openpgp: Promise<typeof OpenpgpModule> | undefined;

/** The age-encryption module, imported on the first call. */
export function loadAge(): Promise<typeof AgeModule> {
  age ??= import("age-encryption");
  return age;
}

/** The openpgp module, imported on the first call. */
export function loadOpenpgp(): Promise<typeof OpenpgpModule> {
  openpgp ??= import("openpgp");
  return openpgp;
}
