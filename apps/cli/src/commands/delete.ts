import { deleteDatabase } from "@lifeboat/guards";
import type { Command } from "commander";
import { loadLifeboat } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput } from "../output.js";
import { ask, canAsk } from "../prompt.js";

interface Flags extends CommonFlags {
  readonly yes?: boolean;
  readonly confirm?: string[];
  readonly to?: string[];
}

export function registerDelete(program: Command): void {
  withCommon(program.command("delete"))
    .description("delete a database and its -wal/-shm, after the guards agree and a verified backup is taken")
    .argument("[db]", "database name or path (default: the only database in the config)")
    .option("-y, --yes", "do not ask")
    .option("--confirm <phrase...>", 'typed confirmation a guard asks for, e.g. "delete production"')
    .option("--to <location...>", "take the backup here instead of the config's targets")
    .action(async (db: string | undefined, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await loadLifeboat(db, flags);
      try {
        const name = flags.to ? lb.databases[0] : db;
        const result = await deleteDatabase(await lb.database(name), {
          yes: Boolean(flags.yes),
          phrases: flags.confirm ?? [],
          ...(canAsk() && !flags.yes ? { ask } : {}),
        });
        out.line(`Deleted ${result.removed.join(", ")}`);
        out.line(`  backup first: ${result.safetyBackup.id} (${result.safetyBackup.locations.join(", ")})`);
        out.line(
          result.safetyBackup.kind === "targets"
            ? `  to bring it back: lifeboat restore ${result.database} --backup ${result.safetyBackup.id}`
            : `  to bring it back: copy ${result.safetyBackup.locations[0]} to ${result.path}`,
        );
        out.result({ ok: true, delete: result });
      } finally {
        await lb.close();
      }
    });
}
