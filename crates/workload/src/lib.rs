//! Workloads and their measurement, shared by the load generator (live) and the simulator.
//!
//! - [`arrivals`]: when requests arrive: constant rate, Poisson, gamma with a chosen coefficient
//!   of variation (bursts), step and ramp schedules; seeded, so a seed fixes the sequence.
//! - [`mix`]: which model each request asks for (weights) and its latency target (absolute, or
//!   a multiple of the fastest profiled latency of the model).
//! - [`trace`]: a planned request sequence as a file, to replay.
//! - [`report`]: per-request records and the report computed from them (violations, excess
//!   time, percentiles, goodput, per model and per site), as JSON and CSV.
//! - [`plot`]: SVG plots of reports (latency CDF, violation rate against offered load).

pub mod arrivals;
pub mod mix;
pub mod plot;
pub mod report;
pub mod trace;

pub use arrivals::{Arrivals, Process, RateSchedule, Segment};
pub use mix::{Mix, SloSpec, Workload};
pub use report::{Breakdown, Record, Report};
pub use trace::Planned;

/// A workload description that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct SpecError(pub String);

impl SpecError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        SpecError(msg.into())
    }
}
