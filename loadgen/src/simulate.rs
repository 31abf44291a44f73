//! The simulator's front end: topology and profile files, the same workload options as a live
//! run, and the same reports and comparison.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use synergai_contract::catalog::Catalog;
use synergai_contract::store::ProfileTable;
use synergai_sim::{PolicyKind, ProfilePoint, SimConfig, Topology};
use synergai_workload::report::RunInfo;
use synergai_workload::{Planned, Record, Report, Workload};

use crate::compare::at_load;
use crate::output::{Comparison, Latencies};

/// Profiles for the simulator, and what in them is not measured here.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    /// Points: what the scheduler reads.
    pub points: Vec<ProfilePoint>,
    /// The offline (uncontended) points: the same as `points` unless online estimates replaced
    /// some. Latency targets are multiples of these, as in a live run.
    pub offline: Vec<ProfilePoint>,
    /// Labels of derived (emulated) profiles, for the reports.
    pub emulated: Vec<String>,
}

/// A profile file written by hand or by a derivation: points plus what they stand for.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    /// Where the figures come from.
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    /// Labels of emulated parts (device classes whose profiles are derived, not measured).
    #[serde(default)]
    emulated: Vec<String>,
    points: Vec<ProfilePoint>,
}

impl Profiles {
    /// Reads the store's profile table (as `synergai-loadgen` or the store's `table` reply
    /// writes it), a `{"points": [...], "emulated": [...]}` file, or a bare list of points.
    pub fn parse(text: &str, online_min: Option<i64>) -> anyhow::Result<Profiles> {
        if let Ok(t) = serde_json::from_str::<ProfileTable>(text) {
            return Ok(Profiles::from_table_with(&t, online_min));
        }
        if let Ok(f) = serde_json::from_str::<ProfileFile>(text) {
            return Ok(Profiles {
                offline: f.points.clone(),
                points: f.points,
                emulated: f.emulated,
            });
        }
        let points: Vec<ProfilePoint> = serde_json::from_str(text).context(
            "not a profile table, a {\"points\": [...]} file, or a list of profile points",
        )?;
        Ok(Profiles {
            offline: points.clone(),
            points,
            emulated: Vec::new(),
        })
    }

    /// The points of a stored profile table (measured offline).
    pub fn from_table(t: &ProfileTable) -> Profiles {
        Profiles::from_table_with(t, None)
    }

    /// The points of a stored profile table; with `online_min = Some(n)`, a configuration
    /// observed online at least `n` times takes its online estimate (execution times measured
    /// while serving, interference included) instead of its offline profile.
    pub fn from_table_with(t: &ProfileTable, online_min: Option<i64>) -> Profiles {
        let offline = match online_min {
            Some(_) => Profiles::from_table_with(t, None).points,
            None => Vec::new(),
        };
        let mut p = Profiles {
            offline,
            points: t
                .profiles
                .iter()
                .map(|r| {
                    let c = &r.config;
                    let online = match (online_min, c.online_ms) {
                        (Some(n), Some(ms)) if c.online_count >= n && c.mean_ms > 0.0 => Some(ms),
                        _ => None,
                    };
                    let scale = online.map_or(1.0, |ms| ms / c.mean_ms);
                    ProfilePoint {
                        device_class: r.device_class.clone(),
                        engine: c.engine.clone(),
                        model: r.model.clone(),
                        threads: c.threads,
                        batch: c.batch,
                        latency_ms: c.mean_ms * scale,
                        p99_ms: Some(c.p99_ms * scale),
                    }
                })
                .collect(),
            emulated: Vec::new(),
        };
        if online_min.is_none() {
            p.offline = p.points.clone();
        }
        p
    }

    /// The fastest offline single-sample run of `model` on any class (what latency targets
    /// are multiples of, live as simulated).
    pub fn fastest_ms(&self, model: &str) -> Option<f64> {
        self.offline
            .iter()
            .filter(|p| p.model == model && p.batch == 1 && p.latency_ms > 0.0)
            .map(|p| p.latency_ms)
            .min_by(f64::total_cmp)
    }
}

/// Reads a topology from JSON.
pub fn read_topology(path: &Path) -> anyhow::Result<Topology> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a topology", path.display()))
}

/// Input bytes per sample of every catalogued model (what crosses the network per sample).
pub fn payload_bytes(catalog: Option<&Catalog>) -> HashMap<String, u64> {
    let Some(c) = catalog else {
        return HashMap::new();
    };
    c.models
        .iter()
        .map(|m| {
            let bytes: usize = m
                .inputs
                .iter()
                .map(|i| i.shape_for_batch(1).iter().product::<usize>() * i.datatype.size())
                .sum();
            (m.name.as_str().to_owned(), bytes as u64)
        })
        .collect()
}

/// One simulated run.
pub struct SimRun {
    /// The report.
    pub report: Report,
    /// Its records.
    pub records: Vec<Record>,
    /// Wall time of the simulation alone, seconds.
    pub wall_s: f64,
    /// Simulator events processed.
    pub events: u64,
}

/// Simulates `plan` under `policy`.
#[allow(clippy::too_many_arguments)]
pub fn run_one(
    topology: &Topology,
    profiles: &Profiles,
    plan: &[Planned],
    policy: &str,
    base: &SimConfig,
    seed: u64,
    duration_s: f64,
    load: Option<f64>,
) -> anyhow::Result<SimRun> {
    let Some(kind) = PolicyKind::ALL.into_iter().find(|k| k.as_str() == policy) else {
        bail!(
            "unknown policy '{policy}' (one of {})",
            PolicyKind::ALL.map(|k| k.as_str()).join(", ")
        );
    };
    let mut cfg = base.clone();
    cfg.policy = kind;
    let start = Instant::now();
    let out = synergai_sim::simulate(topology, &profiles.points, plan, &cfg)?;
    let wall_s = start.elapsed().as_secs_f64();
    let mut emulated = topology.emulated();
    emulated.extend(profiles.emulated.iter().cloned());
    let report = Report::new(
        RunInfo {
            policy: policy.to_owned(),
            mode: "simulated".into(),
            seed,
            duration_s,
            load_fraction: load,
            emulated,
        },
        &out.records,
    );
    Ok(SimRun {
        report,
        records: out.records,
        wall_s,
        events: out.stats.events,
    })
}

/// Every policy at every load on the same seeded trace per load; `on_run` sees each run.
#[allow(clippy::too_many_arguments)]
pub fn compare(
    topology: &Topology,
    profiles: &Profiles,
    workload: &Workload,
    policies: &[String],
    loads: &[f64],
    capacity_rps: f64,
    base: &SimConfig,
    seed: u64,
    mut on_run: impl FnMut(&SimRun),
) -> anyhow::Result<(Comparison, Latencies)> {
    let mut runs = Vec::new();
    let mut latencies = Vec::new();
    for &load in loads {
        let w = at_load(workload, load, capacity_rps);
        let plan = w.plan(seed, |m| profiles.fastest_ms(m))?;
        for p in policies {
            let run = run_one(
                topology,
                profiles,
                &plan,
                p,
                base,
                seed,
                w.arrivals.schedule.secs(),
                Some(load),
            )?;
            on_run(&run);
            latencies.push((
                p.clone(),
                load,
                run.records.iter().filter_map(|r| r.latency_ms).collect(),
            ));
            runs.push(run.report);
        }
    }
    let mut emulated = topology.emulated();
    emulated.extend(profiles.emulated.iter().cloned());
    Ok((
        Comparison {
            mode: "simulated".into(),
            capacity_rps,
            emulated,
            runs,
        },
        latencies,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_estimates_feed_the_scheduler_but_targets_stay_offline() {
        // A table measured on this machine after a live comparison: online estimates included.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../results/profiles/measured-local.json"
        );
        let text = std::fs::read_to_string(path).expect("the committed profile table");
        let offline = Profiles::parse(&text, None).expect("parses");
        let online = Profiles::parse(&text, Some(3)).expect("parses");
        assert_eq!(offline.points, offline.offline);
        assert_eq!(online.offline, offline.points);
        assert_eq!(online.points.len(), offline.points.len());
        let changed = online
            .points
            .iter()
            .zip(&offline.points)
            .filter(|(a, b)| a.latency_ms != b.latency_ms)
            .count();
        assert!(changed > 0, "no configuration took its online estimate");
        for model in ["squeezenet", "ppocr_cls"] {
            assert_eq!(
                online.fastest_ms(model),
                offline.fastest_ms(model),
                "{model}"
            );
        }
    }
}
