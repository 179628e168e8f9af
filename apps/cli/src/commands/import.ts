import { importExport } from "@lifeboat/export";
import type { Command } from "commander";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput, table } from "../output.js";

interface Flags extends CommonFlags {
  readonly output: string;
  readonly force?: boolean;
}

export function registerImport(program: Command): void {
  withCommon(program.command("import"))
    .description("rebuild a SQLite database from an export (a directory or a ZIP written by lifeboat export)")
    .argument("<export>", "the export directory or .zip file")
    .requiredOption("-o, --output <path>", "the database file to create")
    .option("--force", "replace an existing database file at --output (refused while it is in use)")
    .action(async (input: string, flags: Flags) => {
      const out = createOutput(flags.json);
      const result = await importExport({
        input,
        output: flags.output,
        force: Boolean(flags.force),
        onProgress: (p) => out.progress({ phase: "import", bytes: p.bytes, total: p.total, label: p.table }),
      }).finally(out.endProgress);
      const m = result.manifest;
      out.line(`Imported ${input} (export ${m.snapshotId} of ${m.createdAt}) into ${result.output}`);
      out.line(
        table(
          ["TABLE", "ROWS"],
          result.tables.map((t) => [t.name, t.rows]),
        ),
      );
      out.line(
        `${result.tables.length} tables, ${result.tables.reduce((n, t) => n + t.rows, 0)} rows, user_version ${m.database.userVersion}; every file matched the manifest's row count and SHA-256; ${(result.durationMs / 1000).toFixed(1)} s`,
      );
      out.result({
        ok: true,
        import: {
          input,
          output: result.output,
          snapshotId: m.snapshotId,
          tables: result.tables,
          userVersion: m.database.userVersion,
          durationMs: result.durationMs,
        },
      });
    });
}
