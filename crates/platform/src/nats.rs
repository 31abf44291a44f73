//! NATS connections, the contract's error replies, trace-context propagation and the
//! one-reply-per-request claims.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, HeaderMap, Message, Subject};
use serde::{Deserialize, Serialize};
use synergai_contract::headers::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE, TRACEPARENT};
use synergai_contract::trace::TraceContext;
use synergai_contract::{ErrorBody, ErrorCode, Subjects};

/// NATS settings (`[nats]`, `SYNERGAI_NATS__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Prefix before `synergai.v1` on every subject; empty in production, unique per test run.
    pub subject_prefix: String,
    /// How long one connection attempt may take, ms.
    pub connect_timeout_ms: u64,
    /// Keep retrying when the server is not up yet (useful when services start together).
    pub retry_on_initial_connect: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: String::new(),
            connect_timeout_ms: 5_000,
            retry_on_initial_connect: false,
        }
    }
}

impl NatsConfig {
    /// The subjects of this deployment.
    pub fn subjects(&self) -> Subjects {
        Subjects::with_prefix(&self.subject_prefix)
    }
}

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to NATS at {url}: {source}")]
pub struct NatsError {
    url: String,
    source: async_nats::ConnectError,
}

/// Connects as `client_name` (shown by `nats server report connections`).
pub async fn connect(cfg: &NatsConfig, client_name: &str) -> Result<Client, NatsError> {
    let mut opts = ConnectOptions::new()
        .name(client_name)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        });
    if cfg.retry_on_initial_connect {
        opts = opts.retry_on_initial_connect();
    }
    let servers: Vec<&str> = cfg.url.split(',').map(str::trim).collect();
    let addrs: Vec<async_nats::ServerAddr> =
        servers.iter().filter_map(|s| s.parse().ok()).collect();
    if addrs.len() != servers.len() {
        return Err(NatsError {
            url: cfg.url.clone(),
            source: async_nats::ConnectError::new(async_nats::ConnectErrorKind::ServerParse),
        });
    }
    opts.connect(addrs).await.map_err(|source| NatsError {
        url: cfg.url.clone(),
        source,
    })
}

/// Headers of an error reply: `Nats-Service-Error-Code` and `Nats-Service-Error`.
pub fn error_headers(code: ErrorCode, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_SERVICE_ERROR_CODE, code.as_u16().to_string().as_str());
    // Header values are one line; the body keeps the full text.
    let line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(NATS_SERVICE_ERROR, line.as_str());
    headers
}

/// Sends an error reply with the contract's headers and `{"error": ...}` body.
pub async fn reply_error(
    client: &Client,
    reply: Subject,
    code: ErrorCode,
    message: &str,
) -> Result<(), async_nats::PublishError> {
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_owned(),
    })
    .unwrap_or_default();
    client
        .publish_with_headers(reply, error_headers(code, message), body.into())
        .await
}

/// The error code and text of a reply, if it is an error reply.
pub fn error_of(reply: &Message) -> Option<(ErrorCode, String)> {
    let headers = reply.headers.as_ref()?;
    let code = headers
        .get(NATS_SERVICE_ERROR_CODE)?
        .as_str()
        .parse::<u16>()
        .ok()?;
    let code = ErrorCode::try_from(code).ok()?;
    let text = serde_json::from_slice::<ErrorBody>(&reply.payload)
        .map(|b| b.error)
        .or_else(|_| {
            headers
                .get(NATS_SERVICE_ERROR)
                .map(|v| v.as_str().to_owned())
                .ok_or(())
        })
        .unwrap_or_default();
    Some((code, text))
}

/// The trace context a message carries in `traceparent`, if valid.
pub fn trace_of(headers: Option<&HeaderMap>) -> Option<TraceContext> {
    headers
        .and_then(|h| h.get(TRACEPARENT))
        .and_then(|v| TraceContext::parse(v.as_str()))
}

/// Continues the trace of `parent` (or starts one) with a new span: the context a service
/// attaches to what it publishes next.
pub fn next_span(parent: Option<&TraceContext>) -> TraceContext {
    match parent {
        Some(p) => p.child(rand::random()),
        None => TraceContext::root(rand::random()),
    }
}

/// Sets `traceparent` (and drops any stale `tracestate` with it).
pub fn set_trace(headers: &mut HeaderMap, ctx: &TraceContext) {
    headers.insert(TRACEPARENT, ctx.to_string().as_str());
}

/// Where the one reply to each request is claimed: whoever answers a request (a worker with
/// its result, a scheduler with 503/504 after losing a worker) first publishes to the request's
/// claim subject, expecting it empty; only the one JetStream accepts replies. A request can
/// therefore never be answered twice, even when a job is re-dispatched while its first worker,
/// thought lost, still finishes it. (A stream with one message per subject and
/// expected-sequence publishes: what a key-value "create" does, on every NATS 2.9+ server.)
#[derive(Clone)]
pub struct ReplyClaims {
    js: async_nats::jetstream::Context,
    subjects: Subjects,
}

/// Why the claim store could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("reply claims: {0}")]
pub struct ClaimError(String);

impl ReplyClaims {
    /// Opens (creating if needed) the claim stream of a deployment. Claims expire after
    /// `keep`, long after any request could still be answered.
    pub async fn open(
        client: &Client,
        subjects: &Subjects,
        keep: Duration,
    ) -> Result<Self, ClaimError> {
        use async_nats::jetstream::stream;
        let js = async_nats::jetstream::new(client.clone());
        js.get_or_create_stream(stream::Config {
            name: subjects.reply_bucket(),
            subjects: vec![subjects.claims()],
            max_messages_per_subject: 1,
            max_age: keep,
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .map_err(|e| ClaimError(e.to_string()))?;
        Ok(ReplyClaims {
            js,
            subjects: subjects.clone(),
        })
    }

    fn subject(&self, request_id: &str) -> Result<String, ClaimError> {
        self.subjects.claim(request_id).ok_or_else(|| {
            ClaimError(format!(
                "request id {request_id:?} cannot be a claim subject"
            ))
        })
    }

    /// Claims the reply to `request_id` for `by`; true if this caller won and must reply.
    pub async fn claim(&self, request_id: &str, by: &str) -> Result<bool, ClaimError> {
        use async_nats::jetstream::context::PublishErrorKind;
        let subject = self.subject(request_id)?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let ack = self
            .js
            .publish_with_headers(subject, headers, by.as_bytes().to_vec().into())
            .await
            .map_err(|e| ClaimError(e.to_string()))?;
        match ack.await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err(ClaimError(e.to_string())),
        }
    }

    /// Whether the reply to `request_id` has been claimed (it is answered, or being answered).
    pub async fn claimed(&self, request_id: &str) -> Result<bool, ClaimError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = self.subject(request_id)?;
        let stream = self
            .js
            .get_stream_no_info(self.subjects.reply_bucket())
            .await
            .map_err(|e| ClaimError(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(false),
            Err(e) => Err(ClaimError(e.to_string())),
        }
    }
}
