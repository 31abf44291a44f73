//! The intake service: NATS request-reply on `synergai.v1.infer.<model>` (a queue group, so
//! intakes share load) and the Open Inference Protocol over HTTP. An admitted request is
//! published to the scheduler's JetStream work queue and is *accepted* once JetStream has
//! stored it: from then on it survives a scheduler restart, and its one reply comes from a
//! worker (or a scheduler) straight to the client's reply subject.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, HeaderMap};
use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap as HttpHeaders, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use serde_json::json;
use synergai_contract::catalog::Catalog;
use synergai_contract::headers::{
    INFERENCE_HEADER_CONTENT_LENGTH, NATS_MSG_ID, REQUEST_ID, TRACEPARENT,
};
use synergai_contract::serving::JOB_HEADER;
use synergai_contract::trace::TraceContext;
use synergai_contract::{ErrorBody, ErrorCode, ModelName, Subjects};
use synergai_platform::nats::{self as pnats, NatsConfig};
use synergai_platform::secret::{self, Secret};
use synergai_platform::telemetry::{self, TelemetryConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use tracing::field::Empty;

use crate::accept::{AdmissionConfig, ClientLimits, Incoming, Refused, Slot, admit, nats_client};

/// The whole intake configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntakeConfig {
    /// Admission.
    pub intake: AdmissionConfig,
    /// HTTP front door (Open Inference Protocol, plus `/metrics`).
    pub http: HttpConfig,
    /// The model catalogue.
    pub catalog: std::path::PathBuf,
    /// NATS.
    pub nats: NatsConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            intake: AdmissionConfig::default(),
            http: HttpConfig::default(),
            catalog: "assets/catalog.json".into(),
            nats: NatsConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; none disables HTTP.
    pub listen: Option<SocketAddr>,
    /// How long an HTTP request waits past its deadline for its reply, ms.
    pub reply_grace_ms: u64,
    /// When set, inference and model metadata (`/v2/models/...`) require
    /// `Authorization: Bearer <token>` (`SYNERGAI_HTTP__BEARER_TOKEN`); health, server metadata
    /// and `/metrics` stay open.
    pub bearer_token: Option<Secret>,
    /// File holding the bearer token (a mounted Secret), instead of `bearer_token`.
    pub bearer_token_file: Option<std::path::PathBuf>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 8000))),
            reply_grace_ms: 5_000,
            bearer_token: None,
            bearer_token_file: None,
        }
    }
}

impl HttpConfig {
    /// The bearer token the HTTP front door requires, if any (read from its file when so
    /// configured).
    pub fn bearer(&self) -> Result<Option<Secret>, String> {
        secret::resolve(
            "http.bearer_token",
            self.bearer_token.as_ref(),
            self.bearer_token_file.as_deref(),
        )
    }
}

/// Why the intake could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Catalogue missing or invalid.
    #[error(transparent)]
    Catalog(#[from] synergai_contract::catalog::CatalogError),
    /// NATS unreachable.
    #[error(transparent)]
    Nats(#[from] pnats::NatsError),
    /// Setup failed.
    #[error("setup: {0}")]
    Setup(String),
}

struct Ctx {
    catalog: Catalog,
    cfg: IntakeConfig,
    nats: Client,
    js: jetstream::Context,
    subjects: Subjects,
    metrics: Option<PrometheusHandle>,
    limits: Arc<ClientLimits>,
}

/// A running intake.
pub struct Intake {
    tasks: TaskTracker,
    cancel: CancellationToken,
    http: Option<SocketAddr>,
    nats: Client,
}

fn unix_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Intake {
    /// Starts both front doors; they run until `cancel`.
    pub async fn start(
        cfg: IntakeConfig,
        metrics: Option<PrometheusHandle>,
        cancel: CancellationToken,
    ) -> Result<Self, StartError> {
        let catalog = Catalog::load(&cfg.catalog)?;
        if synergai_contract::Token::parse(cfg.intake.site.as_str()).is_err() {
            return Err(StartError::Setup(format!(
                "intake.site {:?} is not a valid site name",
                cfg.intake.site
            )));
        }
        let nats = pnats::connect(&cfg.nats, "synergai-intake").await?;
        let subjects = cfg.nats.subjects();
        let ctx = Arc::new(Ctx {
            js: pnats::jetstream(&nats, subjects.domain()),
            catalog,
            nats: nats.clone(),
            subjects: subjects.clone(),
            metrics,
            limits: ClientLimits::new(cfg.intake.max_in_flight_per_client),
            cfg: cfg.clone(),
        });
        let tasks = TaskTracker::new();
        let sub = nats
            .queue_subscribe(subjects.infer_any(), "synergai-intake".into())
            .await
            .map_err(|e| StartError::Setup(e.to_string()))?;
        tasks.spawn(serve_nats(ctx.clone(), sub, tasks.clone(), cancel.clone()));
        if cfg.intake.max_in_flight_per_client > 0 {
            let jobs = nats
                .subscribe(subjects.job_events())
                .await
                .map_err(|e| StartError::Setup(e.to_string()))?;
            tasks.spawn(release_answered(ctx.clone(), jobs, cancel.clone()));
        }
        let http = match cfg.http.listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| StartError::Setup(format!("HTTP on {addr}: {e}")))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| StartError::Setup(e.to_string()))?;
                let bearer = cfg.http.bearer().map_err(StartError::Setup)?;
                let app = router(ctx.clone(), bearer.map(Arc::new));
                let stop = cancel.clone();
                tasks.spawn(async move {
                    let app = app.into_make_service_with_connect_info::<SocketAddr>();
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async move { stop.cancelled().await })
                        .await;
                    if let Err(e) = served {
                        tracing::error!(error = %e, "HTTP server failed");
                    }
                });
                Some(bound)
            }
            None => None,
        };
        tracing::info!(site = %cfg.intake.site, http = ?http, "intake ready");
        Ok(Intake {
            tasks,
            cancel,
            http,
            nats,
        })
    }

    /// The HTTP address, if serving.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Runs until cancelled, then finishes what it was admitting.
    pub async fn run_until_stopped(self) {
        self.cancel.cancelled().await;
        self.tasks.close();
        self.tasks.wait().await;
        let _ = self.nats.flush().await;
        tracing::info!("intake stopped");
    }
}

/// Admits a request and hands it to the scheduler; `Ok` (its id and deadline) once JetStream
/// has it. Its span (`intake`) continues the client's trace, or starts one.
async fn submit(
    ctx: &Ctx,
    incoming: Incoming<'_>,
    trace: Option<TraceContext>,
    transport: &'static str,
) -> Result<(String, i64), Refused> {
    let span = tracing::info_span!(
        "intake",
        otel.kind = "server",
        model = incoming.model,
        transport,
        request_id = Empty,
        slo_ms = Empty,
        deadline_us = Empty,
        error.code = Empty,
        otel.status_code = Empty,
        otel.status_message = Empty,
    );
    let next = telemetry::continue_trace(&span, trace.as_ref());
    let result = submit_in(ctx, incoming, next, &span)
        .instrument(span.clone())
        .await;
    if let Err(r) = &result {
        span.record("error.code", r.code.as_u16());
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_message", r.message.as_str());
    }
    result
}

async fn submit_in(
    ctx: &Ctx,
    incoming: Incoming<'_>,
    next: TraceContext,
    span: &tracing::Span,
) -> Result<(String, i64), Refused> {
    let mut admitted = admit(&ctx.catalog, &ctx.cfg.intake, incoming, request_id())?;
    // Held in this site's JetStream domain: its body and its reply claim are read there.
    admitted.meta.domain = ctx.subjects.domain().map(str::to_owned);
    span.record("request_id", admitted.meta.request_id.as_str());
    span.record("slo_ms", admitted.meta.slo_ms);
    span.record("deadline_us", admitted.meta.deadline_us);
    let limit = ctx.nats.server_info().max_payload;
    if admitted.body.len() + 2048 > limit {
        return Err(Refused::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "request of {} bytes exceeds the message bus limit of {limit} bytes (raise the NATS server's max_payload)",
                admitted.body.len()
            ),
        ));
    }
    let mut headers = HeaderMap::new();
    let meta = serde_json::to_string(&admitted.meta)
        .map_err(|e| Refused::new(ErrorCode::Internal, e.to_string()))?;
    headers.insert(JOB_HEADER, meta.as_str());
    headers.insert(NATS_MSG_ID, admitted.meta.request_id.as_str());
    headers.insert(REQUEST_ID, admitted.meta.request_id.as_str());
    if let Some(n) = admitted.header_len {
        headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.to_string().as_str());
    }
    pnats::set_trace(&mut headers, &next);
    let name = ModelName::parse(admitted.meta.model.as_str())?;
    let unavailable =
        |e: String| Refused::new(ErrorCode::Unavailable, format!("request not accepted: {e}"));
    // An acknowledgement lost in transit (the NATS server restarting) leaves it unknown whether
    // JetStream stored the request: publish again with the same message id (JetStream keeps one
    // copy) rather than answer 503 for a request that may still be served.
    let (subject, body): (_, Bytes) = (ctx.subjects.sched_request(&name), admitted.body.into());
    for attempt in 1.. {
        let acked = match ctx
            .js
            .publish_with_headers(subject.clone(), headers.clone(), body.clone())
            .await
        {
            Ok(ack) => ack.await.map(|_| ()),
            Err(e) => Err(e),
        };
        match acked {
            Ok(()) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::PublishErrorKind::TimedOut
                        | jetstream::context::PublishErrorKind::BrokenPipe
                ) && attempt < 4
                    && unix_us() < admitted.meta.deadline_us =>
            {
                tracing::warn!(error = %e, attempt, "request not acknowledged; publishing it again");
            }
            Err(e) => return Err(unavailable(e.to_string())),
        }
    }
    metrics::counter!("synergai_intake_accepted_total", "model" => admitted.meta.model.clone())
        .increment(1);
    Ok((admitted.meta.request_id, admitted.meta.deadline_us))
}

/// Counts a request refused for its client's limit, and answers it.
fn client_refused(transport: &'static str, r: &Refused) {
    metrics::counter!("synergai_intake_refused_total", "code" => r.code.to_string()).increment(1);
    metrics::counter!("synergai_intake_shed_total", "reason" => "client_in_flight", "transport" => transport)
        .increment(1);
}

async fn serve_nats(
    ctx: Arc<Ctx>,
    mut sub: async_nats::Subscriber,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            _ = cancel.cancelled() => return,
            m = sub.next() => match m { Some(m) => m, None => return },
        };
        let arrival_us = unix_us();
        let ctx = ctx.clone();
        let Some(reply) = msg.reply.clone() else {
            metrics::counter!("synergai_intake_no_reply_subject_total").increment(1);
            continue;
        };
        // The client's place is taken here, in arrival order, before any work is spawned.
        let slot = ctx.limits.enter(nats_client(reply.as_str()));
        tasks.spawn(async move {
            let slot = match slot {
                Ok(slot) => slot,
                Err(r) => {
                    client_refused("nats", &r);
                    let _ = pnats::reply_error(&ctx.nats, reply, r.code, &r.message).await;
                    return;
                }
            };
            let model = ctx
                .subjects
                .model_of_infer(msg.subject.as_str())
                .unwrap_or_default()
                .to_owned();
            let header_len = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(INFERENCE_HEADER_CONTENT_LENGTH))
                .map(|v| v.as_str().to_owned());
            let trace = pnats::trace_of(msg.headers.as_ref());
            let incoming = Incoming {
                model: &model,
                body: &msg.payload,
                header_len: header_len.as_deref(),
                reply: reply.as_str(),
                arrival_us,
            };
            match submit(&ctx, incoming, trace, "nats").await {
                Ok((request_id, deadline_us)) => {
                    let grace_us = ctx.cfg.intake.client_release_grace_ms as i64 * 1000;
                    slot.hold_until(request_id, deadline_us.saturating_add(grace_us));
                }
                Err(r) => {
                    drop(slot);
                    metrics::counter!("synergai_intake_refused_total", "code" => r.code.to_string())
                        .increment(1);
                    let _ = pnats::reply_error(&ctx.nats, reply, r.code, &r.message).await;
                }
            }
        });
    }
}

/// Gives back clients' places as job events name the requests a batch answered, and those of
/// requests past their deadline and grace.
async fn release_answered(
    ctx: Arc<Ctx>,
    mut jobs: async_nats::Subscriber,
    cancel: CancellationToken,
) {
    #[derive(Deserialize)]
    struct Answered {
        #[serde(default)]
        request_ids: Vec<String>,
    }
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {
                ctx.limits.expire(unix_us());
            }
            m = jobs.next() => match m {
                Some(m) => {
                    if let Ok(a) = serde_json::from_slice::<Answered>(&m.payload) {
                        for id in &a.request_ids {
                            ctx.limits.finished(id);
                        }
                    }
                }
                None => return,
            },
        }
    }
}

/// The HTTP routes. With a bearer token, every `/v2/models/...` route (inference, model
/// metadata and readiness) requires it; liveness, readiness, server metadata and `/metrics`
/// stay open for probes and scrapers.
fn router(ctx: Arc<Ctx>, bearer: Option<Arc<Secret>>) -> Router {
    let limit = ctx.cfg.intake.max_request_bytes;
    let mut models = Router::new()
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/infer", post(infer));
    if let Some(token) = bearer {
        models = models.route_layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                require_bearer(token.clone(), req, next)
            },
        ));
    }
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .merge(models)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(ctx)
}

/// Lets the request through only with `Authorization: Bearer <token>` (the scheme in any case;
/// the token compared in constant time); otherwise 401 with `WWW-Authenticate: Bearer`.
async fn require_bearer(
    token: Arc<Secret>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(|v| {
            let (scheme, rest) = v.split_at_checked(7)?;
            scheme
                .eq_ignore_ascii_case(b"bearer ")
                .then(|| rest.trim_ascii())
        });
    let (why, challenge) = match given {
        Some(t) if token.matches(t) => return next.run(req).await,
        Some(_) => (
            "invalid bearer token",
            "Bearer realm=\"synergai\", error=\"invalid_token\"",
        ),
        None => (
            "missing bearer token: send Authorization: Bearer <token>",
            "Bearer realm=\"synergai\"",
        ),
    };
    metrics::counter!("synergai_intake_unauthorized_total").increment(1);
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(ErrorBody {
            error: why.to_owned(),
        }),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    resp
}

fn error_response(code: ErrorCode, message: &str) -> Response {
    let status = StatusCode::from_u16(code.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        axum::Json(ErrorBody {
            error: message.to_owned(),
        }),
    )
        .into_response()
}

async fn server_metadata() -> impl IntoResponse {
    axum::Json(
        json!({"name": "synergai", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
    )
}

async fn ready(State(ctx): State<Arc<Ctx>>) -> StatusCode {
    if ctx.nats.connection_state() == async_nats::connection::State::Connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn metrics_text(State(ctx): State<Arc<Ctx>>) -> Response {
    match &ctx.metrics {
        Some(h) => h.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics recorder not installed\n").into_response(),
    }
}

#[derive(Serialize, Deserialize)]
struct TensorMetadata {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

async fn model_metadata(State(ctx): State<Arc<Ctx>>, Path(model): Path<String>) -> Response {
    match ctx.catalog.model(&model) {
        Ok(m) => {
            let meta = |specs: &[synergai_contract::catalog::TensorSpec]| -> Vec<TensorMetadata> {
                specs
                    .iter()
                    .map(|s| TensorMetadata {
                        name: s.name.clone(),
                        datatype: s.datatype.to_string(),
                        shape: s.shape.clone(),
                    })
                    .collect()
            };
            axum::Json(json!({
                "name": m.name,
                "versions": [],
                "platform": "onnx",
                "inputs": meta(&m.inputs),
                "outputs": meta(&m.outputs),
                "parameters": {"task": m.task, "max_batch": m.max_batch(), "dynamic_batch": m.dynamic_batch},
            }))
            .into_response()
        }
        Err(e) => error_response(e.code(), &e.to_string()),
    }
}

async fn model_ready(State(ctx): State<Arc<Ctx>>, Path(model): Path<String>) -> StatusCode {
    if ctx.catalog.model(&model).is_ok() {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn infer(
    State(ctx): State<Arc<Ctx>>,
    Path(model): Path<String>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HttpHeaders,
    body: Bytes,
) -> Response {
    let arrival_us = unix_us();
    // The client's place is held until the response is sent (dropped with this handler).
    let client = peer.map_or_else(
        || "http".to_owned(),
        |Extension(ConnectInfo(addr))| format!("http:{}", addr.ip()),
    );
    let _slot: Slot = match ctx.limits.enter(&client) {
        Ok(slot) => slot,
        Err(r) => {
            client_refused("http", &r);
            return error_response(r.code, &r.message);
        }
    };
    let header_len = headers
        .get(INFERENCE_HEADER_CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let trace = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceContext::parse);
    let inbox = ctx.nats.new_inbox();
    let mut replies = match ctx.nats.subscribe(inbox.clone()).await {
        Ok(s) => s,
        Err(e) => {
            return error_response(
                ErrorCode::Unavailable,
                &format!("message bus unavailable: {e}"),
            );
        }
    };
    let incoming = Incoming {
        model: &model,
        body: &body,
        header_len: header_len.as_deref(),
        reply: &inbox,
        arrival_us,
    };
    let deadline_us = match submit(&ctx, incoming, trace, "http").await {
        Ok((_, deadline_us)) => deadline_us,
        Err(r) => {
            metrics::counter!("synergai_intake_refused_total", "code" => r.code.to_string())
                .increment(1);
            return error_response(r.code, &r.message);
        }
    };
    // The reply comes by the deadline (a result, or 504 from the worker or scheduler); the
    // grace covers clocks and queues, so silence past it is itself a 504.
    let left_ms = ((deadline_us - unix_us()) / 1000).max(0) as u64;
    let wait = Duration::from_millis(left_ms + ctx.cfg.http.reply_grace_ms);
    let reply = match tokio::time::timeout(wait, replies.next()).await {
        Ok(Some(m)) => m,
        _ => return error_response(ErrorCode::DeadlineExceeded, "no reply in time"),
    };
    if let Some((code, text)) = pnats::error_of(&reply) {
        return error_response(code, &text);
    }
    let mut out = Response::new(axum::body::Body::from(reply.payload.clone()));
    let h = out.headers_mut();
    let binary = reply
        .headers
        .as_ref()
        .and_then(|rh| rh.get(INFERENCE_HEADER_CONTENT_LENGTH))
        .map(|v| v.as_str().to_owned());
    match binary {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            if let Ok(v) = HeaderValue::from_str(&n) {
                h.insert(INFERENCE_HEADER_CONTENT_LENGTH, v);
            }
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    for name in [TRACEPARENT, REQUEST_ID] {
        if let Some(v) = reply.headers.as_ref().and_then(|rh| rh.get(name))
            && let Ok(v) = HeaderValue::from_str(v.as_str())
        {
            h.insert(name, v);
        }
    }
    out
}
