//! Event ingest, written to PostgreSQL in batches.
//!
//! - Telemetry (job execution times, worker status) arrives on core NATS, loss-tolerant by
//!   nature: it lands in a bounded buffer flushed every `flush_interval_ms`. While PostgreSQL is
//!   down the buffer holds what it can; past its capacity the oldest events are dropped and
//!   counted (`telemetry_dropped`), since newer observations say more about the present.
//! - Outcomes (the ledger) arrive through a JetStream work-queue stream: the store acknowledges
//!   an event only after its row is committed, so a PostgreSQL outage or a store crash loses
//!   nothing; the stream holds the backlog (refusing publishers when full) and redelivered
//!   events are ignored by request id.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use synergai_contract::store::{
    JobObservation, Outcome, ProfilesUpdated, UpdateSource, WorkerStatus,
};
use synergai_contract::validate;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::db;
use crate::error::{ApiError, is_unavailable};
use crate::state::StoreState;

/// One telemetry event.
#[derive(Debug, Clone, PartialEq)]
pub enum Telemetry {
    /// A completed job's execution time.
    Job(JobObservation),
    /// A worker's status.
    Worker(WorkerStatus),
}

/// Telemetry waiting to be written; bounded, dropping the oldest when full.
pub struct TelemetryBuffer {
    queue: Mutex<Queue>,
    capacity: usize,
    ready: Notify,
    batch: usize,
}

/// The waiting events, and how many taken ones are being written.
struct Queue {
    waiting: VecDeque<Telemetry>,
    writing: usize,
}

impl TelemetryBuffer {
    /// A buffer of `capacity` events that wakes the flusher once `batch` are waiting.
    pub fn new(capacity: usize, batch: usize) -> Self {
        TelemetryBuffer {
            queue: Mutex::new(Queue {
                waiting: VecDeque::with_capacity(capacity.min(1 << 16)),
                writing: 0,
            }),
            capacity: capacity.max(1),
            ready: Notify::new(),
            batch: batch.max(1),
        }
    }

    /// Capacity in events.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.waiting.len())
    }

    /// Events not yet written: waiting (at most the capacity), plus the batch being written now.
    pub fn pending(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.waiting.len() + q.writing)
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds an event; returns how many old ones were dropped to make room.
    pub fn push(&self, item: Telemetry) -> u64 {
        let Ok(mut q) = self.queue.lock() else {
            return 1;
        };
        let mut dropped = 0;
        while q.waiting.len() >= self.capacity {
            q.waiting.pop_front();
            dropped += 1;
        }
        q.waiting.push_back(item);
        if q.waiting.len() >= self.batch {
            self.ready.notify_one();
        }
        dropped
    }

    /// Takes up to `max` of the oldest events to be written; they count as pending until
    /// [`written`](Self::written) or [`put_back`](Self::put_back).
    pub fn take(&self, max: usize) -> Vec<Telemetry> {
        let Ok(mut q) = self.queue.lock() else {
            return Vec::new();
        };
        let n = q.waiting.len().min(max);
        q.writing = n;
        q.waiting.drain(..n).collect()
    }

    /// The batch taken last is written.
    pub fn written(&self) {
        if let Ok(mut q) = self.queue.lock() {
            q.writing = 0;
        }
    }

    /// Returns events that could not be written to the front, in order; returns how many of the
    /// oldest had to be dropped because newer events filled the buffer meanwhile.
    pub fn put_back(&self, items: Vec<Telemetry>) -> u64 {
        let Ok(mut q) = self.queue.lock() else {
            return items.len() as u64;
        };
        q.writing = 0;
        for item in items.into_iter().rev() {
            q.waiting.push_front(item);
        }
        let mut dropped = 0;
        while q.waiting.len() > self.capacity {
            q.waiting.pop_front();
            dropped += 1;
        }
        dropped
    }

    async fn wait(&self, interval: Duration) {
        let _ = tokio::time::timeout(interval, self.ready.notified()).await;
    }
}

/// Checks an outcome event before it may become a ledger row.
pub fn check_outcome(o: &Outcome) -> Result<(), ApiError> {
    validate::check_outcome(o).map_err(invalid)
}

fn invalid(e: validate::Invalid) -> ApiError {
    ApiError::BadRequest(e.0)
}

/// Receives telemetry into the buffer until cancelled.
pub async fn receive_telemetry(
    state: Arc<StoreState>,
    cancel: CancellationToken,
) -> Result<(), async_nats::SubscribeError> {
    let queue = "synergai-store".to_owned();
    let jobs = state
        .nats
        .queue_subscribe(state.subjects.job_events(), queue.clone())
        .await?;
    let workers = state
        .nats
        .queue_subscribe(state.subjects.worker_events(), queue)
        .await?;
    let mut events = futures_util::stream::select(jobs, workers);
    let job_prefix = state.subjects.job_events().trim_end_matches('*').to_owned();
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => break,
            msg = events.next() => match msg { Some(m) => m, None => break },
        };
        let c = &state.counters;
        let parsed = if msg.subject.as_str().starts_with(&job_prefix) {
            validate::decode_job(&msg.payload)
                .map(Telemetry::Job)
                .map_err(invalid)
        } else {
            validate::decode_heartbeat(&msg.payload)
                .map(|h| Telemetry::Worker(h.status))
                .map_err(invalid)
        };
        match parsed {
            Ok(item) => {
                let dropped = state.buffer.push(item);
                if dropped > 0 {
                    c.telemetry_dropped.fetch_add(dropped, Ordering::Relaxed);
                    metrics::counter!("synergai_store_telemetry_dropped_total").increment(dropped);
                }
            }
            Err(e) => {
                c.telemetry_rejected.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("synergai_store_telemetry_rejected_total").increment(1);
                tracing::debug!(subject = %msg.subject, error = %e, "telemetry event refused");
            }
        }
        // Counted once it is pending, dropped or refused, so that a snapshot of the counters
        // never holds an event that is nowhere yet.
        c.telemetry_received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("synergai_store_telemetry_received_total").increment(1);
    }
    Ok(())
}

async fn write_telemetry(state: &StoreState, batch: &[Telemetry]) -> Result<(), sqlx::Error> {
    let mut jobs = Vec::new();
    let mut workers = Vec::new();
    for t in batch {
        match t {
            Telemetry::Job(j) => jobs.push(j.clone()),
            Telemetry::Worker(w) => workers.push(w.clone()),
        }
    }
    if !workers.is_empty() {
        state.observe(db::upsert_workers(&state.pool, &workers).await)?;
    }
    if !jobs.is_empty() {
        let (revision, moved) = state.observe(
            db::apply_observations(&state.pool, &jobs, state.config.refine.alpha, state.drift())
                .await,
        )?;
        state
            .publish_update(&ProfilesUpdated {
                revision,
                source: UpdateSource::Online,
                moved,
            })
            .await;
    }
    Ok(())
}

/// Writes buffered telemetry in batches until cancelled, then makes one last attempt.
pub async fn flush_telemetry(state: Arc<StoreState>, cancel: CancellationToken) {
    let interval = Duration::from_millis(state.config.ingest.flush_interval_ms.max(1));
    let max_backoff = Duration::from_millis(state.config.ingest.max_backoff_ms.max(1));
    let batch_size = state.config.ingest.telemetry_batch.max(1);
    let mut backoff = interval;
    loop {
        let stopping = cancel.is_cancelled();
        if !stopping && state.buffer.len() < batch_size {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = state.buffer.wait(interval) => {}
            }
        }
        metrics::gauge!("synergai_store_telemetry_pending").set(state.buffer.len() as f64);
        let batch = state.buffer.take(batch_size);
        if batch.is_empty() {
            if stopping {
                return;
            }
            continue;
        }
        let n = batch.len() as u64;
        match write_telemetry(&state, &batch).await {
            Ok(()) => {
                state
                    .counters
                    .telemetry_written
                    .fetch_add(n, Ordering::Relaxed);
                state.buffer.written();
                metrics::counter!("synergai_store_telemetry_written_total").increment(n);
                backoff = interval;
            }
            Err(e) => {
                let dropped = state.buffer.put_back(batch);
                if dropped > 0 {
                    state
                        .counters
                        .telemetry_dropped
                        .fetch_add(dropped, Ordering::Relaxed);
                    metrics::counter!("synergai_store_telemetry_dropped_total").increment(dropped);
                }
                if stopping {
                    tracing::warn!(error = %e, pending = state.buffer.len(), "telemetry not written at shutdown");
                    return;
                }
                if !is_unavailable(&e) {
                    tracing::error!(error = %e, "telemetry write failed");
                }
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// Creates (or finds) the outcome stream and the store's durable consumer on it.
pub async fn outcome_consumer(
    state: &StoreState,
) -> Result<consumer::PullConsumer, async_nats::Error> {
    let js = jetstream::new(state.nats.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: state.subjects.outcome_stream(),
            subjects: vec![state.subjects.outcome_events()],
            retention: stream::RetentionPolicy::WorkQueue,
            discard: stream::DiscardPolicy::New,
            max_bytes: state.config.ingest.outcome_stream_max_bytes,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let batch = state.config.ingest.outcome_batch.max(1);
    Ok(stream
        .get_or_create_consumer(
            "synergai-store",
            consumer::pull::Config {
                durable_name: Some("synergai-store".into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(60),
                max_ack_pending: (batch * 4) as i64,
                ..Default::default()
            },
        )
        .await?)
}

/// Moves outcome events from the stream into the ledger until cancelled.
pub async fn ingest_outcomes(
    state: Arc<StoreState>,
    consumer: consumer::PullConsumer,
    cancel: CancellationToken,
) {
    let wait = Duration::from_millis(state.config.ingest.flush_interval_ms.max(10));
    let max_backoff = Duration::from_millis(state.config.ingest.max_backoff_ms.max(1));
    let batch_size = state.config.ingest.outcome_batch.max(1);
    while !cancel.is_cancelled() {
        let fetched = tokio::select! {
            _ = cancel.cancelled() => return,
            b = consumer.batch().max_messages(batch_size).expires(wait).messages() => b,
        };
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "outcome fetch failed");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let mut rows = Vec::new();
        let mut acks = Vec::new();
        while let Some(next) = messages.next().await {
            let Ok(msg) = next else { continue };
            match validate::decode_outcome(&msg.payload).map_err(invalid) {
                Ok(o) => {
                    rows.push(o);
                    acks.push(msg);
                }
                Err(e) => {
                    // It can never become a row: acknowledge it away rather than loop on it.
                    state
                        .counters
                        .outcomes_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("synergai_store_outcomes_rejected_total").increment(1);
                    tracing::warn!(error = %e, "outcome event refused");
                    let _ = msg.ack_with(jetstream::AckKind::Term).await;
                }
            }
        }
        if rows.is_empty() {
            continue;
        }
        let mut backoff = wait;
        loop {
            match state.observe(db::insert_outcomes(&state.pool, &rows).await) {
                Ok(_) => {
                    let n = rows.len() as u64;
                    state
                        .counters
                        .outcomes_written
                        .fetch_add(n, Ordering::Relaxed);
                    metrics::counter!("synergai_store_ledger_rows_total").increment(n);
                    // Write lag: from JetStream storing the outcome to its row being written.
                    let now = time::OffsetDateTime::now_utc();
                    for m in &acks {
                        if let Ok(info) = m.info() {
                            let lag = (now - info.published).as_seconds_f64() * 1000.0;
                            metrics::histogram!("synergai_store_write_lag_ms", "kind" => "outcome")
                                .record(lag.max(0.0));
                        }
                    }
                    futures_util::future::join_all(acks.iter().map(|m| m.ack())).await;
                    break;
                }
                Err(e) => {
                    if !is_unavailable(&e) {
                        tracing::error!(error = %e, rows = rows.len(), "ledger write failed");
                    }
                    // Not acknowledged: JetStream redelivers after ack_wait if the store stops.
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synergai_contract::store::ProfileKey;

    fn job(n: u32) -> Telemetry {
        Telemetry::Job(JobObservation {
            worker: "w".into(),
            key: ProfileKey {
                device_class: "d".into(),
                engine: "ort".into(),
                model: "m".into(),
                threads: n,
                batch: 1,
            },
            exec_ms: 1.0,
            request_ids: vec![],
        })
    }

    fn threads(t: &Telemetry) -> u32 {
        match t {
            Telemetry::Job(j) => j.key.threads,
            Telemetry::Worker(_) => 0,
        }
    }

    #[test]
    fn buffer_drops_the_oldest_and_counts() {
        let b = TelemetryBuffer::new(3, 10);
        let dropped: u64 = (1..=5).map(|n| b.push(job(n))).sum();
        assert_eq!(dropped, 2);
        let got: Vec<u32> = b.take(10).iter().map(threads).collect();
        assert_eq!(got, [3, 4, 5]);
    }

    #[test]
    fn put_back_keeps_order_and_the_bound() {
        let b = TelemetryBuffer::new(4, 10);
        for n in 1..=3 {
            b.push(job(n));
        }
        let taken = b.take(2); // 1, 2 in flight
        for n in 4..=6 {
            b.push(job(n)); // 3, 4, 5, 6 fill it
        }
        let dropped = b.put_back(taken); // 1..6 is 6 > 4: the two oldest go
        assert_eq!(dropped, 2);
        let got: Vec<u32> = b.take(10).iter().map(threads).collect();
        assert_eq!(got, [3, 4, 5, 6]);
    }
}
