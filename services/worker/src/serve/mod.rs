//! The worker as a service (`synergai-worker serve`): it registers and heartbeats (identity,
//! loaded configurations, queue, backlog, the jobs it holds), takes dispatched jobs on its own
//! subject into a deadline-aware queue, runs them on a dedicated executor thread with the
//! configuration the scheduler chose (merging queued jobs of one model when the profile says it
//! pays and the slack allows), and answers each client directly on its reply subject. Each
//! reply is claimed first, so no request is ever answered twice. It publishes per-run
//! telemetry and a per-request outcome. SIGTERM drains it: no new jobs, queued ones finish
//! (those still queued at the drain timeout are answered 503), then it exits.

pub mod domains;
pub mod executor;
pub mod queue;
pub mod seen;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::service::ServiceExt;
use async_nats::{Client, HeaderMap, Message};
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use synergai_contract::headers::INFERENCE_HEADER_CONTENT_LENGTH;
use synergai_contract::oip::{
    InferenceResponse, ReplyParameters, decode_request, parse_header_len,
};
use synergai_contract::serving::{
    DispatchAck, DispatchMeta, JOB_HEADER, LoadedConfig, WorkerHeartbeat,
};
use synergai_contract::store::{JobObservation, Outcome, ProfileKey, WorkerStatus};
use synergai_contract::{ErrorCode, Tensor, Token};
use synergai_platform::nats as pnats;
use synergai_platform::{ops, telemetry};
use synergai_store_client::{ColdStart, EventPublisher, ProfileCache};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use self::domains::Domains;
use self::executor::{Done, Executor};
use self::queue::{Job, JobQueue};
use self::seen::Seen;
use crate::Worker;
use crate::config::WorkerConfig;
use crate::engine::EngineKind;

/// Microseconds since the Unix epoch (the clock deadlines are on).
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad identity or configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// NATS is unreachable.
    #[error(transparent)]
    Nats(#[from] pnats::NatsError),
    /// NATS setup failed.
    #[error("NATS setup: {0}")]
    Setup(String),
    /// Loading models failed.
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
}

/// Identity and addresses shared by the service's tasks.
struct Ctx {
    nats: Client,
    /// Per JetStream domain, the work queue where dispatched jobs' bodies are read and the
    /// stream where their replies are claimed.
    domains: Domains,
    events: EventPublisher,
    queue: Arc<JobQueue>,
    /// Request ids taken lately: a request dispatched here again is not run again.
    seen: Seen,
    status: WorkerStatus,
    site: Token,
    served: Vec<String>,
    heartbeat_seq: AtomicU64,
    heartbeat_ms: u64,
    loaded: Vec<LoadedConfig>,
}

/// How long, and how many, request ids a worker remembers taking. Requests come again after
/// the scheduler's redelivery delay (`scheduler.redeliver_after_ms`, 30 s by default); the reply
/// claims (10 minutes) keep anything later from being answered twice.
const SEEN_KEEP: Duration = Duration::from_secs(180);
const SEEN_CAP: usize = 65_536;

/// The name workers answer to on the NATS services API (`$SRV.PING.synergai-worker`, `INFO`,
/// `STATS`).
pub const SERVICE_NAME: &str = "synergai-worker";

/// Runs the worker service until `cancel`, then drains. `metrics` is rendered on the operations
/// endpoint (`[http] listen`), when one is configured.
pub async fn serve(
    cfg: WorkerConfig,
    worker: Worker,
    metrics: Option<PrometheusHandle>,
    cancel: CancellationToken,
) -> Result<(), ServeError> {
    let id = Token::parse(cfg.worker.id.as_str())
        .map_err(|e| ServeError::Config(format!("worker.id: {e}")))?;
    let site = Token::parse(cfg.worker.site.as_str())
        .map_err(|e| ServeError::Config(format!("worker.site: {e}")))?;
    let catalog = worker.models.catalog();
    let models: Vec<String> = if cfg.serve.models.is_empty() {
        catalog.models.iter().map(|m| m.name.to_string()).collect()
    } else {
        cfg.serve.models.clone()
    };
    for m in &models {
        catalog
            .model(m)
            .map_err(|e| ServeError::Config(format!("serve.models: {e}")))?;
    }
    let engines: Vec<EngineKind> = if cfg.serve.engines.is_empty() {
        worker.engines.iter().map(|e| e.kind()).collect()
    } else {
        cfg.serve.engines.clone()
    };
    let cores = worker.facts.core_set.len().max(1);
    let mut threads: Vec<usize> = if cfg.serve.threads.is_empty() {
        vec![1, cores]
    } else {
        cfg.serve.threads.clone()
    };
    threads.retain(|&t| t >= 1 && t <= cores);
    threads.sort_unstable();
    threads.dedup();
    if threads.is_empty() {
        return Err(ServeError::Config(format!(
            "serve.threads: none within the {cores} allowed cores"
        )));
    }

    let nats = pnats::connect(&cfg.nats, &format!("synergai-worker-{id}")).await?;
    let subjects = cfg.nats.subjects();
    let own = Domains::open_own(&nats, &subjects)
        .await
        .map_err(ServeError::Setup)?;
    let profiles = ProfileCache::new(nats.clone(), subjects.clone(), ColdStart::default());
    let follower = profiles.follow(Duration::from_secs(30), cancel.clone());

    // Load and warm every configuration on the executor thread, which keeps the sessions.
    let worker = Arc::new(worker);
    let queue = Arc::new(JobQueue::new(cfg.serve.max_queue));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Done>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let exec_worker = worker.clone();
    let exec_queue = queue.clone();
    let device_class = worker.facts.device_class.clone();
    let (serve_cfg, exec_models, exec_engines, exec_threads) = (
        cfg.serve.clone(),
        models.clone(),
        engines.clone(),
        threads.clone(),
    );
    let exec_profiles = profiles.clone();
    let executor = std::thread::Builder::new()
        .name("synergai-executor".into())
        .spawn(move || {
            match executor::preload(
                &exec_worker,
                &exec_models,
                &exec_engines,
                &exec_threads,
                &serve_cfg.batches,
            ) {
                Ok((sessions, loaded)) => {
                    let _ = ready_tx.send(Ok(loaded));
                    Executor {
                        sessions,
                        worker: exec_worker,
                        profiles: Some(exec_profiles),
                        device_class,
                        drop_expired: serve_cfg.drop_expired,
                        batching: serve_cfg.batching,
                        max_batch: serve_cfg.max_batch,
                    }
                    .run(exec_queue, done_tx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        })
        .map_err(|e| ServeError::Setup(format!("cannot start the executor thread: {e}")))?;
    let loaded = ready_rx
        .await
        .map_err(|_| ServeError::Setup("executor thread died while loading".into()))??;
    let served: Vec<String> = {
        let mut s: Vec<String> = loaded.iter().map(|l| l.model.clone()).collect();
        s.dedup();
        s
    };
    tracing::info!(worker = %id, site = %site, models = ?served, configs = loaded.len(), "models loaded");

    let ctx = Arc::new(Ctx {
        domains: Domains::new(nats.clone(), subjects.clone(), own),
        events: EventPublisher::new(nats.clone(), subjects.clone()),
        nats: nats.clone(),
        queue: queue.clone(),
        seen: Seen::new(SEEN_KEEP, SEEN_CAP),
        status: WorkerStatus {
            id: id.to_string(),
            site: site.to_string(),
            tier: cfg.worker.tier,
            arch: worker.facts.arch.clone(),
            device_class: worker.facts.device_class.clone(),
            core_set: worker.facts.core_set.iter().map(|&c| c as u32).collect(),
            engines: engines.iter().map(|e| e.to_string()).collect(),
        },
        site,
        served,
        heartbeat_seq: AtomicU64::new(0),
        heartbeat_ms: cfg.serve.heartbeat_ms.max(50),
        loaded,
    });

    // Jobs arrive on an endpoint of the NATS services API, so standard tooling (`nats micro
    // ls/info/stats`) lists every worker with its identity and counts its jobs.
    let metadata: std::collections::HashMap<String, String> = [
        ("worker", id.to_string()),
        ("site", ctx.status.site.clone()),
        ("tier", ctx.status.tier.to_string()),
        ("arch", ctx.status.arch.clone()),
        ("device_class", ctx.status.device_class.clone()),
        ("models", ctx.served.join(",")),
        ("subject_prefix", cfg.nats.subject_prefix.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let stats_queue = queue.clone();
    let service = nats
        .service_builder()
        .description("SynergAI inference worker: takes dispatched jobs and runs them")
        .metadata(metadata)
        .stats_handler(move |_endpoint, _stats| {
            let v = stats_queue.view();
            serde_json::json!({
                "queued": v.queued,
                "running": v.running,
                "backlog_ms": v.backlog_ms,
                "draining": v.draining,
            })
        })
        .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| ServeError::Setup(format!("NATS services API: {e}")))?;
    let jobs = service
        .endpoint_builder()
        .name("jobs")
        .add(subjects.worker_jobs(&id))
        .await
        .map_err(|e| ServeError::Setup(format!("jobs endpoint: {e}")))?;
    let ops_stop = CancellationToken::new();
    if let Some(addr) = cfg.http.listen {
        let ready_queue = queue.clone();
        let ready: ops::Readiness = Arc::new(move || !ready_queue.view().draining);
        let (bound, _task) = ops::serve(addr, metrics, ready, ops_stop.clone())
            .await
            .map_err(|e| ServeError::Setup(format!("operations endpoint on {addr}: {e}")))?;
        tracing::info!(%bound, "operations endpoint listening");
    }
    let pings = nats
        .subscribe(subjects.worker_ping(&id))
        .await
        .map_err(|e| ServeError::Setup(e.to_string()))?;
    let stop_taking = CancellationToken::new();
    let dispatcher = tokio::spawn(take_jobs(
        ctx.clone(),
        jobs,
        worker.clone(),
        stop_taking.clone(),
    ));
    let ponger = tokio::spawn(answer_pings(nats.clone(), pings, stop_taking.clone()));
    let replier = tokio::spawn(reply_loop(ctx.clone(), done_rx));
    let heartbeats = CancellationToken::new();
    let beater = tokio::spawn(heartbeat_loop(ctx.clone(), heartbeats.clone()));
    let expirer = cfg
        .serve
        .drop_expired
        .then(|| tokio::spawn(expire_loop(ctx.clone(), heartbeats.clone())));
    heartbeat(&ctx).await;
    tracing::info!(worker = %id, "serving");

    cancel.cancelled().await;
    // Drain: refuse new jobs (the heartbeat says so), let queued ones finish.
    tracing::info!(worker = %id, "draining");
    queue.drain();
    heartbeat(&ctx).await;
    let deadline = Instant::now() + Duration::from_millis(cfg.serve.drain_timeout_ms);
    while !queue.idle() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for job in queue.take_queued() {
        answer_error(
            &ctx,
            &job,
            ErrorCode::Unavailable,
            "worker shutting down before the job could run",
        )
        .await;
    }
    queue.close();
    let _ = tokio::task::spawn_blocking(move || executor.join()).await;
    let _ = replier.await;
    stop_taking.cancel();
    let _ = dispatcher.await;
    let _ = ponger.await;
    heartbeats.cancel();
    let _ = beater.await;
    if let Some(e) = expirer {
        let _ = e.await;
    }
    heartbeat(&ctx).await;
    if let Err(e) = service.stop().await {
        tracing::warn!(error = %e, "NATS services API not stopped cleanly");
    }
    ops_stop.cancel();
    let _ = follower.await;
    if let Err(e) = nats.flush().await {
        tracing::warn!(error = %e, "NATS flush at shutdown failed");
    }
    tracing::info!(worker = %id, "stopped");
    Ok(())
}

async fn answer_pings(nats: Client, mut pings: async_nats::Subscriber, stop: CancellationToken) {
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return,
            m = pings.next() => match m { Some(m) => m, None => return },
        };
        if let Some(reply) = msg.reply {
            let _ = nats.publish(reply, msg.payload).await;
        }
    }
}

async fn take_jobs(
    ctx: Arc<Ctx>,
    mut jobs: async_nats::service::endpoint::Endpoint,
    worker: Arc<Worker>,
    stop: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            _ = stop.cancelled() => return,
            m = jobs.next() => match m { Some(m) => m, None => return },
        };
        // Each job on its own task: reading one body from the stream does not hold up the
        // next job (the queue orders them).
        let (ctx, worker) = (ctx.clone(), worker.clone());
        tokio::spawn(async move {
            let ack = accept(&ctx, &worker, request.message.clone()).await;
            if request.message.reply.is_some() {
                let body = serde_json::to_vec(&ack).unwrap_or_default();
                let _ = request.respond(Ok(body.into())).await;
            }
        });
    }
}

/// Reads a job's body from the work queue stream: a direct get (any replica answers), or the
/// stream API where direct gets are not allowed.
async fn fetch_body(
    ctx: &Ctx,
    domain: Option<&str>,
    seq: u64,
) -> Result<jetstream::message::StreamMessage, String> {
    let requests = &ctx.domains.get(domain).await?.requests;
    match requests.direct_get(seq).await {
        Ok(m) => Ok(m),
        Err(direct) => requests
            .get_raw_message(seq)
            .await
            .map_err(|e| format!("{direct}; {e}")),
    }
}

fn refuse(reason: String, queue_len: u32) -> DispatchAck {
    DispatchAck {
        accepted: false,
        reason: Some(reason),
        queue_len,
    }
}

/// Decodes a dispatched job and queues it.
async fn accept(ctx: &Ctx, worker: &Worker, msg: Message) -> DispatchAck {
    let queued = ctx.queue.view().queued;
    let Some(meta) = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(JOB_HEADER))
        .and_then(|v| serde_json::from_str::<DispatchMeta>(v.as_str()).ok())
    else {
        return refuse(format!("missing or invalid {JOB_HEADER} header"), queued);
    };
    if !ctx.served.contains(&meta.job.model) {
        return refuse(
            format!("model {} is not served here", meta.job.model),
            queued,
        );
    }
    // Dispatched here again (a restarted scheduler adopting what the work queue delivered again
    // before this worker's heartbeat listed it): already queued, running or answered here.
    let id = meta.job.request_id.clone();
    if !ctx.seen.take(&id) {
        metrics::counter!("synergai_worker_repeated_dispatches_total").increment(1);
        tracing::info!(request = %id, "dispatched again; already taken here, not run again");
        return DispatchAck {
            accepted: true,
            reason: Some("already taken by this worker".into()),
            queue_len: queued,
        };
    }
    // The request's `worker` span (a child of the scheduler's), open until it is answered, with
    // `queue` and `inference` children.
    let span = tracing::info_span!(
        "worker",
        otel.kind = "consumer",
        request_id = meta.job.request_id.as_str(),
        model = meta.job.model.as_str(),
        worker = ctx.status.id.as_str(),
        site = ctx.status.site.as_str(),
        device_class = ctx.status.device_class.as_str(),
        engine = meta.engine.as_str(),
        threads = i64::from(meta.threads),
        batch = i64::from(meta.batch),
        attempt = i64::from(meta.attempt),
        queue_ms = Empty,
        exec_ms = Empty,
        total_ms = Empty,
        violated = Empty,
        error.code = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    let trace = telemetry::continue_trace(&span, pnats::trace_of(msg.headers.as_ref()).as_ref());
    // The body: in the work queue stream (the scheduler sends only its sequence), or inline.
    let (payload, headers) = match meta.body_seq {
        Some(seq) if msg.payload.is_empty() => {
            match fetch_body(ctx, meta.job.domain.as_deref(), seq)
                .instrument(tracing::info_span!(parent: &span, "fetch_body", seq = seq as i64))
                .await
            {
                Ok(m) => (m.payload, Some(m.headers)),
                Err(e) => {
                    ctx.seen.forget(&id);
                    return refuse(
                        format!("request body (work queue sequence {seq}) unreadable: {e}"),
                        queued,
                    );
                }
            }
        }
        _ => (msg.payload.clone(), msg.headers.clone()),
    };
    // The intake validated the request; a body that still fails here is answered 400 directly.
    let header_len = headers
        .as_ref()
        .and_then(|h| h.get(INFERENCE_HEADER_CONTENT_LENGTH))
        .map(|v| parse_header_len(v.as_str()));
    let decoded = match header_len {
        Some(Err(e)) => Err(e),
        Some(Ok(n)) => decode_request(&payload, Some(n)),
        None => decode_request(&payload, None),
    }
    .and_then(|req| {
        let entry = worker.models.catalog().model(&meta.job.model)?;
        let mut req = req;
        let (inputs, _) = entry.check_inputs(std::mem::take(&mut req.inputs))?;
        Ok((req, inputs))
    });
    let waiting = tracing::info_span!(parent: &span, "queue", priority_us = meta.priority_us);
    let (req, inputs) = match decoded {
        Ok(x) => x,
        Err(e) => {
            let (code, text) = (e.code(), e.to_string());
            let job = Job {
                meta,
                inputs: Vec::new(),
                outputs: Vec::new(),
                binary_output: false,
                client_id: None,
                trace,
                span,
                waiting,
                received: Instant::now(),
            };
            answer_error(ctx, &job, code, &text).await;
            return DispatchAck {
                accepted: true,
                reason: Some(text),
                queue_len: queued,
            };
        }
    };
    let job = Job {
        meta,
        inputs,
        outputs: req.outputs,
        binary_output: req.binary_output,
        client_id: req.id,
        trace,
        span,
        waiting,
        received: Instant::now(),
    };
    match ctx.queue.push(job) {
        Ok(n) => DispatchAck {
            accepted: true,
            reason: None,
            queue_len: n as u32,
        },
        Err(why) => {
            ctx.seen.forget(&id);
            refuse(why.to_string(), queued)
        }
    }
}

/// Answers 504 to a job whose deadline passed before it could start.
async fn answer_expired(ctx: &Ctx, job: &Job) {
    metrics::counter!("synergai_worker_expired_total").increment(1);
    answer_error(
        ctx,
        job,
        ErrorCode::DeadlineExceeded,
        "deadline passed before the job could start",
    )
    .await;
}

/// Answers 504 to queued jobs as soon as their deadline passes, rather than when the executor,
/// busy with a long run, reaches them: no request waits silently past its deadline here.
async fn expire_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for job in ctx.queue.take_expired(unix_us()) {
            answer_expired(&ctx, &job).await;
        }
    }
}

async fn heartbeat_loop(ctx: Arc<Ctx>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(ctx.heartbeat_ms));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => heartbeat(&ctx).await,
        }
    }
}

async fn heartbeat(ctx: &Ctx) {
    let view = ctx.queue.view();
    let worker = ctx.status.id.clone();
    metrics::gauge!("synergai_worker_queue_depth", "worker" => worker.clone())
        .set(view.queued as f64);
    metrics::gauge!("synergai_worker_running", "worker" => worker.clone()).set(view.running as f64);
    metrics::gauge!("synergai_worker_backlog_ms", "worker" => worker).set(view.backlog_ms);
    let hb = WorkerHeartbeat {
        status: ctx.status.clone(),
        seq: ctx.heartbeat_seq.fetch_add(1, Ordering::Relaxed),
        interval_ms: ctx.heartbeat_ms,
        loaded: ctx.loaded.clone(),
        queued: view.queued,
        running: view.running,
        backlog_ms: view.backlog_ms,
        draining: view.draining,
        jobs: view.jobs,
    };
    if let Err(e) = ctx.events.heartbeat(&hb).await {
        tracing::warn!(error = %e, "heartbeat not sent");
    }
}

/// Claims the reply to a job; true if this worker must send it. If the claim store cannot be
/// reached, the worker answers anyway: a reply that might be a duplicate beats none.
async fn claim(ctx: &Ctx, job: &Job) -> bool {
    let claimed = match ctx.domains.get(job.meta.job.domain.as_deref()).await {
        Ok(d) => d.claims.claim(job.id(), &ctx.status.id).await,
        Err(e) => Err(pnats::ClaimError::new(e)),
    };
    match claimed {
        Ok(won) => {
            if !won {
                tracing::info!(
                    request = job.id(),
                    "already answered elsewhere; reply suppressed"
                );
                metrics::counter!("synergai_worker_replies_suppressed_total").increment(1);
            }
            won
        }
        Err(e) => {
            tracing::warn!(error = %e, request = job.id(), "reply claim unavailable; answering anyway");
            true
        }
    }
}

fn outcome(
    ctx: &Ctx,
    job: &Job,
    code: u16,
    queue_ms: Option<f64>,
    exec_ms: Option<f64>,
    run_batch: Option<u32>,
) -> Outcome {
    let now = unix_us();
    let total_ms = (now - job.meta.job.arrival_us) as f64 / 1000.0;
    let violated = code != 200 || total_ms > job.meta.job.slo_ms;
    record_answer(ctx, job, code, total_ms, violated);
    Outcome {
        request_id: job.meta.job.request_id.clone(),
        model: job.meta.job.model.clone(),
        slo_ms: job.meta.job.slo_ms,
        arrival: time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(job.meta.job.arrival_us) * 1000,
        )
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        policy: job.meta.policy.clone(),
        site: Some(ctx.status.site.clone()),
        worker: Some(ctx.status.id.clone()),
        engine: Some(job.meta.engine.clone()),
        threads: Some(job.meta.threads),
        batch: run_batch,
        code,
        queue_ms,
        exec_ms,
        total_ms,
        violated,
        excess_ms: if code == 200 {
            (total_ms - job.meta.job.slo_ms).max(0.0)
        } else {
            0.0
        },
    }
}

/// Counts one answered request: by code, and as a QoS violation (with its excess time when it was
/// served late) by model, policy and site.
fn record_answer(ctx: &Ctx, job: &Job, code: u16, total_ms: f64, violated: bool) {
    let model = job.meta.job.model.clone();
    metrics::counter!(
        "synergai_worker_requests_total",
        "model" => model.clone(),
        "code" => code.to_string()
    )
    .increment(1);
    if violated {
        let labels = [
            ("model", model),
            ("policy", job.meta.policy.clone()),
            ("site", ctx.status.site.clone()),
        ];
        metrics::counter!("synergai_qos_violations_total", &labels).increment(1);
        if code == 200 {
            metrics::histogram!("synergai_qos_excess_ms", &labels)
                .record(total_ms - job.meta.job.slo_ms);
        }
    }
}

/// Answers a job with an error (claimed) and records its outcome.
async fn answer_error(ctx: &Ctx, job: &Job, code: ErrorCode, text: &str) {
    job.span.record("error.code", code.as_u16());
    job.span.record("otel.status_code", "ERROR");
    job.span.record("otel.status_message", text);
    if claim(ctx, job).await {
        let reply = async_nats::Subject::from(job.meta.job.reply.as_str());
        let _ = pnats::reply_error(&ctx.nats, reply, code, text).await;
        let o = outcome(ctx, job, code.as_u16(), None, None, None);
        publish_outcomes(ctx, vec![o]);
    }
    ctx.queue.finished(&[job.id().to_owned()]);
}

fn publish_outcomes(ctx: &Ctx, outcomes: Vec<Outcome>) {
    let events = ctx.events.clone();
    let site = ctx.site.clone();
    tokio::spawn(async move {
        if let Err(e) = events.outcomes(&site, &outcomes).await {
            tracing::warn!(error = %e, n = outcomes.len(), "outcome events not published");
        }
    });
}

/// Sends replies, outcomes and telemetry for what the executor finished.
async fn reply_loop(ctx: Arc<Ctx>, mut done: mpsc::UnboundedReceiver<Done>) {
    while let Some(d) = done.recv().await {
        match d {
            Done::Expired(job) => answer_expired(&ctx, &job).await,
            Done::Failed(jobs, e) => {
                tracing::error!(error = %e, "inference failed");
                for job in &jobs {
                    answer_error(&ctx, job, e.code(), &e.to_string()).await;
                }
            }
            Done::Ran {
                jobs,
                outputs,
                started,
                runs,
            } => {
                let exec_ms: f64 = runs.iter().map(|r| r.exec_ms).sum();
                let run_batch = runs.first().map_or(1, |r| r.batch);
                let mut outcomes = Vec::with_capacity(jobs.len());
                for (job, outs) in jobs.iter().zip(outputs) {
                    let queue_ms = started
                        .saturating_duration_since(job.received)
                        .as_secs_f64()
                        * 1000.0;
                    if claim(&ctx, job).await {
                        send_reply(&ctx, job, outs, queue_ms, exec_ms, run_batch).await;
                        outcomes.push(outcome(
                            &ctx,
                            job,
                            200,
                            Some(queue_ms),
                            Some(exec_ms),
                            Some(run_batch),
                        ));
                    }
                }
                let ids: Vec<String> = jobs.iter().map(|j| j.id().to_owned()).collect();
                ctx.queue.finished(&ids);
                publish_outcomes(&ctx, outcomes);
                for run in runs {
                    let o = JobObservation {
                        worker: ctx.status.id.clone(),
                        key: ProfileKey {
                            device_class: ctx.status.device_class.clone(),
                            engine: run.engine.to_string(),
                            model: jobs[0].meta.job.model.clone(),
                            threads: run.threads,
                            batch: run.batch,
                        },
                        exec_ms: run.exec_ms,
                        request_ids: ids.clone(),
                    };
                    if let Err(e) = ctx.events.job(&o).await {
                        tracing::warn!(error = %e, "job telemetry not published");
                    }
                }
            }
        }
    }
}

async fn send_reply(
    ctx: &Ctx,
    job: &Job,
    outputs: Vec<Tensor>,
    queue_ms: f64,
    exec_ms: f64,
    run_batch: u32,
) {
    let m = &job.meta;
    let wanted: Vec<Tensor> = if job.outputs.is_empty() {
        outputs
    } else {
        outputs
            .into_iter()
            .filter(|t| job.outputs.iter().any(|o| o.name == t.name))
            .collect()
    };
    let total_ms = (unix_us() - m.job.arrival_us) as f64 / 1000.0;
    job.span.record("queue_ms", queue_ms);
    job.span.record("exec_ms", exec_ms);
    job.span.record("total_ms", total_ms);
    job.span.record("violated", total_ms > m.job.slo_ms);
    let params = ReplyParameters {
        request_id: m.job.request_id.clone(),
        site: ctx.status.site.clone(),
        worker: ctx.status.id.clone(),
        arch: ctx.status.arch.clone(),
        device_class: ctx.status.device_class.clone(),
        engine: m.engine.clone(),
        threads: m.threads,
        batch: run_batch,
        queue_ms,
        exec_ms,
        total_ms,
        slo_ms: m.job.slo_ms,
        violated: total_ms > m.job.slo_ms,
        policy: m.policy.clone(),
    };
    let response = InferenceResponse {
        model_name: m.job.model.clone(),
        id: job.client_id.clone(),
        parameters: params.to_parameters(),
        outputs: wanted,
    };
    let wants_binary = |name: &str| {
        job.binary_output
            || job.outputs.iter().any(|o| {
                o.name == name
                    && o.parameters.get(synergai_contract::oip::PARAM_BINARY_DATA)
                        == Some(&serde_json::Value::Bool(true))
            })
    };
    let reply = async_nats::Subject::from(m.job.reply.as_str());
    match response.encode(wants_binary) {
        Ok(enc) => {
            let mut headers = HeaderMap::new();
            pnats::set_trace(&mut headers, &job.trace);
            headers.insert(
                synergai_contract::headers::REQUEST_ID,
                m.job.request_id.as_str(),
            );
            if let Some(n) = enc.header_len {
                headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.to_string().as_str());
            }
            if let Err(e) = ctx
                .nats
                .publish_with_headers(reply, headers, enc.body.into())
                .await
            {
                tracing::warn!(error = %e, request = %m.job.request_id, "reply not sent");
            }
        }
        Err(e) => {
            let _ = pnats::reply_error(&ctx.nats, reply, ErrorCode::Internal, &e.to_string()).await;
        }
    }
    metrics::histogram!(
        "synergai_worker_exec_ms",
        "model" => m.job.model.clone(),
        "engine" => m.engine.clone(),
        "device_class" => ctx.status.device_class.clone()
    )
    .record(exec_ms);
}
