//! Policy comparison: the same seeded trace against several policies at several loads, on the
//! running system (switching the scheduler's policy on its control subject and draining between
//! runs).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use synergai_contract::catalog::Catalog;
use synergai_workload::report::RunInfo;
use synergai_workload::{Planned, Report, Workload};
use tokio_util::sync::CancellationToken;

use crate::cluster;
use crate::live::{self, Progress, SendOptions, Target};
use crate::output::{Comparison, Latencies};

/// What to compare.
#[derive(Debug, Clone)]
pub struct CompareSpec {
    /// Policies, `synergai` first by convention.
    pub policies: Vec<String>,
    /// Loads, as fractions of predicted capacity.
    pub loads: Vec<f64>,
    /// The workload; its schedule's rate is replaced by `load × capacity` for each load.
    pub workload: Workload,
    /// Seed (one trace per load, the same for every policy).
    pub seed: u64,
    /// Capacity the profiles predict, requests per second.
    pub capacity_rps: f64,
    /// Emulated parts, for the reports.
    pub emulated: Vec<String>,
}

/// The workload at `load` of `capacity`: every segment's rates scaled so that the mean rate is
/// `load × capacity`.
pub fn at_load(w: &Workload, load: f64, capacity_rps: f64) -> Workload {
    let mut w = w.clone();
    let mean = w.arrivals.schedule.mean_rps();
    let k = if mean > 0.0 {
        load * capacity_rps / mean
    } else {
        0.0
    };
    for s in &mut w.arrivals.schedule.segments {
        s.from_rps *= k;
        s.to_rps *= k;
    }
    w
}

/// The planned requests at one load.
pub fn plan_at(
    spec: &CompareSpec,
    load: f64,
    fastest: impl Fn(&str) -> Option<f64>,
) -> anyhow::Result<Vec<Planned>> {
    Ok(at_load(&spec.workload, load, spec.capacity_rps).plan(spec.seed, fastest)?)
}

/// Runs the comparison live. `on_run` sees each report as it completes.
#[allow(clippy::too_many_arguments)]
pub async fn live(
    spec: &CompareSpec,
    nats: &async_nats::Client,
    subjects: &synergai_contract::Subjects,
    catalog: &Catalog,
    target: &Target,
    opts: &SendOptions,
    fastest: impl Fn(&str) -> Option<f64>,
    stop: CancellationToken,
    mut on_run: impl FnMut(&Report, &[synergai_workload::Record]),
) -> anyhow::Result<(Comparison, Latencies)> {
    let mut runs = Vec::new();
    let mut latencies = Vec::new();
    'loads: for &load in &spec.loads {
        let plan = plan_at(spec, load, &fastest)?;
        for policy in &spec.policies {
            if stop.is_cancelled() {
                break 'loads;
            }
            cluster::control(nats, subjects, Some(policy))
                .await
                .with_context(|| format!("switching the scheduler to {policy}"))?;
            cluster::drain(nats, subjects, Duration::from_secs(120)).await?;
            let progress = Arc::new(Progress::default());
            let records = live::run(&plan, catalog, target, opts, progress, stop.clone()).await?;
            let report = Report::new(
                RunInfo {
                    policy: policy.clone(),
                    mode: "live".into(),
                    seed: spec.seed,
                    duration_s: spec.workload.arrivals.schedule.secs(),
                    load_fraction: Some(load),
                    emulated: spec.emulated.clone(),
                },
                &records,
            );
            on_run(&report, &records);
            latencies.push((
                policy.clone(),
                load,
                records.iter().filter_map(|r| r.latency_ms).collect(),
            ));
            runs.push(report);
        }
    }
    Ok((
        Comparison {
            mode: "live".into(),
            capacity_rps: spec.capacity_rps,
            emulated: spec.emulated.clone(),
            runs,
        },
        latencies,
    ))
}
