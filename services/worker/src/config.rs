//! Worker configuration (`synergai-worker`): identity, assets, engines, profiling defaults.
//! Layered by `synergai_platform::config`: defaults, `SYNERGAI_CONFIG` file, `SYNERGAI_*`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use synergai_contract::Tier;
use synergai_platform::nats::NatsConfig;
use synergai_platform::telemetry::TelemetryConfig;

use crate::engine::ort::OrtConfig;

/// The whole worker configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Who and where this worker is.
    pub worker: Identity,
    /// The model catalogue written by `scripts/setup` (model files are found beside it).
    pub catalog: PathBuf,
    /// Engine settings.
    pub engines: EnginesConfig,
    /// Offline profiling defaults.
    pub profile: ProfileConfig,
    /// Serving.
    pub serve: ServeConfig,
    /// NATS connection.
    pub nats: NatsConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// The operations endpoint of `serve` (`/metrics`, `/health/*`).
    pub http: HttpConfig,
}

/// The operations endpoint (`[http]`, `SYNERGAI_HTTP__LISTEN`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where `/metrics`, `/health/live` and `/health/ready` listen while serving (9104 in the
    /// compose and Kubernetes deployments). None (the default) disables them, since several
    /// workers often share one host.
    pub listen: Option<SocketAddr>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker: Identity::default(),
            catalog: PathBuf::from("assets/catalog.json"),
            engines: EnginesConfig::default(),
            profile: ProfileConfig::default(),
            serve: ServeConfig::default(),
            nats: NatsConfig::default(),
            telemetry: TelemetryConfig::default(),
            http: HttpConfig::default(),
        }
    }
}

/// Identity and placement (`[worker]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Identity {
    /// Worker id, unique in the deployment.
    pub id: String,
    /// Site name.
    pub site: String,
    /// Site tier.
    pub tier: Tier,
    /// Device class; empty means `<arch>-local-<cores>c`.
    pub device_class: String,
    /// Cores to pin the process to (`"0-1,4"`); empty means whatever it was started with.
    pub cores: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            id: "local".into(),
            site: "local".into(),
            tier: Tier::Cloud,
            device_class: String::new(),
            cores: String::new(),
        }
    }
}

/// Engines (`[engines]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnginesConfig {
    /// ONNX Runtime.
    pub ort: OrtConfig,
    /// tract.
    pub tract: TractConfig,
}

impl Default for EnginesConfig {
    fn default() -> Self {
        EnginesConfig {
            ort: OrtConfig::default(),
            tract: TractConfig { enabled: true },
        }
    }
}

/// tract settings (`[engines.tract]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TractConfig {
    /// Offer tract on this worker.
    pub enabled: bool,
}

impl Default for TractConfig {
    fn default() -> Self {
        TractConfig { enabled: true }
    }
}

/// Profiling defaults (`[profile]`); every one can be overridden on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    /// Untimed runs before measuring a point.
    pub warmup: u32,
    /// Timed runs at least, whatever the budget.
    pub min_runs: u32,
    /// Timed runs at most.
    pub max_runs: u32,
    /// Time to spend measuring a point once `min_runs` are done, ms.
    pub budget_ms: u64,
    /// Batch sizes to sweep (capped by each model's largest batch).
    pub batches: Vec<u32>,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            warmup: 3,
            min_runs: 10,
            max_runs: 1000,
            budget_ms: 2000,
            batches: vec![1, 2, 4, 8],
        }
    }
}

/// Serving (`[serve]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Models to serve; empty means every catalogue model.
    pub models: Vec<String>,
    /// Engines to serve with; empty means every enabled engine.
    pub engines: Vec<crate::engine::EngineKind>,
    /// Intra-op thread counts to keep sessions for; empty means 1 and every allowed core.
    pub threads: Vec<usize>,
    /// Batch sizes whose tract plans are compiled at start (others compile on first use).
    pub batches: Vec<usize>,
    /// Most jobs queued; a dispatch beyond it is refused (the scheduler places it elsewhere).
    pub max_queue: usize,
    /// Heartbeat interval, ms.
    pub heartbeat_ms: u64,
    /// Answer 504 without running a job whose deadline passed before it could start.
    pub drop_expired: bool,
    /// Run queued jobs of one model together when the profile says it pays and every one of
    /// them still meets its deadline.
    pub batching: bool,
    /// Most samples in one merged run.
    pub max_batch: usize,
    /// On SIGTERM, how long queued jobs may take to finish before the rest are answered 503, ms.
    pub drain_timeout_ms: u64,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            models: Vec::new(),
            engines: Vec::new(),
            threads: Vec::new(),
            batches: vec![1, 2, 4, 8],
            max_queue: 256,
            heartbeat_ms: 500,
            drop_expired: true,
            batching: true,
            max_batch: 8,
            drain_timeout_ms: 10_000,
        }
    }
}
