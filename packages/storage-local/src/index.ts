import { localStoragePlugin } from "./local-plugin.js";

export { type LocalStoragePluginOptions, localStoragePlugin } from "./local-plugin.js";
export { type LocalStorageOptions, localStorage } from "./local-storage.js";
export default localStoragePlugin;
