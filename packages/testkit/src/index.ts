export * from "./conformance.js";
export * from "./fixtures.js";
export * from "./s3-server.js";
