//! Store benchmarks, printing rates and ratios measured in one run (this machine is shared and
//! noisy, so absolute numbers from separate runs do not compare):
//!
//! 1. Ledger ingest: outcome events published to JetStream, written by the store, counted in
//!    PostgreSQL; sustained rows/s end to end, beside the rate of the bare database insert.
//! 2. `profiles.best` over NATS: round-trip latency percentiles against a realistic table.
//!
//! `cargo bench -p synergai-store --bench store -- [--rows N] [--queries N]`
//! Needs NATS on 127.0.0.1:4222 and PostgreSQL at DATABASE_URL (scripts/services).

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor, PgPool};
use synergai_contract::Token;
use synergai_contract::profile::ProfilePoint;
use synergai_contract::store::{BestRequest, Outcome, UpsertProfiles};
use synergai_store::config::StoreConfig;
use synergai_store::{Application, db};
use synergai_store_client::{EventPublisher, StoreClient};
use tokio_util::sync::CancellationToken;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn outcome(run: &str, i: usize, at: time::OffsetDateTime) -> Outcome {
    let total = 5.0 + (i % 97) as f64;
    Outcome {
        request_id: format!("{run}-{i}"),
        model: ["resnet50", "squeezenet", "ppocr_det"][i % 3].into(),
        slo_ms: 60.0,
        arrival: at,
        policy: ["synergai", "slo-mael"][i % 2].into(),
        site: Some(["edge-a", "edge-b", "cloud"][i % 3].into()),
        worker: Some(format!("w{}", i % 12)),
        engine: Some("ort".into()),
        threads: Some(1 + (i % 4) as u32),
        batch: Some(1),
        code: if i.is_multiple_of(50) { 503 } else { 200 },
        queue_ms: Some(0.4),
        exec_ms: Some(total - 1.0),
        total_ms: total,
        violated: total > 60.0 || i.is_multiple_of(50),
        excess_ms: (total - 60.0).max(0.0),
    }
}

async fn fresh_database(admin: &PgPool, name: &str) -> anyhow::Result<PgPool> {
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .await?;
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    Ok(PgPoolOptions::new()
        .max_connections(8)
        .connect(&format!("{base}/{name}"))
        .await?)
}

async fn count(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(pool)
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rows = arg("--rows", 200_000);
    let queries = arg("--queries", 2_000);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    let name = format!("synergai_bench_{}", std::process::id());
    let pool = fresh_database(&admin, &name).await?;

    let mut cfg = StoreConfig::default();
    cfg.nats.subject_prefix = format!("bench{}", std::process::id());
    cfg.http.listen = None;
    let subjects = cfg.nats.subjects();
    let cancel = CancellationToken::new();
    let app = Application::build(cfg.clone(), pool.clone(), None, cancel.clone()).await?;
    let run = tokio::spawn(app.run_until_stopped());
    let nats = synergai_platform::nats::connect(&cfg.nats, "store-bench").await?;

    // 1a. The bare insert path: batches of 2,000 straight into PostgreSQL.
    let at = time::OffsetDateTime::now_utc();
    let direct: Vec<Outcome> = (0..rows.min(100_000))
        .map(|i| outcome("direct", i, at))
        .collect();
    let t = Instant::now();
    for chunk in direct.chunks(2_000) {
        db::insert_outcomes(&pool, chunk).await?;
    }
    let direct_rate = direct.len() as f64 / t.elapsed().as_secs_f64();

    // 1b. End to end: publish to JetStream as fast as acknowledgements allow; the store writes.
    let events = EventPublisher::new(nats.clone(), subjects.clone());
    let site = Token::parse("edge-a")?;
    let before = count(&pool).await?;
    let start = Instant::now();
    let publisher = {
        let events = events.clone();
        let site = site.clone();
        tokio::spawn(async move {
            for chunk_start in (0..rows).step_by(1_000) {
                let chunk: Vec<Outcome> = (chunk_start..(chunk_start + 1_000).min(rows))
                    .map(|i| outcome("e2e", i, at))
                    .collect();
                events.outcomes(&site, &chunk).await?;
            }
            anyhow::Ok(Instant::now())
        })
    };
    let target = before + rows as i64;
    let mut written = before;
    while written < target {
        tokio::time::sleep(Duration::from_millis(100)).await;
        written = count(&pool).await?;
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(600),
            "ledger ingest stalled at {written}/{target}"
        );
    }
    let e2e = start.elapsed();
    let published_at = publisher.await??;
    let publish_rate = rows as f64 / (published_at - start).as_secs_f64();
    let e2e_rate = rows as f64 / e2e.as_secs_f64();

    // 2. profiles.best latency over NATS against 3 device classes × 13 models × 2 engines ×
    // 8 thread counts × 4 batch sizes.
    let models = [
        "resnet50",
        "squeezenet",
        "densenet121",
        "inception_v1",
        "inception_v2",
        "shufflenet",
        "vgg19",
        "alexnet",
        "zfnet512",
        "ppocr_det",
        "ppocr_rec",
        "ppocr_cls",
        "silero_vad",
    ];
    let mut points = Vec::new();
    for dc in [
        "x86_64-cloud-8c",
        "aarch64-jetson-orin-nx",
        "x86_64-local-2c",
    ] {
        for (m, model) in models.iter().enumerate() {
            for engine in ["ort", "tract"] {
                for threads in 1..=8u32 {
                    for batch in [1u32, 2, 4, 8] {
                        let p50 = (5.0 + m as f64) * f64::from(batch) / f64::from(threads).sqrt();
                        points.push(ProfilePoint {
                            model: (*model).into(),
                            engine: engine.into(),
                            threads,
                            batch,
                            mean_ms: p50,
                            p50_ms: p50,
                            p95_ms: p50 * 1.1,
                            p99_ms: p50 * 1.2,
                            min_ms: p50 * 0.9,
                            max_ms: p50 * 1.5,
                            qps: f64::from(batch) * 1000.0 / p50,
                            runs: 20,
                            warmup: 3,
                            peak_rss_bytes: 1 << 27,
                            device_class: dc.into(),
                            arch: "x86_64".into(),
                            cpu_model: "bench".into(),
                            core_set: (0..8).collect(),
                            engine_version: "ort 2.0.0-rc.15".into(),
                            library_version: "onnxruntime 1.31.1".into(),
                            worker: "bench".into(),
                            measured_at: at,
                        });
                    }
                }
            }
        }
    }
    let client = StoreClient::new(nats.clone(), subjects.clone());
    for chunk in points.chunks(500) {
        client
            .upsert_profiles(&UpsertProfiles {
                points: chunk.to_vec(),
                unsupported: vec![],
            })
            .await?;
    }
    let mut latencies = Vec::with_capacity(queries);
    for i in 0..queries + 100 {
        let req = BestRequest {
            device_class: "aarch64-jetson-orin-nx".into(),
            model: models[i % models.len()].into(),
            rule: None,
            batch: None,
            engine: None,
        };
        let t = Instant::now();
        client.best(&req).await?;
        if i >= 100 {
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };

    println!("ledger ingest ({rows} rows, one run):");
    println!(
        "  end to end (JetStream -> store -> PostgreSQL): {e2e_rate:>9.0} rows/s  ({:.2} s)",
        e2e.as_secs_f64()
    );
    println!("  publishing alone (JetStream acks):             {publish_rate:>9.0} rows/s");
    println!(
        "  bare batched insert ({} rows):            {direct_rate:>9.0} rows/s",
        direct.len()
    );
    println!(
        "  end to end / bare insert:                      {:>9.2}",
        e2e_rate / direct_rate
    );
    println!(
        "profiles.best over NATS ({queries} queries, {} profile rows, 8 threads x 4 batches x 2 engines per model):",
        points.len()
    );
    println!(
        "  p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms",
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );

    cancel.cancel();
    run.await?;
    let _ = async_nats::jetstream::new(nats)
        .delete_stream(subjects.outcome_stream())
        .await;
    pool.close().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .await?;
    Ok(())
}
