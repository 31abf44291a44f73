//! The operations endpoint every service exposes over HTTP: `GET /metrics` (Prometheus text
//! format) and `GET /health/live`, `GET /health/ready`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Histogram buckets of metrics in milliseconds (`*_ms`): 0.1 ms to 10 s.
pub const MS_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0,
];

/// Histogram buckets of metrics in microseconds (`*_us`): 1 µs to 100 ms.
pub const US_BUCKETS: &[f64] = &[
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 10000.0, 100000.0,
];

/// Installs the process-wide Prometheus recorder (binaries only: there is one per process).
/// Histograms named `*_ms` and `*_us` are rendered as Prometheus histograms (buckets above), so
/// they aggregate across instances.
pub fn install_prometheus() -> Result<PrometheusHandle, String> {
    let err = |e: metrics_exporter_prometheus::BuildError| {
        format!("cannot install the metrics recorder: {e}")
    };
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_ms".into()), MS_BUCKETS)
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Suffix("_us".into()), US_BUCKETS)
        .map_err(err)?
        .install_recorder()
        .map_err(err)
}

/// Readiness: whether the service can do its job right now.
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct Ops {
    metrics: Option<PrometheusHandle>,
    ready: Readiness,
}

async fn metrics(State(ops): State<Ops>) -> (StatusCode, String) {
    match &ops.metrics {
        Some(h) => (StatusCode::OK, h.render()),
        None => (
            StatusCode::NOT_FOUND,
            "metrics recorder not installed\n".into(),
        ),
    }
}

async fn ready(State(ops): State<Ops>) -> StatusCode {
    if (ops.ready)() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Binds `addr` and serves the operations endpoint until `shutdown`; returns the bound address
/// (so `:0` works in tests) and the server task.
pub async fn serve(
    addr: SocketAddr,
    metrics_handle: Option<PrometheusHandle>,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { StatusCode::OK }))
        .route("/health/ready", get(ready))
        .with_state(Ops {
            metrics: metrics_handle,
            ready: readiness,
        });
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    Ok((bound, task))
}
