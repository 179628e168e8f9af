/**
 * @lifeboat/guards: the protection layers between people and their production database, as guard
 * plugins (`guards: [{ type: permissions }, ...]` in lifeboat.yml), plus the safe operations the
 * CLI runs through them (protect, unprotect, status, mark, check, exec, delete, clone).
 */
import type { GuardPlugin } from "@lifeboat/core";
import { confirmationGuardPlugin } from "./confirmation.js";
import { hashGuardPlugin } from "./database-hash.js";
import { environmentGuardPlugin } from "./environment-marker.js";
import { immutableGuardPlugin } from "./immutability.js";
import { permissionsGuardPlugin } from "./permissions.js";
import { safetyBackupGuardPlugin } from "./safety-backup.js";
import { transactionGuardPlugin } from "./transaction.js";

export {
  type CheckItem,
  type CheckOptions,
  type CheckResult,
  checkDatabase,
  checkOptionsFor,
} from "./check-database.js";
export { type CloneOptions, type CloneResult, cloneDatabase } from "./clone-database.js";
export {
  type ConfirmationGuardOptions,
  confirmationGuard,
  confirmationGuardPlugin,
  confirmationPhrase,
} from "./confirmation.js";
export {
  copySnapshot,
  type DatabaseHash,
  type HashGuardOptions,
  type HashStatus,
  hashDatabase,
  hashGuard,
  hashGuardPlugin,
  hashStatus,
  type SnapshotCopy,
} from "./database-hash.js";
export { type DeleteOptions, type DeleteResult, deleteDatabase } from "./delete-database.js";
export {
  DEFAULT_MARKER_TABLE,
  type EnvironmentGuardOptions,
  type EnvironmentMarker,
  type EnvironmentSettings,
  environmentGuard,
  environmentGuardPlugin,
  type MarkOptions,
  type MarkResult,
  markEnvironment,
  readEnvironmentMarker,
} from "./environment-marker.js";
export {
  type ImmutableGuardOptions,
  type ImmutableStatus,
  immutableGuard,
  immutableGuardPlugin,
  immutableStatus,
  isImmutable,
  mayChangeImmutable,
  setImmutable,
} from "./immutability.js";
export { findLayer, LAYER, type LayerGuard, type LayerName } from "./layer.js";
export {
  DEFAULT_PROTECTED_MODE,
  type PermissionsGuardOptions,
  type PermissionsStatus,
  permissionsGuard,
  permissionsGuardPlugin,
  permissionsStatus,
} from "./permissions.js";
export {
  type LayerState,
  type ProtectionChoice,
  type ProtectionStatus,
  type ProtectOptions,
  type ProtectResult,
  protectDatabase,
  protectionLayers,
  protectionStatus,
  type UnprotectResult,
  unprotectDatabase,
} from "./protect.js";
export { assertNotProtected, type ProtectionState, protectionState } from "./protection-state.js";
export {
  DEFAULT_SAFETY_FOLDER,
  restoreSafetyBackup,
  type SafetyBackup,
  type SafetyBackupGuardOptions,
  safetyBackupGuard,
  safetyBackupGuardPlugin,
  takeSafetyBackup,
} from "./safety-backup.js";
export { type ProtectSidecar, readSidecar, sidecarPath } from "./sidecar.js";
export { type SqlStatement, splitSqlStatements, transactionConflict } from "./sql-statements.js";
export {
  type ExecOptions,
  type ExecResult,
  execMigration,
  type TableChange,
  type TransactionGuardOptions,
  transactionGuard,
  transactionGuardPlugin,
  type ValidationRules,
  validationRules,
} from "./transaction.js";

/** Every layer, for `createLifeboat({ plugins: [...guardPlugins] })` and the CLI's built-ins. */
export const guardPlugins: readonly GuardPlugin<any>[] = [
  permissionsGuardPlugin,
  immutableGuardPlugin,
  environmentGuardPlugin,
  hashGuardPlugin,
  confirmationGuardPlugin,
  safetyBackupGuardPlugin,
  transactionGuardPlugin,
];

export default guardPlugins;
