//! The scheduler service: takes accepted requests from the JetStream work queue, places each
//! with the policy in force, dispatches it to the chosen worker's subject, tracks it until the
//! worker reports completion, and answers (or re-dispatches) what a lost worker held.
//!
//! A request is acknowledged to JetStream only once a worker has queued it, so a scheduler
//! restart loses nothing accepted: what it had not dispatched is redelivered to the next one.
//! Replies are claimed (`ReplyClaims`), so the scheduler's 503/504 answers and a worker's
//! result can never both reach a client.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use synergai_contract::headers::{INFERENCE_HEADER_CONTENT_LENGTH, REQUEST_ID};
use synergai_contract::serving::{
    CandidateView, DecisionEvent, DispatchAck, DispatchMeta, HeldJob, JOB_HEADER, JobMeta,
    SchedulerControl, SchedulerState, WorkerHeartbeat,
};
use synergai_contract::store::{JobObservation, Outcome};
use synergai_contract::trace::TraceContext;
use synergai_contract::{ErrorCode, Subjects, Token};
use synergai_platform::nats::{self as pnats, ReplyClaims};
use synergai_platform::{ops, telemetry};
use synergai_policy::{PolicyConfig, PolicyKind, Rejection};
use synergai_store_client::{ColdStart, EventPublisher, ProfileCache};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::field::Empty;

use crate::config::SchedulerConfig;
use crate::core::{Core, InFlight, Placed};

/// Why the scheduler could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// NATS unreachable.
    #[error(transparent)]
    Nats(#[from] pnats::NatsError),
    /// JetStream or subscription setup failed.
    #[error("NATS setup: {0}")]
    Setup(String),
}

/// What the scheduler's tasks share.
pub struct Ctx {
    /// Instance id.
    pub id: Token,
    nats: Client,
    subjects: Subjects,
    claims: ReplyClaims,
    events: EventPublisher,
    /// The state.
    pub core: Mutex<Core>,
    profiles: Arc<ProfileCache>,
    config: SchedulerConfig,
}

/// A running scheduler.
pub struct Scheduler {
    ctx: Arc<Ctx>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    http: Option<SocketAddr>,
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn lock(ctx: &Ctx) -> std::sync::MutexGuard<'_, Core> {
    // A panic while holding the lock leaves consistent-enough state for scheduling.
    ctx.core.lock().unwrap_or_else(|p| p.into_inner())
}

impl Scheduler {
    /// Starts the scheduler; it runs until `cancel`.
    pub async fn start(
        config: SchedulerConfig,
        models: Vec<String>,
        metrics: Option<PrometheusHandle>,
        cancel: CancellationToken,
    ) -> Result<Self, StartError> {
        let id = Token::parse(config.scheduler.id.as_str())
            .map_err(|e| StartError::Config(format!("scheduler.id: {e}")))?;
        let kind: PolicyKind = config
            .scheduler
            .policy
            .parse()
            .map_err(StartError::Config)?;
        let policy_config = PolicyConfig {
            shed_late_fraction: config.scheduler.shed_late_fraction,
            slo_mael_max_assignments: config.scheduler.slo_mael_max_assignments,
            slo_mael_window: config.scheduler.slo_mael_window,
            seed: config.scheduler.seed,
        };
        let storage = match config.scheduler.request_storage.as_str() {
            "memory" => stream::StorageType::Memory,
            "file" => stream::StorageType::File,
            other => {
                return Err(StartError::Config(format!(
                    "scheduler.request_storage {other:?}: memory or file"
                )));
            }
        };
        let nats = pnats::connect(&config.nats, &format!("synergai-scheduler-{id}")).await?;
        let subjects = config.nats.subjects();
        let setup = |e: String| StartError::Setup(e);
        let claims = ReplyClaims::open(&nats, &subjects, Duration::from_secs(600))
            .await
            .map_err(|e| setup(e.to_string()))?;
        let js = pnats::jetstream(&nats, subjects.domain());
        let redeliver_after = Duration::from_millis(config.scheduler.redeliver_after_ms.max(100));
        let consumer = open_work_queue(
            &js,
            &subjects,
            storage,
            config.scheduler.request_max_bytes,
            redeliver_after,
        )
        .await
        .map_err(setup)?;
        let profiles = ProfileCache::new(nats.clone(), subjects.clone(), ColdStart::default());
        let tasks = TaskTracker::new();
        tasks.spawn({
            let follower = profiles.follow(Duration::from_secs(10), cancel.clone());
            async move {
                let _ = follower.await;
            }
        });
        let ctx = Arc::new(Ctx {
            core: Mutex::new(Core::new(
                kind,
                policy_config,
                config.network.clone(),
                config.scheduler.lost_after_heartbeats,
                &models,
            )),
            events: EventPublisher::new(nats.clone(), subjects.clone()),
            id,
            nats: nats.clone(),
            subjects: subjects.clone(),
            claims,
            profiles,
            config: config.clone(),
        });

        let heartbeats = nats
            .subscribe(subjects.worker_events())
            .await
            .map_err(|e| setup(e.to_string()))?;
        let completions = nats
            .subscribe(subjects.job_events())
            .await
            .map_err(|e| setup(e.to_string()))?;
        let control = nats
            .subscribe(subjects.scheduler_control())
            .await
            .map_err(|e| setup(e.to_string()))?;
        tasks.spawn(take_heartbeats(ctx.clone(), heartbeats, cancel.clone()));
        tasks.spawn(take_completions(ctx.clone(), completions, cancel.clone()));
        tasks.spawn(take_control(ctx.clone(), control, cancel.clone()));
        tasks.spawn(sweep(ctx.clone(), tasks.clone(), cancel.clone()));
        tasks.spawn(ping(ctx.clone(), cancel.clone()));
        tasks.spawn(take_requests(
            ctx.clone(),
            consumer,
            tasks.clone(),
            cancel.clone(),
        ));

        let http = match config.http.listen {
            Some(addr) => {
                let (bound, task) = ops::serve(addr, metrics, Arc::new(|| true), cancel.clone())
                    .await
                    .map_err(|e| setup(format!("HTTP on {addr}: {e}")))?;
                tasks.spawn(async move {
                    let _ = task.await;
                });
                Some(bound)
            }
            None => None,
        };
        tracing::info!(scheduler = %ctx.id, policy = kind.as_str(), "scheduler ready");
        Ok(Scheduler {
            ctx,
            tasks,
            cancel,
            http,
        })
    }

    /// The operations endpoint's address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Shared state (for tests).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Runs until cancelled, then waits for in-flight dispatches to settle.
    pub async fn run_until_stopped(self) {
        self.cancel.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.ctx.nats.flush().await;
        tracing::info!(scheduler = %self.ctx.id, "scheduler stopped");
    }
}

/// The consumer's settings: headers only (the scheduler never moves request bodies; workers
/// read them from the stream), acknowledged when the job ends.
fn consumer_config(redeliver_after: Duration) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some("synergai-scheduler".into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: redeliver_after,
        max_ack_pending: 50_000,
        headers_only: true,
        ..Default::default()
    }
}

/// Opens (creating or bringing up to date) the work queue of accepted requests and the
/// scheduler's consumer of it.
async fn open_work_queue(
    js: &jetstream::Context,
    subjects: &Subjects,
    storage: stream::StorageType,
    max_bytes: i64,
    redeliver_after: Duration,
) -> Result<consumer::PullConsumer, String> {
    let config = stream::Config {
        name: subjects.request_stream(),
        subjects: vec![subjects.sched_requests()],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        storage,
        max_bytes,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    };
    let mut requests = js
        .get_or_create_stream(config)
        .await
        .map_err(|e| e.to_string())?;
    let info = requests.info().await.map_err(|e| e.to_string())?;
    if !info.config.allow_direct {
        // A stream made by an older version: workers read bodies with direct gets.
        let mut updated = info.config.clone();
        updated.allow_direct = true;
        js.update_stream(updated).await.map_err(|e| e.to_string())?;
    }
    let wanted = consumer_config(redeliver_after);
    if let Ok(existing) = requests
        .get_consumer::<consumer::pull::Config>("synergai-scheduler")
        .await
    {
        let have = &existing.cached_info().config;
        if !have.headers_only
            || have.max_ack_pending != wanted.max_ack_pending
            || have.ack_wait != wanted.ack_wait
        {
            // Unacknowledged messages stay in a work queue stream; the new consumer gets them.
            requests
                .delete_consumer("synergai-scheduler")
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    requests
        .get_or_create_consumer("synergai-scheduler", wanted)
        .await
        .map_err(|e| e.to_string())
}

/// Acknowledges a work-queue message: the request is finished with and leaves the stream.
async fn ack_message(ctx: &Ctx, subject: Option<&str>) {
    if let Some(s) = subject {
        let _ = ctx
            .nats
            .publish(s.to_owned(), Bytes::from_static(b"+ACK"))
            .await;
    }
}

async fn ack_ended(ctx: &Ctx, ended: Vec<InFlight>) {
    for f in ended {
        ack_message(ctx, f.ack.as_deref()).await;
    }
}

async fn take_heartbeats(
    ctx: Arc<Ctx>,
    mut sub: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        match serde_json::from_slice::<WorkerHeartbeat>(&msg.payload) {
            Ok(hb) => {
                let ended = lock(&ctx).heartbeat(hb, Instant::now());
                ack_ended(&ctx, ended).await;
            }
            Err(e) => tracing::debug!(error = %e, "malformed heartbeat ignored"),
        }
    }
}

async fn take_completions(
    ctx: Arc<Ctx>,
    mut sub: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        if let Ok(o) = serde_json::from_slice::<JobObservation>(&msg.payload) {
            let ended = lock(&ctx).completed(&o.request_ids);
            ack_ended(&ctx, ended).await;
        }
    }
}

async fn take_control(ctx: Arc<Ctx>, mut sub: async_nats::Subscriber, cancel: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let Some(reply) = msg.reply.clone() else {
            continue;
        };
        let parsed = if msg.payload.is_empty() {
            Ok(SchedulerControl::default())
        } else {
            serde_json::from_slice::<SchedulerControl>(&msg.payload).map_err(|e| e.to_string())
        };
        let result = parsed.and_then(|c| match c.policy {
            Some(p) => p.parse::<PolicyKind>().map(Some),
            None => Ok(None),
        });
        match result {
            Ok(kind) => {
                let state = {
                    let mut core = lock(&ctx);
                    if let Some(k) = kind {
                        core.set_policy(k);
                        tracing::info!(policy = k.as_str(), "policy switched");
                    }
                    SchedulerState {
                        scheduler: ctx.id.to_string(),
                        policy: core.policy.kind().as_str().into(),
                        workers: core.workers().len() as u32,
                        in_flight: core.in_flight.len() as u32,
                        profile_revision: core.index_revision,
                    }
                };
                let _ = ctx
                    .nats
                    .publish(reply, serde_json::to_vec(&state).unwrap_or_default().into())
                    .await;
            }
            Err(e) => {
                let _ = pnats::reply_error(&ctx.nats, reply, ErrorCode::BadRequest, &e).await;
            }
        }
    }
}

/// Rebuilds the profile index when profiles or workers change, and recovers lost workers' jobs.
async fn sweep(ctx: Arc<Ctx>, tasks: TaskTracker, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let snapshot = ctx.profiles.snapshot();
        let lost = {
            let mut core = lock(&ctx);
            if core.index_stale(snapshot.as_ref().map(|s| s.revision)) {
                core.rebuild_index(snapshot.as_deref());
            }
            core.sweep_lost(Instant::now())
        };
        for l in lost {
            metrics::counter!("synergai_scheduler_workers_lost_total").increment(1);
            for job in l.own {
                tasks.spawn(redispatch(ctx.clone(), job, l.worker.clone()));
            }
            // A request of another JetStream domain (another site's scheduler dispatched it)
            // is that site's to answer: its claim is there, and the worker may still be serving
            // it, lost only to this site (a cut uplink).
            for orphan in l
                .orphans
                .into_iter()
                .filter(|o| o.domain.as_deref() == ctx.subjects.domain())
            {
                tasks.spawn(answer_orphan(ctx.clone(), orphan, l.worker.clone()));
            }
        }
    }
}

/// Measures the round trip to each worker every second.
async fn ping(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let workers: Vec<(String, Token)> = lock(&ctx)
            .workers()
            .iter()
            .map(|w| (w.id.clone(), w.token.clone()))
            .collect();
        for (id, token) in workers {
            let t = Instant::now();
            let pong = tokio::time::timeout(
                Duration::from_millis(500),
                ctx.nats
                    .request(ctx.subjects.worker_ping(&token), Bytes::new()),
            )
            .await;
            if let Ok(Ok(_)) = pong {
                lock(&ctx).round_trip(&id, t.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
}

/// A request taken from the work queue (its headers: the body stays in the stream).
struct Taken {
    /// Acknowledgement subject of its work-queue message.
    ack: Option<String>,
    meta: JobMeta,
    /// Sequence of its body in the stream.
    seq: u64,
    header_len: Option<String>,
    trace: Option<TraceContext>,
}

/// Takes accepted requests for as long as the scheduler runs. When the work queue or its
/// consumer goes away (a NATS server restarted without them: a memory-backed queue), they are
/// created again and taking resumes.
async fn take_requests(
    ctx: Arc<Ctx>,
    mut consumer: consumer::PullConsumer,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let js = pnats::jetstream(&ctx.nats, ctx.subjects.domain());
    loop {
        take_from(&ctx, &consumer, &tasks, &cancel).await;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let storage = if ctx.config.scheduler.request_storage == "file" {
                stream::StorageType::File
            } else {
                stream::StorageType::Memory
            };
            let redeliver_after =
                Duration::from_millis(ctx.config.scheduler.redeliver_after_ms.max(100));
            match open_work_queue(
                &js,
                &ctx.subjects,
                storage,
                ctx.config.scheduler.request_max_bytes,
                redeliver_after,
            )
            .await
            {
                Ok(c) => {
                    tracing::info!("work queue opened again");
                    consumer = c;
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "work queue not reachable; retrying"),
            }
        }
    }
}

/// Takes from `consumer` until cancelled (returns) or until the consumer is gone.
async fn take_from(
    ctx: &Arc<Ctx>,
    consumer: &consumer::PullConsumer,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) {
    use consumer::pull::MessagesErrorKind;
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "cannot consume accepted requests");
            return;
        }
    };
    let mut missed = 0u32;
    loop {
        let first = tokio::select! {
            _ = cancel.cancelled() => return,
            m = messages.next() => match m {
                Some(Ok(m)) => { missed = 0; m }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "request stream");
                    match e.kind() {
                        MessagesErrorKind::ConsumerDeleted | MessagesErrorKind::NoResponders => return,
                        MessagesErrorKind::MissingHeartbeat => {
                            missed += 1;
                            // Heartbeats keep missing: check that the consumer is still there.
                            if missed >= 3 {
                                return;
                            }
                        }
                        _ => {}
                    }
                    continue
                }
                None => return,
            },
        };
        let mut batch = vec![first];
        let window = {
            let core = lock(ctx);
            core.policy.window(core.workers().len())
        };
        if window > 1 {
            let until = tokio::time::Instant::now()
                + Duration::from_millis(ctx.config.scheduler.slo_mael_wait_ms);
            while batch.len() < window {
                match tokio::time::timeout_at(until, messages.next()).await {
                    Ok(Some(Ok(m))) => batch.push(m),
                    _ => break,
                }
            }
        }
        let mut taken = Vec::with_capacity(batch.len());
        for msg in batch {
            let headers = msg.headers.clone();
            let meta = headers
                .as_ref()
                .and_then(|h| h.get(JOB_HEADER))
                .and_then(|v| serde_json::from_str::<JobMeta>(v.as_str()).ok());
            let (Some(meta), Ok(info)) = (meta, msg.info()) else {
                tracing::warn!("accepted request without a job header dropped");
                let _ = msg.ack_with(jetstream::AckKind::Term).await;
                continue;
            };
            let (seq, delivered) = (info.stream_sequence, info.delivered);
            let ack_subject = msg.reply.as_ref().map(|r| r.to_string());
            let job = Taken {
                seq,
                header_len: headers
                    .as_ref()
                    .and_then(|h| h.get(INFERENCE_HEADER_CONTENT_LENGTH))
                    .map(|v| v.as_str().to_owned()),
                trace: pnats::trace_of(headers.as_ref()),
                meta,
                ack: ack_subject,
            };
            if delivered > 1 {
                if !adopt(ctx, &job.meta, seq, job.ack.as_deref()) {
                    continue;
                }
                // Held by no worker this scheduler has heard of: one may have taken it without
                // having said so yet (this scheduler has just started, or the heartbeat listing
                // it is on its way). Decide once every worker has heartbeated again.
                lock(ctx).pending.insert(job.meta.request_id.clone());
                tasks.spawn(adopt_later(ctx.clone(), tasks.clone(), job));
                continue;
            }
            taken.push(job);
        }
        place_and_dispatch(ctx, tasks, taken, 1, Vec::new());
    }
}

/// A request delivered again and held by no known worker: after a heartbeat round, adopts it
/// if a worker now lists it, acknowledges it if it was answered meanwhile, else places it.
async fn adopt_later(ctx: Arc<Ctx>, tasks: TaskTracker, job: Taken) {
    let round = lock(&ctx).heartbeat_round();
    tokio::time::sleep(round).await;
    lock(&ctx).pending.remove(&job.meta.request_id);
    if !adopt(&ctx, &job.meta, job.seq, job.ack.as_deref()) {
        return;
    }
    // Held nowhere: answered while no scheduler was there to acknowledge it?
    if ctx
        .claims
        .claimed(&job.meta.request_id)
        .await
        .unwrap_or(false)
    {
        ack_message(&ctx, job.ack.as_deref()).await;
        return;
    }
    place_and_dispatch(&ctx, &tasks, vec![job], 1, Vec::new());
}

/// A request delivered again (its acknowledgement is due when its job ends): false when it is
/// already being served — being placed or dispatched by this scheduler, or held by a live
/// worker (dispatched by a scheduler that has since restarted, now adopted) — true when it
/// must be placed.
fn adopt(ctx: &Ctx, meta: &JobMeta, seq: u64, ack_subject: Option<&str>) -> bool {
    let mut core = lock(ctx);
    if core.pending.contains(&meta.request_id) {
        return false;
    }
    if let Some(f) = core.in_flight.get_mut(&meta.request_id) {
        f.ack = ack_subject.map(str::to_owned);
        return false;
    }
    let Some(worker) = core.holder_of(&meta.request_id).map(str::to_owned) else {
        return true;
    };
    core.in_flight.insert(
        meta.request_id.clone(),
        InFlight {
            meta: meta.clone(),
            seq,
            ack: ack_subject.map(str::to_owned),
            header_len: None,
            trace: None,
            worker,
            est_exec_ms: 0.0,
            attempt: 1,
            dispatched: Instant::now(),
        },
    );
    false
}

/// Places requests and spawns their dispatches.
fn place_and_dispatch(
    ctx: &Arc<Ctx>,
    tasks: &TaskTracker,
    taken: Vec<Taken>,
    attempt: u32,
    exclude: Vec<String>,
) {
    if taken.is_empty() {
        return;
    }
    let t = Instant::now();
    let metas: Vec<JobMeta> = taken.iter().map(|t| t.meta.clone()).collect();
    let (placed, policy) = {
        let mut core = lock(ctx);
        for t in &taken {
            core.pending.insert(t.meta.request_id.clone());
        }
        let placed = core.place(
            unix_us() as f64 / 1000.0,
            Instant::now(),
            &metas,
            &exclude,
            ctx.config.scheduler.decision_candidates,
        );
        (placed, core.policy.kind().as_str())
    };
    let decide_us = t.elapsed().as_secs_f64() * 1e6 / taken.len() as f64;
    metrics::histogram!("synergai_scheduler_decision_us", "policy" => policy).record(decide_us);
    for (job, (result, weighed)) in taken.into_iter().zip(placed) {
        let ctx = ctx.clone();
        let exclude = exclude.clone();
        // The request's `schedule` span: the decision, as attributes; the worker's span is its
        // child. Its parent is the request's trace (below), not the span this runs in: a request
        // placed again (waiting for a worker, re-dispatched) gets a sibling span per attempt
        // rather than one nested in the last.
        let span = tracing::info_span!(
            parent: None,
            "schedule",
            model = job.meta.model.as_str(),
            request_id = job.meta.request_id.as_str(),
            policy,
            attempt = i64::from(attempt),
            decide_us,
            candidates = Empty,
            considered = Empty,
            chosen.worker = Empty,
            chosen.engine = Empty,
            chosen.threads = Empty,
            chosen.batch = Empty,
            est.network_ms = Empty,
            est.wait_ms = Empty,
            est.exec_ms = Empty,
            slack_ms = Empty,
            rejected = Empty,
            otel.status_code = Empty,
            otel.status_message = Empty,
        );
        let next = telemetry::continue_trace(&span, job.trace.as_ref());
        if telemetry::spans_exported()
            && let Ok(c) = serde_json::to_string(&weighed)
        {
            span.record("candidates", c.as_str());
        }
        let decided = async move {
            match result {
                Ok(p) => {
                    let event =
                        decision_event(&ctx, &job.meta, policy, decide_us, attempt, weighed);
                    dispatch(ctx, job, p, event, exclude, next).await
                }
                // No worker serves the model right now (workers starting, or all lost): wait for
                // one while the deadline allows.
                Err(Rejection::NoWorker) if unix_us() + 100_000 < job.meta.deadline_us => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let tasks = TaskTracker::new();
                    place_and_dispatch(&ctx, &tasks, vec![job], attempt, exclude);
                    tasks.close();
                    tasks.wait().await;
                }
                Err(r) => {
                    let code = match r {
                        Rejection::Hopeless { .. } => ErrorCode::DeadlineExceeded,
                        Rejection::NoWorker => ErrorCode::Unavailable,
                    };
                    let span = tracing::Span::current();
                    span.record("rejected", r.to_string().as_str());
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_message", code.to_string().as_str());
                    lock(&ctx).pending.remove(&job.meta.request_id);
                    let mut event =
                        decision_event(&ctx, &job.meta, policy, decide_us, attempt, weighed);
                    event.rejected = Some(r.to_string());
                    publish_decision(&ctx, &event).await;
                    answer(
                        &ctx,
                        &job.meta,
                        code,
                        &format!("{r} ({})", job.meta.model),
                        policy,
                    )
                    .await;
                    ack_message(&ctx, job.ack.as_deref()).await;
                }
            }
        };
        tasks.spawn(decided.instrument(span));
    }
}

/// The decision event of a request, to be completed with the choice or the rejection.
fn decision_event(
    ctx: &Ctx,
    meta: &JobMeta,
    policy: &str,
    decide_us: f64,
    attempt: u32,
    candidates: Vec<CandidateView>,
) -> DecisionEvent {
    DecisionEvent {
        request_id: meta.request_id.clone(),
        model: meta.model.clone(),
        policy: policy.into(),
        scheduler: ctx.id.to_string(),
        chosen: None,
        candidates,
        considered: 0,
        rejected: None,
        decide_us,
        attempt,
    }
}

async fn publish_decision(ctx: &Ctx, event: &DecisionEvent) {
    if let Ok(body) = serde_json::to_vec(event) {
        let _ = ctx
            .nats
            .publish(ctx.subjects.decision_event(&ctx.id), body.into())
            .await;
    }
}

async fn dispatch(
    ctx: Arc<Ctx>,
    job: Taken,
    placed: Placed,
    mut event: DecisionEvent,
    mut exclude: Vec<String>,
    next: TraceContext,
) {
    let d = placed.decision;
    let attempt = event.attempt;
    let policy = event.policy.clone();
    let (engine, chosen) = {
        let core = lock(&ctx);
        (core.engine_name(d.config.engine), core.view(&d))
    };
    let meta = DispatchMeta {
        job: job.meta.clone(),
        engine: engine.into(),
        threads: d.config.threads,
        batch: d.config.batch,
        priority_us: (d.priority_ms * 1000.0) as i64,
        policy: policy.clone(),
        est_exec_ms: d.exec_ms,
        scheduler: ctx.id.to_string(),
        attempt,
        body_seq: Some(job.seq),
    };
    let span = tracing::Span::current();
    span.record("chosen.worker", placed.worker.as_str());
    span.record("chosen.engine", engine);
    span.record("chosen.threads", i64::from(d.config.threads));
    span.record("chosen.batch", i64::from(d.config.batch));
    span.record("est.network_ms", d.network_ms);
    span.record("est.wait_ms", d.wait_ms);
    span.record("est.exec_ms", d.exec_ms);
    span.record("slack_ms", d.slack_ms);
    span.record("considered", i64::from(d.considered));
    let mut headers = HeaderMap::new();
    headers.insert(
        JOB_HEADER,
        serde_json::to_string(&meta).unwrap_or_default().as_str(),
    );
    headers.insert(REQUEST_ID, job.meta.request_id.as_str());
    if let Some(n) = &job.header_len {
        headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.as_str());
    }
    pnats::set_trace(&mut headers, &next);
    {
        let mut core = lock(&ctx);
        core.pending.remove(&job.meta.request_id);
        core.in_flight.insert(
            job.meta.request_id.clone(),
            InFlight {
                meta: job.meta.clone(),
                seq: job.seq,
                ack: job.ack.clone(),
                header_len: job.header_len.clone(),
                trace: job.trace,
                worker: placed.worker.clone(),
                est_exec_ms: d.exec_ms,
                attempt,
                dispatched: Instant::now(),
            },
        );
    }
    let subject = ctx.subjects.worker_jobs(&placed.token);
    let timeout = Duration::from_millis(ctx.config.scheduler.dispatch_timeout_ms);
    let sent = tokio::time::timeout(
        timeout,
        ctx.nats
            .request_with_headers(subject, headers, Bytes::new()),
    )
    .await;
    let ack: Result<DispatchAck, String> = match sent {
        Err(_) => Err(format!("no acknowledgement within {timeout:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(reply)) => {
            serde_json::from_slice::<DispatchAck>(&reply.payload).map_err(|e| e.to_string())
        }
    };
    match ack {
        Ok(a) if a.accepted => {
            event.chosen = Some(chosen);
            event.considered = d.considered;
            publish_decision(&ctx, &event).await;
        }
        refused => {
            let why = match refused {
                Ok(a) => a.reason.unwrap_or_else(|| "refused".into()),
                Err(e) => e,
            };
            tracing::warn!(worker = %placed.worker, request = %job.meta.request_id, reason = %why, "dispatch refused");
            {
                let mut core = lock(&ctx);
                core.in_flight.remove(&job.meta.request_id);
                core.release(&placed.worker, d.exec_ms);
                core.suspect(&placed.worker, Instant::now(), Duration::from_secs(1));
            }
            exclude.push(placed.worker);
            if attempt >= ctx.config.scheduler.max_attempts {
                answer(
                    &ctx,
                    &job.meta,
                    ErrorCode::Unavailable,
                    &format!("no worker took the job after {attempt} attempts: {why}"),
                    &policy,
                )
                .await;
                ack_message(&ctx, job.ack.as_deref()).await;
            } else {
                let tasks = TaskTracker::new();
                place_and_dispatch(&ctx, &tasks, vec![job], attempt + 1, exclude);
                tasks.close();
                tasks.wait().await;
            }
        }
    }
}

/// Places a lost worker's job again if its deadline still allows, else answers 504.
async fn redispatch(ctx: Arc<Ctx>, job: InFlight, lost: String) {
    let remaining_ms = (job.meta.deadline_us - unix_us()) as f64 / 1000.0;
    let policy = lock(&ctx).policy.kind().as_str();
    if remaining_ms <= 0.0 || job.attempt >= ctx.config.scheduler.max_attempts {
        answer(
            &ctx,
            &job.meta,
            ErrorCode::DeadlineExceeded,
            &format!("worker {lost} was lost and the deadline no longer allows another"),
            policy,
        )
        .await;
        ack_message(&ctx, job.ack.as_deref()).await;
        return;
    }
    let taken = Taken {
        ack: job.ack,
        meta: job.meta,
        seq: job.seq,
        header_len: job.header_len,
        trace: job.trace,
    };
    let tasks = TaskTracker::new();
    place_and_dispatch(&ctx, &tasks, vec![taken], job.attempt + 1, vec![lost]);
    tasks.close();
    tasks.wait().await;
}

/// Answers a job a lost worker held that another scheduler dispatched: without its body it
/// cannot be placed again, so it is answered 503.
async fn answer_orphan(ctx: Arc<Ctx>, job: HeldJob, lost: String) {
    if ctx
        .claims
        .claim(&job.request_id, ctx.id.as_str())
        .await
        .unwrap_or(true)
    {
        let _ = pnats::reply_error(
            &ctx.nats,
            job.reply.as_str().into(),
            ErrorCode::Unavailable,
            &format!("worker {lost} was lost while holding this request; retry"),
        )
        .await;
    }
}

/// Answers a request with an error (claimed) and records its outcome.
async fn answer(ctx: &Ctx, meta: &JobMeta, code: ErrorCode, text: &str, policy: &str) {
    let won = match ctx.claims.claim(&meta.request_id, ctx.id.as_str()).await {
        Ok(won) => won,
        Err(e) => {
            tracing::warn!(error = %e, "reply claim unavailable; answering anyway");
            true
        }
    };
    if !won {
        return;
    }
    metrics::counter!("synergai_scheduler_answers_total", "code" => code.to_string()).increment(1);
    // Refused before any worker had it: a QoS violation not placed at any site.
    metrics::counter!(
        "synergai_qos_violations_total",
        "model" => meta.model.clone(),
        "policy" => policy.to_owned(),
        "site" => "unplaced"
    )
    .increment(1);
    let _ = pnats::reply_error(&ctx.nats, meta.reply.as_str().into(), code, text).await;
    let total_ms = (unix_us() - meta.arrival_us) as f64 / 1000.0;
    let outcome = Outcome {
        request_id: meta.request_id.clone(),
        model: meta.model.clone(),
        slo_ms: meta.slo_ms,
        arrival: time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(meta.arrival_us) * 1000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        policy: policy.into(),
        site: None,
        worker: None,
        engine: None,
        threads: None,
        batch: None,
        code: code.as_u16(),
        queue_ms: None,
        exec_ms: None,
        total_ms,
        violated: true,
        excess_ms: 0.0,
    };
    let site = Token::parse(meta.ingress_site.as_str()).unwrap_or_else(|_| ctx.id.clone());
    if let Err(e) = ctx.events.outcome(&site, &outcome).await {
        tracing::warn!(error = %e, "outcome event not published");
    }
}
