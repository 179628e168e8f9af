/** Putting a finished database file in place of another: core's swap (safety copy, atomic rename, rollback). */
import { replaceDatabaseFile as replace } from "@lifeboat/core";
import { sqliteSource } from "@lifeboat/sqlite";
import { pathExists } from "./sqlite-access.js";

/**
 * Renames `temp` to `output`. An existing `output` must not be in use (DATABASE_LOCKED); it is
 * kept as a safety copy, whose path is returned (null when nothing was replaced), and the new
 * file takes its mode and (as root) its owner. `temp` is gone afterwards either way.
 */
export async function replaceDatabaseFile(temp: string, output: string): Promise<string | null> {
  const exists = await pathExists(output);
  return replace(temp, output, exists ? (path) => sqliteSource().assertNotInUse(path) : null);
}
