//! Records of the offline profiling phase: one line per (model, engine, threads, batch).
//!
//! The worker's `profile` command prints them as JSON lines; the store keeps them in
//! PostgreSQL keyed by (device class, engine, model, threads, batch).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The measurements of one configuration point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilePoint {
    /// Model name.
    pub model: String,
    /// Engine (`ort`, `tract`).
    pub engine: String,
    /// Intra-op threads.
    pub threads: u32,
    /// Batch size.
    pub batch: u32,
    /// Mean execution time of one run (one batch), ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Fastest run, ms.
    pub min_ms: f64,
    /// Slowest run, ms.
    pub max_ms: f64,
    /// Inferences (samples, not batches) per second at the mean.
    pub qps: f64,
    /// Timed runs.
    pub runs: u32,
    /// Untimed warm-up runs before them.
    pub warmup: u32,
    /// Peak resident set of the process while measuring this point, bytes.
    pub peak_rss_bytes: u64,
    /// Device class of the machine.
    pub device_class: String,
    /// CPU architecture (`std::env::consts::ARCH`).
    pub arch: String,
    /// CPU model name.
    pub cpu_model: String,
    /// Cores the process was allowed to run on.
    pub core_set: Vec<usize>,
    /// Engine crate and version (`ort 2.0.0-rc.15`, `tract 0.23.9`).
    pub engine_version: String,
    /// Version of the library underneath (the ONNX Runtime build, or tract itself).
    pub library_version: String,
    /// Worker that measured it.
    pub worker: String,
    /// When the point finished (RFC 3339 on the wire).
    #[serde(with = "time::serde::rfc3339")]
    pub measured_at: OffsetDateTime,
}

/// A (model, engine) pair the engine cannot run, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unsupported {
    /// Model name.
    pub model: String,
    /// Engine.
    pub engine: String,
    /// `"unsupported by <engine>: <reason>"`.
    pub unsupported: String,
    /// Device class of the machine.
    pub device_class: String,
    /// Worker that found it.
    pub worker: String,
}

/// One line of `synergai-worker profile --json` output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProfileLine {
    /// A measured point.
    Point(ProfilePoint),
    /// A pair the engine cannot run.
    Unsupported(Unsupported),
}
