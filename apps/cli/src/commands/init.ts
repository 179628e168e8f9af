import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { basename, dirname, extname, relative, resolve } from "node:path";
import { ErrorCodes, LifeboatError } from "@lifeboat/core";
import type { Command } from "commander";
import { DEFAULT_CONFIG } from "../load.js";
import { type CommonFlags, withCommon } from "../main.js";
import { createOutput } from "../output.js";

interface Flags extends CommonFlags {
  readonly to: string;
  readonly force?: boolean;
  readonly environment?: string;
}

export function configTemplate(name: string, dbPath: string, targetPath: string, environment?: string): string {
  return `# Lifeboat configuration (see the README for every option).
# Relative paths are relative to this file.
version: 1
databases:
  - name: ${name}                 # names the database in commands and its folder on every target
    path: ${dbPath}
${environment ? `    environment: ${environment}` : "    # environment: production   # what this database is; guards compare it with the marker inside it"}
    targets:
      - type: local             # a directory; backups land in ${targetPath}/${name}/
        path: ${targetPath}
      # - type: s3              # offsite copy (package @lifeboat/storage-s3)
      #   bucket: my-backups
      #   prefix: prod/
    snapshot:
      integrity: quick          # check run inside every snapshot: full, quick or off
    retention:                  # used by \`lifeboat prune\`; the newest good backup is always kept
      keepLast: 7
      keepWithin: 7d
      # keepPointInTime: 7d     # every moment of the last 7 days restorable (with lifeboat replicate)
    # schedule:                 # run by \`lifeboat serve\` and \`lifeboat replicate\`: durations (6h) or cron
    #   snapshot: "0 */6 * * *"
    #   prune: 1d               # applies retention:
    #   verify: "30 3 * * *"    # restore drill: restore, integrity_check, compare with the manifest
    #   startupBackup: 1h       # at start, back up unless a good backup younger than this exists
    #   timezone: UTC           # for the cron expressions (default: the host's)
    # health:                   # when /health turns 503
    #   maxReplicationLag: 1m
    #   maxSnapshotAge: 13h
    # hooks:
    #   - on: afterBackup
    #     exec: echo "backup $LIFEBOAT_BACKUP_ID of $LIFEBOAT_DB done"
    #   - on: onError
    #     webhook: https://alerts.example.com/lifeboat
`;
}

export function registerInit(program: Command): void {
  withCommon(program.command("init"))
    .description("write a commented lifeboat.yml for a database and a local backup folder")
    .argument("[db]", "path of the SQLite database", "./app.db")
    .option("--to <dir>", "backup folder", "./backups")
    .option("--environment <name>", "production, staging, development...")
    .option("-f, --force", "overwrite an existing config file")
    .action(async (db: string, flags: Flags) => {
      const out = createOutput(flags.json);
      const file = resolve(flags.config ?? DEFAULT_CONFIG);
      if (existsSync(file) && !flags.force) {
        throw new LifeboatError(ErrorCodes.INVALID_ARGUMENT, `${file} already exists.`, {
          hint: "Edit it, pass --force to overwrite it, or choose another file with --config.",
        });
      }
      const dir = dirname(file);
      const rel = (p: string) => {
        const r = relative(dir, resolve(p));
        return r.startsWith("..") ? resolve(p) : `./${r}`;
      };
      const name = basename(db, extname(db)).replace(/[^A-Za-z0-9._-]/g, "_") || "app";
      const text = configTemplate(name, rel(db), rel(flags.to), flags.environment);
      try {
        await writeFile(file, text, { flag: flags.force ? "w" : "wx", mode: 0o644 });
      } catch (error) {
        throw new LifeboatError(ErrorCodes.PERMISSION_DENIED, `Cannot write ${file}: ${(error as Error).message}`, {
          cause: error,
          hint: "Choose a writable directory or another file with --config.",
        });
      }
      out.line(`Wrote ${file}`);
      out.line(`Next: lifeboat backup --config ${relative(process.cwd(), file) || file}`);
      out.result({ ok: true, config: file });
    });
}
