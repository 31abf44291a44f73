//! NATS connections, the contract's error replies, trace-context propagation and the
//! one-reply-per-request claims.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::{Client, ConnectOptions, HeaderMap, Message, Subject};
use serde::{Deserialize, Serialize};
use synergai_contract::headers::{NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE, TRACEPARENT};
use synergai_contract::trace::TraceContext;
use synergai_contract::{ErrorBody, ErrorCode, Subjects};

use crate::secret::{self, Secret};

/// NATS settings (`[nats]`, `SYNERGAI_NATS__*`).
///
/// Authentication (at most one way): `user` with `password` or `password_file`; `token` or
/// `token_file`; `creds_file` (a JWT `.creds` file); `nkey_seed_file`. TLS: a `tls://` URL or
/// `tls_required`, `tls_ca_file` for a private CA, `tls_cert_file` and `tls_key_file` for a
/// client certificate (mutual TLS). Secrets are never logged (`Debug` redacts them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Prefix before `synergai.v1` on every subject; empty in production, unique per test run.
    pub subject_prefix: String,
    /// JetStream domain of this service's site, where the requests it accepts or schedules
    /// are held (work queue, reply claims): set where each site runs its own JetStream, intake
    /// and scheduler (an edge site that keeps serving when its uplink is cut: `edge-a`; the
    /// hub: `hub`). Unset: the JetStream of the server connected to, unnamed.
    pub jetstream_domain: Option<String>,
    /// How long one connection attempt may take, ms.
    pub connect_timeout_ms: u64,
    /// Keep retrying when the server is not up yet (useful when services start together).
    pub retry_on_initial_connect: bool,
    /// User name (with `password` or `password_file`).
    pub user: Option<String>,
    /// Password of `user` (`SYNERGAI_NATS__PASSWORD`).
    pub password: Option<Secret>,
    /// File holding the password of `user` (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// Token authentication (`SYNERGAI_NATS__TOKEN`).
    pub token: Option<Secret>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// JWT credentials file (`.creds`, decentralised auth with an operator and accounts).
    pub creds_file: Option<PathBuf>,
    /// File holding an NKey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// Refuse to talk to a server without TLS (implied by a `tls://` URL).
    pub tls_required: bool,
    /// PEM file of the CA that signed the server's certificate (else the system's roots).
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate (mutual TLS; with `tls_key_file`).
    pub tls_cert_file: Option<PathBuf>,
    /// PEM key of the client certificate.
    pub tls_key_file: Option<PathBuf>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            subject_prefix: String::new(),
            jetstream_domain: None,
            connect_timeout_ms: 5_000,
            retry_on_initial_connect: false,
            user: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            creds_file: None,
            nkey_seed_file: None,
            tls_required: false,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

impl NatsConfig {
    /// The subjects of this deployment, in this service's JetStream domain. An invalid
    /// domain is refused by [`connect`] before any subject is built; here it counts as unset.
    pub fn subjects(&self) -> Subjects {
        let base = Subjects::with_prefix(&self.subject_prefix);
        base.in_domain(self.jetstream_domain.as_deref())
            .unwrap_or(base)
    }

    /// The same settings authenticating as `user` with `password` (any other way cleared).
    pub fn with_user(mut self, user: &str, password: &str) -> Self {
        self.user = Some(user.to_owned());
        self.password = Some(Secret::new(password));
        self.password_file = None;
        self.token = None;
        self.token_file = None;
        self.creds_file = None;
        self.nkey_seed_file = None;
        self
    }

    /// How this configuration authenticates, checked: at most one way, every file readable.
    fn auth(&self) -> Result<Auth, String> {
        let password = secret::resolve(
            "nats.password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )?;
        let token = secret::resolve(
            "nats.token",
            self.token.as_ref(),
            self.token_file.as_deref(),
        )?;
        let mut ways = Vec::new();
        if self.user.is_some() || password.is_some() {
            ways.push("user/password");
        }
        if token.is_some() {
            ways.push("token");
        }
        if self.creds_file.is_some() {
            ways.push("creds_file");
        }
        if self.nkey_seed_file.is_some() {
            ways.push("nkey_seed_file");
        }
        if ways.len() > 1 {
            return Err(format!(
                "more than one NATS authentication configured ({}): set one",
                ways.join(", ")
            ));
        }
        if let Some(user) = &self.user {
            let password = password
                .ok_or_else(|| format!("nats.user {user:?} has no password or password_file"))?;
            return Ok(Auth::UserPassword(user.clone(), password));
        }
        if password.is_some() {
            return Err("nats.password is set without nats.user".into());
        }
        if let Some(token) = token {
            return Ok(Auth::Token(token));
        }
        if let Some(path) = &self.creds_file {
            return Ok(Auth::Creds(path.clone()));
        }
        if let Some(path) = &self.nkey_seed_file {
            let seed = Secret::from_file(path)?;
            return Ok(Auth::NKey(seed));
        }
        Ok(Auth::None)
    }

    /// The client options these settings give (authentication and TLS), checked.
    async fn options(&self) -> Result<ConnectOptions, String> {
        let mut opts = match self.auth()? {
            Auth::None => ConnectOptions::new(),
            Auth::UserPassword(user, password) => {
                ConnectOptions::with_user_and_password(user, password.expose().to_owned())
            }
            Auth::Token(token) => ConnectOptions::with_token(token.expose().to_owned()),
            Auth::NKey(seed) => ConnectOptions::with_nkey(seed.expose().trim().to_owned()),
            Auth::Creds(path) => ConnectOptions::with_credentials_file(&path)
                .await
                .map_err(|e| format!("NATS credentials file {}: {e}", path.display()))?,
        };
        let tls_url = self
            .url
            .split(',')
            .any(|u| u.trim().to_ascii_lowercase().starts_with("tls://"));
        if self.tls_required || tls_url {
            opts = opts.require_tls(true);
        }
        for (what, file) in [
            ("tls_ca_file", &self.tls_ca_file),
            ("tls_cert_file", &self.tls_cert_file),
            ("tls_key_file", &self.tls_key_file),
        ] {
            if let Some(path) = file
                && !path.is_file()
            {
                return Err(format!("nats.{what} {} is not a file", path.display()));
            }
        }
        if let Some(ca) = &self.tls_ca_file {
            opts = opts.add_root_certificates(ca.clone());
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                opts = opts.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => return Err("nats.tls_cert_file and nats.tls_key_file go together".into()),
        }
        Ok(opts)
    }
}

enum Auth {
    None,
    UserPassword(String, Secret),
    Token(Secret),
    Creds(PathBuf),
    NKey(Secret),
}

/// Why a NATS connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The server could not be reached, refused the credentials, or the TLS handshake failed.
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        /// The configured URL(s).
        url: String,
        /// What the client reported.
        source: async_nats::ConnectError,
    },
    /// The settings are inconsistent (two ways to authenticate, an unreadable secret file...).
    #[error("NATS settings: {0}")]
    Settings(String),
}

/// Connects as `client_name` (shown by `nats server report connections`), with the
/// configuration's authentication and TLS.
pub async fn connect(cfg: &NatsConfig, client_name: &str) -> Result<Client, NatsError> {
    if let Some(domain) = &cfg.jetstream_domain {
        Subjects::default()
            .in_domain(Some(domain))
            .map_err(|e| NatsError::Settings(format!("nats.jetstream_domain: {e}")))?;
    }
    let mut opts = cfg
        .options()
        .await
        .map_err(NatsError::Settings)?
        .name(client_name)
        .connection_timeout(Duration::from_millis(cfg.connect_timeout_ms))
        .event_callback(|event| async move {
            match &event {
                async_nats::Event::ServerError(_) | async_nats::Event::ClientError(_) => {
                    tracing::warn!(%event, "nats connection event");
                }
                _ => tracing::info!(%event, "nats connection event"),
            }
        });
    if cfg.retry_on_initial_connect {
        opts = opts.retry_on_initial_connect();
    }
    let servers: Vec<&str> = cfg.url.split(',').map(str::trim).collect();
    let addrs: Vec<async_nats::ServerAddr> =
        servers.iter().filter_map(|s| s.parse().ok()).collect();
    if addrs.len() != servers.len() {
        return Err(NatsError::Connect {
            url: cfg.url.clone(),
            source: async_nats::ConnectError::new(async_nats::ConnectErrorKind::ServerParse),
        });
    }
    opts.connect(addrs)
        .await
        .map_err(|source| NatsError::Connect {
            url: cfg.url.clone(),
            source,
        })
}

/// A JetStream context for domain `domain` (its API at `$JS.<domain>.API`, reachable from any
/// server joined to it by leaf nodes); `None`: the connected server's own (`$JS.API`).
pub fn jetstream(client: &Client, domain: Option<&str>) -> async_nats::jetstream::Context {
    match domain {
        Some(d) => async_nats::jetstream::with_domain(client.clone(), d),
        None => async_nats::jetstream::new(client.clone()),
    }
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
    keep: Duration,
}

/// Attempts at a claim before the claim store is taken to be unreachable (backing off from
/// 100 ms: about 3 s in all, plus each attempt's own time).
const CLAIM_ATTEMPTS: u32 = 6;

/// Why the claim store could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("reply claims: {0}")]
pub struct ClaimError(String);

impl ClaimError {
    /// A claim that could not be made, for `why`.
    pub fn new(why: impl Into<String>) -> Self {
        ClaimError(why.into())
    }
}

impl ReplyClaims {
    /// Opens (creating if needed) the claim stream of a deployment, in the JetStream domain of
    /// `subjects`. Claims expire after `keep`, long after any request could still be answered.
    pub async fn open(
        client: &Client,
        subjects: &Subjects,
        keep: Duration,
    ) -> Result<Self, ClaimError> {
        let claims = ReplyClaims::lazy(client, subjects, keep);
        claims.create().await?;
        Ok(claims)
    }

    /// As [`ReplyClaims::open`] without touching the server: the stream is created by the
    /// first claim that finds it missing.
    pub fn lazy(client: &Client, subjects: &Subjects, keep: Duration) -> Self {
        ReplyClaims {
            js: jetstream(client, subjects.domain()),
            subjects: subjects.clone(),
            keep,
        }
    }

    /// Creates the claim stream if it is not there. On file, so that claims survive a NATS
    /// server restart (a claim forgotten could let a second reply through).
    async fn create(&self) -> Result<(), ClaimError> {
        use async_nats::jetstream::stream;
        self.js
            .get_or_create_stream(stream::Config {
                name: self.subjects.reply_bucket(),
                subjects: vec![self.subjects.claims()],
                max_messages_per_subject: 1,
                max_age: self.keep,
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| ClaimError(e.to_string()))?;
        Ok(())
    }

    fn subject(&self, request_id: &str) -> Result<String, ClaimError> {
        self.subjects.claim(request_id).ok_or_else(|| {
            ClaimError(format!(
                "request id {request_id:?} cannot be a claim subject"
            ))
        })
    }

    /// Claims the reply to `request_id` for `by`; true if this caller won and must reply.
    ///
    /// An attempt that fails (the server restarting, the stream gone) is made again, for a few
    /// seconds, before giving up: answering on a failed claim could answer twice. An attempt whose
    /// acknowledgement was lost may still have stored the claim, so when a later attempt finds
    /// the request claimed it reads whose claim it is.
    pub async fn claim(&self, request_id: &str, by: &str) -> Result<bool, ClaimError> {
        use async_nats::jetstream::context::PublishErrorKind;
        let mut failed = None;
        for attempt in 0..CLAIM_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
            }
            match self.try_claim(request_id, by).await {
                Ok(true) => return Ok(true),
                // Claimed before any attempt of ours could have been stored: another's.
                Ok(false) if failed.is_none() => return Ok(false),
                Ok(false) => match self.owner(request_id).await {
                    Ok(Some(owner)) => return Ok(owner == by.as_bytes()),
                    Ok(None) => {}
                    Err(e) => failed = Some(e),
                },
                // The stream is gone (a NATS server restarted without it): create it again.
                Err((Some(PublishErrorKind::StreamNotFound), e)) => {
                    failed = Some(self.create().await.err().unwrap_or(e));
                }
                Err((_, e)) => failed = Some(e),
            }
        }
        Err(failed.unwrap_or_else(|| ClaimError("no attempt made".into())))
    }

    async fn try_claim(
        &self,
        request_id: &str,
        by: &str,
    ) -> Result<
        bool,
        (
            Option<async_nats::jetstream::context::PublishErrorKind>,
            ClaimError,
        ),
    > {
        use async_nats::jetstream::context::PublishErrorKind;
        let subject = self.subject(request_id).map_err(|e| (None, e))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let ack = self
            .js
            .publish_with_headers(subject, headers, by.as_bytes().to_vec().into())
            .await
            .map_err(|e| (Some(e.kind()), ClaimError(e.to_string())))?;
        match ack.await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(false),
            Err(e) => Err((Some(e.kind()), ClaimError(e.to_string()))),
        }
    }

    /// Whether the reply to `request_id` has been claimed (it is answered, or being answered).
    pub async fn claimed(&self, request_id: &str) -> Result<bool, ClaimError> {
        Ok(self.owner(request_id).await?.is_some())
    }

    /// Who claimed the reply to `request_id` (the `by` of the winning claim), if anyone has.
    pub async fn owner(&self, request_id: &str) -> Result<Option<Vec<u8>>, ClaimError> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind;
        let subject = self.subject(request_id)?;
        let stream = self
            .js
            .get_stream_no_info(self.subjects.reply_bucket())
            .await
            .map_err(|e| ClaimError(e.to_string()))?;
        match stream.get_last_raw_message_by_subject(&subject).await {
            Ok(m) => Ok(Some(m.payload.to_vec())),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(ClaimError(e.to_string())),
        }
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    #[test]
    fn one_way_to_authenticate_and_secrets_stay_out_of_debug() {
        let cfg = NatsConfig::default().with_user("intake", "hunter2");
        assert!(
            matches!(cfg.auth(), Ok(Auth::UserPassword(u, p)) if u == "intake" && p.expose() == "hunter2")
        );
        assert!(!format!("{cfg:?}").contains("hunter2"), "{cfg:?}");

        let two = NatsConfig {
            token: Some(Secret::new("t")),
            ..cfg.clone()
        };
        let err = two.auth().err().expect("two ways refused");
        assert!(
            err.contains("user/password") && err.contains("token"),
            "{err}"
        );

        let no_password = NatsConfig {
            password: None,
            ..cfg.clone()
        };
        assert!(no_password.auth().is_err(), "a user without a password");
        let no_user = NatsConfig { user: None, ..cfg };
        assert!(no_user.auth().is_err(), "a password without a user");
        assert!(matches!(NatsConfig::default().auth(), Ok(Auth::None)));
    }

    #[tokio::test]
    async fn tls_settings_are_checked_before_connecting() {
        let half = NatsConfig {
            tls_cert_file: Some("Cargo.toml".into()),
            ..NatsConfig::default()
        };
        let err = connect(&half, "t").await.expect_err("cert without key");
        assert!(matches!(err, NatsError::Settings(_)), "{err}");
        let missing = NatsConfig {
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..NatsConfig::default()
        };
        let err = connect(&missing, "t").await.expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
