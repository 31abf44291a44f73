//! Serving overhead on loopback at light load: requests one at a time through
//! intake → JetStream → scheduler → worker → reply: squeezenet (a 602 KB input) in the binary
//! form over NATS and as JSON over HTTP, and silero_vad (3 KB) as JSON over NATS. Reports `total_ms − exec_ms` (what SynergAI adds to the inference: admission,
//! queueing through the work queue, placement, dispatch, reply claim and send) p50 and p99, and
//! the client-side round trip beside it.
//!
//! Needs release binaries: `scripts/bench-serving` builds them and runs this.

use std::time::{Duration, Instant};

use sqlx::Executor;
use sqlx::postgres::PgPoolOptions;
use synergai_contract::oip::InferenceRequest;
use synergai_e2e::{Cluster, WorkerSpec, inputs};

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99))
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n = arg("--requests", 500);
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    let db = format!("synergai_overhead_{}", std::process::id());
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .await?;
    let server = url
        .rsplit_once('/')
        .map_or(url.as_str(), |(s, _)| s)
        .to_owned();

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let worker = WorkerSpec::new(
        "w1",
        "local",
        "cloud",
        &format!("0-{}", cores - 1),
        &["squeezenet", "silero_vad"],
    );
    let cluster = Cluster::start(&format!("{server}/{db}"), "synergai", &[worker]).await;

    let mut report = Vec::new();
    for (label, model, http) in [
        ("squeezenet, NATS binary", "squeezenet", false),
        ("squeezenet, HTTP JSON", "squeezenet", true),
        ("silero_vad, NATS JSON", "silero_vad", false),
    ] {
        let req = InferenceRequest::new(inputs(model, 1, 1), Some(1_000.0));
        let mut overhead = Vec::with_capacity(n);
        let mut client = Vec::with_capacity(n);
        let mut exec = Vec::with_capacity(n);
        for i in 0..n + 20 {
            let t = Instant::now();
            let resp = if http {
                cluster.infer_http(model, &req, false).await
            } else {
                cluster.infer(model, &req, model == "squeezenet").await
            }
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let rtt = t.elapsed().as_secs_f64() * 1000.0;
            let p = resp.reply_parameters()?;
            if i >= 20 {
                overhead.push(p.total_ms - p.exec_ms);
                client.push(rtt - p.exec_ms);
                exec.push(p.exec_ms);
            }
            // Light load: one request at a time, with a pause between.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        report.push((
            label,
            percentiles(overhead),
            percentiles(client),
            percentiles(exec),
        ));
    }
    println!(
        "serving overhead, one request at a time ({n} each; squeezenet input 602 KB, silero_vad 3 KB):"
    );
    println!(
        "{:<26} {:>22} {:>26} {:>16}",
        "", "total - exec p50/p99", "client rtt - exec p50/p99", "exec p50/p99"
    );
    for (label, o, c, e) in report {
        println!(
            "{label:<26} {:>10.3} / {:>7.3} ms {:>12.3} / {:>8.3} ms {:>7.3} / {:>6.3} ms",
            o.0, o.1, c.0, c.1, e.0, e.1
        );
    }
    if let Ok(dir) = std::env::var("SYNERGAI_BENCH_LOGS") {
        std::fs::create_dir_all(&dir)?;
        for name in ["intake", "scheduler", "w1"] {
            std::fs::write(format!("{dir}/{name}.log"), cluster.log(name))?;
        }
    }
    cluster.stop().await;
    admin
        .execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
        )))
        .await?;
    Ok(())
}
