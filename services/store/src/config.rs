//! Store configuration (`synergai-store`), layered by `synergai_platform::config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use synergai_contract::store::KneeRule;
use synergai_platform::nats::NatsConfig;
use synergai_platform::telemetry::TelemetryConfig;

/// The whole store configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// PostgreSQL.
    pub database: DatabaseConfig,
    /// NATS.
    pub nats: NatsConfig,
    /// Event ingest.
    pub ingest: IngestConfig,
    /// Online refinement and drift.
    pub refine: RefineConfig,
    /// Default knee rule for `profiles.best`.
    pub knee: KneeRule,
    /// Request limits.
    pub limits: LimitsConfig,
    /// HTTP operations endpoint.
    pub http: HttpConfig,
    /// The model catalogue to register at start-up (skipped when the file is absent).
    pub catalog: PathBuf,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Connection URL.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a request waits for a connection before the store answers 503, ms.
    pub acquire_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            max_connections: 8,
            acquire_timeout_ms: 1500,
        }
    }
}

/// `[ingest]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Telemetry events held while PostgreSQL is slow or down; beyond it the oldest are dropped
    /// (and counted).
    pub telemetry_capacity: usize,
    /// Most telemetry events written in one transaction.
    pub telemetry_batch: usize,
    /// Longest a telemetry event waits before a flush, ms.
    pub flush_interval_ms: u64,
    /// Most outcome events fetched and written to the ledger in one insert.
    pub outcome_batch: usize,
    /// Bytes the outcome stream may hold while the store cannot write (publishers are refused
    /// beyond it, so nothing accepted is silently lost).
    pub outcome_stream_max_bytes: i64,
    /// Longest wait between write retries while PostgreSQL is down, ms.
    pub max_backoff_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            telemetry_capacity: 50_000,
            telemetry_batch: 2_000,
            flush_interval_ms: 100,
            outcome_batch: 2_000,
            outcome_stream_max_bytes: 1 << 30,
            max_backoff_ms: 2_000,
        }
    }
}

/// `[refine]`: online refinement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefineConfig {
    /// EWMA weight of each new observation.
    pub alpha: f64,
    /// Relative drift from the offline p50 that flags a key.
    pub drift_threshold: f64,
    /// Observations before a key can be flagged.
    pub drift_min_count: i64,
}

impl Default for RefineConfig {
    fn default() -> Self {
        RefineConfig {
            alpha: 0.2,
            drift_threshold: 0.25,
            drift_min_count: 5,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body accepted, bytes (413 beyond).
    pub max_request_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_request_bytes: 512 * 1024,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics` and `/health/*` listen; none disables them.
    pub listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 9102))),
        }
    }
}
