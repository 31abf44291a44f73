//! Discrete-event simulation of a SynergAI deployment, driven by the same policy library
//! (`synergai-policy`) as the live scheduler. A pure library: no I/O, no clock; the caller
//! (the load generator's `simulate` mode) reads files, times the run and writes the report.
//!
//! # The model
//!
//! - **Deployment** ([`Topology`]): sites (edge or cloud), the network between them (round trip
//!   and bandwidth per pair, a default for the rest, each labelled measured or emulated), worker
//!   groups (site, device class, count, cores, models served, intra-op thread counts kept
//!   loaded) and where requests enter (one site or a weighted choice, seeded).
//! - **Profiles** ([`ProfilePoint`]): the run time of each (device class, engine, model,
//!   threads, batch). The scheduler's index is built as the live scheduler builds it
//!   ([`synergai_policy::ProfileIndex::from_points`]): engine 0 is `ort`, a class sees the
//!   configurations its workers keep loaded (by default 1 thread and all cores), and what was
//!   never profiled takes the cold-start rule (2 × the slowest per-sample time known for the
//!   model, or 1 s per sample).
//! - **Scheduler**: each request is placed at its arrival time by the [`Policy`] seeing the
//!   workers' current state. The snapshot is what the live scheduler sees: `backlog_ms` is the
//!   execution reserved on the worker (the estimates of the jobs dispatched there and not yet
//!   finished, released as each ends), `in_flight` the jobs queued or running there. `slo-mael`
//!   decides windows of [`Policy::window`] requests: the first arrival opens a window which is
//!   placed when full or `slo_mael_wait_ms` later. A rejection is answered as the live
//!   scheduler answers it: `NoWorker` is retried every 100 ms while the deadline allows, then
//!   answered 503; `Hopeless` (shedding) is answered 504, both at once (no network).
//! - **Dispatch**: a worker with `max_queue` jobs queued (or on their way) refuses; the
//!   scheduler suspects it for `suspect_ms` (no placements there) and places the job again
//!   without it, up to `max_attempts`, then answers 503.
//! - **Network**: a placed job reaches its worker after half the round trip plus the payload's
//!   transfer (bytes per sample × samples over the bandwidth) and its answer reaches the
//!   client half a round trip after the run: together exactly the decision's `network_ms`.
//! - **Workers**: one run at a time; the queued job with the smallest priority (the decision's
//!   `priority_ms` in whole µs, as on the wire; ties first come, first served) runs next. As the
//!   live executor does, a run may merge queued jobs of the same model and configuration
//!   (each within its own batch) when the merged batch is profiled, takes less than the jobs
//!   apart and ends before every one's deadline (at most `max_batch` samples). A job whose
//!   deadline has passed when it would start is answered 504 without running.
//! - **Execution time** of a job is the decision's estimate (the profiled time of the chosen
//!   configuration, `ceil(samples / batch)` runs; the fixed configuration's scaled estimate for
//!   the baselines) — of a merged run, the profiled time of its batch — times a lognormal
//!   noise factor of mean 1 and log-deviation `noise_sigma` (0: deterministic), seeded.
//!
//!   With [`SimConfig::work`], a run's work differs from the scheduler's estimate: e.g. the
//!   scheduler reads online estimates (interference included) while a run's work is its
//!   uncontended offline profile, stretched by the host model below.
//!
//! # Hosts
//!
//! By default every worker is a device of its own. A topology may instead place workers on
//! shared machines ([`HostSpec`]: cores, and a background load in cores), each worker pinned
//! to a set of the host's cores, as `taskset` pins a live worker. The host is then run as
//! processor sharing per core, recomputed whenever a piece of work starts or ends:
//! - a core's load is the background's share (`background_cores / cores`) plus, for each piece
//!   of work pinned to it, its threads spread evenly over its cores;
//! - a thread on a core of load `l` runs at `min(1, 1 / l)` of full speed;
//! - a single-threaded piece moves among its cores: it runs at `min(1, k / Σ l)` over its `k`
//!   cores;
//! - a run of several intra-op threads advances at its slowest thread's pace, since each
//!   operator waits for all of its threads.
//!
//! A run's wall time is then its work (the estimate, or [`SimConfig::work`]) stretched by those
//! rates, and the record's `exec_ms` is that wall time, as a live worker measures it.
//!
//! With [`ServiceSpec`], the serving path (client, intake, scheduler, the bus) also costs CPU
//! on a host: a single-threaded piece of `per_request_ms / 2 + per_mb_ms × input MB` between
//! the network's trip and the worker, and one of `per_request_ms / 2` after the run, before the
//! answer's trip back. Both compete with the runs for the host's cores.
//!
//! Not modelled on hosts: cache and memory-bandwidth interference, ONNX Runtime's spinning
//! threads burning CPU between runs, and the operating system's scheduling quanta.
//!
//! Not simulated: the hops client → intake → scheduler and their queues (decisions take no
//! time; their CPU is modelled with [`ServiceSpec`]), heartbeat staleness (the scheduler's view
//! of backlog is exact reservations), workers joining, draining or failing, online refinement
//! of the profiles, output transfer sizes, and NATS itself.
//!
//! # Output
//!
//! One [`Record`] per planned request, as the load generator records a live run (latency is
//! from arrival to the answer reaching the client, network included), so the same
//! [`synergai_workload::Report::new`] builds the report; and [`SimStats`].
//!
//! # Speed
//!
//! Arrivals are a sorted stream merged with a binary heap of events; each worker's queue is a
//! binary heap; the snapshot vector is updated in place (O(1) per event), never rebuilt. The
//! cost is dominated by the policy's decisions (for `synergai`, one pass over the workers), so
//! the per-request policies (`synergai`, `edge-only`, `cloud-only`, `mael`, `least-loaded`)
//! are given a *reduced snapshot* in which dominated workers are left out
//! ([`SimConfig::dominance`], on by default), with the same decisions.
//!
//! Workers of one *group* (same site, tier, device class, cores and models served) differ, to
//! these policies, only in their backlog (`in_flight` is read by none). The groups are kept,
//! O(log n) per change of a worker's backlog or acceptance, as ordered sets of their accepting
//! members by (wait, index) and by index, where the wait is what the policies read,
//! `backlog_ms.max(0.0)`. A decision sees, per group able to take the request (serves its
//! model; in the tier, for `edge-only` and `cloud-only`), its accepting member of lowest index,
//! its member of least wait (lowest index among equals), and every member whose wait is within
//! a rounding margin of that least wait (2⁻⁴⁵ of the size of now + network + execution + wait:
//! few, but reservations added and released leave residues of a few units in the last place,
//! so they occur), in ascending index order; the chosen position is mapped back to the worker. Why that decides the same:
//!
//! - Each of these policies compares candidates by a total preorder and keeps the first in
//!   index order among the best (it replaces its choice only with a strictly better one):
//!   `least-loaded` by wait; `mael` by estimated completion; `synergai` (and its tier
//!   variants) by meets-the-deadline first, then, in time, (worker time, edge before cloud,
//!   completion) and, late, completion. So its choice is the first, in index order, of the
//!   best candidates; and over any sub-list in index order that holds that worker, and in which
//!   every candidate is priced as over the whole list, the choice is the same worker.
//! - Within a group the network cost, the execution estimate and the tier are the same, so the
//!   order is that of completion = (now + network + wait) + execution, which is monotone in the
//!   wait: the group's best are the members whose completion rounds to that of its least wait.
//!   Its first is the least-wait member of lowest index unless a member with a larger wait
//!   rounds to the same completion, which needs the two waits within a few units in the last
//!   place of the sum: those members are all kept. So the overall choice, the first of the best
//!   of its group, is in the reduced snapshot.
//! - `synergai` prices all workers of a device class with the class's fastest configuration for
//!   the cores of the first eligible worker of the class it meets. That worker is the accepting
//!   member of lowest index of its group, which is kept, and the reduced snapshot is a sub-list
//!   in index order: it is the first eligible worker of the class there too, and the prices are
//!   the same.
//! - Workers that are not accepting, or do not serve the model, or are outside the tier, are
//!   skipped by the policies before any of this: leaving them out changes nothing, and there is
//!   an eligible worker in the reduced snapshot exactly when there is one in the whole (so
//!   `NoWorker` is the same). The decision's figures (configuration, network, wait, completion,
//!   slack, priority) are those of the chosen worker alone, so `Hopeless` (shedding) is the
//!   same too. Only `Decision::considered`, the count of workers weighed, is smaller; the
//!   simulator does not read it.
//!
//! Not reduced: `round-robin` and `random` (they pick by position among the eligible) and
//! `slo-mael` (a window may put several requests on one group), nor calls deciding more than
//! one request, nor a decision whose now, network cost or execution estimate is not finite.

mod dominance;
mod engine;
mod rng;
mod topology;

use std::collections::HashMap;
use std::fmt;

pub use synergai_policy::{Policy, PolicyConfig, PolicyKind};
use synergai_workload::{Planned, Record};
pub use topology::{
    ColdRule, HostSpec, Ingress, LinkSpec, NetworkSpec, ProfilePoint, ServiceSpec, SiteLink,
    SiteSpec, TierSpec, Topology, WeightedSite, WorkerGroup, capacity_rps,
};

/// How to run a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Policy.
    pub policy: PolicyKind,
    /// Policy settings (shedding, `slo-mael` window and budget, `random`'s seed).
    pub policy_config: PolicyConfig,
    /// Seed of the simulation's own draws (execution noise, ingress sites).
    pub seed: u64,
    /// Log-standard-deviation of the lognormal execution noise (mean 1); 0: none.
    pub noise_sigma: f64,
    /// Input bytes per sample, by model (absent: 0).
    pub payload_bytes: HashMap<String, u64>,
    /// Cold-start rule of the scheduler's index.
    pub cold: ColdRule,
    /// `slo-mael`: how long the scheduler waits to fill a window, ms.
    pub slo_mael_wait_ms: f64,
    /// How long the scheduler waits before placing again a request no worker could take, ms.
    pub no_worker_retry_ms: f64,
    /// Workers answer 504 to jobs whose deadline passed before they start.
    pub drop_expired: bool,
    /// Workers merge queued jobs into one run when it pays.
    pub batching: bool,
    /// Most samples in a merged run.
    pub max_batch: u32,
    /// Most jobs a worker queues (`None`: no limit).
    pub max_queue: Option<usize>,
    /// Dispatch attempts per request.
    pub max_attempts: u32,
    /// How long a refusing worker is kept out of placements, ms.
    pub suspect_ms: f64,
    /// Give per-request policies the reduced snapshot (dominated workers left out; the same
    /// decisions, see "Speed" in the crate docs); `false`: every decision sees every worker.
    pub dominance: bool,
    /// What a run really takes, where it differs from what the scheduler reads: points of the
    /// same configurations (e.g. the offline profiles, uncontended, while the scheduler reads
    /// online estimates). A run takes its estimate times `work / scheduler's point`. `None`:
    /// the estimate.
    pub work: Option<Vec<ProfilePoint>>,
    /// What the scheduler assumes a placement's path costs, instead of the topology's network:
    /// `(overhead_ms, bandwidth_mbps)`, the same between every pair of sites and within one
    /// (e.g. the serving path's measured cost, which a shared host charges as CPU). `None`: the
    /// network.
    pub planning_path: Option<(f64, f64)>,
}

impl Default for SimConfig {
    /// The live defaults with `synergai`.
    fn default() -> Self {
        SimConfig {
            policy: PolicyKind::Synergai,
            policy_config: PolicyConfig::default(),
            seed: 2509,
            noise_sigma: 0.0,
            payload_bytes: HashMap::new(),
            cold: ColdRule::default(),
            slo_mael_wait_ms: 2.0,
            no_worker_retry_ms: 100.0,
            drop_expired: true,
            batching: true,
            max_batch: 8,
            max_queue: Some(256),
            max_attempts: 3,
            suspect_ms: 1000.0,
            dominance: true,
            work: None,
            planning_path: None,
        }
    }
}

impl SimConfig {
    /// The live defaults with `policy`.
    pub fn new(policy: PolicyKind) -> Self {
        SimConfig {
            policy,
            ..SimConfig::default()
        }
    }
}

/// Counts of what happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Events processed (arrivals included).
    pub events: u64,
    /// Requests put to the policy (retries and re-placements included).
    pub decisions: u64,
    /// Jobs dispatched to a worker.
    pub placed: u64,
    /// Requests the scheduler answered with an error.
    pub rejected: u64,
    /// Jobs a worker answered 504 unrun (deadline passed).
    pub expired: u64,
    /// Dispatches refused (queue full).
    pub refused: u64,
    /// Runs that merged several jobs.
    pub merged_runs: u64,
    /// Simulated time of the last event, ms.
    pub end_ms: f64,
}

/// What a simulation returns.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOutput {
    /// One record per planned request, in plan order.
    pub records: Vec<Record>,
    /// Counts.
    pub stats: SimStats,
}

/// A deployment or workload the simulator cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError(pub String);

impl SimError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        SimError(msg.into())
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimError {}

/// Simulates `plan` on `topology` with `profiles` under `config`.
pub fn simulate(
    topology: &Topology,
    profiles: &[ProfilePoint],
    plan: &[Planned],
    config: &SimConfig,
) -> Result<SimOutput, SimError> {
    let mut world = topology::World::build(
        topology,
        profiles,
        plan.iter().map(|p| p.model.as_str()),
        config.cold,
    )?;
    if let Some(work) = &config.work {
        world.set_work(work);
    }
    Ok(engine::Sim::new(world, plan, config).run())
}

#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod tests;
