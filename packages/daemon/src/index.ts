export {
  type BackupIfOlderOptions,
  type BackupIfOlderResult,
  backupIfOlderThan,
  listTargetBackups,
  type NewestBackup,
  newestBackup,
  type TargetListing,
} from "./backup-freshness.js";
export {
  checkHealth,
  createDaemon,
  Daemon,
  type DaemonLogEntry,
  type DaemonOptions,
  type DatabaseSchedule,
  type JobKind,
  startDaemon,
} from "./daemon.js";
export { type DaemonSettings, daemonSettingsFrom, type HealthConfig, type ScheduleConfig } from "./daemon-config.js";
export { type DrillCheck, type DrillOptions, type DrillResult, runRestoreDrill } from "./drill.js";
export {
  type DatabaseHealth,
  DEFAULT_MAX_REPLICATION_LAG_MS,
  type DurationInput,
  type HealthReport,
  type HealthThresholds,
  type JobHealth,
  type TargetHealth,
} from "./health.js";
export { type ProbeMode, probeKey, requestCountsOf } from "./monitor.js";
export {
  type ChainPruneOptions,
  type ChainPruneResult,
  type ChainPruneTargetResult,
  chainProtectedSnapshots,
  pruneKeepingChains,
} from "./retention-chains.js";
export {
  describeSchedule,
  type JobOutcome,
  type JobStatus,
  parseSchedule,
  type Schedule,
  Scheduler,
} from "./schedule.js";
export { DEFAULT_HOST, DEFAULT_PORT, type ServeOptions } from "./server.js";
