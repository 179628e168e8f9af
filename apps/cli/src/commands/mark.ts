import { resolve } from "node:path";
import { type EnvironmentSettings, findLayer, markEnvironment } from "@lifeboat/guards";
import type { Command } from "commander";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput } from "../output.js";
import { ask, canAsk } from "../prompt.js";
import { configuredDatabase, optionalLifeboat } from "./protect.js";

interface Flags extends CommonFlags {
  readonly table?: string;
  readonly yes?: boolean;
  readonly confirm?: string[];
}

export function registerMark(program: Command): void {
  withCommon(program.command("mark"))
    .description("store the environment marker inside a database (guards compare it with the config)")
    .argument("<db>", "database name from the config, or a database path")
    .argument("<environment>", "production, staging, development (or another name)")
    .option("--table <name>", "marker table (default: the environment guard's, else _lifeboat_environment)")
    .option("-y, --yes", "do not ask before changing an existing marker")
    .option("--confirm <phrase...>", 'typed confirmation, e.g. "change production to staging"')
    .action(async (arg: string, environment: string, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await optionalLifeboat(flags);
      try {
        const db = await configuredDatabase(lb, arg);
        const layer = db ? findLayer<EnvironmentSettings>(db.guards, "environment") : undefined;
        const table = flags.table ?? layer?.options.table;
        const result = await markEnvironment(db?.path ?? resolve(arg), environment, {
          ...(table ? { table } : {}),
          ...(layer ? { productionEnvironments: layer.options.environments } : {}),
          confirm: {
            yes: Boolean(flags.yes),
            phrases: flags.confirm ?? [],
            ...(canAsk() && !flags.yes ? { ask } : {}),
          },
        });
        out.line(
          result.changed
            ? `Marked ${result.path} as ${result.environment}${result.previous ? ` (was ${result.previous})` : ""} in table ${result.table}`
            : `${result.path} was already marked ${result.environment}`,
        );
        for (const other of result.otherMarkers) {
          out.line(
            `  note: table ${other.table} still says ${other.environment} (read after ${result.table}, so it no longer counts)`,
          );
        }
        const declared = db?.declaredEnvironment;
        if (declared && declared !== environment) {
          out.line(`  warning: the config says ${declared}; the guards will refuse every operation until they agree`);
        }
        out.result({ ok: true, mark: result });
      } finally {
        await lb?.close();
      }
    });
}
