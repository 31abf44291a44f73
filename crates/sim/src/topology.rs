//! What the simulated deployment is made of: sites, the network between them, worker groups,
//! where requests enter, and the profile points the scheduler reads.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};
use synergai_policy::{
    ClassId, ENGINES, EngineId, ModelId, ModelSet, NamedPoint, Network, ProfileIndex, SiteId, Tier,
    WorkerState,
};

use synergai_workload::Mix;

use crate::SimError;

/// A deployment: sites, network, workers, ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Topology {
    /// Sites.
    pub sites: Vec<SiteSpec>,
    /// The network between sites.
    #[serde(default)]
    pub network: NetworkSpec,
    /// Worker groups.
    pub workers: Vec<WorkerGroup>,
    /// Where requests enter; absent: the first edge site, else the first site.
    #[serde(default)]
    pub ingress: Option<Ingress>,
    /// Machines whose cores several workers (and the services) share; absent: every worker is
    /// a device of its own.
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
    /// The CPU the serving path (client, intake, scheduler, bus) spends per request on a host;
    /// absent: the path costs only the network's time.
    #[serde(default)]
    pub services: Option<ServiceSpec>,
}

/// A machine with cores shared by the workers placed on it (see "Hosts" in the crate docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Name, referred to by worker groups and the services.
    pub name: String,
    /// Cores.
    pub cores: u32,
    /// Cores' worth of CPU taken all the time by what the simulation does not model otherwise
    /// (heartbeats, telemetry, the database), spread over every core.
    #[serde(default)]
    pub background_cores: f64,
}

/// The services' CPU cost per request, run on a host's shared cores as single-threaded pieces
/// of work. On the request's path: a part before the job reaches its worker
/// (`per_request_ms / 2` and `per_mb_ms` per megabyte of input) and a part after its run
/// (`per_request_ms / 2`). Off the path, from the moment the answer leaves: work nobody waits
/// for (telemetry, persistence: `off_path_ms` and `off_path_per_mb_ms` per megabyte).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The host the services run on.
    pub host: String,
    /// CPU per request on its path, ms.
    pub per_request_ms: f64,
    /// CPU per megabyte (10⁶ bytes) of input on the request's path, ms.
    #[serde(default)]
    pub per_mb_ms: f64,
    /// CPU per request off its path, ms.
    #[serde(default)]
    pub off_path_ms: f64,
    /// CPU per megabyte of input off the request's path, ms.
    #[serde(default)]
    pub off_path_per_mb_ms: f64,
    /// Log-standard-deviation of a lognormal factor (mean 1) drawn for each piece of on-path
    /// work (seeded); 0: every request's path costs the same.
    #[serde(default)]
    pub noise_sigma: f64,
}

/// A site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteSpec {
    /// Name.
    pub name: String,
    /// Tier.
    pub tier: TierSpec,
}

/// The tier of a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TierSpec {
    /// Close to the requests.
    Edge,
    /// A data centre.
    Cloud,
}

/// Round trip and bandwidth of a link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// Round trip, ms.
    pub rtt_ms: f64,
    /// Bandwidth, Mbit/s (0: transfers take no time).
    pub bandwidth_mbps: f64,
    /// Whether the figures are emulated (configured) rather than measured.
    #[serde(default)]
    pub emulated: bool,
}

impl Default for LinkSpec {
    fn default() -> Self {
        // The live scheduler's defaults: no added delay, 10 Gbit/s.
        LinkSpec {
            rtt_ms: 0.0,
            bandwidth_mbps: 10_000.0,
            emulated: false,
        }
    }
}

/// The link between two sites (both directions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteLink {
    /// One site.
    pub a: String,
    /// The other.
    pub b: String,
    /// The link.
    #[serde(flatten)]
    pub link: LinkSpec,
}

/// The network: a default link between different sites (within a site: no round trip, the
/// default bandwidth) and links between pairs that differ from it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkSpec {
    /// Between sites no link names.
    #[serde(default)]
    pub default: LinkSpec,
    /// Per pair of sites.
    #[serde(default)]
    pub links: Vec<SiteLink>,
}

/// A group of identical workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerGroup {
    /// Site.
    pub site: String,
    /// Device class (the key of its profiles).
    pub device_class: String,
    /// Workers in the group.
    #[serde(default = "one")]
    pub count: u32,
    /// Cores each may use (the most intra-op threads).
    pub cores: u32,
    /// Models served; absent: every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Intra-op thread counts the workers keep sessions for; absent: 1 and `cores`, as a live
    /// worker does by default. Profiles of other thread counts are not used for this class.
    #[serde(default)]
    pub threads: Option<Vec<u32>>,
    /// The host whose cores the workers share; absent: each worker is a device of its own.
    #[serde(default)]
    pub host: Option<String>,
    /// The host's cores each worker is pinned to (at least `cores` of them); absent: the
    /// host's first `cores`.
    #[serde(default)]
    pub cpus: Option<Vec<u32>>,
    /// On a host: how long, ms, the idle threads of a multi-threaded run keep spinning on the
    /// worker's cores after it (ONNX Runtime's default), unless the worker's next run starts
    /// first; 0: they sleep at once.
    #[serde(default)]
    pub spin_ms: f64,
}

fn one() -> u32 {
    1
}

/// Where requests enter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ingress {
    /// One site.
    Site(String),
    /// Sites with weights: each request enters at one drawn by weight (seeded).
    Weighted(Vec<WeightedSite>),
}

/// A site with a weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedSite {
    /// Site.
    pub site: String,
    /// Weight (relative).
    #[serde(default = "unit")]
    pub weight: f64,
}

fn unit() -> f64 {
    1.0
}

/// One profiled configuration: the execution time of one run (one batch). Deserialises from the
/// profiling store's points (`mean_ms` is taken as the run time, `p99_ms` as its slow case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfilePoint {
    /// Device class.
    pub device_class: String,
    /// Engine (`ort`, `tract`).
    pub engine: String,
    /// Model.
    pub model: String,
    /// Intra-op threads.
    pub threads: u32,
    /// Samples per run.
    pub batch: u32,
    /// Time of one run, ms.
    #[serde(alias = "mean_ms")]
    pub latency_ms: f64,
    /// Slow case of one run, ms (for the cold-start rule); absent: `latency_ms`.
    #[serde(default)]
    pub p99_ms: Option<f64>,
}

/// The live scheduler's cold-start rule for configurations never profiled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdRule {
    /// Safety factor over the slowest per-sample time known for the model.
    pub factor: f64,
    /// Per-sample time of a model with no profile at all, ms.
    pub default_ms: f64,
}

impl Default for ColdRule {
    fn default() -> Self {
        ColdRule {
            factor: 2.0,
            default_ms: 1000.0,
        }
    }
}

impl Topology {
    /// Labels of the emulated parts of the network, for a report.
    pub fn emulated(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.network.default.emulated {
            out.push("network: default link".to_owned());
        }
        for l in &self.network.links {
            if l.link.emulated {
                out.push(format!("network: {} <-> {}", l.a, l.b));
            }
        }
        out
    }

    /// Workers in all groups.
    pub fn worker_count(&self) -> usize {
        self.workers.iter().map(|g| g.count as usize).sum()
    }
}

/// The deployment resolved to ids: what the simulator runs and the policy reads.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub site_names: Vec<String>,
    pub class_names: Vec<String>,
    pub model_names: Vec<String>,
    pub model_ids: HashMap<String, ModelId>,
    /// The snapshot's workers as they start (idle).
    pub states: Vec<WorkerState>,
    pub worker_names: Vec<String>,
    pub network: Network,
    pub index: ProfileIndex,
    /// Run time of each profiled (class, model, engine, threads, batch), for merged runs.
    pub exact: HashMap<(ClassId, ModelId, EngineId, u32, u32), f64>,
    /// Per profiled configuration, the work of a run over the scheduler's estimate of it, where
    /// they differ (see [`crate::SimConfig::work`]); absent: 1.
    pub work_ratio: HashMap<(ClassId, ModelId, EngineId, u32, u32), f64>,
    /// Ingress sites and cumulative weights.
    pub ingress: Vec<(SiteId, f64)>,
    /// Shared machines.
    pub hosts: Vec<Host>,
    /// Per worker: its host and the cores it is pinned to; `None`: a device of its own.
    pub placement: Vec<Option<Pinned>>,
    /// The serving path's CPU, when modelled.
    pub services: Option<Services>,
}

/// A shared machine, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Host {
    pub cores: u32,
    pub background_cores: f64,
}

/// A worker's place on a host.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Pinned {
    pub host: u32,
    /// Bit `i`: the worker may run on the host's core `i`.
    pub cpus: u64,
    /// How long a multi-threaded run's idle threads spin after it, ms.
    pub spin_ms: f64,
}

/// The serving path's CPU, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Services {
    pub host: u32,
    pub per_request_ms: f64,
    pub per_mb_ms: f64,
    pub off_path_ms: f64,
    pub off_path_per_mb_ms: f64,
    pub noise_sigma: f64,
}

impl World {
    /// Sets the runs' work from `work`, points of the same configurations as the scheduler's:
    /// a run of a configuration in both takes `work / estimate` times the estimate.
    pub fn set_work(&mut self, work: &[ProfilePoint]) {
        for p in work {
            let class = self.class_names.iter().position(|c| *c == p.device_class);
            let engine = ENGINES.iter().position(|&e| e == p.engine);
            if let (Some(c), Some(e), Some(&m)) = (class, engine, self.model_ids.get(&p.model)) {
                let key = (c as ClassId, m, e as EngineId, p.threads, p.batch);
                if let Some(&est) = self.exact.get(&key)
                    && est > 0.0
                    && p.latency_ms.is_finite()
                    && p.latency_ms >= 0.0
                {
                    self.work_ratio.insert(key, p.latency_ms / est);
                }
            }
        }
    }

    /// Resolves names; `extra_models` are further model names to know (the workload's).
    pub fn build<'a>(
        topology: &Topology,
        profiles: &[ProfilePoint],
        extra_models: impl IntoIterator<Item = &'a str>,
        cold: ColdRule,
    ) -> Result<World, SimError> {
        if topology.sites.is_empty() {
            return Err(SimError::new("the topology has no site"));
        }
        let mut sites: HashMap<&str, SiteId> = HashMap::new();
        for (i, s) in topology.sites.iter().enumerate() {
            if sites.insert(s.name.as_str(), i as SiteId).is_some() {
                return Err(SimError::new(format!("site {:?} named twice", s.name)));
            }
        }
        let site = |name: &str, what: &str| {
            sites
                .get(name)
                .copied()
                .ok_or_else(|| SimError::new(format!("{what} names unknown site {name:?}")))
        };
        // Models: every name anywhere, sorted (the catalogue order stand-in).
        let mut names: BTreeSet<String> = BTreeSet::new();
        names.extend(profiles.iter().map(|p| p.model.clone()));
        for m in extra_models {
            if !names.contains(m) {
                names.insert(m.to_owned());
            }
        }
        for g in &topology.workers {
            names.extend(g.models.iter().flatten().cloned());
        }
        if names.len() > 128 {
            return Err(SimError::new(format!(
                "{} models: at most 128 are supported",
                names.len()
            )));
        }
        let model_names: Vec<String> = names.into_iter().collect();
        let model_ids: HashMap<String, ModelId> = model_names
            .iter()
            .enumerate()
            .map(|(i, m)| (m.clone(), i as ModelId))
            .collect();

        let n_sites = topology.sites.len();
        let d = topology.network.default;
        let mut network = Network::uniform(n_sites, d.rtt_ms, d.bandwidth_mbps);
        for l in &topology.network.links {
            let (a, b) = (site(&l.a, "a link")?, site(&l.b, "a link")?);
            network.set(a, b, l.link.rtt_ms, l.link.bandwidth_mbps);
        }

        let mut host_ids: HashMap<&str, u32> = HashMap::new();
        let mut hosts = Vec::new();
        for h in &topology.hosts {
            if !(1..=64).contains(&h.cores) {
                return Err(SimError::new(format!(
                    "host {:?}: cores must be 1 to 64, not {}",
                    h.name, h.cores
                )));
            }
            if !(h.background_cores.is_finite() && h.background_cores >= 0.0) {
                return Err(SimError::new(format!(
                    "host {:?}: background_cores must be zero or more",
                    h.name
                )));
            }
            if host_ids
                .insert(h.name.as_str(), hosts.len() as u32)
                .is_some()
            {
                return Err(SimError::new(format!("host {:?} named twice", h.name)));
            }
            hosts.push(Host {
                cores: h.cores,
                background_cores: h.background_cores,
            });
        }
        let host = |name: &str, what: &str| {
            host_ids
                .get(name)
                .copied()
                .ok_or_else(|| SimError::new(format!("{what} names unknown host {name:?}")))
        };
        let services = match &topology.services {
            None => None,
            Some(sv) => {
                let costs = [
                    sv.per_request_ms,
                    sv.per_mb_ms,
                    sv.off_path_ms,
                    sv.off_path_per_mb_ms,
                    sv.noise_sigma,
                ];
                if !costs.iter().all(|c| c.is_finite() && *c >= 0.0) {
                    return Err(SimError::new("services: every cost must be zero or more"));
                }
                Some(Services {
                    host: host(&sv.host, "the services")?,
                    per_request_ms: sv.per_request_ms,
                    per_mb_ms: sv.per_mb_ms,
                    off_path_ms: sv.off_path_ms,
                    off_path_per_mb_ms: sv.off_path_per_mb_ms,
                    noise_sigma: sv.noise_sigma,
                })
            }
        };
        let mut placement = Vec::new();

        let mut class_names: Vec<String> = Vec::new();
        let mut states = Vec::new();
        let mut worker_names = Vec::new();
        let mut per_name: HashMap<(SiteId, ClassId), u32> = HashMap::new();
        // (class, model, engine, threads) loaded by some worker of the class.
        let mut loaded: BTreeSet<(ClassId, ModelId, EngineId, u32)> = BTreeSet::new();
        for g in &topology.workers {
            let s = site(&g.site, "a worker group")?;
            if g.cores == 0 {
                return Err(SimError::new(format!(
                    "worker group {}/{} has no cores",
                    g.site, g.device_class
                )));
            }
            let class = match class_names.iter().position(|c| *c == g.device_class) {
                Some(c) => c as ClassId,
                None => {
                    class_names.push(g.device_class.clone());
                    (class_names.len() - 1) as ClassId
                }
            };
            let served: Vec<ModelId> = match &g.models {
                Some(list) => list
                    .iter()
                    .filter_map(|m| model_ids.get(m).copied())
                    .collect(),
                None => (0..model_names.len() as ModelId).collect(),
            };
            let models = served
                .iter()
                .fold(ModelSet::default(), |set, &m| set.with(m));
            let threads: Vec<u32> = g
                .threads
                .clone()
                .unwrap_or_else(|| vec![1, g.cores])
                .into_iter()
                .filter(|&t| t >= 1 && t <= g.cores)
                .collect();
            for &m in &served {
                for e in 0..ENGINES.len() as EngineId {
                    for &t in &threads {
                        loaded.insert((class, m, e, t));
                    }
                }
            }
            let tier = match topology.sites[s as usize].tier {
                TierSpec::Edge => Tier::Edge,
                TierSpec::Cloud => Tier::Cloud,
            };
            let what = format!("worker group {}/{}", g.site, g.device_class);
            let pinned = match (&g.host, &g.cpus) {
                (None, Some(_)) => {
                    return Err(SimError::new(format!("{what}: cpus without a host")));
                }
                (None, None) if g.spin_ms != 0.0 => {
                    return Err(SimError::new(format!("{what}: spin_ms without a host")));
                }
                (None, None) => None,
                (Some(h), cpus) => {
                    let id = host(h, &what)?;
                    let cores = hosts[id as usize].cores;
                    let list: Vec<u32> = cpus.clone().unwrap_or_else(|| (0..g.cores).collect());
                    let mut mask = 0u64;
                    for &c in &list {
                        if c >= cores {
                            return Err(SimError::new(format!(
                                "{what}: cpu {c} is not on host {h:?} ({cores} cores)"
                            )));
                        }
                        mask |= 1 << c;
                    }
                    if mask.count_ones() < g.cores {
                        return Err(SimError::new(format!(
                            "{what}: {} cores but pinned to {} cpus",
                            g.cores,
                            mask.count_ones()
                        )));
                    }
                    if !(g.spin_ms.is_finite() && g.spin_ms >= 0.0) {
                        return Err(SimError::new(format!(
                            "{what}: spin_ms must be zero or more"
                        )));
                    }
                    Some(Pinned {
                        host: id,
                        cpus: mask,
                        spin_ms: g.spin_ms,
                    })
                }
            };
            for _ in 0..g.count {
                placement.push(pinned);
                let n = per_name.entry((s, class)).or_insert(0);
                worker_names.push(format!("{}-{}-{}", g.site, g.device_class, n));
                *n += 1;
                states.push(WorkerState {
                    site: s,
                    tier,
                    class,
                    max_threads: g.cores,
                    backlog_ms: 0.0,
                    in_flight: 0,
                    models,
                    accepting: true,
                });
            }
        }

        let points = profiles.iter().map(|p| NamedPoint {
            device_class: &p.device_class,
            engine: &p.engine,
            model: &p.model,
            threads: p.threads,
            batch: p.batch,
            exec_ms: p.latency_ms,
            slow_ms: p.p99_ms.unwrap_or(p.latency_ms),
        });
        let index = ProfileIndex::from_points(
            &class_names,
            &model_names,
            points,
            |c, m, e, t| loaded.contains(&(c, m, e, t)),
            cold.factor,
            cold.default_ms,
        );
        let mut exact = HashMap::new();
        for p in profiles {
            let class = class_names.iter().position(|c| *c == p.device_class);
            let engine = ENGINES.iter().position(|&e| e == p.engine);
            if let (Some(c), Some(e), Some(&m)) = (class, engine, model_ids.get(&p.model))
                && p.latency_ms.is_finite()
                && p.latency_ms >= 0.0
            {
                exact.insert(
                    (c as ClassId, m, e as EngineId, p.threads, p.batch),
                    p.latency_ms,
                );
            }
        }

        let work_ratio = HashMap::new();

        let ingress = match &topology.ingress {
            Some(Ingress::Site(s)) => vec![(site(s, "the ingress")?, 1.0)],
            Some(Ingress::Weighted(list)) => {
                let mut acc = 0.0;
                let mut out = Vec::new();
                for w in list {
                    if !(w.weight.is_finite() && w.weight >= 0.0) {
                        return Err(SimError::new(format!(
                            "ingress {:?}: weight must be zero or more",
                            w.site
                        )));
                    }
                    acc += w.weight;
                    out.push((site(&w.site, "the ingress")?, acc));
                }
                if acc <= 0.0 {
                    return Err(SimError::new("ingress weights sum to zero"));
                }
                out
            }
            None => {
                let first_edge = topology
                    .sites
                    .iter()
                    .position(|s| s.tier == TierSpec::Edge)
                    .unwrap_or(0);
                vec![(first_edge as SiteId, 1.0)]
            }
        };

        Ok(World {
            site_names: topology.sites.iter().map(|s| s.name.clone()).collect(),
            class_names,
            model_names,
            model_ids,
            states,
            worker_names,
            network,
            index,
            exact,
            work_ratio,
            ingress,
            hosts,
            placement,
            services,
        })
    }
}

/// The throughput (requests per second) the profiles predict for the cluster under a model
/// mix: the sum over workers of 1 / (the mix-weighted mean of the fastest execution time of
/// each model it serves for `samples` samples), weights renormalised over the models a worker
/// serves. A bound that assumes the mix can be spread freely and queues never idle.
pub fn capacity_rps(
    topology: &Topology,
    profiles: &[ProfilePoint],
    mix: &Mix,
    samples: u32,
) -> Result<f64, SimError> {
    let world = World::build(
        topology,
        profiles,
        mix.models.iter().map(|(m, _)| m.as_str()),
        ColdRule::default(),
    )?;
    let mix: Vec<(ModelId, f64)> = mix
        .models
        .iter()
        .filter(|(_, w)| *w > 0.0)
        .filter_map(|(m, w)| world.model_ids.get(m).map(|&id| (id, *w)))
        .collect();
    let mut total = 0.0;
    // Workers of one (class, cores, models) share a figure.
    let mut memo: HashMap<(ClassId, u32, u128), f64> = HashMap::new();
    for s in &world.states {
        let rps = *memo
            .entry((s.class, s.max_threads, s.models.0))
            .or_insert_with(|| {
                let (mut weight, mut ms) = (0.0, 0.0);
                for &(m, w) in &mix {
                    if s.models.contains(m) {
                        weight += w;
                        ms += w * world.index.fastest(s.class, m, samples, s.max_threads).1;
                    }
                }
                if weight > 0.0 && ms > 0.0 {
                    1000.0 * weight / ms
                } else {
                    0.0
                }
            });
        total += rps;
    }
    Ok(total)
}
