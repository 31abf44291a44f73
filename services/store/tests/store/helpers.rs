//! `TestApp`: a store instance on a test's own database and subject prefix.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use synergai_contract::Subjects;
use synergai_contract::profile::ProfilePoint;
use synergai_platform::nats::NatsConfig;
use synergai_store::Application;
use synergai_store::config::StoreConfig;
use synergai_store_client::{EventPublisher, StoreClient};
use tokio_util::sync::CancellationToken;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A subject prefix no other test (or test run) uses.
pub fn unique_prefix() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "t{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

pub fn nats_config() -> NatsConfig {
    let mut cfg = NatsConfig::default();
    if let Ok(url) = std::env::var("SYNERGAI_TEST_NATS_URL") {
        cfg.url = url;
    }
    cfg.subject_prefix = unique_prefix();
    cfg
}

pub fn config() -> StoreConfig {
    let mut cfg = StoreConfig {
        nats: nats_config(),
        ..StoreConfig::default()
    };
    cfg.http.listen = Some("127.0.0.1:0".parse().expect("address"));
    cfg.catalog = workspace().join("assets/catalog.json");
    cfg.ingest.flush_interval_ms = 20;
    cfg.ingest.max_backoff_ms = 200;
    cfg
}

/// The process-wide Prometheus recorder, installed once for every store of this test binary.
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| synergai_platform::ops::install_prometheus().expect("recorder installs"))
        .clone()
}

/// A bare HTTP/1.1 GET: status line, headers and body as text.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

pub struct TestApp {
    pub client: StoreClient,
    pub events: EventPublisher,
    pub nats: async_nats::Client,
    pub subjects: Subjects,
    pub http: std::net::SocketAddr,
    cancel: CancellationToken,
    run: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn spawn(pool: PgPool) -> TestApp {
        Self::spawn_with(pool, config()).await
    }

    pub async fn spawn_with(pool: PgPool, cfg: StoreConfig) -> TestApp {
        let subjects = cfg.nats.subjects();
        let nats = synergai_platform::nats::connect(&cfg.nats, "store-test")
            .await
            .expect("NATS up");
        let cancel = CancellationToken::new();
        let app = Application::build(cfg, pool, Some(prometheus()), cancel.clone())
            .await
            .expect("store starts");
        let http = app.http_addr().expect("http enabled");
        let run = tokio::spawn(app.run_until_stopped());
        TestApp {
            client: StoreClient::new(nats.clone(), subjects.clone())
                .with_timeout(Duration::from_secs(10)),
            events: EventPublisher::new(nats.clone(), subjects.clone()),
            nats,
            subjects,
            http,
            cancel,
            run,
        }
    }

    /// Stops the store (draining it) and removes its JetStream stream.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.run).await;
        let js = async_nats::jetstream::new(self.nats.clone());
        let _ = js.delete_stream(self.subjects.outcome_stream()).await;
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A profile point with the given key and latency figures.
pub fn point(
    device_class: &str,
    engine: &str,
    model: &str,
    threads: u32,
    batch: u32,
    p50_ms: f64,
) -> ProfilePoint {
    ProfilePoint {
        model: model.into(),
        engine: engine.into(),
        threads,
        batch,
        mean_ms: p50_ms,
        p50_ms,
        p95_ms: p50_ms * 1.1,
        p99_ms: p50_ms * 1.2,
        min_ms: p50_ms * 0.9,
        max_ms: p50_ms * 1.3,
        qps: f64::from(batch) * 1000.0 / p50_ms,
        runs: 20,
        warmup: 3,
        peak_rss_bytes: 100 << 20,
        device_class: device_class.into(),
        arch: "x86_64".into(),
        cpu_model: "Test CPU".into(),
        core_set: vec![0, 1],
        engine_version: "ort 2.0.0-rc.15".into(),
        library_version: "onnxruntime 1.31.1".into(),
        worker: "w1".into(),
        measured_at: time::OffsetDateTime::now_utc(),
    }
}
