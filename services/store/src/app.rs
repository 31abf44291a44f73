//! The store as a running service: build it (migrate, connect, subscribe), run it until told
//! to stop, then drain: stop taking requests, finish those in flight, write what is buffered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use synergai_contract::StoreOp;
use synergai_contract::catalog::Catalog;
use synergai_platform::{nats, ops};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::config::StoreConfig;
use crate::db;
use crate::error::{ApiError, is_unavailable};
use crate::ingest::{self, TelemetryBuffer};
use crate::state::{Counters, StoreState};

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database URL is malformed.
    #[error("database configuration: {0}")]
    Database(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// NATS is unreachable.
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    /// Subscribing or creating the outcome stream failed.
    #[error("NATS setup failed: {0}")]
    NatsSetup(String),
    /// The operations endpoint could not bind.
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        /// Address.
        addr: SocketAddr,
        /// Error.
        source: std::io::Error,
    },
    /// Cancelled while waiting for PostgreSQL.
    #[error("stopped before PostgreSQL became reachable")]
    Cancelled,
}

/// A running store instance.
pub struct Application {
    state: Arc<StoreState>,
    http: Option<SocketAddr>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// Creates the connection pool (lazily: the store starts and answers 503 while PostgreSQL is
/// away) from configuration.
pub fn pool(config: &StoreConfig) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(config.database.max_connections.max(1))
        .acquire_timeout(Duration::from_millis(config.database.acquire_timeout_ms))
        .connect_lazy(&config.database.url)
}

/// Applies migrations, waiting for PostgreSQL if it is not up yet. Safe when several replicas
/// start together: the migrator holds an advisory lock while it works.
pub async fn migrate(pool: &PgPool, cancel: &CancellationToken) -> Result<(), StartError> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match db::MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e)) if is_unavailable(&e) => {
                tracing::warn!(error = %e, "PostgreSQL not reachable; retrying migrations");
            }
            Err(e) => return Err(e.into()),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(StartError::Cancelled),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl Application {
    /// Builds the store on `pool`: migrations, catalogue models, NATS subscriptions, ingest
    /// tasks and the HTTP operations endpoint. It stops when `cancel` is cancelled.
    pub async fn build(
        config: StoreConfig,
        pool: PgPool,
        metrics: Option<PrometheusHandle>,
        cancel: CancellationToken,
    ) -> Result<Self, StartError> {
        migrate(&pool, &cancel).await?;
        if config.catalog.is_file() {
            match Catalog::load(&config.catalog) {
                Ok(c) => db::register_models(&pool, &c.models).await?,
                Err(e) => tracing::warn!(error = %e, "catalogue not registered"),
            }
        }
        let client = nats::connect(&config.nats, "synergai-store").await?;
        let subjects = config.nats.subjects();
        let buffer = Arc::new(TelemetryBuffer::new(
            config.ingest.telemetry_capacity,
            config.ingest.telemetry_batch,
        ));
        let state = Arc::new(StoreState {
            pool,
            config,
            nats: client,
            subjects,
            counters: Counters::default(),
            buffer,
        });
        state.counters.database_up.store(true, Ordering::Relaxed);
        let tasks = TaskTracker::new();

        // Request-reply: one queue-group subscription per operation, so replicas share load.
        let limit = Arc::new(Semaphore::new(64));
        for op in StoreOp::ALL {
            let sub = state
                .nats
                .queue_subscribe(state.subjects.store(op), "synergai-store".into())
                .await
                .map_err(|e| StartError::NatsSetup(e.to_string()))?;
            tasks.spawn(serve_op(
                state.clone(),
                op,
                sub,
                limit.clone(),
                tasks.clone(),
                cancel.clone(),
            ));
        }
        // Events.
        let receiver = ingest::receive_telemetry(state.clone(), cancel.clone());
        tasks.spawn(async move {
            if let Err(e) = receiver.await {
                tracing::error!(error = %e, "telemetry subscription failed");
            }
        });
        tasks.spawn(ingest::flush_telemetry(state.clone(), cancel.clone()));
        let consumer = ingest::outcome_consumer(&state)
            .await
            .map_err(|e| StartError::NatsSetup(e.to_string()))?;
        tasks.spawn(ingest::ingest_outcomes(
            state.clone(),
            consumer,
            cancel.clone(),
        ));

        let http = match state.config.http.listen {
            Some(addr) => {
                let ready_state = state.clone();
                let readiness: ops::Readiness =
                    Arc::new(move || ready_state.counters.database_up.load(Ordering::Relaxed));
                let (bound, task) = ops::serve(addr, metrics, readiness, cancel.clone())
                    .await
                    .map_err(|source| StartError::Http { addr, source })?;
                tasks.spawn(async move {
                    if let Ok(Err(e)) = task.await {
                        tracing::error!(error = %e, "operations endpoint failed");
                    }
                });
                Some(bound)
            }
            None => None,
        };
        tracing::info!(root = state.subjects.root(), http = ?http, "store ready");
        Ok(Application {
            state,
            http,
            tasks,
            cancel,
        })
    }

    /// Address of the operations endpoint, if serving.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Shared state (counters, pool), for tests and the binary.
    pub fn state(&self) -> &Arc<StoreState> {
        &self.state
    }

    /// Runs until the cancellation token fires, then drains.
    pub async fn run_until_stopped(self) {
        self.cancel.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(e) = self.state.nats.flush().await {
            tracing::warn!(error = %e, "NATS flush at shutdown failed");
        }
        tracing::info!(stats = ?self.state.stats(), "store stopped");
    }
}

async fn serve_op(
    state: Arc<StoreState>,
    op: StoreOp,
    mut sub: async_nats::Subscriber,
    limit: Arc<Semaphore>,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            msg = sub.next() => match msg { Some(m) => m, None => break },
        };
        let Some(reply) = msg.reply.clone() else {
            tracing::debug!(subject = %msg.subject, "store request without a reply subject ignored");
            continue;
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let state = state.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let result = if msg.payload.len() > state.config.limits.max_request_bytes {
                Err(ApiError::TooLarge(format!(
                    "request of {} bytes exceeds the store's limit of {}",
                    msg.payload.len(),
                    state.config.limits.max_request_bytes
                )))
            } else {
                api::handle(&state, op, &msg.payload).await
            };
            let sent = match result {
                Ok(body) => state.nats.publish(reply, body.into()).await,
                Err(e) => {
                    metrics::counter!("synergai_store_errors_total", "op" => op.as_str(), "code" => e.code().to_string())
                        .increment(1);
                    if e.code().as_u16() >= 500 {
                        tracing::warn!(op = op.as_str(), error = %e, "store request failed");
                    }
                    nats::reply_error(&state.nats, reply, e.code(), &e.to_string()).await
                }
            };
            metrics::counter!("synergai_store_requests_total", "op" => op.as_str()).increment(1);
            if let Err(e) = sent {
                tracing::warn!(error = %e, "cannot send store reply");
            }
        });
    }
    // Dropping the subscription unsubscribes: other replicas take new requests from here on.
    drop(sub);
}
