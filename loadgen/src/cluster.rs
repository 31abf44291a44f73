//! What the load generator asks the running system: the profile table (for latency targets
//! given as multiples and for the predicted capacity), the live workers (from their
//! heartbeats), and the scheduler's policy (on its control subject).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use synergai_contract::Subjects;
use synergai_contract::serving::{SchedulerControl, SchedulerState, WorkerHeartbeat};
use synergai_contract::store::{ProfileTable, TableRequest};
use synergai_platform::nats::error_of;
use synergai_store_client::StoreClient;
use synergai_workload::Mix;

/// The profile table the store holds.
pub async fn profiles(
    nats: &async_nats::Client,
    subjects: &Subjects,
) -> anyhow::Result<ProfileTable> {
    StoreClient::new(nats.clone(), subjects.clone())
        .table(&TableRequest::default())
        .await
        .context("reading the profile table from the store")
}

/// The fastest profiled latency of one single-sample request of `model` on any device class.
pub fn fastest_ms(table: &ProfileTable, model: &str) -> Option<f64> {
    table
        .profiles
        .iter()
        .filter(|r| r.model == model && r.config.batch == 1 && r.config.mean_ms > 0.0)
        .map(|r| r.config.mean_ms)
        .min_by(f64::total_cmp)
}

/// The fastest profiled latency of one sample of `model` on `class` with at most `cores`
/// threads (any thread count when none fits).
fn fastest_on(table: &ProfileTable, class: &str, model: &str, cores: u32) -> Option<f64> {
    let rows = || {
        table.profiles.iter().filter(|r| {
            r.device_class == class
                && r.model == model
                && r.config.batch == 1
                && r.config.mean_ms > 0.0
        })
    };
    rows()
        .filter(|r| r.config.threads <= cores.max(1))
        .map(|r| r.config.mean_ms)
        .min_by(f64::total_cmp)
        .or_else(|| rows().map(|r| r.config.mean_ms).min_by(f64::total_cmp))
}

/// Workers heard from within `listen`, by id (the newest heartbeat of each), draining ones left
/// out.
pub async fn live_workers(
    nats: &async_nats::Client,
    subjects: &Subjects,
    listen: Duration,
) -> anyhow::Result<Vec<WorkerHeartbeat>> {
    let mut sub = nats
        .subscribe(subjects.worker_events())
        .await
        .context("subscribing to worker heartbeats")?;
    let mut seen: BTreeMap<String, WorkerHeartbeat> = BTreeMap::new();
    let until = tokio::time::Instant::now() + listen;
    while let Ok(Some(msg)) = tokio::time::timeout_at(until, sub.next()).await {
        if let Ok(hb) = serde_json::from_slice::<WorkerHeartbeat>(&msg.payload) {
            seen.insert(hb.status.id.clone(), hb);
        }
    }
    Ok(seen.into_values().filter(|h| !h.draining).collect())
}

/// The throughput the profiles predict for `workers` under `mix`, requests per second: each
/// worker runs one job at a time, at the fastest single-sample configuration of its class for
/// each model it serves, the mix weighting the models.
pub fn capacity_rps(table: &ProfileTable, workers: &[WorkerHeartbeat], mix: &Mix) -> f64 {
    workers
        .iter()
        .filter_map(|w| {
            let cores = w.status.core_set.len().max(1) as u32;
            let serves = |m: &str| w.loaded.is_empty() || w.loaded.iter().any(|l| l.model == m);
            let (mut weight, mut time) = (0.0, 0.0);
            for (m, wt) in &mix.models {
                if !serves(m) {
                    continue;
                }
                if let Some(t) = fastest_on(table, &w.status.device_class, m, cores) {
                    weight += wt;
                    time += wt * t;
                }
            }
            (weight > 0.0 && time > 0.0).then(|| 1000.0 * weight / time)
        })
        .sum()
}

/// The scheduler's state, switching its policy first when `policy` is given.
pub async fn control(
    nats: &async_nats::Client,
    subjects: &Subjects,
    policy: Option<&str>,
) -> anyhow::Result<SchedulerState> {
    let body = serde_json::to_vec(&SchedulerControl {
        policy: policy.map(str::to_owned),
    })?;
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        nats.request(subjects.scheduler_control(), body.into()),
    )
    .await
    .context("no scheduler answered on its control subject in 5 s")?
    .context("asking the scheduler")?;
    if let Some((code, msg)) = error_of(&reply) {
        bail!("the scheduler refused: {} {msg}", code.as_u16());
    }
    serde_json::from_slice(&reply.payload).context("the scheduler's state")
}

/// Waits until the scheduler has nothing in flight (at most `timeout`).
pub async fn drain(
    nats: &async_nats::Client,
    subjects: &Subjects,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let s = control(nats, subjects, None).await?;
        if s.in_flight == 0 {
            return Ok(());
        }
        if start.elapsed() > timeout {
            bail!("{} jobs still in flight after {timeout:?}", s.in_flight);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
