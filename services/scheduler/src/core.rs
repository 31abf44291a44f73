//! The scheduler's state: workers (from heartbeats), round trips, reservations, jobs in flight,
//! and the profile index the policy reads. Everything here is synchronous and quick; the
//! service holds it behind one mutex.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use synergai_contract::Token;
use synergai_contract::serving::{CandidateView, HeldJob, JobMeta, WorkerHeartbeat};
use synergai_contract::store::ProfileKey;
use synergai_contract::trace::TraceContext;
use synergai_policy::{
    ConfigOption, Decision, ModelId, ModelSet, Network, Policy, PolicyConfig, PolicyKind,
    ProfileIndex, Rejection, Request, Snapshot, Tier, WorkerState,
};
use synergai_store_client::{ColdStart, Snapshot as ProfileSnapshot};

use crate::config::NetworkConfig;

/// Engines by index, as the policy library numbers them (0 is the baselines' engine).
pub const ENGINES: [&str; 2] = ["ort", "tract"];

/// A worker as the scheduler knows it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Worker id.
    pub id: String,
    /// Id as a subject token.
    pub token: Token,
    /// Last heartbeat.
    pub hb: WorkerHeartbeat,
    /// When it arrived.
    pub seen: Instant,
    /// Measured round trip, ms (EWMA), once pinged.
    pub rtt_ms: Option<f64>,
    /// Execution this scheduler dispatched there and has not seen complete, ms.
    pub reserved_ms: f64,
    /// Not given jobs until then (it refused or did not answer a dispatch).
    pub suspect_until: Option<Instant>,
}

/// A job this scheduler dispatched and has not seen complete.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// The request.
    pub meta: JobMeta,
    /// Sequence of its body in the work queue stream (workers read it from there; it stays
    /// until the job ends, so a lost worker's job can be dispatched again).
    pub seq: u64,
    /// Acknowledgement subject of its work-queue message: acknowledged when the job ends.
    pub ack: Option<String>,
    /// Length of the body's JSON header.
    pub header_len: Option<String>,
    /// The trace to continue.
    pub trace: Option<TraceContext>,
    /// Worker it went to.
    pub worker: String,
    /// Execution reserved there, ms.
    pub est_exec_ms: f64,
    /// Dispatch attempt.
    pub attempt: u32,
    /// When.
    pub dispatched: Instant,
}

/// A placed request: the worker and the policy's decision.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Worker id.
    pub worker: String,
    /// Worker token.
    pub token: Token,
    /// The decision.
    pub decision: Decision,
}

/// A worker found lost, with what it held.
#[derive(Debug, Clone)]
pub struct Lost {
    /// Worker id.
    pub worker: String,
    /// Jobs this scheduler had dispatched there.
    pub own: Vec<InFlight>,
    /// Jobs its last heartbeat listed that this scheduler did not dispatch.
    pub orphans: Vec<HeldJob>,
}

/// The scheduler's state.
pub struct Core {
    /// Policy in force.
    pub policy: Policy,
    policy_config: PolicyConfig,
    network_config: NetworkConfig,
    lost_after: u32,
    cold: ColdStart,
    models: HashMap<String, ModelId>,
    classes: HashMap<String, u16>,
    class_names: Vec<String>,
    sites: HashMap<String, u16>,
    workers: Vec<Entry>,
    states: Vec<WorkerState>,
    index: ProfileIndex,
    /// Profile revision the index was built from.
    pub index_revision: Option<i64>,
    index_dirty: bool,
    network: Network,
    /// Jobs in flight, by request id.
    pub in_flight: HashMap<String, InFlight>,
    /// Requests taken and not yet dispatched (being placed, waiting for a worker).
    pub pending: HashSet<String>,
}

fn ms_since(t: Instant, now: Instant) -> f64 {
    now.saturating_duration_since(t).as_secs_f64() * 1000.0
}

impl Core {
    /// A scheduler for the catalogue's `models` (in catalogue order).
    pub fn new(
        kind: PolicyKind,
        policy_config: PolicyConfig,
        network: NetworkConfig,
        lost_after: u32,
        models: &[String],
    ) -> Self {
        let cold = ColdStart::default();
        Core {
            policy: Policy::new(kind, policy_config),
            policy_config,
            network_config: network,
            lost_after: lost_after.max(2),
            cold,
            models: models
                .iter()
                .enumerate()
                .map(|(i, m)| (m.clone(), i as ModelId))
                .collect(),
            classes: HashMap::new(),
            class_names: Vec::new(),
            sites: HashMap::new(),
            workers: Vec::new(),
            states: Vec::new(),
            index: ProfileIndex::new(0, models.len(), cold.default_ms),
            index_revision: None,
            index_dirty: true,
            network: Network::uniform(1, 0.0, 0.0),
            in_flight: HashMap::new(),
            pending: HashSet::new(),
        }
    }

    /// Switches the policy (its state starts afresh).
    pub fn set_policy(&mut self, kind: PolicyKind) {
        self.policy = Policy::new(kind, self.policy_config);
    }

    /// The model id of a model name.
    pub fn model(&self, name: &str) -> Option<ModelId> {
        self.models.get(name).copied()
    }

    /// Workers known.
    pub fn workers(&self) -> &[Entry] {
        &self.workers
    }

    fn class_id(&mut self, name: &str) -> u16 {
        if let Some(&c) = self.classes.get(name) {
            return c;
        }
        let c = self.class_names.len() as u16;
        self.classes.insert(name.to_owned(), c);
        self.class_names.push(name.to_owned());
        self.index_dirty = true;
        c
    }

    fn site_id(&mut self, name: &str) -> u16 {
        let next = self.sites.len() as u16;
        let id = *self.sites.entry(name.to_owned()).or_insert(next);
        if id == next {
            self.rebuild_network();
        }
        id
    }

    fn rebuild_network(&mut self) {
        let n = self.sites.len().max(1);
        let overhead = self.network_config.overhead_ms.max(0.0);
        let mut net = Network::uniform(n, overhead, self.network_config.bandwidth_mbps);
        // Measured: the round trip to a site is the best measured to any of its workers (the
        // scheduler measures from where it runs, standing in for every ingress site).
        let mut site_rtt: HashMap<u16, f64> = HashMap::new();
        for w in &self.workers {
            if let (Some(rtt), Some(&s)) = (w.rtt_ms, self.sites.get(&w.hb.status.site)) {
                let e = site_rtt.entry(s).or_insert(rtt);
                *e = e.min(rtt);
            }
        }
        for a in 0..n as u16 {
            for b in 0..n as u16 {
                let measured = site_rtt.get(&b).copied().unwrap_or(0.0);
                net.set(
                    a,
                    b,
                    measured + overhead,
                    self.network_config.bandwidth_mbps,
                );
            }
        }
        // Emulated links add their delay (and cap bandwidth) on top.
        for link in &self.network_config.emulated {
            if let (Some(&a), Some(&b)) = (self.sites.get(&link.a), self.sites.get(&link.b)) {
                let measured = site_rtt.get(&b).copied().unwrap_or(0.0);
                net.set(a, b, measured + overhead + link.rtt_ms, link.bandwidth_mbps);
            }
        }
        self.network = net;
    }

    fn state_of(&mut self, w: usize) -> WorkerState {
        let e = &self.workers[w];
        let mut models = ModelSet::default();
        for l in &e.hb.loaded {
            if let Some(&m) = self.models.get(&l.model) {
                models = models.with(m);
            }
        }
        let site = self.sites.get(&e.hb.status.site).copied().unwrap_or(0);
        let class = self
            .classes
            .get(&e.hb.status.device_class)
            .copied()
            .unwrap_or(0);
        WorkerState {
            site,
            tier: match e.hb.status.tier {
                synergai_contract::Tier::Edge => Tier::Edge,
                synergai_contract::Tier::Cloud => Tier::Cloud,
            },
            class,
            max_threads: e.hb.status.core_set.len().max(1) as u32,
            backlog_ms: 0.0,
            in_flight: e.hb.queued + e.hb.running,
            models,
            accepting: !e.hb.draining,
        }
    }

    /// Takes a heartbeat: registers a new worker, refreshes a known one, and releases
    /// reservations of jobs it no longer holds (a completion event may have been lost).
    pub fn heartbeat(&mut self, hb: WorkerHeartbeat, now: Instant) -> Vec<InFlight> {
        self.site_id(&hb.status.site.clone());
        self.class_id(&hb.status.device_class.clone());
        let held: HashSet<&str> = hb.jobs.iter().map(|j| j.request_id.as_str()).collect();
        let grace = Duration::from_millis(hb.interval_ms.max(50) * 2);
        let gone: Vec<String> = self
            .in_flight
            .iter()
            .filter(|(id, f)| {
                f.worker == hb.status.id
                    && !held.contains(id.as_str())
                    && now.duration_since(f.dispatched) > grace
            })
            .map(|(id, _)| id.clone())
            .collect();
        let Ok(token) = Token::parse(hb.status.id.as_str()) else {
            return Vec::new();
        };
        match self.workers.iter().position(|w| w.id == hb.status.id) {
            Some(i) => {
                let e = &mut self.workers[i];
                if e.hb.loaded != hb.loaded || e.hb.status != hb.status {
                    self.index_dirty = true;
                }
                e.hb = hb;
                e.seen = now;
                let s = self.state_of(i);
                self.states[i] = s;
            }
            None => {
                tracing::info!(worker = %hb.status.id, site = %hb.status.site, class = %hb.status.device_class, "worker joined");
                self.workers.push(Entry {
                    id: hb.status.id.clone(),
                    token,
                    hb,
                    seen: now,
                    rtt_ms: None,
                    reserved_ms: 0.0,
                    suspect_until: None,
                });
                let i = self.workers.len() - 1;
                let s = self.state_of(i);
                self.states.push(s);
                self.index_dirty = true;
            }
        }
        self.completed(&gone)
    }

    /// Jobs finished (from completion events): releases what was reserved for them and
    /// returns them (their work-queue messages are to be acknowledged).
    pub fn completed(&mut self, ids: &[String]) -> Vec<InFlight> {
        let mut ended = Vec::new();
        for id in ids {
            if let Some(f) = self.in_flight.remove(id) {
                if let Some(w) = self.workers.iter_mut().find(|w| w.id == f.worker) {
                    w.reserved_ms = (w.reserved_ms - f.est_exec_ms).max(0.0);
                }
                ended.push(f);
            }
        }
        ended
    }

    /// Long enough for every live worker to heartbeat twice (1 s when none is known yet): a
    /// job a worker took is listed by then.
    pub fn heartbeat_round(&self) -> Duration {
        let longest = self
            .workers
            .iter()
            .map(|w| w.hb.interval_ms.max(50))
            .max()
            .unwrap_or(500);
        Duration::from_millis((longest * 2).min(10_000))
    }

    /// The live worker whose last heartbeat lists `request_id` among its jobs.
    pub fn holder_of(&self, request_id: &str) -> Option<&str> {
        self.workers
            .iter()
            .find(|w| w.hb.jobs.iter().any(|j| j.request_id == request_id))
            .map(|w| w.id.as_str())
    }

    /// Records a measured round trip to a worker.
    pub fn round_trip(&mut self, worker: &str, rtt_ms: f64) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
            w.rtt_ms = Some(w.rtt_ms.map_or(rtt_ms, |r| 0.8 * r + 0.2 * rtt_ms));
        }
        self.rebuild_network();
    }

    /// Keeps a worker out of placements for a while (it refused or missed a dispatch).
    pub fn suspect(&mut self, worker: &str, now: Instant, for_how_long: Duration) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
            w.suspect_until = Some(now + for_how_long);
        }
    }

    /// Removes workers whose heartbeats stopped and returns what they held.
    pub fn sweep_lost(&mut self, now: Instant) -> Vec<Lost> {
        let mut lost = Vec::new();
        let mut i = 0;
        while i < self.workers.len() {
            let w = &self.workers[i];
            let limit =
                Duration::from_millis(w.hb.interval_ms.max(50) * u64::from(self.lost_after));
            if now.duration_since(w.seen) > limit {
                let e = self.workers.remove(i);
                self.states.remove(i);
                tracing::warn!(worker = %e.id, silent_ms = now.duration_since(e.seen).as_millis() as u64, "worker lost");
                let own_ids: Vec<String> = self
                    .in_flight
                    .iter()
                    .filter(|(_, f)| f.worker == e.id)
                    .map(|(id, _)| id.clone())
                    .collect();
                let own: Vec<InFlight> = own_ids
                    .iter()
                    .filter_map(|id| self.in_flight.remove(id))
                    .collect();
                let orphans =
                    e.hb.jobs
                        .iter()
                        .filter(|j| !own_ids.contains(&j.request_id))
                        .cloned()
                        .collect();
                lost.push(Lost {
                    worker: e.id,
                    own,
                    orphans,
                });
                self.index_dirty = true;
            } else {
                i += 1;
            }
        }
        lost
    }

    /// Whether the profile index must be rebuilt (new revision or new workers).
    pub fn index_stale(&self, revision: Option<i64>) -> bool {
        self.index_dirty || revision != self.index_revision
    }

    /// Rebuilds the profile index from a profile snapshot: for each device class, the
    /// configurations its workers have loaded, estimated online when trusted, else offline;
    /// cold-start estimates for the rest.
    pub fn rebuild_index(&mut self, snapshot: Option<&ProfileSnapshot>) {
        let mut loaded: HashMap<u16, HashSet<(ModelId, u8, u32)>> = HashMap::new();
        for w in &self.workers {
            let class = self
                .classes
                .get(&w.hb.status.device_class)
                .copied()
                .unwrap_or(0);
            for l in &w.hb.loaded {
                if let (Some(&m), Some(e)) = (
                    self.models.get(&l.model),
                    ENGINES.iter().position(|&x| x == l.engine),
                ) {
                    loaded
                        .entry(class)
                        .or_default()
                        .insert((m, e as u8, l.threads));
                }
            }
        }
        let mut index = ProfileIndex::new(
            self.class_names.len(),
            self.models.len(),
            self.cold.default_ms,
        );
        let mut worst: HashMap<ModelId, f64> = HashMap::new();
        if let Some(snap) = snapshot {
            for (key, row) in snap.profiles() {
                let (Some(&m), Some(e)) = (
                    self.models.get(&key.model),
                    ENGINES.iter().position(|&x| x == key.engine),
                ) else {
                    continue;
                };
                let per_sample = row.config.p99_ms / f64::from(key.batch.max(1));
                let w = worst.entry(m).or_insert(0.0);
                *w = w.max(per_sample);
                let Some(&class) = self.classes.get(&key.device_class) else {
                    continue;
                };
                if !loaded
                    .get(&class)
                    .is_some_and(|l| l.contains(&(m, e as u8, key.threads)))
                {
                    continue;
                }
                let est = snap.estimate(key, &self.cold);
                index.add(
                    class,
                    m,
                    ConfigOption {
                        engine: e as u8,
                        threads: key.threads,
                        batch: key.batch,
                    },
                    est.exec_ms,
                );
            }
        }
        for (m, w) in worst {
            index.set_cold(m, w * self.cold.factor);
        }
        self.index = index;
        self.index_revision = snapshot.map(|s| s.revision);
        self.index_dirty = false;
    }

    /// Places requests at `now_ms` (Unix ms) with the policy in force, and reserves each
    /// placement's execution on its worker. `exclude` keeps workers out (a re-placement after
    /// a refusal). Each result comes with the best `candidates` pairs the policy weighed.
    pub fn place(
        &mut self,
        now_ms: f64,
        now: Instant,
        metas: &[JobMeta],
        exclude: &[String],
        candidates: usize,
    ) -> Vec<(Result<Placed, Rejection>, Vec<CandidateView>)> {
        for i in 0..self.workers.len() {
            let e = &self.workers[i];
            let hb_left = (e.hb.backlog_ms - ms_since(e.seen, now)).max(0.0);
            let suspect = e.suspect_until.is_some_and(|t| t > now);
            let excluded = exclude.contains(&e.id);
            let backlog = hb_left.max(e.reserved_ms);
            let s = &mut self.states[i];
            s.backlog_ms = backlog;
            s.accepting = !e.hb.draining && !suspect && !excluded;
        }
        let requests: Vec<Option<Request>> = metas
            .iter()
            .map(|m| {
                Some(Request {
                    model: self.model(&m.model)?,
                    samples: m.samples.max(1),
                    payload_bytes: m.payload_bytes,
                    arrival_ms: m.arrival_us as f64 / 1000.0,
                    deadline_ms: m.deadline_us as f64 / 1000.0,
                    ingress: self.sites.get(&m.ingress_site).copied().unwrap_or(0),
                })
            })
            .collect();
        let known: Vec<Request> = requests.iter().flatten().copied().collect();
        let snap = Snapshot {
            workers: &self.states,
            network: &self.network,
            profiles: &self.index,
        };
        let weighed: Vec<Vec<CandidateView>> = requests
            .iter()
            .map(|r| match r {
                Some(req) => self
                    .policy
                    .candidates(now_ms, req, &snap, candidates)
                    .iter()
                    .map(|d| self.view(d))
                    .collect(),
                None => Vec::new(),
            })
            .collect();
        let mut decided = self.policy.place(now_ms, &known, &snap).into_iter();
        let mut out = Vec::with_capacity(metas.len());
        for (r, weighed) in requests.iter().zip(weighed) {
            let result = match r {
                None => Err(Rejection::NoWorker),
                Some(_) => decided.next().unwrap_or(Err(Rejection::NoWorker)),
            };
            let placed = result.map(|d| {
                let e = &mut self.workers[d.worker];
                e.reserved_ms += d.exec_ms;
                Placed {
                    worker: e.id.clone(),
                    token: e.token.clone(),
                    decision: d,
                }
            });
            out.push((placed, weighed));
        }
        out
    }

    /// A decision as decision events show it.
    pub fn view(&self, d: &Decision) -> CandidateView {
        CandidateView {
            worker: self
                .workers
                .get(d.worker)
                .map_or_else(String::new, |w| w.id.clone()),
            engine: self.engine_name(d.config.engine).into(),
            threads: d.config.threads,
            batch: d.config.batch,
            network_ms: d.network_ms,
            wait_ms: d.wait_ms,
            exec_ms: d.exec_ms,
            slack_ms: d.slack_ms,
        }
    }

    /// Releases a reservation that did not turn into a job (the dispatch was refused).
    pub fn release(&mut self, worker: &str, ms: f64) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.id == worker) {
            w.reserved_ms = (w.reserved_ms - ms).max(0.0);
        }
    }

    /// The engine name of a decision.
    pub fn engine_name(&self, engine: u8) -> &'static str {
        ENGINES.get(engine as usize).copied().unwrap_or("ort")
    }

    /// The profile key a decision runs under on a worker (for logs and events).
    pub fn key(&self, worker: &str, model: &str, d: &Decision) -> Option<ProfileKey> {
        let w = self.workers.iter().find(|w| w.id == worker)?;
        Some(ProfileKey {
            device_class: w.hb.status.device_class.clone(),
            engine: self.engine_name(d.config.engine).into(),
            model: model.into(),
            threads: d.config.threads,
            batch: d.config.batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EmulatedLink;

    fn core(network: NetworkConfig) -> Core {
        Core::new(
            PolicyKind::Synergai,
            PolicyConfig::default(),
            network,
            4,
            &["m".to_owned()],
        )
    }

    #[test]
    fn the_serving_overhead_is_planned_on_every_path() {
        let plain = {
            let mut c = core(NetworkConfig {
                bandwidth_mbps: 800.0,
                ..NetworkConfig::default()
            });
            let (a, b) = (c.site_id("a"), c.site_id("b"));
            (
                c.network.cost_ms(a, b, 1_000_000),
                c.network.cost_ms(a, a, 0),
            )
        };
        // 1 MB over 800 Mbit/s: 10 ms; no overhead, no round trip measured.
        assert!((plain.0 - 10.0).abs() < 1e-9, "{plain:?}");
        assert_eq!(plain.1, 0.0);
        let mut c = core(NetworkConfig {
            bandwidth_mbps: 800.0,
            overhead_ms: 3.5,
            emulated: vec![EmulatedLink {
                a: "a".into(),
                b: "c".into(),
                rtt_ms: 20.0,
                bandwidth_mbps: 100.0,
            }],
        });
        let (a, b, cc) = (c.site_id("a"), c.site_id("b"), c.site_id("c"));
        let cost = |from, to, bytes| c.network.cost_ms(from, to, bytes);
        assert!((cost(a, b, 1_000_000) - 13.5).abs() < 1e-9);
        // Within a site the path still costs the overhead.
        assert!((cost(b, b, 0) - 3.5).abs() < 1e-9);
        // An emulated link: overhead + its delay + 1 MB over 100 Mbit/s.
        assert!((cost(a, cc, 1_000_000) - (3.5 + 20.0 + 80.0)).abs() < 1e-9);
    }
}
