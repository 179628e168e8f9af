export * from "./codec.js";
export * from "./errors.js";
export * from "./guard.js";
export * from "./hooks.js";
export * from "./plugin.js";
export * from "./schema.js";
export * from "./source.js";
export * from "./storage.js";
