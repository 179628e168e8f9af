#!/usr/bin/env node
// The AWS SDK warns on every client under Node 20; Lifeboat supports Node 20 deliberately.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= "true";
const { main } = await import("./main.js");

process.exitCode = await main(process.argv);
