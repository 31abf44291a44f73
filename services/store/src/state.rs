//! What every handler and ingest task of one store instance shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sqlx::PgPool;
use synergai_contract::Subjects;
use synergai_contract::store::{ProfilesUpdated, StoreStats};

use crate::config::StoreConfig;
use crate::db::DriftRule;
use crate::error::is_unavailable;
use crate::ingest::TelemetryBuffer;

/// Ingest counters of this instance (also exported as metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Telemetry events received.
    pub telemetry_received: AtomicU64,
    /// Telemetry events written.
    pub telemetry_written: AtomicU64,
    /// Telemetry events dropped (buffer full).
    pub telemetry_dropped: AtomicU64,
    /// Telemetry events refused as malformed.
    pub telemetry_rejected: AtomicU64,
    /// Outcome rows written (duplicates included).
    pub outcomes_written: AtomicU64,
    /// Outcome events refused as malformed.
    pub outcomes_rejected: AtomicU64,
    /// Whether the last database operation succeeded.
    pub database_up: AtomicBool,
}

/// Shared state of one store instance.
pub struct StoreState {
    /// PostgreSQL pool.
    pub pool: PgPool,
    /// Configuration.
    pub config: StoreConfig,
    /// NATS connection.
    pub nats: async_nats::Client,
    /// Subjects of this deployment.
    pub subjects: Subjects,
    /// Counters.
    pub counters: Counters,
    /// Telemetry waiting to be written.
    pub buffer: Arc<TelemetryBuffer>,
}

impl StoreState {
    /// The drift rule in force.
    pub fn drift(&self) -> DriftRule {
        DriftRule {
            threshold: self.config.refine.drift_threshold,
            min_count: self.config.refine.drift_min_count,
        }
    }

    /// Notes whether a database call reached PostgreSQL, and passes its result on.
    pub fn observe<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        let up = match &result {
            Ok(_) => true,
            Err(e) => !is_unavailable(e),
        };
        self.counters.database_up.store(up, Ordering::Relaxed);
        metrics::gauge!("synergai_store_database_up").set(if up { 1.0 } else { 0.0 });
        result
    }

    /// Publishes a `profiles updated` event (best effort: subscribers also poll).
    pub async fn publish_update(&self, event: &ProfilesUpdated) {
        for m in &event.moved {
            if let Some(drift) = m.drift {
                let labels = [
                    ("device_class", m.key.device_class.clone()),
                    ("engine", m.key.engine.clone()),
                    ("model", m.key.model.clone()),
                    ("threads", m.key.threads.to_string()),
                    ("batch", m.key.batch.to_string()),
                ];
                metrics::gauge!("synergai_profile_drift_ratio", &labels).set(drift);
                metrics::gauge!("synergai_profile_drifted", &labels).set(if m.drifted {
                    1.0
                } else {
                    0.0
                });
            }
        }
        let Ok(body) = serde_json::to_vec(event) else {
            return;
        };
        if let Err(e) = self
            .nats
            .publish(self.subjects.profiles_updated(), body.into())
            .await
        {
            tracing::warn!(error = %e, "cannot publish profiles-updated event");
        }
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> StoreStats {
        let c = &self.counters;
        StoreStats {
            telemetry_received: c.telemetry_received.load(Ordering::Relaxed),
            telemetry_written: c.telemetry_written.load(Ordering::Relaxed),
            telemetry_dropped: c.telemetry_dropped.load(Ordering::Relaxed),
            telemetry_rejected: c.telemetry_rejected.load(Ordering::Relaxed),
            telemetry_pending: self.buffer.pending() as u64,
            telemetry_capacity: self.buffer.capacity() as u64,
            outcomes_written: c.outcomes_written.load(Ordering::Relaxed),
            outcomes_rejected: c.outcomes_rejected.load(Ordering::Relaxed),
            database_up: c.database_up.load(Ordering::Relaxed),
        }
    }
}
