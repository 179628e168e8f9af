/** CSV file names for table names: safe on every file system and in ZIP readers. */

/** Names Windows refuses for a file, whatever the extension. */
const RESERVED = /^(?:con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])$/i;
/** Names the export uses itself. */
const OWN_FILES = new Set(["manifest", "readme"]);
const MAX_STEM = 100;

/** A file name of our own making: letters, digits, `_ . - ~`, no path, ending in `.csv`. */
export const SAFE_CSV_NAME = /^[\p{L}\p{N}_][\p{L}\p{N}_.~-]{0,120}\.csv$/u;

/**
 * Gives every relation a distinct `<stem>.csv`: letters (any script) and digits are kept, every
 * other character becomes `_`, the stem is cut to 100 characters, and names that only differ in
 * case (file systems that ignore case), that Windows reserves, or that collide after all this get
 * `~2`, `~3`, ... appended. Deterministic for the same list of names.
 */
export function csvFileNames(names: readonly string[]): string[] {
  const used = new Set<string>();
  return names.map((name) => {
    // Cut by code points, so that no surrogate pair is split.
    let stem = Array.from(
      name
        .normalize("NFC")
        .replace(/[^\p{L}\p{N}_.-]/gu, "_")
        .replace(/^[.-]/, "_"),
    )
      .slice(0, MAX_STEM)
      .join("");
    if (stem === "" || RESERVED.test(stem) || OWN_FILES.has(stem.toLowerCase())) stem = `_${stem}`;
    let candidate = stem;
    for (let n = 2; used.has(candidate.toLowerCase()); n++) candidate = `${stem}~${n}`;
    used.add(candidate.toLowerCase());
    return `${candidate}.csv`;
  });
}
