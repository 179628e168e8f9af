#!/usr/bin/env -S node --max-semi-space-size=4
// The flag caps V8's young generation at 4 MiB per semi-space (16 by default): a replicator that
// runs for months allocates steadily, and the default let its resident memory grow by about
// 35 MB for no speed gain (see docs/BENCHMARKS.md). `env -S` splits the line (coreutils >= 8.30).
// The AWS SDK warns on every client under Node 20; Lifeboat supports Node 20 deliberately.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
// A reader that went away (`lifeboat list | head -1`) is no failure of the command: what it did
// stands, and the rest of its output has nowhere to go.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
  });
}
const { main } = await import("./main.js");

process.exitCode = await main(process.argv);
