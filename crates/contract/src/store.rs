//! The profiling store's wire contract: request-reply messages under `synergai.v1.store.`,
//! and the events the store consumes (`synergai.v1.events.job.*`, `.worker.*` heartbeats,
//! `.outcome.*`) and publishes (`synergai.v1.events.profiles.updated`).
//!
//! Every message denies unknown fields (a misspelt field is a 400, not a silent default), so
//! none uses `#[serde(flatten)]`, which serde cannot combine with that; keys nest instead.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::profile::{ProfilePoint, Unsupported};
use crate::site::Tier;

/// `store.profiles.upsert`: offline profile points (and pairs an engine cannot run).
///
/// Merge rule: per key (device class, engine, model, threads, batch) a point replaces the
/// stored one when its `measured_at` is newer, and then resets that key's online estimate (a
/// fresh measurement is the new truth); an older or equally old point is ignored, so replaying
/// a campaign is harmless.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertProfiles {
    /// Measured points.
    pub points: Vec<ProfilePoint>,
    /// Pairs an engine cannot run.
    #[serde(default)]
    pub unsupported: Vec<Unsupported>,
}

/// Reply to [`UpsertProfiles`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertResult {
    /// Keys seen for the first time.
    pub inserted: u32,
    /// Keys whose stored point was older and got replaced.
    pub replaced: u32,
    /// Points not newer than the stored one, ignored.
    pub ignored: u32,
    /// Unsupported pairs recorded.
    pub unsupported: u32,
    /// Profile revision after the upsert.
    pub revision: i64,
}

/// What the knee rule optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KneeMetric {
    /// Inferences per second: higher is better.
    #[default]
    Qps,
    /// 95th percentile latency: lower is better.
    P95,
}

/// The knee rule: per (engine, batch), the fewest threads whose metric is within `epsilon`
/// (a fraction) of the best thread count's; those knees are then ranked by the metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KneeRule {
    /// Metric.
    pub metric: KneeMetric,
    /// Tolerance, e.g. 0.05 for "within 5%".
    pub epsilon: f64,
}

impl Default for KneeRule {
    fn default() -> Self {
        KneeRule {
            metric: KneeMetric::Qps,
            epsilon: 0.05,
        }
    }
}

/// `store.profiles.best`: the best configuration of a model on a device class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestRequest {
    /// Device class.
    pub device_class: String,
    /// Model.
    pub model: String,
    /// Rule; the store's configured default when absent.
    #[serde(default)]
    pub rule: Option<KneeRule>,
    /// Only this batch size.
    #[serde(default)]
    pub batch: Option<u32>,
    /// Only this engine.
    #[serde(default)]
    pub engine: Option<String>,
}

/// A configuration of a model on a device class, with its offline and online estimates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigEstimate {
    /// Engine.
    pub engine: String,
    /// Intra-op threads.
    pub threads: u32,
    /// Batch size.
    pub batch: u32,
    /// Offline mean, ms.
    pub mean_ms: f64,
    /// Offline median, ms.
    pub p50_ms: f64,
    /// Offline 95th percentile, ms.
    pub p95_ms: f64,
    /// Offline 99th percentile, ms.
    pub p99_ms: f64,
    /// Offline inferences per second.
    pub qps: f64,
    /// Online estimate (EWMA of measured execution times), ms.
    pub online_ms: Option<f64>,
    /// Online observations behind `online_ms`.
    pub online_count: i64,
    /// `online_ms / p50_ms - 1`, when there is an online estimate.
    pub drift: Option<f64>,
    /// Whether the drift is beyond the store's threshold (with enough observations).
    pub drifted: bool,
}

/// Reply to [`BestRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BestResponse {
    /// Device class.
    pub device_class: String,
    /// Model.
    pub model: String,
    /// Rule applied.
    pub rule: KneeRule,
    /// The top-ranked knee.
    pub best: ConfigEstimate,
    /// The other knees (one per engine and batch), best first.
    pub alternatives: Vec<ConfigEstimate>,
}

/// `store.profiles.table`: every profile, for a scheduler to cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TableRequest {
    /// Only this device class.
    #[serde(default)]
    pub device_class: Option<String>,
}

/// One stored profile key with its estimates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileRow {
    /// Device class.
    pub device_class: String,
    /// Model.
    pub model: String,
    /// The configuration and its estimates.
    pub config: ConfigEstimate,
    /// Timed runs behind the offline numbers.
    pub runs: i32,
    /// Peak RSS while measuring, bytes.
    pub peak_rss_bytes: i64,
    /// When it was measured.
    #[serde(with = "time::serde::rfc3339")]
    pub measured_at: OffsetDateTime,
    /// Worker that measured it.
    pub worker: String,
    /// Engine version.
    pub engine_version: String,
    /// Library version.
    pub library_version: String,
}

/// A key observed online that has no offline profile (cold start, or a profile never taken).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnlineOnly {
    /// The key.
    pub key: ProfileKey,
    /// EWMA of measured execution times, ms.
    pub online_ms: f64,
    /// Observations.
    pub online_count: i64,
}

/// Reply to [`TableRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileTable {
    /// Revision of the profile data (grows with every change).
    pub revision: i64,
    /// Drift threshold the `drifted` flags use.
    pub drift_threshold: f64,
    /// Profiled keys.
    pub profiles: Vec<ProfileRow>,
    /// Keys with online estimates but no offline profile.
    pub online_only: Vec<OnlineOnly>,
    /// Pairs an engine cannot run.
    pub unsupported: Vec<Unsupported>,
}

/// A grouping dimension of ledger summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerDimension {
    /// Scheduling policy.
    Policy,
    /// Model.
    Model,
    /// Site that ran the request.
    Site,
}

/// `store.ledger.summary`: request outcomes summarised by groups and a time range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LedgerQuery {
    /// Arrivals at or after this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub from: Option<OffsetDateTime>,
    /// Arrivals before this instant.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub to: Option<OffsetDateTime>,
    /// Group by these dimensions (none: one overall group).
    #[serde(default)]
    pub group_by: Vec<LedgerDimension>,
    /// Only this policy.
    #[serde(default)]
    pub policy: Option<String>,
    /// Only this model.
    #[serde(default)]
    pub model: Option<String>,
    /// Only this site.
    #[serde(default)]
    pub site: Option<String>,
}

/// One group of a ledger summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerGroup {
    /// Policy, when grouped by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Model, when grouped by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Site, when grouped by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Requests.
    pub count: i64,
    /// Requests answered successfully.
    pub ok: i64,
    /// Requests that missed their target (errors included).
    pub violations: i64,
    /// `violations / count`.
    pub violation_rate: f64,
    /// Sum of time past the target, ms.
    pub excess_ms_total: f64,
    /// Median end-to-end time, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
}

/// Reply to [`LedgerQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSummary {
    /// Groups, ordered by their keys.
    pub groups: Vec<LedgerGroup>,
}

/// `store.stats`: the store's ingest counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreStats {
    /// Telemetry events (job observations, worker status) received.
    pub telemetry_received: u64,
    /// Telemetry events written to PostgreSQL.
    pub telemetry_written: u64,
    /// Telemetry events dropped because the buffer was full (the oldest go first).
    pub telemetry_dropped: u64,
    /// Telemetry events refused as malformed.
    pub telemetry_rejected: u64,
    /// Telemetry events not yet written: waiting in the buffer (at most its capacity) or in the
    /// batch being written.
    pub telemetry_pending: u64,
    /// Buffer capacity.
    pub telemetry_capacity: u64,
    /// Outcome events written to the ledger (duplicates included, ignored by id).
    pub outcomes_written: u64,
    /// Outcome events refused as malformed (acknowledged and dropped: they can never be stored).
    pub outcomes_rejected: u64,
    /// Whether the last database operation succeeded.
    pub database_up: bool,
}

/// The key of a profile and of an online estimate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileKey {
    /// Device class.
    pub device_class: String,
    /// Engine.
    pub engine: String,
    /// Model.
    pub model: String,
    /// Intra-op threads.
    pub threads: u32,
    /// Batch size.
    pub batch: u32,
}

/// Event `events.job.<worker>`: one completed job's measured execution time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobObservation {
    /// Worker that ran it.
    pub worker: String,
    /// Configuration key it ran under.
    pub key: ProfileKey,
    /// Execution time of the batch, ms.
    pub exec_ms: f64,
    /// Requests the batch answered (for schedulers to release what they reserved).
    #[serde(default)]
    pub request_ids: Vec<String>,
}

/// A worker's identity (carried by its heartbeat, [`crate::serving::WorkerHeartbeat`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerStatus {
    /// Worker id.
    pub id: String,
    /// Site.
    pub site: String,
    /// Site tier.
    pub tier: Tier,
    /// CPU architecture.
    pub arch: String,
    /// Device class.
    pub device_class: String,
    /// Cores it may run on.
    pub core_set: Vec<u32>,
    /// Engines it offers.
    pub engines: Vec<String>,
}

/// Event `events.outcome.<site>` (JetStream): the terminal outcome of one request, a ledger row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// Request id stamped by the intake (the ledger's key: a redelivered event is ignored).
    pub request_id: String,
    /// Model.
    pub model: String,
    /// Latency target, ms.
    pub slo_ms: f64,
    /// Arrival at intake.
    #[serde(with = "time::serde::rfc3339")]
    pub arrival: OffsetDateTime,
    /// Policy that placed it.
    pub policy: String,
    /// Site, worker, engine, threads and batch it ran with (absent if never placed).
    #[serde(default)]
    pub site: Option<String>,
    /// Worker.
    #[serde(default)]
    pub worker: Option<String>,
    /// Engine.
    #[serde(default)]
    pub engine: Option<String>,
    /// Intra-op threads.
    #[serde(default)]
    pub threads: Option<u32>,
    /// Batch.
    #[serde(default)]
    pub batch: Option<u32>,
    /// 200, or the error code it was answered with.
    pub code: u16,
    /// Time queued at the worker, ms.
    #[serde(default)]
    pub queue_ms: Option<f64>,
    /// Execution time, ms.
    #[serde(default)]
    pub exec_ms: Option<f64>,
    /// Arrival to reply, ms.
    pub total_ms: f64,
    /// Missed its target: an error, or `total_ms > slo_ms`.
    pub violated: bool,
    /// `max(0, total_ms - slo_ms)`.
    pub excess_ms: f64,
}

/// Where a `profiles updated` event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateSource {
    /// An offline campaign upserted points.
    Offline,
    /// Online observations moved estimates.
    Online,
}

/// A key whose estimate moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MovedEstimate {
    /// The key.
    pub key: ProfileKey,
    /// Online estimate, ms (absent for offline updates).
    #[serde(default)]
    pub online_ms: Option<f64>,
    /// Drift from the offline p50, when both exist.
    #[serde(default)]
    pub drift: Option<f64>,
    /// Beyond the threshold.
    pub drifted: bool,
}

/// Event `events.profiles.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfilesUpdated {
    /// Revision after the change.
    pub revision: i64,
    /// Offline or online.
    pub source: UpdateSource,
    /// Keys that moved.
    pub moved: Vec<MovedEstimate>,
}
