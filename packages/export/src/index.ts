export {
  type ExportDatabaseOptions,
  type ExportOptions,
  type ExportProgress,
  type ExportResult,
  exportBackup,
  exportDatabase,
  exportFromCopy,
} from "./export.js";
export type { ExportFormat } from "./export-sink.js";
export {
  type ImportOptions,
  type ImportProgress,
  type ImportResult,
  importExport,
  readExportManifest,
} from "./import.js";
export {
  EXPORT_FORMAT,
  EXPORT_FORMAT_VERSION,
  type ExportManifest,
  type ExportSource,
  MANIFEST_FILE,
  type ManifestColumn,
  type ManifestTable,
  README_FILE,
} from "./manifest.js";
export type { ColumnDescription, RelationKind, SchemaEntry } from "./schema-reader.js";
export { type SqliteValue, type StorageClass, VALUE_ENCODING } from "./value-codec.js";
