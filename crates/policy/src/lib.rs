//! Scheduling policies as a pure library: no I/O, no clock reads, no NATS. The live scheduler,
//! the simulator and the benchmarks drive the same code.
//!
//! A policy gets requests (model, samples, payload size, arrival and deadline on the caller's
//! clock, ingress site), a snapshot of workers (site, tier, device class, backlog, in-flight
//! jobs, what they serve) with the network between sites, and a [`ProfileIndex`] of execution
//! estimates; it returns a [`Decision`] (worker, engine, threads, batch, estimated completion)
//! or a reasoned [`Rejection`].
//!
//! Policies ([`PolicyKind`]):
//! - `synergai`: architecture- and configuration-aware. For each worker, estimated completion =
//!   network (round trip + payload over bandwidth) + backlog + execution under the fastest
//!   profiled configuration of its device class for this request (engine, intra-op threads, and
//!   the sub-batch the request's samples run in). Among workers that meet the deadline it takes
//!   the one whose execution uses the least worker time (leaving capacity for later requests),
//!   then edge before cloud, then the earliest completion; if none meets it, the least
//!   lateness; it sheds (504) only when configured to and even the best is hopeless.
//! - `slo-mael` (Seo et al., ACM TACO 18(4) 2021): requests are collected over a window; every
//!   assignment of the window's requests to workers is enumerated (the window is capped so that
//!   workers^requests stays within a budget); an assignment scores by how many requests satisfy
//!   deadline ≥ 1.5 × expected latency, ties by the least total expected latency; each worker
//!   runs its queue least-slack-first; each worker has one fixed configuration.
//! - `mael`: least expected latency per request, no deadline term, fixed configuration.
//! - `round-robin`, `random`, `least-loaded`: fixed configuration.
//! - `edge-only`, `cloud-only`: `synergai` restricted to one tier.
//!
//! The fixed configuration of the baselines is what a deployment without a characterisation
//! runs: ONNX Runtime, every core of the worker as intra-op threads, the request's samples in
//! one batch.

mod profiles;
mod slo_mael;

use std::fmt;

pub use profiles::{ConfigOption, ENGINES, NamedPoint, ProfileIndex};

/// Index of a device class in a [`ProfileIndex`].
pub type ClassId = u16;
/// Index of a model in a [`ProfileIndex`].
pub type ModelId = u16;
/// Index of an engine in a [`ProfileIndex`] (0 is the baseline engine, ONNX Runtime).
pub type EngineId = u8;
/// Index of a site in a [`Network`].
pub type SiteId = u16;

/// The tier of a worker's site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tier {
    /// Close to the requests.
    Edge,
    /// A data centre.
    Cloud,
}

/// A request to place. Times are milliseconds on the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    /// Model.
    pub model: ModelId,
    /// Samples (the request's batch dimension).
    pub samples: u32,
    /// Bytes of input to ship to the worker.
    pub payload_bytes: u64,
    /// Arrival at intake.
    pub arrival_ms: f64,
    /// Absolute deadline (arrival + latency target).
    pub deadline_ms: f64,
    /// Site where it entered.
    pub ingress: SiteId,
}

/// A set of models, as a bit mask (models are few).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelSet(pub u128);

impl ModelSet {
    /// Every model.
    pub const ALL: ModelSet = ModelSet(u128::MAX);

    /// Whether `m` is in the set.
    pub fn contains(self, m: ModelId) -> bool {
        m < 128 && self.0 & (1u128 << m) != 0
    }

    /// The set with `m` added.
    pub fn with(self, m: ModelId) -> ModelSet {
        if m < 128 {
            ModelSet(self.0 | (1u128 << m))
        } else {
            self
        }
    }
}

/// One worker as the scheduler sees it at decision time.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerState {
    /// Site.
    pub site: SiteId,
    /// Tier.
    pub tier: Tier,
    /// Device class.
    pub class: ClassId,
    /// Cores it may use (the baselines' intra-op threads).
    pub max_threads: u32,
    /// Estimated time until it could start a new job, ms.
    pub backlog_ms: f64,
    /// Jobs queued or running.
    pub in_flight: u32,
    /// Models it serves.
    pub models: ModelSet,
    /// Whether it takes new jobs (not draining, not suspected dead).
    pub accepting: bool,
}

/// The network between sites: round trip and bandwidth, measured or (labelled) emulated.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    sites: usize,
    rtt_ms: Vec<f64>,
    bandwidth_mbps: Vec<f64>,
}

impl Network {
    /// `sites` sites, all with `rtt_ms` between different sites (0 within one) and `bandwidth_mbps`.
    pub fn uniform(sites: usize, rtt_ms: f64, bandwidth_mbps: f64) -> Self {
        let n = sites.max(1);
        let mut rtt = vec![rtt_ms; n * n];
        for s in 0..n {
            rtt[s * n + s] = 0.0;
        }
        Network {
            sites: n,
            rtt_ms: rtt,
            bandwidth_mbps: vec![bandwidth_mbps; n * n],
        }
    }

    /// Number of sites.
    pub fn sites(&self) -> usize {
        self.sites
    }

    /// Sets the round trip and bandwidth between two sites (both directions).
    pub fn set(&mut self, a: SiteId, b: SiteId, rtt_ms: f64, bandwidth_mbps: f64) {
        let (a, b) = (a as usize, b as usize);
        if a < self.sites && b < self.sites {
            for (x, y) in [(a, b), (b, a)] {
                self.rtt_ms[x * self.sites + y] = rtt_ms;
                self.bandwidth_mbps[x * self.sites + y] = bandwidth_mbps;
            }
        }
    }

    /// Time to ship `bytes` from `from` to `to` and get a reply back, ms.
    pub fn cost_ms(&self, from: SiteId, to: SiteId, bytes: u64) -> f64 {
        let i =
            (from as usize).min(self.sites - 1) * self.sites + (to as usize).min(self.sites - 1);
        let bw = self.bandwidth_mbps[i];
        let transfer = if bw > 0.0 {
            bytes as f64 * 8.0 / (bw * 1000.0)
        } else {
            0.0
        };
        self.rtt_ms[i] + transfer
    }
}

/// What a policy sees.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Workers, indexed by position.
    pub workers: &'a [WorkerState],
    /// Sites' network.
    pub network: &'a Network,
    /// Execution estimates.
    pub profiles: &'a ProfileIndex,
}

/// A configuration to run a job with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Config {
    /// Engine.
    pub engine: EngineId,
    /// Intra-op threads.
    pub threads: u32,
    /// Samples per run (the request's samples run in `ceil(samples / batch)` runs).
    pub batch: u32,
}

/// Where and how to run a request, with the estimates behind the choice.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// Index of the chosen worker in the snapshot.
    pub worker: usize,
    /// Configuration.
    pub config: Config,
    /// Estimated execution time, ms.
    pub exec_ms: f64,
    /// Estimated network time, ms.
    pub network_ms: f64,
    /// Estimated wait before it starts, ms.
    pub wait_ms: f64,
    /// Estimated completion (absolute, caller's clock).
    pub completion_ms: f64,
    /// Deadline minus estimated completion (negative: expected late).
    pub slack_ms: f64,
    /// Queue priority at the worker: smaller runs first (deadline for EDF, deadline minus
    /// execution for least-slack-first).
    pub priority_ms: f64,
    /// (worker, configuration) pairs weighed.
    pub considered: u32,
}

/// Why a request was not placed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rejection {
    /// No accepting worker serves the model.
    NoWorker,
    /// Even the best placement is hopeless and shedding is on (answer 504).
    Hopeless {
        /// The best placement there was.
        best: Decision,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NoWorker => f.write_str("no accepting worker serves this model"),
            Rejection::Hopeless { best } => write!(
                f,
                "deadline cannot be met: the best placement completes {:.1} ms late",
                -best.slack_ms
            ),
        }
    }
}

/// The policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// Architecture- and configuration-aware.
    Synergai,
    /// The paper's baseline.
    SloMael,
    /// Least expected latency.
    Mael,
    /// Rotate over workers.
    RoundRobin,
    /// Uniformly at random (seeded).
    Random,
    /// Least backlog.
    LeastLoaded,
    /// `synergai` on edge workers only.
    EdgeOnly,
    /// `synergai` on cloud workers only.
    CloudOnly,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 8] = [
        PolicyKind::Synergai,
        PolicyKind::SloMael,
        PolicyKind::Mael,
        PolicyKind::RoundRobin,
        PolicyKind::Random,
        PolicyKind::LeastLoaded,
        PolicyKind::EdgeOnly,
        PolicyKind::CloudOnly,
    ];

    /// The name used in config, on the control subject and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Synergai => "synergai",
            PolicyKind::SloMael => "slo-mael",
            PolicyKind::Mael => "mael",
            PolicyKind::RoundRobin => "round-robin",
            PolicyKind::Random => "random",
            PolicyKind::LeastLoaded => "least-loaded",
            PolicyKind::EdgeOnly => "edge-only",
            PolicyKind::CloudOnly => "cloud-only",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PolicyKind::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = PolicyKind::ALL.iter().map(|p| p.as_str()).collect();
                format!("unknown policy {s:?} (policies: {})", names.join(", "))
            })
    }
}

/// Settings shared by the policies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    /// Shed (reject with 504) when even the best placement is late by more than this fraction
    /// of the request's latency target; `None` never sheds.
    pub shed_late_fraction: Option<f64>,
    /// `slo-mael`: most assignments enumerated per window (the window is capped to fit).
    pub slo_mael_max_assignments: u64,
    /// `slo-mael`: most requests in a window.
    pub slo_mael_window: usize,
    /// `random`: seed.
    pub seed: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            shed_late_fraction: None,
            slo_mael_max_assignments: 20_000,
            slo_mael_window: 8,
            seed: 2509,
        }
    }
}

/// A policy with its state (round-robin cursor, random generator).
#[derive(Debug, Clone)]
pub struct Policy {
    kind: PolicyKind,
    config: PolicyConfig,
    cursor: usize,
    rng: u64,
}

/// `synergai`'s pass over the workers for one request.
struct Scan<'s, 'a> {
    req: &'s Request,
    snap: &'s Snapshot<'a>,
    /// Now plus the network cost, per site.
    start: &'s [f64],
    /// The request's model as a [`ModelSet`] bit (0: no worker serves it).
    bit: u128,
}

/// The outcome of a [`Scan`]: `worker` is `usize::MAX` when none was eligible.
struct ScanBest {
    worker: usize,
    exec_ms: f64,
    wait_ms: f64,
    completion_ms: f64,
    meets: bool,
    considered: u32,
}

impl Scan<'_, '_> {
    #[inline(always)]
    fn run<const TIERED: bool, const EXTRA: bool>(
        &self,
        tier: Option<Tier>,
        extra: &[f64],
        fastest: &mut Vec<Option<(ConfigOption, f64)>>,
    ) -> ScanBest {
        let (req, sites) = (self.req, self.start.len());
        let mut best = ScanBest {
            worker: usize::MAX,
            exec_ms: 0.0,
            wait_ms: 0.0,
            completion_ms: 0.0,
            meets: false,
            considered: 0,
        };
        let mut b_edge = false;
        for (w, state) in self.snap.workers.iter().enumerate() {
            if !state.accepting
                || state.models.0 & self.bit == 0
                || (TIERED && tier.is_some_and(|t| t != state.tier))
            {
                continue;
            }
            let class = state.class as usize;
            if fastest.len() <= class {
                fastest.resize(class + 1, None);
            }
            let exec_ms = match fastest[class] {
                Some((_, exec_ms)) => exec_ms,
                None => {
                    let f = self.snap.profiles.fastest(
                        state.class,
                        req.model,
                        req.samples,
                        state.max_threads,
                    );
                    fastest[class] = Some(f);
                    f.1
                }
            };
            best.considered += 1;
            let extra_ms = if EXTRA {
                extra.get(w).copied().unwrap_or(0.0)
            } else {
                0.0
            };
            let wait_ms = state.backlog_ms.max(0.0) + extra_ms;
            let completion_ms =
                self.start[(state.site as usize).min(sites - 1)] + wait_ms + exec_ms;
            let meets = completion_ms <= req.deadline_ms;
            let edge = state.tier == Tier::Edge;
            let better = if best.worker == usize::MAX {
                true
            } else {
                match (meets, best.meets) {
                    (true, false) => true,
                    (false, true) => false,
                    // Both late: the least lateness.
                    (false, false) => completion_ms < best.completion_ms,
                    // Both in time: least worker time, then edge first, then earliest.
                    (true, true) => {
                        (exec_ms, !edge, completion_ms)
                            < (best.exec_ms, !b_edge, best.completion_ms)
                    }
                }
            };
            if better {
                best.worker = w;
                (best.exec_ms, best.wait_ms, best.completion_ms) =
                    (exec_ms, wait_ms, completion_ms);
                (best.meets, b_edge) = (meets, edge);
            }
        }
        best
    }
}

/// Estimate of one (worker, configuration) pair for one request.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    worker: usize,
    option: ConfigOption,
    exec_ms: f64,
    network_ms: f64,
    wait_ms: f64,
    completion_ms: f64,
}

impl Candidate {
    fn decision(&self, req: &Request, least_slack_first: bool, considered: u32) -> Decision {
        Decision {
            worker: self.worker,
            config: Config {
                engine: self.option.engine,
                threads: self.option.threads,
                batch: self.option.batch,
            },
            exec_ms: self.exec_ms,
            network_ms: self.network_ms,
            wait_ms: self.wait_ms,
            completion_ms: self.completion_ms,
            slack_ms: req.deadline_ms - self.completion_ms,
            priority_ms: if least_slack_first {
                req.deadline_ms - self.exec_ms
            } else {
                req.deadline_ms
            },
            considered,
        }
    }
}

fn eligible(w: &WorkerState, model: ModelId) -> bool {
    w.accepting && w.models.contains(model)
}

impl Policy {
    /// A policy of `kind`.
    pub fn new(kind: PolicyKind, config: PolicyConfig) -> Self {
        Policy {
            kind,
            config,
            cursor: 0,
            rng: config.seed.max(1),
        }
    }

    /// Which policy this is.
    pub fn kind(&self) -> PolicyKind {
        self.kind
    }

    /// Settings.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// How many requests this policy wants to decide together (1 but for `slo-mael`).
    pub fn window(&self, workers: usize) -> usize {
        match self.kind {
            PolicyKind::SloMael => slo_mael::window_cap(
                workers,
                self.config.slo_mael_window,
                self.config.slo_mael_max_assignments,
            ),
            _ => 1,
        }
    }

    /// Places requests at `now_ms`. Per-request policies place them one after another, each
    /// seeing the backlog the earlier ones add; `slo-mael` enumerates assignments of windows of
    /// [`Policy::window`] requests.
    pub fn place(
        &mut self,
        now_ms: f64,
        requests: &[Request],
        snap: &Snapshot<'_>,
    ) -> Vec<Result<Decision, Rejection>> {
        if self.kind == PolicyKind::SloMael {
            return slo_mael::place(now_ms, requests, snap, &self.config);
        }
        let mut extra = Vec::new();
        let mut out = Vec::with_capacity(requests.len());
        for (i, req) in requests.iter().enumerate() {
            let result = self.place_one(now_ms, req, snap, &extra);
            // What this placement adds matters only to the requests after it.
            if let Ok(d) = &result
                && i + 1 < requests.len()
            {
                if extra.is_empty() {
                    extra = vec![0.0; snap.workers.len()];
                }
                extra[d.worker] += d.exec_ms;
            }
            out.push(result);
        }
        out
    }

    /// Places one request; `extra[w]` is backlog added by earlier requests of the same call.
    fn place_one(
        &mut self,
        now_ms: f64,
        req: &Request,
        snap: &Snapshot<'_>,
        extra: &[f64],
    ) -> Result<Decision, Rejection> {
        match self.kind {
            PolicyKind::Synergai => self.synergai(now_ms, req, snap, extra, None),
            PolicyKind::EdgeOnly => self.synergai(now_ms, req, snap, extra, Some(Tier::Edge)),
            PolicyKind::CloudOnly => self.synergai(now_ms, req, snap, extra, Some(Tier::Cloud)),
            PolicyKind::Mael => fixed_best(now_ms, req, snap, extra, |c| c.completion_ms),
            PolicyKind::LeastLoaded => fixed_best(now_ms, req, snap, extra, |c| c.wait_ms),
            PolicyKind::RoundRobin | PolicyKind::Random => {
                // The k-th eligible worker, found without collecting them.
                let count = snap
                    .workers
                    .iter()
                    .filter(|w| eligible(w, req.model))
                    .count();
                if count == 0 {
                    return Err(Rejection::NoWorker);
                }
                let k = if self.kind == PolicyKind::RoundRobin {
                    self.cursor = self.cursor.wrapping_add(1);
                    (self.cursor - 1) % count
                } else {
                    (self.next_random() % count as u64) as usize
                };
                let pick = snap
                    .workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| eligible(w, req.model))
                    .nth(k)
                    .map_or(0, |(i, _)| i);
                let c = fixed_candidate(now_ms, req, snap, extra, pick);
                Ok(c.decision(req, false, count as u32))
            }
            PolicyKind::SloMael => unreachable_window(),
        }
    }

    /// The `k` best (worker, configuration) pairs this policy would weigh for `req`, by
    /// estimated completion: what a decision event shows beside the choice. `synergai` and its
    /// tier variants weigh each worker's fastest configuration; the others the fixed one.
    pub fn candidates(
        &self,
        now_ms: f64,
        req: &Request,
        snap: &Snapshot<'_>,
        k: usize,
    ) -> Vec<Decision> {
        if k == 0 {
            return Vec::new();
        }
        let configuration_aware = matches!(
            self.kind,
            PolicyKind::Synergai | PolicyKind::EdgeOnly | PolicyKind::CloudOnly
        );
        let tier = match self.kind {
            PolicyKind::EdgeOnly => Some(Tier::Edge),
            PolicyKind::CloudOnly => Some(Tier::Cloud),
            _ => None,
        };
        let mut all: Vec<Decision> = (0..snap.workers.len())
            .filter(|&w| {
                eligible(&snap.workers[w], req.model)
                    && tier.is_none_or(|t| snap.workers[w].tier == t)
            })
            .map(|w| {
                let c = if configuration_aware {
                    let state = &snap.workers[w];
                    let fastest = snap.profiles.fastest(
                        state.class,
                        req.model,
                        req.samples,
                        state.max_threads,
                    );
                    candidate(now_ms, req, snap, &[], w, fastest)
                } else {
                    fixed_candidate(now_ms, req, snap, &[], w)
                };
                c.decision(req, self.kind == PolicyKind::SloMael, 1)
            })
            .collect();
        all.sort_by(|a, b| a.completion_ms.total_cmp(&b.completion_ms));
        all.truncate(k);
        all
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic for a seed, good enough to spread load.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn synergai(
        &self,
        now_ms: f64,
        req: &Request,
        snap: &Snapshot<'_>,
        extra: &[f64],
        tier: Option<Tier>,
    ) -> Result<Decision, Rejection> {
        // The network cost per site (sites are few), and the fastest option per device class:
        // for both the deadline and the secondary goal (least worker time) it is the one to
        // weigh, so each worker is one comparison of figures looked up, not computed. Sums are
        // formed in `candidate`'s order (now + network + wait + exec), so the figures are the
        // same to the bit.
        let sites = snap.network.sites();
        let start: Vec<f64> = (0..sites)
            .map(|s| {
                now_ms
                    + snap
                        .network
                        .cost_ms(req.ingress, s as SiteId, req.payload_bytes)
            })
            .collect();
        let bit = if req.model < 128 {
            1u128 << req.model
        } else {
            0
        };
        let mut fastest: Vec<Option<(ConfigOption, f64)>> = vec![None; snap.profiles.classes()];
        let scan = Scan {
            req,
            snap,
            start: &start,
            bit,
        };
        // Specialised on the common case (no tier filter, no earlier placement in the call).
        let best = match (tier, extra.is_empty()) {
            (None, true) => scan.run::<false, false>(None, extra, &mut fastest),
            (None, false) => scan.run::<false, true>(None, extra, &mut fastest),
            (Some(_), true) => scan.run::<true, false>(tier, extra, &mut fastest),
            (Some(_), false) => scan.run::<true, true>(tier, extra, &mut fastest),
        };
        let ScanBest {
            worker: best,
            exec_ms: b_exec,
            wait_ms: b_wait,
            completion_ms: b_completion,
            meets: b_meets,
            considered,
        } = best;
        let Some(state) = snap.workers.get(best) else {
            return Err(Rejection::NoWorker);
        };
        let Some(Some((option, _))) = fastest.get(state.class as usize).copied() else {
            return Err(Rejection::NoWorker);
        };
        let c = Candidate {
            worker: best,
            option,
            exec_ms: b_exec,
            network_ms: snap
                .network
                .cost_ms(req.ingress, state.site, req.payload_bytes),
            wait_ms: b_wait,
            completion_ms: b_completion,
        };
        let decision = c.decision(req, false, considered);
        if !b_meets
            && let Some(fraction) = self.config.shed_late_fraction
            && -decision.slack_ms > fraction * (req.deadline_ms - req.arrival_ms)
        {
            return Err(Rejection::Hopeless { best: decision });
        }
        Ok(decision)
    }

    /// The straightforward form of [`Policy::synergai`], which must decide the same.
    #[cfg(test)]
    fn synergai_reference(
        &self,
        now_ms: f64,
        req: &Request,
        snap: &Snapshot<'_>,
        extra: &[f64],
        tier: Option<Tier>,
    ) -> Result<Decision, Rejection> {
        // The fastest option per device class: for both the deadline and the secondary goal
        // (least worker time) it is the one to weigh, so each worker is one comparison.
        let mut fastest: Vec<Option<(ConfigOption, f64)>> = Vec::new();
        let mut best: Option<(Candidate, bool)> = None;
        let mut considered = 0u32;
        for (w, state) in snap.workers.iter().enumerate() {
            if !eligible(state, req.model) || tier.is_some_and(|t| t != state.tier) {
                continue;
            }
            let class = state.class as usize;
            if fastest.len() <= class {
                fastest.resize(class + 1, None);
            }
            let option = match fastest[class] {
                Some(f) => f,
                None => {
                    let f = snap.profiles.fastest(
                        state.class,
                        req.model,
                        req.samples,
                        state.max_threads,
                    );
                    fastest[class] = Some(f);
                    f
                }
            };
            considered += 1;
            let c = candidate(now_ms, req, snap, extra, w, option);
            let meets = c.completion_ms <= req.deadline_ms;
            let better = match &best {
                None => true,
                Some((b, b_meets)) => match (meets, *b_meets) {
                    (true, false) => true,
                    (false, true) => false,
                    // Both late: the least lateness.
                    (false, false) => c.completion_ms < b.completion_ms,
                    // Both in time: least worker time, then edge first, then earliest.
                    (true, true) => {
                        let edge = |x: &Candidate| snap.workers[x.worker].tier == Tier::Edge;
                        (c.exec_ms, !edge(&c), c.completion_ms)
                            < (b.exec_ms, !edge(b), b.completion_ms)
                    }
                },
            };
            if better {
                best = Some((c, meets));
            }
        }
        let (c, meets) = best.ok_or(Rejection::NoWorker)?;
        let decision = c.decision(req, false, considered);
        if !meets
            && let Some(fraction) = self.config.shed_late_fraction
            && -decision.slack_ms > fraction * (req.deadline_ms - req.arrival_ms)
        {
            return Err(Rejection::Hopeless { best: decision });
        }
        Ok(decision)
    }
}

fn unreachable_window() -> Result<Decision, Rejection> {
    // `place` routes slo-mael to its window logic before reaching here.
    Err(Rejection::NoWorker)
}

/// The candidate of running `req` on worker `w` with `option`, taking `exec_ms`, behind the
/// worker's backlog and `extra` (what earlier requests of the same call added).
fn candidate(
    now_ms: f64,
    req: &Request,
    snap: &Snapshot<'_>,
    extra: &[f64],
    w: usize,
    (option, exec_ms): (ConfigOption, f64),
) -> Candidate {
    let state = &snap.workers[w];
    let network_ms = snap
        .network
        .cost_ms(req.ingress, state.site, req.payload_bytes);
    let wait_ms = state.backlog_ms.max(0.0) + extra.get(w).copied().unwrap_or(0.0);
    Candidate {
        worker: w,
        option,
        exec_ms,
        network_ms,
        wait_ms,
        completion_ms: now_ms + network_ms + wait_ms + exec_ms,
    }
}

/// The baselines' fixed configuration on worker `w`.
fn fixed_candidate(
    now_ms: f64,
    req: &Request,
    snap: &Snapshot<'_>,
    extra: &[f64],
    w: usize,
) -> Candidate {
    let state = &snap.workers[w];
    let fixed = snap
        .profiles
        .fixed(state.class, req.model, req.samples, state.max_threads);
    candidate(now_ms, req, snap, extra, w, fixed)
}

/// The eligible worker minimising `key` under the fixed configuration.
fn fixed_best(
    now_ms: f64,
    req: &Request,
    snap: &Snapshot<'_>,
    extra: &[f64],
    key: impl Fn(&Candidate) -> f64,
) -> Result<Decision, Rejection> {
    let mut best: Option<Candidate> = None;
    let mut considered = 0;
    for w in 0..snap.workers.len() {
        if !eligible(&snap.workers[w], req.model) {
            continue;
        }
        considered += 1;
        let c = fixed_candidate(now_ms, req, snap, extra, w);
        if best.as_ref().is_none_or(|b| key(&c) < key(b)) {
            best = Some(c);
        }
    }
    best.map(|c| c.decision(req, false, considered))
        .ok_or(Rejection::NoWorker)
}

#[cfg(test)]
mod tests;
