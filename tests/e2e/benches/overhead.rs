//! Serving overhead on loopback at light load: requests one at a time through
//! intake → JetStream → scheduler → worker → reply: squeezenet (a 602 KB input) in the binary
//! form over NATS and as JSON over HTTP, and silero_vad (3 KB) as JSON over NATS. Reports `total_ms − exec_ms` (what SynergAI adds to the inference: admission,
//! queueing through the work queue, placement, dispatch, reply claim and send) p50 and p99, and
//! the client-side round trip beside it.
//!
//! Beside it, the bus's own cost for the same 602 KB body in the same run: one core NATS
//! request carrying it to an idle responder in this process, one JetStream publish of it into a
//! memory stream (acknowledged), and one direct get of it back: the broker crossings a request
//! makes before its inference (into the work queue, out to the worker).
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
    let floor = bus_floor(&cluster.nats, n).await?;
    println!("the bus alone, same squeezenet body (602 KB), same run:");
    for (label, (p50, p99)) in floor {
        println!("{label:<53} {p50:>7.3} / {p99:>7.3} ms");
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

/// Broker crossings of the squeezenet body with nothing else around them: p50/p99 of a core
/// request to an idle responder, a JetStream publish into a memory stream, and a direct get.
async fn bus_floor(
    nats: &async_nats::Client,
    n: usize,
) -> anyhow::Result<Vec<(&'static str, (f64, f64))>> {
    use async_nats::jetstream::{self, stream};
    use futures_util::StreamExt;
    let body = bytes::Bytes::from(
        InferenceRequest::new(inputs("squeezenet", 1, 1), Some(1_000.0))
            .encode(true)?
            .body,
    );
    let subject = format!("synergai.bench.floor.{}", std::process::id());
    let mut echo = nats.subscribe(subject.clone()).await?;
    let responder = nats.clone();
    let answering = tokio::spawn(async move {
        while let Some(m) = echo.next().await {
            if let Some(reply) = m.reply {
                let _ = responder
                    .publish(reply, bytes::Bytes::from_static(b"ok"))
                    .await;
            }
        }
    });
    nats.flush().await?;
    let mut request = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        nats.request(subject.clone(), body.clone()).await?;
        if i >= 20 {
            request.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    answering.abort();
    let js = jetstream::new(nats.clone());
    let name = format!("SYNERGAI_BENCH_FLOOR_{}", std::process::id());
    let s = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{subject}.js")],
            storage: stream::StorageType::Memory,
            allow_direct: true,
            max_bytes: 1 << 30,
            ..Default::default()
        })
        .await?;
    let (mut publish, mut get) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 20 {
        let t = Instant::now();
        let ack = js
            .publish(format!("{subject}.js"), body.clone())
            .await?
            .await?;
        let stored = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let m = s.direct_get(ack.sequence).await?;
        anyhow::ensure!(
            m.payload.len() == body.len(),
            "direct get returned another body"
        );
        if i >= 20 {
            publish.push(stored);
            get.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    js.delete_stream(&name).await?;
    Ok(vec![
        (
            "core NATS request to an idle responder p50/p99",
            percentiles(request),
        ),
        (
            "JetStream publish, memory stream, acknowledged p50/p99",
            percentiles(publish),
        ),
        ("JetStream direct get p50/p99", percentiles(get)),
    ])
}
