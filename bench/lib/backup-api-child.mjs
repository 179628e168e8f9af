// Child process for the benchmark: copies a database with better-sqlite3's online backup API
// (db.backup, default step of 100 pages per event-loop turn, as an application would call it),
// then fsyncs the copy so it is as durable as the other peers' outputs.
// Plain JavaScript so the child pays no TypeScript-loader start-up, like the built CLI.
// Usage: node backup-api-child.mjs SOURCE DEST
import { closeSync, fsyncSync, openSync } from "node:fs";
import Database from "better-sqlite3";

const [source, dest] = process.argv.slice(2);
if (!source || !dest) {
  process.stderr.write("usage: backup-api-child.mjs SOURCE DEST\n");
  process.exit(2);
}
const db = new Database(source, { readonly: true, fileMustExist: true });
try {
  const { totalPages } = await db.backup(dest);
  const fd = openSync(dest, "r+");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  process.stdout.write(`${totalPages}\n`);
} finally {
  db.close();
}
