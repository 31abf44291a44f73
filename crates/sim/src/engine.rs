//! The event loop: arrivals in time order merged with a heap of scheduled events (deliveries
//! at workers, run completions, retries, window flushes, suspicions ending).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use synergai_policy::{
    Config, Decision, ENGINES, Policy, Rejection, Request, SiteId, Snapshot, WorkerState,
};
use synergai_workload::{Planned, Record};

use crate::dominance::{self, Dominance};
use crate::rng::Rng;
use crate::topology::World;
use crate::{SimConfig, SimOutput, SimStats};

const NONE: u32 = u32::MAX;

/// One request through its life.
#[derive(Debug, Clone)]
struct Job {
    req: Request,
    attempt: u32,
    /// Workers that refused it (kept out of its next placement).
    exclude: Vec<u32>,
    worker: u32,
    config: Config,
    est_ms: f64,
    priority_us: i64,
    /// Reply trip from the worker back to the client, ms.
    back_ms: f64,
    delivered_ms: f64,
    started_ms: Option<f64>,
    exec_ms: Option<f64>,
    /// When the client has the answer; `None`: not answered yet.
    answered_ms: Option<f64>,
    code: u16,
    error: Option<String>,
}

/// A job in a worker's queue: the smallest priority runs first, ties in arrival order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Queued {
    priority_us: i64,
    seq: u64,
    job: u32,
}

impl Ord for Queued {
    fn cmp(&self, other: &Self) -> Ordering {
        // BinaryHeap is a max-heap: reverse.
        other
            .priority_us
            .cmp(&self.priority_us)
            .then(other.seq.cmp(&self.seq))
    }
}

impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Event {
    /// A dispatched job reaches its worker.
    Deliver(u32),
    /// A worker's run ends.
    Done(u32),
    /// A worker's suspicion may end.
    Unsuspect(u32),
    /// A request no worker could take is placed again.
    Retry(u32),
    /// A `slo-mael` window's wait ends (its generation).
    Flush(u64),
    /// A dispatched job reaches the services' host (its path's work before the worker).
    Path(u32),
    /// The next piece of work on a host may end (the host's epoch when scheduled).
    Host(u32, u64),
}

/// Whose work a piece of host work is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkOf {
    /// A worker's run.
    Run(u32),
    /// A job's serving path before its worker.
    PathIn(u32),
    /// A job's serving path after its run.
    PathOut(u32),
    /// The services' work after a job's answer left, which nobody waits for.
    OffPath,
    /// A worker's idle intra-op threads spinning after a run.
    Spin(u32),
}

/// A piece of work on a host's shared cores.
#[derive(Debug, Clone, Copy)]
struct Work {
    of: WorkOf,
    /// What is left of it, ms at full speed.
    left: f64,
    threads: u32,
    cpus: u64,
    /// Progress per ms, set by [`HostRt::rates`].
    rate: f64,
}

/// A shared machine as it runs: processor sharing per core (see "Hosts" in the crate docs).
#[derive(Debug, Clone)]
struct HostRt {
    cores: u32,
    background: f64,
    all: u64,
    updated_ms: f64,
    epoch: u64,
    work: Vec<Work>,
}

impl HostRt {
    /// Brings every piece's progress up to `now`.
    fn advance(&mut self, now: f64) {
        let dt = now - self.updated_ms;
        if dt > 0.0 {
            for w in &mut self.work {
                w.left -= dt * w.rate;
            }
        }
        self.updated_ms = now;
    }

    /// Sets every piece's rate from the cores' loads: a core's load is the background's share
    /// plus, for each piece pinned to it, its threads spread over its cores. A thread on a core
    /// loaded `l` runs at `min(1, 1 / l)`; a single thread moves among its cores (the mean of
    /// their capacity over their load); a run of several threads advances at its slowest
    /// thread's pace (its operators wait for every thread).
    fn rates(&mut self) {
        let mut load = [0.0f64; 64];
        let n = self.cores as usize;
        for l in &mut load[..n] {
            *l = self.background / self.cores as f64;
        }
        for w in &self.work {
            let k = w.cpus.count_ones() as f64;
            let per = w.threads as f64 / k;
            for (c, l) in load[..n].iter_mut().enumerate() {
                if w.cpus & (1 << c) != 0 {
                    *l += per;
                }
            }
        }
        for w in &mut self.work {
            let cores = (0..n).filter(|&c| w.cpus & (1 << c) != 0);
            w.rate = if w.threads >= 2 {
                cores.map(|c| (1.0 / load[c]).min(1.0)).fold(1.0, f64::min)
            } else {
                let (k, total) = cores.fold((0.0, 0.0), |(k, t), c| (k + 1.0, t + load[c]));
                (k / total).min(1.0)
            };
        }
    }

    /// When the next piece ends at the current rates.
    fn next_end(&self) -> Option<f64> {
        self.work
            .iter()
            .map(|w| self.updated_ms + w.left.max(0.0) / w.rate)
            .min_by(f64::total_cmp)
    }
}

#[derive(Debug, Clone, Copy)]
struct Scheduled {
    t: f64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scheduled {}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        other.t.total_cmp(&self.t).then(other.seq.cmp(&self.seq))
    }
}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Clone, Default)]
struct WorkerRt {
    queue: BinaryHeap<Queued>,
    running: Vec<u32>,
    busy: bool,
    in_transit: usize,
    suspect_until: f64,
}

pub(crate) struct Sim<'a> {
    cfg: &'a SimConfig,
    world: World,
    states: Vec<WorkerState>,
    policy: Policy,
    plan: &'a [Planned],
    jobs: Vec<Job>,
    workers: Vec<WorkerRt>,
    events: BinaryHeap<Scheduled>,
    seq: u64,
    noise: Rng,
    window: usize,
    buffer: Vec<u32>,
    generation: u64,
    scratch: Vec<Request>,
    /// The groups behind the reduced snapshot; `None`: every decision sees every worker.
    dominance: Option<Dominance>,
    /// Shared machines (empty: every worker a device of its own).
    hosts: Vec<HostRt>,
    /// What the scheduler assumes of the network, when not the network itself.
    planning: Option<synergai_policy::Network>,
    stats: SimStats,
}

impl<'a> Sim<'a> {
    pub fn new(mut world: World, plan: &'a [Planned], cfg: &'a SimConfig) -> Self {
        let states = std::mem::take(&mut world.states);
        let payload: Vec<u64> = world
            .model_names
            .iter()
            .map(|m| cfg.payload_bytes.get(m).copied().unwrap_or(0))
            .collect();
        let mut ingress_rng = Rng::new(cfg.seed ^ 0x1a2b_3c4d_5e6f_7081);
        let total_weight = world.ingress.last().map_or(1.0, |&(_, w)| w);
        let mut order: Vec<usize> = (0..plan.len()).collect();
        order.sort_by(|&a, &b| plan[a].at_ms.total_cmp(&plan[b].at_ms));
        let mut ingress: Vec<SiteId> = vec![0; plan.len()];
        for &i in &order {
            ingress[i] = if world.ingress.len() == 1 {
                world.ingress[0].0
            } else {
                let u = ingress_rng.unit() * total_weight;
                let k = world
                    .ingress
                    .partition_point(|&(_, cum)| cum <= u)
                    .min(world.ingress.len() - 1);
                world.ingress[k].0
            };
        }
        let jobs = plan
            .iter()
            .zip(&ingress)
            .map(|(p, &ingress)| {
                let model = world.model_ids.get(&p.model).copied().unwrap_or(0);
                let samples = p.samples.max(1);
                Job {
                    req: Request {
                        model,
                        samples,
                        payload_bytes: payload[model as usize] * u64::from(samples),
                        arrival_ms: p.at_ms,
                        deadline_ms: p.at_ms + p.slo_ms,
                        ingress,
                    },
                    attempt: 1,
                    exclude: Vec::new(),
                    worker: NONE,
                    config: Config {
                        engine: 0,
                        threads: 0,
                        batch: 0,
                    },
                    est_ms: 0.0,
                    priority_us: 0,
                    back_ms: 0.0,
                    delivered_ms: 0.0,
                    started_ms: None,
                    exec_ms: None,
                    answered_ms: None,
                    code: 0,
                    error: None,
                }
            })
            .collect();
        let policy = Policy::new(cfg.policy, cfg.policy_config);
        let window = policy.window(states.len()).max(1);
        let dominance = if cfg.dominance {
            Dominance::new(cfg.policy, &states)
        } else {
            None
        };
        let hosts = world
            .hosts
            .iter()
            .map(|h| HostRt {
                cores: h.cores,
                background: h.background_cores,
                all: if h.cores == 64 {
                    u64::MAX
                } else {
                    (1 << h.cores) - 1
                },
                updated_ms: 0.0,
                epoch: 0,
                work: Vec::new(),
            })
            .collect();
        let planning = cfg.planning_path.map(|(overhead_ms, bandwidth_mbps)| {
            let n = world.site_names.len();
            let mut net = synergai_policy::Network::uniform(n, overhead_ms, bandwidth_mbps);
            for s in 0..n {
                net.set(s as SiteId, s as SiteId, overhead_ms, bandwidth_mbps);
            }
            net
        });
        Sim {
            cfg,
            planning,
            workers: vec![WorkerRt::default(); states.len()],
            states,
            world,
            policy,
            plan,
            jobs,
            events: BinaryHeap::new(),
            seq: 0,
            noise: Rng::new(cfg.seed),
            window,
            buffer: Vec::new(),
            generation: 0,
            scratch: Vec::new(),
            hosts,
            dominance,
            stats: SimStats::default(),
        }
    }

    /// Puts a piece of work on host `h` at `now`.
    fn host_start(&mut self, h: u32, now: f64, work: Work) {
        let host = &mut self.hosts[h as usize];
        host.advance(now);
        host.work.push(work);
        self.host_reschedule(h);
    }

    /// Recomputes host `h`'s rates and schedules its next end (older schedules lapse).
    fn host_reschedule(&mut self, h: u32) {
        let host = &mut self.hosts[h as usize];
        host.rates();
        host.epoch += 1;
        let (epoch, end) = (host.epoch, host.next_end());
        if let Some(end) = end {
            self.at(end, Event::Host(h, epoch));
        }
    }

    /// Host `h`'s scheduled end came: the pieces done by now end.
    fn host_due(&mut self, h: u32, epoch: u64, now: f64) {
        let host = &mut self.hosts[h as usize];
        if epoch != host.epoch {
            return;
        }
        host.advance(now);
        // Done: nothing left, up to rounding (of the pieces' sizes and of now).
        let mut done = Vec::new();
        host.work.retain(|w| {
            let end = w.left <= 1e-9 * (1.0 + now.abs());
            if end {
                done.push(w.of);
            }
            !end
        });
        self.host_reschedule(h);
        for of in done {
            match of {
                WorkOf::Run(w) => self.run_done(w as usize, now),
                WorkOf::PathIn(j) => self.deliver(j, now),
                WorkOf::PathOut(j) => {
                    let job = &mut self.jobs[j as usize];
                    job.answered_ms = Some(now + job.back_ms);
                    job.code = 200;
                }
                WorkOf::OffPath | WorkOf::Spin(_) => {}
            }
        }
    }

    /// Keeps the reduced snapshot's groups in step after worker `w`'s `backlog_ms` or
    /// `accepting` changed.
    fn sync(&mut self, w: usize) {
        if let Some(d) = &mut self.dominance {
            d.sync(w, &self.states[w]);
        }
    }

    fn at(&mut self, t: f64, event: Event) {
        self.seq += 1;
        self.events.push(Scheduled {
            t,
            seq: self.seq,
            event,
        });
    }

    pub fn run(mut self) -> SimOutput {
        let mut order: Vec<u32> = (0..self.plan.len() as u32).collect();
        order.sort_by(|&a, &b| {
            self.plan[a as usize]
                .at_ms
                .total_cmp(&self.plan[b as usize].at_ms)
        });
        let mut next = 0;
        loop {
            let arrival = order
                .get(next)
                .map(|&j| (j, self.jobs[j as usize].req.arrival_ms));
            let scheduled = self.events.peek().map(|e| e.t);
            match (arrival, scheduled) {
                (None, None) => break,
                // Events due first (or at the same time: completions free workers before the
                // next decision).
                (Some((_, a)), Some(t)) if t <= a => self.handle_next(),
                (None, Some(_)) => self.handle_next(),
                (Some((j, a)), _) => {
                    next += 1;
                    self.stats.events += 1;
                    self.stats.end_ms = a;
                    self.arrive(j, a);
                }
            }
        }
        self.finish()
    }

    fn handle_next(&mut self) {
        let Some(Scheduled { t, event, .. }) = self.events.pop() else {
            return;
        };
        self.stats.events += 1;
        self.stats.end_ms = t;
        match event {
            Event::Deliver(j) => self.deliver(j, t),
            Event::Done(w) => self.run_done(w as usize, t),
            Event::Path(j) => {
                let sv = self
                    .world
                    .services
                    .expect("a path event needs the services");
                let req = &self.jobs[j as usize].req;
                let left = (sv.per_request_ms / 2.0
                    + sv.per_mb_ms * req.payload_bytes as f64 / 1e6)
                    * self.noise.noise(sv.noise_sigma);
                let all = self.hosts[sv.host as usize].all;
                self.host_start(
                    sv.host,
                    t,
                    Work {
                        of: WorkOf::PathIn(j),
                        left,
                        threads: 1,
                        cpus: all,
                        rate: 1.0,
                    },
                );
            }
            Event::Host(h, epoch) => self.host_due(h, epoch, t),
            Event::Unsuspect(w) => {
                let w = w as usize;
                if t >= self.workers[w].suspect_until {
                    self.states[w].accepting = true;
                    self.sync(w);
                }
            }
            Event::Retry(j) => self.place(t, &[j]),
            Event::Flush(generation) => {
                if generation == self.generation && !self.buffer.is_empty() {
                    self.flush_window(t);
                }
            }
        }
    }

    /// A dispatched job reaches its worker.
    fn deliver(&mut self, j: u32, t: f64) {
        self.seq += 1;
        let seq = self.seq;
        let job = &mut self.jobs[j as usize];
        job.delivered_ms = t;
        let w = job.worker as usize;
        let queued = Queued {
            priority_us: job.priority_us,
            seq,
            job: j,
        };
        let rt = &mut self.workers[w];
        rt.in_transit -= 1;
        rt.queue.push(queued);
        if !rt.busy {
            self.start_next(w, t);
        }
    }

    /// Worker `w`'s run ended at `t`: its jobs are answered (through the path's work after the
    /// run, when modelled) and the next run starts.
    fn run_done(&mut self, w: usize, t: f64) {
        let running = std::mem::take(&mut self.workers[w].running);
        let hosted = self.world.placement[w].is_some();
        if let (Some(p), Some(&j)) = (self.world.placement[w], running.first()) {
            // The run's idle threads spin on its cores for a while.
            let threads = self.jobs[j as usize]
                .config
                .threads
                .min(p.cpus.count_ones());
            if p.spin_ms > 0.0 && threads >= 2 {
                self.host_start(
                    p.host,
                    t,
                    Work {
                        of: WorkOf::Spin(w as u32),
                        left: p.spin_ms,
                        threads: threads - 1,
                        cpus: p.cpus,
                        rate: 1.0,
                    },
                );
            }
        }
        for &j in &running {
            let job = &mut self.jobs[j as usize];
            if hosted {
                job.exec_ms = job.started_ms.map(|s| t - s);
            }
            let est = job.est_ms;
            match self.world.services {
                Some(sv) => {
                    let all = self.hosts[sv.host as usize].all;
                    let left = sv.per_request_ms / 2.0 * self.noise.noise(sv.noise_sigma);
                    self.host_start(
                        sv.host,
                        t,
                        Work {
                            of: WorkOf::PathOut(j),
                            left,
                            threads: 1,
                            cpus: all,
                            rate: 1.0,
                        },
                    );
                    let mb = self.jobs[j as usize].req.payload_bytes as f64 / 1e6;
                    let off = sv.off_path_ms + sv.off_path_per_mb_ms * mb;
                    if off > 0.0 {
                        self.host_start(
                            sv.host,
                            t,
                            Work {
                                of: WorkOf::OffPath,
                                left: off,
                                threads: 1,
                                cpus: all,
                                rate: 1.0,
                            },
                        );
                    }
                }
                None => {
                    job.answered_ms = Some(t + job.back_ms);
                    job.code = 200;
                }
            }
            self.release(w, est);
        }
        self.workers[w].running = running;
        self.workers[w].running.clear();
        self.workers[w].busy = false;
        self.start_next(w, t);
    }

    fn arrive(&mut self, j: u32, now: f64) {
        if self.window <= 1 {
            self.place(now, &[j]);
            return;
        }
        // slo-mael: the live scheduler takes the first request, then waits up to
        // `slo_mael_wait_ms` for more until the window is full.
        self.buffer.push(j);
        if self.buffer.len() >= self.window {
            self.flush_window(now);
        } else if self.buffer.len() == 1 {
            let generation = self.generation;
            self.at(now + self.cfg.slo_mael_wait_ms, Event::Flush(generation));
        }
    }

    fn flush_window(&mut self, now: f64) {
        let batch = std::mem::take(&mut self.buffer);
        self.generation += 1;
        self.place(now, &batch);
        self.buffer = batch;
        self.buffer.clear();
    }

    /// Places jobs at `now`, as the live scheduler's `place_and_dispatch`.
    fn place(&mut self, now: f64, js: &[u32]) {
        // A re-placement after refusals keeps the refusing workers out.
        let excluded: Vec<u32> = match js {
            [j] => self.jobs[*j as usize].exclude.clone(),
            _ => Vec::new(),
        };
        for &w in &excluded {
            self.states[w as usize].accepting = false;
            self.sync(w as usize);
        }
        let mut requests = std::mem::take(&mut self.scratch);
        requests.clear();
        requests.extend(js.iter().map(|&j| self.jobs[j as usize].req));
        let snap = Snapshot {
            workers: &self.states,
            network: self.planning.as_ref().unwrap_or(&self.world.network),
            profiles: &self.world.index,
        };
        // One request at a time (every policy but `slo-mael`): the reduced snapshot decides
        // the same.
        let reduced = match (&mut self.dominance, requests.as_slice()) {
            (Some(d), [req]) => d.reduce(now, req, &self.states, snap.network, snap.profiles),
            _ => None,
        };
        let results = match reduced {
            Some((workers, picked)) => {
                let snap = Snapshot { workers, ..snap };
                self.policy
                    .place(now, &requests, &snap)
                    .into_iter()
                    .map(|r| dominance::translate(r, picked))
                    .collect()
            }
            None => self.policy.place(now, &requests, &snap),
        };
        self.scratch = requests;
        for &w in &excluded {
            let w = w as usize;
            self.states[w].accepting = self.workers[w].suspect_until <= now;
            self.sync(w);
        }
        self.stats.decisions += js.len() as u64;
        for (&j, result) in js.iter().zip(results) {
            match result {
                Ok(d) => self.dispatch(now, j, d),
                Err(Rejection::NoWorker)
                    if now + self.cfg.no_worker_retry_ms
                        < self.jobs[j as usize].req.deadline_ms =>
                {
                    // No worker serves the model right now: wait while the deadline allows.
                    self.at(now + self.cfg.no_worker_retry_ms, Event::Retry(j));
                }
                Err(r) => {
                    let code = match r {
                        Rejection::NoWorker => 503,
                        Rejection::Hopeless { .. } => 504,
                    };
                    let model = &self.plan[j as usize].model;
                    self.reject(j, now, code, format!("{r} ({model})"));
                }
            }
        }
    }

    fn reject(&mut self, j: u32, now: f64, code: u16, error: String) {
        self.stats.rejected += 1;
        let job = &mut self.jobs[j as usize];
        job.answered_ms = Some(now);
        job.code = code;
        job.error = Some(error);
    }

    fn dispatch(&mut self, now: f64, j: u32, d: Decision) {
        let w = d.worker;
        if let Some(cap) = self.cfg.max_queue
            && self.workers[w].queue.len() + self.workers[w].in_transit >= cap
        {
            // The worker refuses: the scheduler suspects it for a while and places the job
            // again elsewhere, up to its attempts.
            self.stats.refused += 1;
            self.workers[w].suspect_until = now + self.cfg.suspect_ms;
            self.states[w].accepting = false;
            self.sync(w);
            self.at(now + self.cfg.suspect_ms, Event::Unsuspect(w as u32));
            let job = &mut self.jobs[j as usize];
            job.exclude.push(w as u32);
            if job.attempt >= self.cfg.max_attempts {
                let attempt = job.attempt;
                self.reject(
                    j,
                    now,
                    503,
                    format!(
                        "no worker took the job after {attempt} attempts: queue full ({cap} jobs)"
                    ),
                );
            } else {
                job.attempt += 1;
                self.place(now, &[j]);
            }
            return;
        }
        self.stats.placed += 1;
        let s = &mut self.states[w];
        s.backlog_ms += d.exec_ms;
        s.in_flight += 1;
        let site = s.site;
        self.sync(w);
        let job = &mut self.jobs[j as usize];
        let net = &self.world.network;
        let rtt = net.cost_ms(job.req.ingress, site, 0);
        let total = net.cost_ms(job.req.ingress, site, job.req.payload_bytes);
        // Half the round trip and the payload on the way there, half the round trip back.
        job.back_ms = rtt / 2.0;
        let up = total - job.back_ms;
        job.worker = w as u32;
        job.config = d.config;
        job.est_ms = d.exec_ms;
        job.priority_us = (d.priority_ms * 1000.0) as i64;
        self.workers[w].in_transit += 1;
        let next = if self.world.services.is_some() {
            Event::Path(j)
        } else {
            Event::Deliver(j)
        };
        self.at(now + up, next);
    }

    /// A job left the worker: its reservation is released.
    fn release(&mut self, w: usize, est_ms: f64) {
        let s = &mut self.states[w];
        s.in_flight = s.in_flight.saturating_sub(1);
        s.backlog_ms = if s.in_flight == 0 {
            0.0
        } else {
            (s.backlog_ms - est_ms).max(0.0)
        };
        self.sync(w);
    }

    /// Starts the worker's next run, as the live executor: the most urgent job, merged with
    /// queued jobs when batching pays; jobs past their deadline are answered 504 unrun.
    fn start_next(&mut self, w: usize, now: f64) {
        let mut group = std::mem::take(&mut self.workers[w].running);
        loop {
            group.clear();
            let Some(head) = self.workers[w].queue.pop() else {
                self.workers[w].busy = false;
                self.workers[w].running = group;
                return;
            };
            group.push(head.job);
            let mut merged_ms = None;
            if self.cfg.batching {
                merged_ms = self.merge(w, now, &mut group);
            }
            let mut live = 0;
            for k in 0..group.len() {
                let j = group[k];
                let job = &mut self.jobs[j as usize];
                if self.cfg.drop_expired && now > job.req.deadline_ms {
                    job.answered_ms = Some(now + job.back_ms);
                    job.code = 504;
                    job.started_ms = Some(now);
                    job.error = Some("deadline passed before the job could start".to_owned());
                    let est = job.est_ms;
                    self.stats.expired += 1;
                    self.release(w, est);
                } else {
                    group[live] = j;
                    live += 1;
                }
            }
            group.truncate(live);
            if group.is_empty() {
                continue;
            }
            let base = match merged_ms {
                Some(ms) if group.len() > 1 => {
                    self.stats.merged_runs += 1;
                    ms
                }
                _ => self.jobs[group[0] as usize].est_ms,
            };
            let head = &self.jobs[group[0] as usize];
            let samples: u32 = group
                .iter()
                .map(|&j| self.jobs[j as usize].req.samples)
                .sum();
            let batch = if group.len() > 1 {
                samples
            } else {
                head.config.batch
            };
            let key = (
                self.states[w].class,
                head.req.model,
                head.config.engine,
                head.config.threads,
                batch,
            );
            let work = if self.world.work_ratio.is_empty() {
                1.0
            } else {
                self.world.work_ratio.get(&key).copied().unwrap_or(1.0)
            };
            let threads = head.config.threads.max(1);
            let exec = base * work * self.noise.noise(self.cfg.noise_sigma);
            for &j in &group {
                let job = &mut self.jobs[j as usize];
                job.started_ms = Some(now);
                job.exec_ms = Some(exec);
            }
            self.workers[w].running = group;
            self.workers[w].busy = true;
            match self.world.placement[w] {
                // On a shared host the run takes as long as its cores allow; threads spinning
                // after the last run take this one's work instead.
                Some(p) => {
                    let host = &mut self.hosts[p.host as usize];
                    host.advance(now);
                    host.work.retain(|x| x.of != WorkOf::Spin(w as u32));
                    self.host_start(
                        p.host,
                        now,
                        Work {
                            of: WorkOf::Run(w as u32),
                            left: exec,
                            threads: threads.min(p.cpus.count_ones()),
                            cpus: p.cpus,
                            rate: 1.0,
                        },
                    )
                }
                None => self.at(now + exec, Event::Done(w as u32)),
            }
            return;
        }
    }

    /// Adds to `group` (holding the head) the queued jobs the live executor would merge with
    /// it, most urgent first; returns the merged run's profiled time when any joined.
    fn merge(&mut self, w: usize, now: f64, group: &mut Vec<u32>) -> Option<f64> {
        let head = &self.jobs[group[0] as usize];
        if head.req.samples > head.config.batch || self.workers[w].queue.is_empty() {
            return None;
        }
        let (model, config) = (head.req.model, head.config);
        let jobs = &self.jobs;
        let mut candidates: Vec<Queued> = self.workers[w]
            .queue
            .iter()
            .filter(|q| {
                let c = &jobs[q.job as usize];
                c.req.model == model
                    && c.config.engine == config.engine
                    && c.config.threads == config.threads
                    && c.req.samples <= c.config.batch
            })
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_by(|a, b| b.cmp(a));
        let class = self.states[w].class;
        let mut total = head.req.samples;
        let mut separate = head.est_ms;
        let mut earliest_deadline = head.req.deadline_ms;
        let mut merged = None;
        for q in candidates {
            let c = &self.jobs[q.job as usize];
            let samples = total + c.req.samples;
            if samples > self.cfg.max_batch {
                continue;
            }
            let Some(&ms) =
                self.world
                    .exact
                    .get(&(class, model, config.engine, config.threads, samples))
            else {
                continue;
            };
            let deadline = earliest_deadline.min(c.req.deadline_ms);
            if ms < separate + c.est_ms && now + ms <= deadline {
                total = samples;
                separate += c.est_ms;
                earliest_deadline = deadline;
                merged = Some(ms);
                group.push(q.job);
            }
        }
        if group.len() > 1 {
            let picked = &group[1..];
            self.workers[w].queue.retain(|q| !picked.contains(&q.job));
        }
        merged
    }

    fn finish(self) -> SimOutput {
        let policy = self.policy.kind().as_str();
        let w = &self.world;
        let records = self
            .plan
            .iter()
            .zip(&self.jobs)
            .map(|(p, job)| {
                let ran = job.worker != NONE && job.started_ms.is_some();
                let worker = ran.then_some(job.worker as usize);
                let state = worker.map(|i| &self.states[i]);
                let latency = job.answered_ms.map(|t| t - p.at_ms);
                Record {
                    seq: p.seq,
                    model: p.model.clone(),
                    planned_ms: p.at_ms,
                    sent_ms: p.at_ms,
                    slo_ms: p.slo_ms,
                    latency_ms: latency,
                    code: job.code,
                    error: job.error.clone(),
                    request_id: None,
                    site: state.map(|s| w.site_names[s.site as usize].clone()),
                    worker: worker.map(|i| w.worker_names[i].clone()),
                    device_class: state.map(|s| w.class_names[s.class as usize].clone()),
                    engine: ran.then(|| {
                        ENGINES
                            .get(job.config.engine as usize)
                            .copied()
                            .unwrap_or("ort")
                            .to_owned()
                    }),
                    threads: ran.then_some(job.config.threads),
                    batch: ran.then_some(job.config.batch),
                    queue_ms: job.started_ms.map(|s| s - job.delivered_ms),
                    exec_ms: job.exec_ms,
                    total_ms: latency,
                    policy: Some(policy.to_owned()),
                    duplicates: 0,
                }
            })
            .collect();
        SimOutput {
            records,
            stats: self.stats,
        }
    }
}
