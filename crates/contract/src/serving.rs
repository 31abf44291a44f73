//! The online serving path's internal messages: the job envelope (intake → scheduler through
//! JetStream, scheduler → worker), the worker's dispatch acknowledgement and heartbeat, the
//! scheduler's control and decision events.
//!
//! A job travels as the request body in the binary tensor form (normalised by the intake, so no
//! one downstream parses JSON tensors) with its metadata as compact JSON in one header,
//! [`JOB_HEADER`], so the scheduler decides without reading the body.

use serde::{Deserialize, Serialize};

use crate::store::WorkerStatus;

/// Header carrying [`JobMeta`] (intake → scheduler) or [`DispatchMeta`] (scheduler → worker).
pub const JOB_HEADER: &str = "Synergai-Job";

/// What every hop needs to know about an accepted request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobMeta {
    /// Id stamped by the intake.
    pub request_id: String,
    /// Model.
    pub model: String,
    /// The client's reply subject: the worker answers there directly.
    pub reply: String,
    /// Arrival at intake, microseconds since the Unix epoch.
    pub arrival_us: i64,
    /// Deadline, microseconds since the Unix epoch.
    pub deadline_us: i64,
    /// Latency target, ms.
    pub slo_ms: f64,
    /// Samples (the request's batch dimension).
    pub samples: u32,
    /// Size of the body, bytes.
    pub payload_bytes: u64,
    /// Site of the intake that accepted it.
    pub ingress_site: String,
    /// JetStream domain holding the request (its body in the work queue, its reply claim): the
    /// accepting intake's. Absent: the JetStream of the server the reader is connected to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// A job as dispatched to a worker: the request's metadata and the scheduler's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchMeta {
    /// The request.
    pub job: JobMeta,
    /// Engine to run it on.
    pub engine: String,
    /// Intra-op threads.
    pub threads: u32,
    /// Samples per run (the request's samples run in `ceil(samples / batch)` runs).
    pub batch: u32,
    /// Queue priority (smaller first), microseconds since the Unix epoch: the deadline under
    /// earliest-deadline-first, deadline minus estimated execution under least-slack-first.
    pub priority_us: i64,
    /// Policy that placed it.
    pub policy: String,
    /// Estimated execution time, ms.
    pub est_exec_ms: f64,
    /// Scheduler instance that dispatched it.
    pub scheduler: String,
    /// 1 for the first dispatch, more when re-dispatched after a worker was lost.
    pub attempt: u32,
    /// Sequence of the request in the work queue stream. When set, the dispatch carries no
    /// body: the worker reads it from the stream (a direct get), so the scheduler never moves
    /// request bodies. Absent: the body is the dispatch's payload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_seq: Option<u64>,
}

/// A worker's answer to a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchAck {
    /// Whether the job is now queued there.
    pub accepted: bool,
    /// Why not, when refused (draining, queue full, model not served).
    #[serde(default)]
    pub reason: Option<String>,
    /// Jobs queued there after this one.
    pub queue_len: u32,
}

/// A job a worker holds (queued or running), listed in its heartbeat so a scheduler that did
/// not dispatch it (a restarted one) can still answer it if the worker is lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldJob {
    /// Request id.
    pub request_id: String,
    /// The client's reply subject.
    pub reply: String,
    /// Deadline, microseconds since the Unix epoch.
    pub deadline_us: i64,
    /// JetStream domain holding the request ([`JobMeta::domain`]): only a scheduler of that
    /// domain answers it when the worker is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

/// An (engine, threads) configuration a worker has loaded for a model.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadedConfig {
    /// Model.
    pub model: String,
    /// Engine.
    pub engine: String,
    /// Intra-op threads.
    pub threads: u32,
}

/// Event `events.worker.<worker>`: a worker's identity and live state, every heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerHeartbeat {
    /// Identity (what the store records).
    pub status: WorkerStatus,
    /// Heartbeat sequence number since the worker started.
    pub seq: u64,
    /// Heartbeat interval, ms (a scheduler declares the worker lost after a few missed).
    pub interval_ms: u64,
    /// Configurations loaded and ready.
    pub loaded: Vec<LoadedConfig>,
    /// Jobs queued.
    pub queued: u32,
    /// Jobs running.
    pub running: u32,
    /// Estimated work queued and running, ms.
    pub backlog_ms: f64,
    /// Shutting down: takes no new jobs.
    pub draining: bool,
    /// Jobs held (queued or running).
    pub jobs: Vec<HeldJob>,
}

/// Request on `scheduler.control`: switch the policy (or just report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SchedulerControl {
    /// Policy to switch to.
    #[serde(default)]
    pub policy: Option<String>,
}

/// Reply on `scheduler.control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerState {
    /// Scheduler instance.
    pub scheduler: String,
    /// Policy in force.
    pub policy: String,
    /// Workers known and alive.
    pub workers: u32,
    /// Jobs dispatched and not yet completed.
    pub in_flight: u32,
    /// Profile revision in use.
    pub profile_revision: Option<i64>,
}

/// One (worker, configuration) the scheduler weighed, with its estimates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateView {
    /// Worker.
    pub worker: String,
    /// Engine.
    pub engine: String,
    /// Threads.
    pub threads: u32,
    /// Samples per run.
    pub batch: u32,
    /// Network, ms.
    pub network_ms: f64,
    /// Wait, ms.
    pub wait_ms: f64,
    /// Execution, ms.
    pub exec_ms: f64,
    /// Deadline minus estimated completion, ms.
    pub slack_ms: f64,
}

/// Event `events.decision.<scheduler>`: how one request was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionEvent {
    /// Request.
    pub request_id: String,
    /// Model.
    pub model: String,
    /// Policy.
    pub policy: String,
    /// Scheduler instance.
    pub scheduler: String,
    /// The choice, if placed.
    pub chosen: Option<CandidateView>,
    /// The best (worker, configuration) pairs weighed, by estimated completion.
    pub candidates: Vec<CandidateView>,
    /// (worker, configuration) pairs weighed.
    pub considered: u32,
    /// Why it was not placed, if so.
    #[serde(default)]
    pub rejected: Option<String>,
    /// Time taken to decide, microseconds.
    pub decide_us: f64,
    /// Dispatch attempt.
    pub attempt: u32,
}
