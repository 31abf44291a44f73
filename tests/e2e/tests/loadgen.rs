//! The load generator against the real services: every request accounted for, replies matched,
//! violations counted, policies switched, and the binary's report written (also on Ctrl-C).

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use synergai_e2e::{Cluster, WorkerSpec, binary, catalog, database_url, nats_url, workspace};
use synergai_loadgen::compare::{self, CompareSpec};
use synergai_loadgen::live::{self, Progress, SendOptions, Target};
use synergai_workload::report::RunInfo;
use synergai_workload::{Arrivals, Mix, Process, RateSchedule, Report, SloSpec, Workload};
use tokio_util::sync::CancellationToken;

fn workers() -> Vec<WorkerSpec> {
    vec![
        WorkerSpec::new(
            "edge-a-1",
            "edge-a",
            "edge",
            "0",
            &["squeezenet", "silero_vad"],
        ),
        WorkerSpec::new(
            "cloud-1",
            "cloud",
            "cloud",
            "1",
            &["squeezenet", "silero_vad"],
        ),
    ]
}

fn workload(rate: f64, secs: f64, slo: SloSpec) -> Workload {
    Workload {
        arrivals: Arrivals {
            process: Process::Poisson,
            schedule: RateSchedule::constant(rate, secs).expect("valid"),
        },
        mix: Mix::parse("squeezenet=1,silero_vad=1").expect("valid"),
        default_slo: slo,
        slo: Default::default(),
        samples: 1,
    }
}

fn options() -> SendOptions {
    SendOptions {
        binary: true,
        timeout: Duration::from_secs(30),
        input_seed: 3,
    }
}

fn report(policy: &str, secs: f64, records: &[synergai_workload::Record]) -> Report {
    Report::new(
        RunInfo {
            policy: policy.into(),
            mode: "live".into(),
            duration_s: secs,
            ..RunInfo::default()
        },
        records,
    )
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn every_request_is_accounted_for_and_matched_with_its_reply(
    pool: PgPool,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(&database_url(&pool), "synergai", &workers()).await;
    let plan = workload(25.0, 4.0, SloSpec::Absolute(2_000.0)).plan(7, |_| None)?;
    assert!(plan.len() > 50, "{} planned", plan.len());
    let nats = Target::Nats {
        client: cluster.nats.clone(),
        subjects: cluster.subjects.clone(),
    };
    let progress = Arc::new(Progress::default());
    let records = live::run(
        &plan,
        &catalog(),
        &nats,
        &options(),
        progress.clone(),
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(records.len(), plan.len());
    let r = report("synergai", 4.0, &records);
    assert_eq!(
        (r.sent, r.ok, r.errors, r.lost),
        (plan.len() as u64, plan.len() as u64, 0, 0),
        "{}\n{}",
        r.summary(),
        cluster.logs()
    );
    assert_eq!(progress.answered(), plan.len() as u64);
    for (rec, p) in records.iter().zip(&plan) {
        assert_eq!((rec.seq, rec.model.as_str()), (p.seq, p.model.as_str()));
        // Open loop: sent when planned (within scheduling jitter of this busy machine).
        assert!(
            rec.sent_ms >= p.at_ms - 1.0 && rec.sent_ms < p.at_ms + 500.0,
            "{rec:?}"
        );
        assert!(rec.request_id.as_deref().is_some_and(|id| !id.is_empty()));
        assert!(["edge-a-1", "cloud-1"].contains(&rec.worker.as_deref().unwrap_or("")));
        assert_eq!(rec.policy.as_deref(), Some("synergai"));
        // The client waits at least as long as the system says the request took.
        let (client, server) = (rec.latency_ms.expect("answered"), rec.total_ms.expect("ok"));
        assert!(
            client + 1.0 >= server,
            "client {client} ms < server {server} ms"
        );
    }
    let mut ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.request_id.as_deref())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), plan.len(), "request ids repeat");
    assert_eq!(
        r.per_model.values().map(|b| b.sent).sum::<u64>(),
        r.sent,
        "{r:?}"
    );
    assert!(
        r.per_site
            .keys()
            .all(|s| ["edge-a", "cloud"].contains(&s.as_str())),
        "{:?}",
        r.per_site.keys()
    );

    // The same run over HTTP: answered, none lost.
    let http = Target::Http {
        base: format!("http://{}", cluster.http),
    };
    let short = &plan[..30];
    let records = live::run(
        short,
        &catalog(),
        &http,
        &options(),
        Arc::new(Progress::default()),
        CancellationToken::new(),
    )
    .await?;
    let r = report("synergai", 1.0, &records);
    assert_eq!((r.sent, r.ok, r.lost), (30, 30, 0), "{}", r.summary());
    assert!(
        records
            .iter()
            .all(|x| x.worker.is_some() && x.exec_ms.is_some())
    );

    // An impossible target: every request misses it (late, or refused as hopeless).
    let tight = workload(20.0, 1.0, SloSpec::Absolute(0.05)).plan(8, |_| None)?;
    let records = live::run(
        &tight,
        &catalog(),
        &nats,
        &options(),
        Arc::new(Progress::default()),
        CancellationToken::new(),
    )
    .await?;
    let r = report("synergai", 1.0, &records);
    assert_eq!(r.lost, 0);
    assert_eq!(r.violations, r.sent, "{}", r.summary());
    assert_eq!(r.violation_rate, 1.0);
    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn compare_switches_policies_on_the_same_trace(pool: PgPool) -> anyhow::Result<()> {
    let cluster = Cluster::start(&database_url(&pool), "synergai", &workers()).await;
    let spec = CompareSpec {
        policies: vec!["synergai".into(), "round-robin".into()],
        loads: vec![0.5],
        workload: workload(1.0, 2.0, SloSpec::Absolute(1_000.0)),
        seed: 11,
        capacity_rps: 40.0,
        emulated: vec![],
    };
    let target = Target::Nats {
        client: cluster.nats.clone(),
        subjects: cluster.subjects.clone(),
    };
    let mut seen = Vec::new();
    let (comparison, latencies) = compare::live(
        &spec,
        &cluster.nats,
        &cluster.subjects,
        &catalog(),
        &target,
        &options(),
        |_| None,
        CancellationToken::new(),
        |report, records| {
            // Every reply names the policy the comparison switched to.
            assert!(
                records
                    .iter()
                    .all(|r| r.policy.as_deref() == Some(report.policy.as_str())),
                "{}",
                report.policy
            );
            seen.push((report.policy.clone(), records.len()));
        },
    )
    .await?;
    assert_eq!(comparison.runs.len(), 2);
    // The same trace for both: 0.5 × 40/s over 2 s, the same count.
    assert_eq!(seen[0].1, seen[1].1);
    assert!(seen[0].1 > 20, "{seen:?}");
    assert_eq!(
        seen.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["synergai", "round-robin"]
    );
    assert!(
        comparison
            .runs
            .iter()
            .all(|r| r.lost == 0 && r.load_fraction == Some(0.5))
    );
    assert_eq!(latencies.len(), 2);
    let ratios = comparison.ratios();
    assert_eq!(ratios.len(), 1);
    assert_eq!(ratios[0].baseline, "round-robin");
    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn the_binary_writes_its_report_also_when_stopped_with_ctrl_c(
    pool: PgPool,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(&database_url(&pool), "synergai", &workers()).await;
    let out = tempfile::tempdir()?;
    let base = |dir: &std::path::Path, secs: &str| {
        let mut c = Command::new(binary("synergai-loadgen"));
        c.current_dir(workspace())
            .args([
                "run",
                "--quiet",
                "--rate",
                "20",
                "--duration",
                secs,
                "--seed",
                "5",
            ])
            .args([
                "--mix",
                "squeezenet",
                "--slo",
                "500ms",
                "--policy",
                "least-loaded",
            ])
            .arg("--nats")
            .arg(nats_url())
            .arg("--prefix")
            .arg(cluster.prefix())
            .arg("--out")
            .arg(dir);
        c
    };
    // A whole short run.
    let whole = out.path().join("whole");
    let status = base(&whole, "2").status()?;
    assert!(status.success());
    let r: Report = serde_json::from_str(&std::fs::read_to_string(whole.join("report.json"))?)?;
    assert_eq!(r.policy, "least-loaded");
    assert!(
        r.sent > 20 && r.lost == 0 && r.ok + r.errors == r.sent,
        "{}",
        r.summary()
    );
    let csv = std::fs::read_to_string(whole.join("records.csv"))?;
    assert_eq!(csv.lines().count() as u64, r.sent + 1);
    let svg = std::fs::read_to_string(whole.join("latency-cdf.svg"))?;
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"));

    // A long run stopped after 2 s: it still writes what it measured, nothing lost.
    let stopped = out.path().join("stopped");
    let mut child = base(&stopped, "60").spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()?;
    assert!(kill.success());
    let status = child.wait()?;
    assert!(status.success(), "{status:?}");
    let r: Report = serde_json::from_str(&std::fs::read_to_string(stopped.join("report.json"))?)?;
    assert!(r.sent > 10 && r.sent < 600, "{}", r.summary());
    assert_eq!((r.lost, r.ok + r.errors), (0, r.sent), "{}", r.summary());
    cluster.stop().await;
    Ok(())
}
