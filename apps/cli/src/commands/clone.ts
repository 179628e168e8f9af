import { cloneDatabase } from "@lifeboat/guards";
import type { Command } from "commander";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput, formatBytes } from "../output.js";
import { ask, canAsk } from "../prompt.js";
import { configuredDatabase, optionalLifeboat } from "./protect.js";

interface Flags extends CommonFlags {
  readonly environment?: string;
  readonly yes?: boolean;
  readonly confirm?: string[];
  readonly integrity: "full" | "quick" | "off";
}

export function registerClone(program: Command): void {
  withCommon(program.command("clone"))
    .description("copy a database while it is in use (a consistent snapshot) and mark the copy's environment")
    .argument("<src>", "source: database name from the config, or a path")
    .argument("<dst>", "destination: database name from the config, or a path")
    .option("-e, --environment <env>", "what the copy is (stored as its marker); required when the source is marked")
    .option("-y, --yes", "do not ask before replacing an existing destination")
    .option("--confirm <phrase...>", "typed confirmation a guard asks for")
    .option("--integrity <mode>", "check of the copy before it is put in place: full, quick, off", "quick")
    .action(async (srcArg: string, dstArg: string, flags: Flags) => {
      const out = createOutput(flags.json);
      const lb = await optionalLifeboat(flags);
      try {
        const src = (await configuredDatabase(lb, srcArg)) ?? srcArg;
        const dst = (await configuredDatabase(lb, dstArg)) ?? dstArg;
        const result = await cloneDatabase(src, dst, {
          ...(flags.environment ? { environment: flags.environment } : {}),
          integrity: flags.integrity,
          yes: Boolean(flags.yes),
          phrases: flags.confirm ?? [],
          ...(canAsk() && !flags.yes ? { ask } : {}),
        });
        out.line(
          `Cloned ${result.source} to ${result.destination} (${formatBytes(result.sizeBytes)}, ${result.integrity.check}: ok)${result.environment ? `, marked ${result.environment}` : ""}`,
        );
        if (result.safetyBackup) out.line(`  backup of the replaced database first: ${result.safetyBackup.id}`);
        if (result.replacedCopy) out.line(`  the replaced file was kept at ${result.replacedCopy}`);
        out.line(
          result.sourceUnchanged
            ? "  the source was not written during the clone"
            : "  the source was written by another process meanwhile; the copy holds its state at one moment of the clone",
        );
        out.result({ ok: true, clone: result });
      } finally {
        await lb?.close();
      }
    });
}
