//! The open-loop live runner: every planned request is sent at its planned time, whatever
//! happened to the ones before, over NATS (request-reply on `synergai.v1.infer.<model>`, the
//! binary tensor form) or HTTP (`POST /v2/models/{model}/infer`). Each answer is matched with
//! the `parameters` of the reply into a [`Record`].
//!
//! Over NATS every request of a run gets its own reply subject under one inbox prefix that the
//! runner subscribes to with a wildcard, so a second answer to the same request is seen (and
//! counted in [`Record::duplicates`]) instead of being dropped as a request-reply client would.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::HeaderMap;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::SeedableRng;
use rand::rngs::StdRng;
use synergai_contract::catalog::Catalog;
use synergai_contract::headers::INFERENCE_HEADER_CONTENT_LENGTH;
use synergai_contract::inputs::random_inputs;
use synergai_contract::oip::{InferenceRequest, decode_response};
use synergai_contract::{ErrorBody, ModelName, Subjects};
use synergai_platform::nats::error_of;
use synergai_workload::{Planned, Record};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where requests go.
#[derive(Clone)]
pub enum Target {
    /// NATS request-reply.
    Nats {
        /// Connection.
        client: async_nats::Client,
        /// Subjects of the deployment.
        subjects: Subjects,
    },
    /// The intake's HTTP endpoint, e.g. `http://127.0.0.1:8080`.
    Http {
        /// Base URL.
        base: String,
    },
}

/// How to send.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Send tensors in the binary form (else JSON).
    pub binary: bool,
    /// How long to wait for an answer before counting a request lost.
    pub timeout: Duration,
    /// Seed of the input tensors.
    pub input_seed: u64,
}

/// Live counters, for a progress display.
#[derive(Debug, Default)]
pub struct Progress {
    /// Sent.
    pub sent: AtomicU64,
    /// Answered with a result.
    pub ok: AtomicU64,
    /// Answered with an error.
    pub errors: AtomicU64,
    /// Not answered in time.
    pub lost: AtomicU64,
    /// Missed their target.
    pub violations: AtomicU64,
    /// Answers beyond the first to the same request.
    pub duplicates: AtomicU64,
}

impl Progress {
    /// Answers so far.
    pub fn answered(&self) -> u64 {
        self.ok.load(Ordering::Relaxed) + self.errors.load(Ordering::Relaxed)
    }

    /// One line: sent, ok, errors, violation rate.
    pub fn line(&self) -> String {
        let answered = self.answered();
        let v = self.violations.load(Ordering::Relaxed);
        format!(
            "sent {} ok {} errors {} lost {} duplicates {} violations {:.1}%",
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.lost.load(Ordering::Relaxed),
            self.duplicates.load(Ordering::Relaxed),
            if answered == 0 {
                0.0
            } else {
                100.0 * v as f64 / answered as f64
            }
        )
    }

    fn count(&self, r: &Record) {
        let c = match r.code {
            0 => &self.lost,
            200 => &self.ok,
            _ => &self.errors,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if r.violated() {
            self.violations.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A request body ready to send.
#[derive(Clone)]
struct Body {
    header_len: Option<usize>,
    bytes: Bytes,
}

/// Encodes one body per distinct (model, samples, target) of the plan, before the clock starts,
/// so that sending costs no encoding.
fn encode_bodies(
    plan: &[Planned],
    catalog: &Catalog,
    opts: &SendOptions,
) -> anyhow::Result<HashMap<(String, u32, u64), Body>> {
    let mut rng = StdRng::seed_from_u64(opts.input_seed);
    let mut out = HashMap::new();
    for p in plan {
        let key = (p.model.clone(), p.samples, p.slo_ms.to_bits());
        if out.contains_key(&key) {
            continue;
        }
        let entry = catalog
            .model(&p.model)
            .with_context(|| format!("model {} is not in the catalogue", p.model))?;
        let inputs = random_inputs(entry, p.samples as usize, &mut rng);
        let enc = InferenceRequest::new(inputs, Some(p.slo_ms))
            .encode(opts.binary)
            .with_context(|| format!("encoding a {} request", p.model))?;
        out.insert(
            key,
            Body {
                header_len: enc.header_len,
                bytes: Bytes::from(enc.body),
            },
        );
    }
    Ok(out)
}

/// How long a NATS run keeps watching for second answers after the last first answer.
pub const DUPLICATE_GRACE: Duration = Duration::from_secs(1);

/// Sends `plan` open-loop and returns a record per request sent, in plan order. Stops sending
/// when `stop` is cancelled, and still waits for the answers of what was sent (and, over NATS,
/// [`DUPLICATE_GRACE`] more for second answers).
pub async fn run(
    plan: &[Planned],
    catalog: &Catalog,
    target: &Target,
    opts: &SendOptions,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Record>> {
    run_watching(plan, catalog, target, opts, progress, stop, DUPLICATE_GRACE).await
}

/// As [`run`], watching `grace` after the last answer for second answers to any request.
pub async fn run_watching(
    plan: &[Planned],
    catalog: &Catalog,
    target: &Target,
    opts: &SendOptions,
    progress: Arc<Progress>,
    stop: CancellationToken,
    grace: Duration,
) -> anyhow::Result<Vec<Record>> {
    let bodies = encode_bodies(plan, catalog, opts)?;
    let inbox = match target {
        Target::Nats { client, .. } => Some(Inbox::open(client, progress.clone()).await?),
        Target::Http { .. } => None,
    };
    let http = match target {
        Target::Http { .. } => Some(
            HttpClient::builder(TokioExecutor::new())
                .pool_max_idle_per_host(1024)
                .build(HttpConnector::new()),
        ),
        Target::Nats { .. } => None,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Record>();
    let start = tokio::time::Instant::now();
    let origin = Instant::now();
    for p in plan {
        let at = start + Duration::from_secs_f64(p.at_ms / 1000.0);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        let body = bodies[&(p.model.clone(), p.samples, p.slo_ms.to_bits())].clone();
        let (target, http, opts, tx, progress, inbox) = (
            target.clone(),
            http.clone(),
            opts.clone(),
            tx.clone(),
            progress.clone(),
            inbox.clone(),
        );
        let p = p.clone();
        progress.sent.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let sent = Instant::now();
            let mut rec = Record {
                seq: p.seq,
                model: p.model.clone(),
                planned_ms: p.at_ms,
                sent_ms: sent.duration_since(origin).as_secs_f64() * 1000.0,
                slo_ms: p.slo_ms,
                ..Record::default()
            };
            let answer = match (&target, &http, &inbox) {
                (Target::Nats { client, subjects }, _, Some(inbox)) => {
                    send_nats(client, subjects, inbox, p.seq, &p.model, body, opts.timeout).await
                }
                (Target::Nats { .. }, _, None) => Answer::Lost("no reply inbox".into()),
                (Target::Http { base }, Some(http), _) => {
                    send_http(http, base, &p.model, body, opts.timeout).await
                }
                (Target::Http { .. }, None, _) => Answer::Lost("no HTTP client".into()),
            };
            let latency = sent.elapsed().as_secs_f64() * 1000.0;
            fill(&mut rec, answer, latency);
            progress.count(&rec);
            let _ = tx.send(rec);
        });
    }
    drop(tx);
    let mut records = Vec::new();
    while let Some(r) = rx.recv().await {
        records.push(r);
    }
    records.sort_by_key(|r| r.seq);
    if let Some(inbox) = inbox {
        tokio::time::sleep(grace).await;
        let extra = inbox.close();
        for r in &mut records {
            if let Some(&n) = extra.get(&r.seq) {
                r.duplicates = n;
            }
        }
    }
    Ok(records)
}

/// The replies of one NATS run: a wildcard subscription on `<prefix>.*`, each request answered
/// on `<prefix>.<seq>`. The first answer to a request goes to its sender; any later one is
/// counted as a duplicate.
#[derive(Clone)]
struct Inbox {
    prefix: String,
    state: Arc<Mutex<InboxState>>,
    router: Arc<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct InboxState {
    /// Requests waiting for their first answer.
    waiting: HashMap<u64, tokio::sync::oneshot::Sender<async_nats::Message>>,
    /// Requests that got their first answer (or gave up waiting).
    done: std::collections::HashSet<u64>,
    /// Answers beyond the first, per request.
    duplicates: HashMap<u64, u32>,
}

impl Inbox {
    async fn open(client: &async_nats::Client, progress: Arc<Progress>) -> anyhow::Result<Inbox> {
        let prefix = client.new_inbox();
        let mut sub = client
            .subscribe(format!("{prefix}.*"))
            .await
            .context("subscribing to the reply inbox")?;
        client.flush().await.context("flushing the subscription")?;
        let state = Arc::new(Mutex::new(InboxState::default()));
        let router = {
            let (state, progress, prefix) = (state.clone(), progress.clone(), prefix.clone());
            tokio::spawn(async move {
                use futures_util::StreamExt as _;
                while let Some(msg) = sub.next().await {
                    let Some(seq) = msg
                        .subject
                        .as_str()
                        .strip_prefix(prefix.as_str())
                        .and_then(|s| s.strip_prefix('.'))
                        .and_then(|s| s.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(tx) = st.waiting.remove(&seq) {
                        st.done.insert(seq);
                        let _ = tx.send(msg);
                    } else if st.done.contains(&seq) {
                        *st.duplicates.entry(seq).or_default() += 1;
                        progress.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(Inbox {
            prefix,
            state,
            router: Arc::new(router),
        })
    }

    /// The reply subject of request `seq`, and where its first answer will arrive.
    fn expect(&self, seq: u64) -> (String, tokio::sync::oneshot::Receiver<async_nats::Message>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .insert(seq, tx);
        (format!("{}.{seq}", self.prefix), rx)
    }

    /// Request `seq` stopped waiting (answered or timed out): any later answer is a duplicate
    /// if it had one, late otherwise.
    fn give_up(&self, seq: u64) {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .waiting
            .remove(&seq);
    }

    /// Stops watching; the duplicates per request.
    fn close(&self) -> HashMap<u64, u32> {
        self.router.abort();
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.duplicates.clone()
    }
}

/// What came back.
enum Answer {
    /// A reply body (JSON or binary form).
    Result {
        header_len: Option<usize>,
        body: Bytes,
    },
    /// An error reply.
    Error { code: u16, message: String },
    /// Nothing in time (or the request could not be sent).
    Lost(String),
}

async fn send_nats(
    client: &async_nats::Client,
    subjects: &Subjects,
    inbox: &Inbox,
    seq: u64,
    model: &str,
    body: Body,
    timeout: Duration,
) -> Answer {
    let model = match ModelName::parse(model) {
        Ok(m) => m,
        Err(e) => {
            return Answer::Error {
                code: 400,
                message: e.to_string(),
            };
        }
    };
    let mut headers = HeaderMap::new();
    if let Some(n) = body.header_len {
        headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.to_string().as_str());
    }
    let (reply, answer) = inbox.expect(seq);
    if let Err(e) = client
        .publish_with_reply_and_headers(subjects.infer(&model), reply, headers, body.bytes)
        .await
    {
        inbox.give_up(seq);
        return Answer::Lost(e.to_string());
    }
    let first = tokio::time::timeout(timeout, answer).await;
    inbox.give_up(seq);
    match first {
        Err(_) => Answer::Lost(format!("no answer in {timeout:?}")),
        Ok(Err(_)) => Answer::Lost("reply inbox closed".into()),
        // No intake listening: the request was refused, not lost in the system.
        Ok(Ok(msg)) if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) => Answer::Error {
            code: 503,
            message: "no intake is listening".into(),
        },
        Ok(Ok(msg)) => match error_of(&msg) {
            Some((code, message)) => Answer::Error {
                code: code.as_u16(),
                message,
            },
            None => Answer::Result {
                header_len: msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(INFERENCE_HEADER_CONTENT_LENGTH))
                    .and_then(|v| v.as_str().parse().ok()),
                body: msg.payload,
            },
        },
    }
}

async fn send_http(
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    base: &str,
    model: &str,
    body: Body,
    timeout: Duration,
) -> Answer {
    let uri = format!("{}/v2/models/{model}/infer", base.trim_end_matches('/'));
    let mut req = hyper::Request::post(uri).header("content-type", "application/json");
    if let Some(n) = body.header_len {
        req = req
            .header(INFERENCE_HEADER_CONTENT_LENGTH, n)
            .header("content-type", "application/octet-stream");
    }
    let req = match req.body(Full::new(body.bytes)) {
        Ok(r) => r,
        Err(e) => return Answer::Lost(e.to_string()),
    };
    let exchange = async {
        let resp = http.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let header_len = resp
            .headers()
            .get(INFERENCE_HEADER_CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, header_len, body))
    };
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => Answer::Lost(format!("no answer in {timeout:?}")),
        Ok(Err(e)) => Answer::Lost(e),
        Ok(Ok((200, header_len, body))) => Answer::Result { header_len, body },
        Ok(Ok((code, _, body))) => Answer::Error {
            code,
            message: serde_json::from_slice::<ErrorBody>(&body)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned()),
        },
    }
}

fn fill(rec: &mut Record, answer: Answer, latency_ms: f64) {
    match answer {
        Answer::Lost(why) => {
            rec.code = 0;
            rec.error = Some(why);
        }
        Answer::Error { code, message } => {
            rec.code = code;
            rec.latency_ms = Some(latency_ms);
            rec.error = Some(message);
        }
        Answer::Result { header_len, body } => {
            let params =
                decode_response(&body, header_len).and_then(|resp| resp.reply_parameters());
            match params {
                Ok(p) => {
                    rec.code = 200;
                    rec.latency_ms = Some(latency_ms);
                    rec.request_id = Some(p.request_id);
                    rec.site = Some(p.site);
                    rec.worker = Some(p.worker);
                    rec.device_class = Some(p.device_class);
                    rec.engine = Some(p.engine);
                    rec.threads = Some(p.threads);
                    rec.batch = Some(p.batch);
                    rec.queue_ms = Some(p.queue_ms);
                    rec.exec_ms = Some(p.exec_ms);
                    rec.total_ms = Some(p.total_ms);
                    rec.policy = Some(p.policy);
                }
                Err(e) => {
                    // An answer that is not a well-formed result: counted as an internal error.
                    rec.code = 500;
                    rec.latency_ms = Some(latency_ms);
                    rec.error = Some(format!("malformed reply: {e}"));
                }
            }
        }
    }
}
