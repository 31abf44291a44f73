//! Scheduler configuration (`synergai-scheduler`), layered by `synergai_platform::config`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use synergai_platform::nats::NatsConfig;
use synergai_platform::telemetry::TelemetryConfig;

/// The whole scheduler configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// Placement.
    pub scheduler: Settings,
    /// Network between sites.
    pub network: NetworkConfig,
    /// The model catalogue (model names and order).
    pub catalog: PathBuf,
    /// NATS.
    pub nats: NatsConfig,
    /// HTTP operations endpoint.
    pub http: HttpConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler: Settings::default(),
            network: NetworkConfig::default(),
            catalog: PathBuf::from("assets/catalog.json"),
            nats: NatsConfig::default(),
            http: HttpConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Instance id (one subject token).
    pub id: String,
    /// Policy at start (switchable on the control subject).
    pub policy: String,
    /// Shed with 504 when even the best placement is late by more than this fraction of the
    /// target; absent: never shed.
    pub shed_late_fraction: Option<f64>,
    /// `slo-mael`: most requests per window.
    pub slo_mael_window: usize,
    /// `slo-mael`: most assignments enumerated per window.
    pub slo_mael_max_assignments: u64,
    /// `slo-mael`: longest a request waits for its window to fill, ms.
    pub slo_mael_wait_ms: u64,
    /// `random`: seed.
    pub seed: u64,
    /// How long a worker has to acknowledge a dispatch, ms.
    pub dispatch_timeout_ms: u64,
    /// Dispatch attempts per request (a refused or lost dispatch is placed again).
    pub max_attempts: u32,
    /// A worker is lost after this many heartbeat intervals without one.
    pub lost_after_heartbeats: u32,
    /// Candidates listed in each decision event (0: none).
    pub decision_candidates: usize,
    /// Accepted requests kept in the JetStream work queue while no scheduler has taken them:
    /// `memory` (fast; survives scheduler restarts, not a NATS server restart) or `file` (the
    /// durable choice: survives a NATS server restart too).
    pub request_storage: String,
    /// Most bytes of accepted requests the work queue holds; past it the intake refuses new
    /// requests with 503. A memory-backed queue reserves this much of the NATS server's JetStream
    /// memory, a file-backed one of its disk.
    pub request_max_bytes: i64,
    /// An accepted request not acknowledged within this long (its job has not ended, or the
    /// scheduler that took it died) is delivered again: to this scheduler, which keeps serving
    /// it, or to the next one, which adopts it from the worker holding it or places it. ms.
    pub redeliver_after_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            id: "scheduler-1".into(),
            policy: "synergai".into(),
            shed_late_fraction: None,
            slo_mael_window: 8,
            slo_mael_max_assignments: 20_000,
            slo_mael_wait_ms: 2,
            seed: 2509,
            dispatch_timeout_ms: 500,
            max_attempts: 3,
            lost_after_heartbeats: 4,
            decision_candidates: 4,
            request_storage: "memory".into(),
            request_max_bytes: 2 << 30,
            redeliver_after_ms: 30_000,
        }
    }
}

/// `[network]`: what the scheduler assumes between sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Bandwidth to every site unless a link says otherwise, Mbit/s.
    pub bandwidth_mbps: f64,
    /// The serving path's own time per request, ms (the bus and the services between client and
    /// worker and back, outside the network's round trip: `scripts/bench-serving` measures it),
    /// added to every placement's network estimate, within a site too. 0: not planned for.
    pub overhead_ms: f64,
    /// Links whose delay is emulated (added to the measured round trip). Everything listed here
    /// is emulation and is reported as such.
    pub emulated: Vec<EmulatedLink>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bandwidth_mbps: 10_000.0,
            overhead_ms: 0.0,
            emulated: Vec::new(),
        }
    }
}

/// An emulated link between two sites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatedLink {
    /// One site.
    pub a: String,
    /// The other.
    pub b: String,
    /// Round trip added, ms (emulated).
    pub rtt_ms: f64,
    /// Bandwidth, Mbit/s (emulated).
    pub bandwidth_mbps: f64,
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
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 9103))),
        }
    }
}
