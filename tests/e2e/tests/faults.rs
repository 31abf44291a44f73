//! The fault matrix: a steady open-loop load from the load generator's live runner (the path
//! `synergai-loadgen run` takes) on a real local cluster, one fault injected mid-run, and every
//! request accounted for.
//!
//! For each case the test asserts `sent = ok + errors`, no request lost (or only those the case's
//! rule allows, stated with it), no request answered twice (the runner watches every request's
//! own reply subject, so a second answer is counted), and error codes within the case's set; it
//! prints a table row with the recovery time.
//!
//! **Recovery time** is measured on the client's clock, from the fault (the planned send time of
//! the request after which the fault was injected) to the send time of the first request after
//! which every request sent succeeded promptly (a result, not an error, no slower than three
//! times the median latency before the fault and at least [`SLOW_MS`]); 0 when no request failed
//! or stalled. The run must end recovered. *In flight* counts the requests sent before the fault
//! and answered after it.
//!
//! Short by default (CI); `SYNERGAI_FAULTS_SECS` (length of each run, s), `SYNERGAI_FAULTS_RATE`
//! (requests/s) and `SYNERGAI_FAULTS_TABLE` (a file the rows are appended to) make the longer
//! version that `scripts/faults` runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{FutureExt as _, StreamExt as _};
use sqlx::PgPool;
use synergai_contract::Subjects;
use synergai_e2e::{
    Cluster, NatsServer, PrivatePostgres, Sites, WorkerSpec, catalog, database_url,
};
use synergai_loadgen::live::{self, Progress, SendOptions, Target};
use synergai_workload::{Arrivals, Mix, Planned, Process, RateSchedule, Record, SloSpec, Workload};
use tokio_util::sync::CancellationToken;

const MODEL: &str = "squeezenet";
/// A model whose jobs take long enough to be caught running.
const HEAVY: &str = "resnet50";
/// Latency target of every request, ms.
const SLO_MS: f64 = 5_000.0;
/// A result slower than this (or than three times the median before the fault, if more) counts
/// as not yet recovered, ms.
const SLOW_MS: f64 = 1_000.0;
/// How long the client waits for an answer before counting a request lost.
const TIMEOUT: Duration = Duration::from_secs(15);

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Length of each run (s) and its rate (requests/s).
fn load() -> (f64, f64) {
    (
        env_f64("SYNERGAI_FAULTS_SECS", 16.0),
        env_f64("SYNERGAI_FAULTS_RATE", 4.0),
    )
}

fn plan(mix: &str) -> Vec<Planned> {
    let (secs, rate) = load();
    Workload {
        arrivals: Arrivals {
            process: Process::Constant,
            schedule: RateSchedule::constant(rate, secs).expect("valid"),
        },
        mix: Mix::parse(mix).expect("valid"),
        default_slo: SloSpec::Absolute(SLO_MS),
        slo: Default::default(),
        samples: 1,
    }
    .plan(11, |_| None)
    .expect("plan")
}

fn two_workers() -> Vec<WorkerSpec> {
    vec![
        WorkerSpec::new("worker-a", "cloud", "cloud", "0", &[MODEL]),
        WorkerSpec::new("worker-b", "cloud", "cloud", "1", &[MODEL]),
    ]
}

/// A load running in the background.
struct Load {
    plan: Vec<Planned>,
    progress: Arc<Progress>,
    /// When the run started (its records' times are from about then: the runner starts its
    /// clock after encoding the few request bodies, so fault times read from here are at most
    /// that much late).
    t0: Instant,
    task: tokio::task::JoinHandle<anyhow::Result<Vec<Record>>>,
}

impl Load {
    fn start(cluster: &Cluster) -> Load {
        Load::start_mix(cluster, &format!("{MODEL}=1"))
    }

    fn start_mix(cluster: &Cluster, mix: &str) -> Load {
        Load::start_on(cluster.nats.clone(), cluster.subjects.clone(), mix)
    }

    /// A load sent from `client` (a client at another site: connected to its leaf node).
    fn start_on(client: async_nats::Client, subjects: Subjects, mix: &str) -> Load {
        let plan = plan(mix);
        let progress = Arc::new(Progress::default());
        let target = Target::Nats { client, subjects };
        let t0 = Instant::now();
        let task = {
            let (plan, progress) = (plan.clone(), progress.clone());
            tokio::spawn(async move {
                let opts = SendOptions {
                    binary: true,
                    timeout: TIMEOUT,
                    input_seed: 5,
                };
                live::run_watching(
                    &plan,
                    &catalog(),
                    &target,
                    &opts,
                    progress,
                    CancellationToken::new(),
                    Duration::from_secs(3),
                )
                .await
            })
        };
        Load {
            plan,
            progress,
            t0,
            task,
        }
    }

    /// Waits until the fraction `at` of the plan is sent; the time then (ms, client clock).
    async fn reach(&self, at: f64) -> f64 {
        let n = ((self.plan.len() as f64 * at) as usize).clamp(1, self.plan.len());
        while (self.progress.sent.load(Ordering::Relaxed) as usize) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.now_ms()
    }

    /// The time now, ms on the client's clock.
    fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    async fn finish(self) -> Vec<Record> {
        self.task.await.expect("load task").expect("load run")
    }
}

/// One row of the fault matrix.
struct Row {
    sent: u64,
    ok: u64,
    errors: BTreeMap<u16, u64>,
    lost: Vec<u64>,
    duplicates: u64,
    in_flight: u64,
    /// Median latency of results sent before the fault, ms.
    p50_before_ms: f64,
    /// Slowest answer among requests in flight at the fault or sent after it, ms.
    worst_after_ms: f64,
    recovery_ms: f64,
}

/// Answered with a result no slower than `slow_ms`.
fn good(r: &Record, slow_ms: f64) -> bool {
    r.code == 200 && r.latency_ms.is_some_and(|l| l <= slow_ms)
}

/// The latency past which a result counts as a stall: three times the median before the fault,
/// at least [`SLOW_MS`].
fn slow_ms(records: &[Record], fault_ms: f64) -> f64 {
    (3.0 * slow_ms_median(records, fault_ms)).max(SLOW_MS)
}

/// The median latency of results sent before the fault, ms.
fn slow_ms_median(records: &[Record], fault_ms: f64) -> f64 {
    let mut before: Vec<f64> = records
        .iter()
        .filter(|r| r.code == 200 && r.sent_ms < fault_ms)
        .filter_map(|r| r.latency_ms)
        .collect();
    before.sort_by(f64::total_cmp);
    before.get(before.len() / 2).copied().unwrap_or(0.0)
}

/// Counts `records` and measures recovery from `fault_ms`.
fn analyse(records: &[Record], fault_ms: f64) -> Row {
    let slow = slow_ms(records, fault_ms);
    let mut errors = BTreeMap::new();
    for r in records.iter().filter(|r| r.code != 200 && r.code != 0) {
        *errors.entry(r.code).or_default() += 1;
    }
    let mut by_sent: Vec<&Record> = records.iter().collect();
    by_sent.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    let last_bad = by_sent.iter().rposition(|r| !good(r, slow));
    let recovery_ms = match last_bad {
        None => 0.0,
        Some(i) => by_sent
            .get(i + 1)
            .map_or(f64::INFINITY, |r| (r.sent_ms - fault_ms).max(0.0)),
    };
    Row {
        sent: records.len() as u64,
        ok: records.iter().filter(|r| r.code == 200).count() as u64,
        errors,
        lost: records
            .iter()
            .filter(|r| r.code == 0)
            .map(|r| r.seq)
            .collect(),
        duplicates: records.iter().map(|r| u64::from(r.duplicates)).sum(),
        in_flight: records
            .iter()
            .filter(|r| {
                r.sent_ms <= fault_ms
                    && r.sent_ms + r.latency_ms.unwrap_or(f64::INFINITY) > fault_ms
            })
            .count() as u64,
        p50_before_ms: slow_ms_median(records, fault_ms),
        worst_after_ms: records
            .iter()
            .filter(|r| r.sent_ms + r.latency_ms.unwrap_or(0.0) > fault_ms)
            .filter_map(|r| r.latency_ms)
            .fold(0.0, f64::max),
        recovery_ms,
    }
}

/// Checks a row against the case's rules and prints it (and appends it to
/// `SYNERGAI_FAULTS_TABLE`). `lost_allowed`: the requests the case's rule lets go unanswered.
fn check(
    case: &str,
    records: &[Record],
    fault_ms: f64,
    codes: &[u16],
    lost_allowed: &BTreeSet<u64>,
    cluster_logs: &str,
) -> Row {
    let row = analyse(records, fault_ms);
    let errors: u64 = row.errors.values().sum();
    let codes_seen = row
        .errors
        .iter()
        .map(|(c, n)| format!("{n}×{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let line = format!(
        "| {case} | {} | {} | {errors}{} | {} | {} | {} | {:.0} → {:.0} ms | {} |",
        row.sent,
        row.ok,
        if codes_seen.is_empty() {
            String::new()
        } else {
            format!(" ({codes_seen})")
        },
        row.lost.len(),
        row.duplicates,
        row.in_flight,
        row.p50_before_ms,
        row.worst_after_ms,
        if row.recovery_ms.is_finite() {
            format!("{:.1} s", row.recovery_ms / 1000.0)
        } else {
            "not recovered".into()
        }
    );
    println!("{line}");
    if let Ok(path) = std::env::var("SYNERGAI_FAULTS_TABLE") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    let slow = slow_ms(records, fault_ms);
    let context = || {
        let bad: Vec<String> = records
            .iter()
            .filter(|r| !good(r, slow))
            .take(20)
            .map(|r| {
                format!(
                    "#{} sent {:.0} ms: code {} latency {:?} {:?}",
                    r.seq, r.sent_ms, r.code, r.latency_ms, r.error
                )
            })
            .collect();
        let twice: Vec<String> = records
            .iter()
            .filter(|r| r.duplicates > 0)
            .map(|r| {
                format!(
                    "#{} sent {:.0} ms answered {}+{} times: code {} {:?} {:?}",
                    r.seq, r.sent_ms, 1, r.duplicates, r.code, r.request_id, r.error
                )
            })
            .collect();
        format!(
            "{line}\nfault at {fault_ms:.0} ms, slow past {slow:.0} ms\n{}\n{}\n{cluster_logs}",
            bad.join("\n"),
            twice.join("\n")
        )
    };
    assert_eq!(row.sent, row.ok + errors + row.lost.len() as u64);
    assert!(
        row.lost.iter().all(|s| lost_allowed.contains(s)),
        "lost {:?}, allowed {lost_allowed:?}\n{}",
        row.lost,
        context()
    );
    assert_eq!(row.duplicates, 0, "answered twice\n{}", context());
    assert!(
        row.errors.keys().all(|c| codes.contains(c)),
        "codes outside {codes:?}\n{}",
        context()
    );
    assert!(
        row.recovery_ms.is_finite(),
        "the run ended unrecovered\n{}",
        context()
    );
    assert!(row.ok > 0, "{}", context());
    row
}

fn none() -> BTreeSet<u64> {
    BTreeSet::new()
}

/// Case 1: SIGKILL one of two workers while it runs a job. The other keeps serving; the killed
/// worker's jobs are placed again (or answered 503/504), never lost. (ResNet-50 jobs, long
/// enough that the killed worker holds one.)
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_killed_worker_loses_nothing(pool: PgPool) {
    let workers = [
        WorkerSpec::new("worker-a", "cloud", "cloud", "0", &[HEAVY]),
        WorkerSpec::new("worker-b", "cloud", "cloud", "1", &[HEAVY]),
    ];
    let mut cluster = Cluster::start(&database_url(&pool), "round-robin", &workers).await;
    // Kill worker-a just after a job is dispatched to it: it holds that job when it dies.
    let token = synergai_contract::Token::parse("worker-a").expect("token");
    let mut dispatched = cluster
        .nats
        .subscribe(cluster.subjects.worker_jobs(&token))
        .await
        .expect("subscribe");
    let load = Load::start_mix(&cluster, &format!("{HEAVY}=1"));
    load.reach(0.3).await;
    while let Some(Some(_)) = dispatched.next().now_or_never() {}
    let holding = tokio::time::timeout(Duration::from_secs(5), dispatched.next())
        .await
        .is_ok();
    println!("worker-a killed just after a dispatch to it: {holding}");
    let fault_ms = load.now_ms();
    cluster.kill("worker-a");
    let records = load.finish().await;
    let row = check(
        "SIGKILL a worker (of 2)",
        &records,
        fault_ms,
        &[503, 504],
        &none(),
        &cluster.logs(),
    );
    // After the fault everything ran on the survivor.
    let late: Vec<&Record> = records
        .iter()
        .filter(|r| r.sent_ms > fault_ms + row.recovery_ms && r.code == 200)
        .collect();
    assert!(!late.is_empty());
    assert!(
        late.iter().all(|r| r.worker.as_deref() == Some("worker-b")),
        "served by the killed worker after the fault"
    );
    cluster.stop().await;
}

/// Case 2: SIGKILL the scheduler and restart it. Accepted requests wait in the JetStream work
/// queue and are served by the new scheduler; what the old one had dispatched is adopted.
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_restarted_scheduler_loses_nothing(pool: PgPool) {
    let mut cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()).await;
    let load = Load::start(&cluster);
    let fault_ms = load.reach(0.3).await;
    cluster.kill("scheduler");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.respawn("scheduler");
    let records = load.finish().await;
    check(
        "SIGKILL + restart the scheduler",
        &records,
        fault_ms,
        &[503, 504],
        &none(),
        &cluster.logs(),
    );
    cluster.stop().await;
}

/// Case 3: SIGKILL one of two intakes (one queue group) and restart it. The other keeps taking
/// requests at once. Rule: a request the killed intake had received but JetStream had not yet
/// stored gets no answer (the client times out); only requests sent in the second before the
/// kill may be lost that way. With no intake at all a client gets 503 (no responders).
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_killed_intake_loses_only_what_it_held(pool: PgPool) {
    let mut cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()).await;
    cluster.spawn_another_intake("intake-2");
    // Both intakes in the queue group before the load starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let load = Load::start(&cluster);
    let fault_ms = load.reach(0.3).await;
    cluster.kill("intake");
    let killed_ms = load.now_ms();
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.respawn("intake");
    let records = load.finish().await;
    let allowed: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.sent_ms >= fault_ms - 1000.0 && r.sent_ms <= killed_ms + 50.0)
        .map(|r| r.seq)
        .collect();
    check(
        "SIGKILL + restart an intake (of 2)",
        &records,
        fault_ms,
        &[503],
        &allowed,
        &cluster.logs(),
    );
    cluster.stop().await;
}

/// Case 4: restart the NATS server (one this test owns; JetStream on file). The work queue is
/// file-backed (`scheduler.request_storage = "file"`), so accepted requests survive; every
/// service reconnects and subscribes again. Rule: core NATS is at-most-once, so a request in
/// the server's hands (or the client's, unsent) when it dies may go unanswered: only requests
/// sent from one second before the kill until the server is back may be lost.
///
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_restarted_nats_server_loses_only_what_it_held(pool: PgPool) {
    let mut nats = NatsServer::start().await;
    let env = [("SYNERGAI_SCHEDULER__REQUEST_STORAGE", "file".to_owned())];
    let cluster = Cluster::start_on(
        &nats.url(),
        &database_url(&pool),
        "synergai",
        &two_workers(),
        &env,
    )
    .await;
    let load = Load::start(&cluster);
    let fault_ms = load.reach(0.3).await;
    nats.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.restart().await;
    let back_ms = load.now_ms();
    let records = load.finish().await;
    let allowed: BTreeSet<u64> = records
        .iter()
        .filter(|r| r.sent_ms >= fault_ms - 1000.0 && r.sent_ms <= back_ms + 1000.0)
        .map(|r| r.seq)
        .collect();
    check(
        "restart the NATS server",
        &records,
        fault_ms,
        &[503, 504],
        &allowed,
        &cluster.logs(),
    );
    cluster.stop().await;
}

/// A reply claim attempted while the NATS server is down is not given up on: it is retried until
/// the server is back, and wins once. Its first attempt, buffered in the client, reaches the
/// server only after that attempt timed out (JetStream's acknowledgement wait is 5 s): the retry
/// then finds the request claimed and recognises the claim as its own. A second claimant loses.
#[tokio::test]
async fn a_claim_made_while_nats_is_down_is_kept_and_wins_once() {
    let mut server = NatsServer::start().await;
    let cfg = synergai_platform::nats::NatsConfig {
        url: server.url(),
        ..Default::default()
    };
    let client = synergai_platform::nats::connect(&cfg, "claim-test")
        .await
        .expect("NATS up");
    let claims = synergai_platform::nats::ReplyClaims::open(
        &client,
        &cfg.subjects(),
        Duration::from_secs(60),
    )
    .await
    .expect("claim stream");
    let id = "0195f2a4-7b1c-7d3e-9a4b-1c2d3e4f5a6b";
    server.kill();
    let first = {
        let claims = claims.clone();
        tokio::spawn(async move { claims.claim(id, "worker-a").await })
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    server.restart().await;
    let won = first
        .await
        .expect("claim task")
        .expect("the claim is made once the server is back");
    assert!(won, "the claim is worker-a's");
    assert!(
        !claims.claim(id, "worker-b").await.expect("claim store"),
        "a second claimant loses"
    );
    assert_eq!(
        claims.owner(id).await.expect("claim store").as_deref(),
        Some(&b"worker-a"[..])
    );
}

/// Case 5: PostgreSQL stopped for 10 s (a server this test owns). Serving goes on (the store
/// buffers telemetry and leaves outcomes in their stream until it can write them); afterwards
/// every request is in the ledger exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_down_for_ten_seconds_loses_no_ledger_row() {
    let pg = PrivatePostgres::start();
    let cluster = Cluster::start(&pg.url(), "synergai", &two_workers()).await;
    let load = Load::start(&cluster);
    let fault_ms = load.reach(0.2).await;
    pg.stop();
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    pg.start_again();
    let down_s = stopped.elapsed().as_secs_f64();
    let records = load.finish().await;
    let row = check(
        "PostgreSQL stopped 10 s",
        &records,
        fault_ms,
        &[],
        &none(),
        &cluster.logs(),
    );
    assert!(down_s >= 10.0);
    // Every request is in the ledger, once.
    let db = PgPool::connect(&pg.url()).await.expect("PostgreSQL back");
    let start = Instant::now();
    let (rows, distinct) = loop {
        let (rows, distinct): (i64, i64) =
            sqlx::query_as("SELECT count(*), count(DISTINCT request_id) FROM ledger")
                .fetch_one(&db)
                .await
                .expect("ledger");
        if rows as u64 >= row.sent || start.elapsed() > Duration::from_secs(90) {
            break (rows, distinct);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        (rows as u64, distinct as u64),
        (row.sent, row.sent),
        "ledger rows (all, distinct) against requests sent\n{}",
        cluster.logs()
    );
    let ids: Vec<String> = sqlx::query_scalar("SELECT request_id FROM ledger")
        .fetch_all(&db)
        .await
        .expect("ledger");
    let ids: BTreeSet<String> = ids.into_iter().collect();
    for r in &records {
        let id = r.request_id.as_deref().expect("a result has its id");
        assert!(ids.contains(id), "{id} not in the ledger");
    }
    cluster.stop().await;
}

/// Case 6: an edge site's link to the hub cut — its leaf node killed, then restarted. Clients
/// of the hub keep being served by the cloud worker; the edge worker rejoins once the link is
/// back. (Intake and scheduler run only at the hub, so an edge site without its uplink serves
/// nothing locally: a client there has no NATS server, or no responders, until it returns.)
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn an_edge_site_cut_off_rejoins(pool: PgPool) {
    let mut sites = Sites::start(&["edge-a"]).await;
    let workers = [
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "0", &[MODEL]).via(sites.leaf("edge-a")),
        WorkerSpec::new("cloud-1", "cloud", "cloud", "1", &[MODEL]),
    ];
    let cluster = Cluster::start_on(
        sites.hub(),
        &database_url(&pool),
        "round-robin",
        &workers,
        &[],
    )
    .await;
    let load = Load::start(&cluster);
    let fault_ms = load.reach(0.25).await;
    sites.kill_leaf("edge-a");
    tokio::time::sleep(Duration::from_secs(4)).await;
    sites.restart_leaf("edge-a").await;
    let back_ms = load.now_ms();
    let records = load.finish().await;
    check(
        "edge site's leaf node killed 4 s",
        &records,
        fault_ms,
        &[503, 504],
        &none(),
        &cluster.logs(),
    );
    let cloud_during = records
        .iter()
        .filter(|r| r.sent_ms > fault_ms + 1000.0 && r.sent_ms < back_ms && r.code == 200)
        .all(|r| r.site.as_deref() == Some("cloud"));
    assert!(cloud_during, "served at the cut-off site while cut off");
    assert!(
        records
            .iter()
            .any(|r| r.sent_ms > back_ms && r.site.as_deref() == Some("edge-a")),
        "the edge worker did not serve again after its link returned\n{}",
        cluster.logs()
    );
    cluster.stop().await;
}

/// Case 7: an edge site's uplink cut, the site running JetStream of its own (domain `edge-a`),
/// an intake and a scheduler, as compose and Kubernetes run edge sites. Both sites' clients send
/// a steady load, and each site's scheduler places on both sites' workers. While cut off, the site
/// keeps serving its own clients on its own worker, and the hub's clients are served by the cloud
/// worker. Once the link is back, each site's requests reach the other's worker again. Nothing is
/// lost or answered twice at either site.
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn an_edge_site_cut_off_keeps_serving_its_clients(pool: PgPool) {
    let sites = Sites::start_local(&["edge-a"]).await;
    let workers = [
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "0", &[MODEL])
            .via(sites.leaf("edge-a"))
            .with_env("SYNERGAI_NATS__JETSTREAM_DOMAIN", "edge-a"),
        WorkerSpec::new("cloud-1", "cloud", "cloud", "1", &[MODEL]),
    ];
    let mut cluster = Cluster::start_on(
        sites.hub(),
        &database_url(&pool),
        "round-robin",
        &workers,
        &[("SYNERGAI_NATS__JETSTREAM_DOMAIN", "hub".into())],
    )
    .await;
    let edge_intake = cluster.spawn_site("edge-a", sites.leaf("edge-a"));
    cluster.wait_schedulers(2, 2).await;
    let edge_client = async_nats::connect(sites.leaf("edge-a"))
        .await
        .expect("leaf up");
    let mix = format!("{MODEL}=1");
    let at_edge = Load::start_on(edge_client, cluster.subjects.clone(), &mix);
    let at_hub = Load::start(&cluster);
    let fault_ms = at_edge.reach(0.25).await;
    let hub_fault_ms = at_hub.now_ms();
    sites.cut_link("edge-a");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (cut_end_ms, hub_cut_end_ms) = (at_edge.now_ms(), at_hub.now_ms());
    sites.restore_link("edge-a").await;
    let (back_ms, hub_back_ms) = (at_edge.now_ms(), at_hub.now_ms());
    let edge = at_edge.finish().await;
    let hub = at_hub.finish().await;
    let logs = cluster.logs();
    check(
        "edge site's uplink cut 4 s: the site's clients",
        &edge,
        fault_ms,
        &[503, 504],
        &none(),
        &logs,
    );
    check(
        "edge site's uplink cut 4 s: the hub's clients",
        &hub,
        hub_fault_ms,
        &[503, 504],
        &none(),
        &logs,
    );
    // Sent while cut off (a second after the cut, once each scheduler has found the other
    // site's worker lost): every request answered with a result, at its own site.
    let during = |records: &[Record], from: f64, to: f64, site: &str| -> usize {
        let cut: Vec<&Record> = records
            .iter()
            .filter(|r| r.sent_ms > from + 1000.0 && r.sent_ms < to)
            .collect();
        let elsewhere: Vec<String> = cut
            .iter()
            .filter(|r| r.code != 200 || r.site.as_deref() != Some(site))
            .map(|r| format!("#{} code {} at {:?} {:?}", r.seq, r.code, r.site, r.error))
            .collect();
        assert!(
            elsewhere.is_empty(),
            "sent while cut off and not served at {site}: {elsewhere:?}\n{logs}"
        );
        cut.len()
    };
    let served_cut_off = during(&edge, fault_ms, cut_end_ms, "edge-a");
    assert!(served_cut_off > 0, "nothing sent at the site while cut off");
    during(&hub, hub_fault_ms, hub_cut_end_ms, "cloud");
    // Joined again: each site's scheduler uses the other site's worker again.
    let reached = |records: &[Record], from: f64, site: &str| {
        records
            .iter()
            .any(|r| r.sent_ms > from && r.code == 200 && r.site.as_deref() == Some(site))
    };
    assert!(
        reached(&edge, back_ms, "cloud"),
        "the site's requests did not reach the cloud worker after the link returned\n{logs}"
    );
    assert!(
        reached(&hub, hub_back_ms, "edge-a"),
        "the hub's requests did not reach the edge worker after the link returned\n{logs}"
    );
    // The site's clients were served by their own site's intake throughout (NATS hands a
    // request to a queue-group member on the server it was published to first), and the
    // hub's by the hub's.
    let metrics = Cluster::http_at(edge_intake, "GET", "/metrics", "", b"")
        .await
        .expect("edge intake metrics");
    let accepted: f64 = String::from_utf8_lossy(&metrics.body)
        .lines()
        .filter(|l| l.starts_with("synergai_intake_accepted_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        accepted as usize,
        edge.len(),
        "requests accepted by the edge site's intake against those its clients sent"
    );
    println!("served at the cut-off site while cut off: {served_cut_off} requests");
    cluster.stop().await;
}
