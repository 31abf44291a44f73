//! Observability end to end: the spans of real requests, exported over OTLP by the real intake,
//! scheduler and worker processes into a receiver in this test; and `/metrics` of every service
//! parsed as Prometheus text after real traffic.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use futures_util::StreamExt;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use sqlx::PgPool;
use synergai_contract::ErrorCode;
use synergai_contract::oip::{InferenceRequest, ReplyParameters};
use synergai_e2e::{Cluster, WorkerSpec, database_url, inputs};

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn attr_text(span: &Span, key: &str) -> String {
    attr(&span.attributes, key).map(text).unwrap_or_default()
}

fn attr_f64(span: &Span, key: &str) -> Option<f64> {
    match attr(&span.attributes, key)?.value.as_ref()? {
        any_value::Value::DoubleValue(d) => Some(*d),
        any_value::Value::IntValue(i) => Some(*i as f64),
        _ => None,
    }
}

async fn collect(State(spans): State<Spans>, body: Bytes) -> Vec<u8> {
    if let Ok(req) = ExportTraceServiceRequest::decode(body) {
        let mut got = spans.lock().expect("spans");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "service.name"))
                .map(text)
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push(Got {
                        service: service.clone(),
                        span,
                    });
                }
            }
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

/// An OTLP/HTTP (protobuf) trace receiver on a loopback port.
async fn otlp_receiver() -> (SocketAddr, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(collect))
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, spans)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of trace `trace_id` once those named in `want` have all arrived.
async fn wait_spans(spans: &Spans, trace_id: &[u8], want: &[&str], cluster: &Cluster) -> Vec<Got> {
    let start = Instant::now();
    loop {
        let got: Vec<Got> = spans
            .lock()
            .expect("spans")
            .iter()
            .filter(|g| g.span.trace_id == trace_id)
            .cloned()
            .collect();
        if want.iter().all(|w| got.iter().any(|g| g.span.name == *w)) {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "spans {want:?} of trace {} not all exported; got {:?}\n{}",
            hex(trace_id),
            got.iter()
                .map(|g| (&g.service, &g.span.name))
                .collect::<Vec<_>>(),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn one<'a>(got: &'a [Got], name: &str) -> &'a Got {
    let all: Vec<&Got> = got.iter().filter(|g| g.span.name == name).collect();
    assert_eq!(all.len(), 1, "exactly one {name} span: {all:?}");
    all[0]
}

/// The span tree of one trace, indented, with times relative to its first span.
fn tree(got: &[Got]) -> String {
    let t0 = got
        .iter()
        .map(|g| g.span.start_time_unix_nano)
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    fn walk(got: &[Got], parent: &[u8], depth: usize, t0: u64, out: &mut String) {
        let mut children: Vec<&Got> = got
            .iter()
            .filter(|g| g.span.parent_span_id == parent)
            .collect();
        children.sort_by_key(|g| g.span.start_time_unix_nano);
        for g in children {
            let s = &g.span;
            let mut attrs: Vec<String> = s
                .attributes
                .iter()
                .filter(|kv| {
                    !kv.key.starts_with("code.")
                        && !kv.key.starts_with("thread.")
                        && kv.key != "target"
                        && kv.key != "busy_ns"
                        && kv.key != "idle_ns"
                })
                .map(|kv| {
                    let v = kv.value.as_ref().map(text).unwrap_or_default();
                    let v = if v.len() > 160 {
                        format!("{}…", &v[..160])
                    } else {
                        v
                    };
                    format!("{}={}", kv.key, v)
                })
                .collect();
            attrs.sort();
            out.push_str(&format!(
                "{:indent$}{} [{}] span {} +{:.2} ms, {:.2} ms\n{:indent$}    {}\n",
                "",
                s.name,
                g.service,
                hex(&s.span_id),
                (s.start_time_unix_nano.saturating_sub(t0)) as f64 / 1e6,
                (s.end_time_unix_nano.saturating_sub(s.start_time_unix_nano)) as f64 / 1e6,
                "",
                attrs.join(" "),
                indent = depth * 2
            ));
            walk(got, &s.span_id, depth + 1, t0, out);
        }
    }
    let roots: Vec<Vec<u8>> = got
        .iter()
        .map(|g| g.span.parent_span_id.clone())
        .filter(|p| !got.iter().any(|g| g.span.span_id == *p))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for r in roots {
        if r.is_empty() {
            out.push_str("(root)\n");
        } else {
            out.push_str(&format!("(parent {} from the client)\n", hex(&r)));
        }
        walk(got, &r, 1, t0, &mut out);
    }
    out
}

async fn nats_infer(
    cluster: &Cluster,
    model: &str,
    req: &InferenceRequest,
    traceparent: Option<&str>,
) -> ReplyParameters {
    traced_infer(cluster, model, req, traceparent).await.0
}

/// One request over NATS: the reply's parameters and its `traceparent`.
async fn traced_infer(
    cluster: &Cluster,
    model: &str,
    req: &InferenceRequest,
    traceparent: Option<&str>,
) -> (ReplyParameters, Option<String>) {
    let (resp, tp) = cluster
        .infer_traced(model, req, true, traceparent)
        .await
        .unwrap_or_else(|e| panic!("refused: {e:?}\n{}", cluster.logs()));
    (resp.reply_parameters().expect("reply parameters"), tp)
}

/// A cluster whose services export spans to `otlp`, in batches sent every `batch_delay_ms`.
async fn traced_cluster(
    pool: &PgPool,
    otlp: SocketAddr,
    batch_delay_ms: u64,
    workers: &[WorkerSpec],
) -> Cluster {
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}")),
        ("OTEL_BSP_SCHEDULE_DELAY", batch_delay_ms.to_string()),
    ];
    Cluster::start_with_env(&database_url(pool), "synergai", workers, &env).await
}

/// A client's trace: its id and the `traceparent` of the client's span.
fn client_trace(sampled: bool) -> ([u8; 16], String) {
    let trace_id: [u8; 16] = rand::random();
    let span: [u8; 8] = rand::random();
    let flags = if sampled { "01" } else { "00" };
    (
        trace_id,
        format!("00-{}-{}-{flags}", hex(&trace_id), hex(&span)),
    )
}

/// Every reply to one request on a `$SRV` subject, within a second.
async fn srv_replies(cluster: &Cluster, subject: &str) -> Vec<serde_json::Value> {
    let inbox = cluster.nats.new_inbox();
    let mut sub = cluster
        .nats
        .subscribe(inbox.clone())
        .await
        .expect("subscribe");
    cluster
        .nats
        .publish_with_reply(subject.to_owned(), inbox, "".into())
        .await
        .expect("publish");
    let mut out = Vec::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(m)) = tokio::time::timeout_at(until, sub.next()).await {
        out.push(serde_json::from_slice(&m.payload).expect("JSON reply"));
    }
    out
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn one_request_is_one_trace_across_intake_scheduler_and_worker(
    pool: PgPool,
) -> anyhow::Result<()> {
    let (otlp, spans) = otlp_receiver().await;
    let workers = [
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "0", &["ppocr_cls"]),
        WorkerSpec::new("cloud-1", "cloud", "cloud", "1", &["ppocr_cls"]),
    ];
    let cluster = traced_cluster(&pool, otlp, 100, &workers).await;

    // A client trace that is not sampled: the flag travels on, and no span is exported.
    let (unsampled, tp) = client_trace(false);
    let req = InferenceRequest::new(inputs("ppocr_cls", 1, 3), Some(5_000.0));
    let (_, reply_tp) = traced_infer(&cluster, "ppocr_cls", &req, Some(&tp)).await;
    let reply_tp = reply_tp.expect("the reply carries a traceparent");
    assert!(
        reply_tp.starts_with(&format!("00-{}-", hex(&unsampled))) && reply_tp.ends_with("-00"),
        "{reply_tp}"
    );

    // The client starts the trace: its traceparent is the intake span's parent.
    let trace_id: [u8; 16] = rand::random();
    let client_span: [u8; 8] = rand::random();
    let traceparent = format!("00-{}-{}-01", hex(&trace_id), hex(&client_span));
    let req = InferenceRequest::new(inputs("ppocr_cls", 1, 7), Some(5_000.0));
    let reply = nats_infer(&cluster, "ppocr_cls", &req, Some(&traceparent)).await;

    let want = [
        "intake",
        "schedule",
        "worker",
        "fetch_body",
        "queue",
        "inference",
    ];
    let got = wait_spans(&spans, &trace_id, &want, &cluster).await;
    assert!(
        !spans
            .lock()
            .expect("spans")
            .iter()
            .any(|g| g.span.trace_id == unsampled),
        "spans of an unsampled trace were exported"
    );
    println!("span tree of request {}:\n{}", reply.request_id, tree(&got));
    let (intake, schedule, worker, queue, inference) = (
        one(&got, "intake"),
        one(&got, "schedule"),
        one(&got, "worker"),
        one(&got, "queue"),
        one(&got, "inference"),
    );
    // One trace, each hop the child of the one before, across the NATS hops.
    assert_eq!(intake.service, "synergai-intake");
    assert_eq!(schedule.service, "synergai-scheduler");
    for g in [worker, queue, inference] {
        assert_eq!(g.service, "synergai-worker");
    }
    assert_eq!(intake.span.parent_span_id, client_span);
    assert_eq!(schedule.span.parent_span_id, intake.span.span_id);
    assert_eq!(worker.span.parent_span_id, schedule.span.span_id);
    assert_eq!(queue.span.parent_span_id, worker.span.span_id);
    // The body read from the work queue stream, then the wait in the queue.
    let fetch = one(&got, "fetch_body");
    assert_eq!(fetch.span.parent_span_id, worker.span.span_id);
    assert!(fetch.span.end_time_unix_nano <= queue.span.start_time_unix_nano);
    assert_eq!(inference.span.parent_span_id, worker.span.span_id);
    // The queue wait ends before inference starts; both lie within the worker's span.
    assert!(queue.span.end_time_unix_nano <= inference.span.start_time_unix_nano);
    assert!(worker.span.start_time_unix_nano <= queue.span.start_time_unix_nano);
    assert!(inference.span.end_time_unix_nano <= worker.span.end_time_unix_nano);

    // The decision, as the scheduler's span attributes, agrees with the reply.
    assert_eq!(attr_text(&intake.span, "request_id"), reply.request_id);
    assert_eq!(attr_text(&worker.span, "request_id"), reply.request_id);
    let s = &schedule.span;
    assert_eq!(attr_text(s, "policy"), "synergai");
    assert_eq!(attr_text(s, "chosen.worker"), reply.worker);
    assert_eq!(attr_text(s, "chosen.engine"), reply.engine);
    assert_eq!(attr_text(s, "chosen.threads"), reply.threads.to_string());
    assert!(attr_f64(s, "est.exec_ms").is_some_and(|v| v > 0.0), "{s:?}");
    assert!(attr_f64(s, "slack_ms").is_some(), "{s:?}");
    assert!(attr_f64(s, "decide_us").is_some_and(|v| v >= 0.0), "{s:?}");
    let candidates: Vec<serde_json::Value> = serde_json::from_str(&attr_text(s, "candidates"))?;
    assert!(
        candidates
            .iter()
            .any(|c| c["worker"] == reply.worker.as_str() && c["slack_ms"].is_number()),
        "the chosen worker among the candidates: {candidates:?}"
    );
    assert!(attr_f64(s, "considered").is_some_and(|n| n >= 1.0), "{s:?}");
    // The worker's own measurements.
    assert!(attr_f64(&worker.span, "exec_ms").is_some_and(|v| v > 0.0));
    assert_eq!(
        attr_text(&worker.span, "violated"),
        reply.violated.to_string()
    );
    assert!(attr_f64(&inference.span, "exec_ms").is_some_and(|v| v > 0.0));

    // Without a traceparent the intake starts the trace: its span is the root.
    let reply = nats_infer(&cluster, "ppocr_cls", &req, None).await;
    let start = Instant::now();
    let root = loop {
        let found = spans
            .lock()
            .expect("spans")
            .iter()
            .find(|g| {
                g.span.name == "intake" && attr_text(&g.span, "request_id") == reply.request_id
            })
            .cloned();
        if let Some(g) = found {
            break g;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no intake span\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(root.span.parent_span_id.is_empty(), "a root span: {root:?}");
    let got = wait_spans(&spans, &root.span.trace_id, &want, &cluster).await;
    assert_eq!(one(&got, "schedule").span.parent_span_id, root.span.span_id);

    // The NATS services API: standard tooling lists each worker with its identity, its jobs
    // endpoint and how many jobs it took.
    let infos = srv_replies(&cluster, "$SRV.INFO.synergai-worker").await;
    let ours: Vec<&serde_json::Value> = infos
        .iter()
        .filter(|i| i["metadata"]["subject_prefix"] == cluster.prefix())
        .collect();
    assert_eq!(ours.len(), 2, "{infos:?}");
    let mut jobs_taken = 0;
    for info in ours {
        assert_eq!(info["type"], "io.nats.micro.v1.info_response");
        let worker = info["metadata"]["worker"].as_str().expect("worker id");
        assert!(["edge-a-1", "cloud-1"].contains(&worker), "{info}");
        assert_eq!(info["endpoints"][0]["name"], "jobs");
        assert!(
            info["endpoints"][0]["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with(cluster.prefix()) && s.contains(worker)),
            "{info}"
        );
        let id = info["id"].as_str().expect("instance id");
        let stats = srv_replies(&cluster, &format!("$SRV.STATS.synergai-worker.{id}")).await;
        assert_eq!(stats.len(), 1, "{stats:?}");
        assert_eq!(stats[0]["type"], "io.nats.micro.v1.stats_response");
        let jobs = &stats[0]["endpoints"][0];
        assert_eq!(jobs["num_errors"], 0, "{jobs}");
        assert_eq!(jobs["data"]["queued"], 0, "{jobs}");
        jobs_taken += jobs["num_requests"].as_u64().expect("num_requests");
    }
    assert_eq!(jobs_taken, 3, "one dispatch per request");
    let pings = srv_replies(&cluster, "$SRV.PING.synergai-worker").await;
    assert!(pings.len() >= 2, "{pings:?}");

    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn spans_still_pending_at_shutdown_are_flushed(pool: PgPool) -> anyhow::Result<()> {
    let (otlp, spans) = otlp_receiver().await;
    // Batches would wait a minute: only the flush at shutdown can deliver these spans.
    let workers = [WorkerSpec::new(
        "cloud-1",
        "cloud",
        "cloud",
        "0",
        &["ppocr_cls"],
    )];
    let cluster = traced_cluster(&pool, otlp, 60_000, &workers).await;
    let (trace_id, tp) = client_trace(true);
    let req = InferenceRequest::new(inputs("ppocr_cls", 1, 1), Some(5_000.0));
    nats_infer(&cluster, "ppocr_cls", &req, Some(&tp)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let early = spans
        .lock()
        .expect("spans")
        .iter()
        .filter(|g| g.span.trace_id == trace_id)
        .count();
    assert_eq!(
        early, 0,
        "nothing exported before the batch delay or shutdown"
    );
    cluster.stop().await;
    let got: Vec<String> = spans
        .lock()
        .expect("spans")
        .iter()
        .filter(|g| g.span.trace_id == trace_id)
        .map(|g| g.span.name.clone())
        .collect();
    for name in ["intake", "schedule", "worker", "queue", "inference"] {
        assert!(got.iter().any(|n| n == name), "{name} not flushed: {got:?}");
    }
    Ok(())
}

/// Every sample of `name` whose labels include `labels`, summed.
fn sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

/// Number of observations of histogram `name` with `labels` (its `_count`).
fn count(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    sum(scrape, &format!("{name}_count"), labels)
}

async fn scrape(addr: SocketAddr) -> prometheus_parse::Scrape {
    let body = http_get(addr, "/metrics").await;
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).expect("Prometheus text format")
}

/// A plain HTTP/1.1 GET on loopback.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{path} on {addr}: {head}");
    body.to_owned()
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn metrics_move_by_what_real_traffic_did(pool: PgPool) -> anyhow::Result<()> {
    let workers = [
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "0", &["ppocr_cls"]),
        WorkerSpec::new("cloud-1", "cloud", "cloud", "1", &["ppocr_cls"]),
    ];
    let cluster = Cluster::start(&database_url(&pool), "synergai", &workers).await;
    let all = |c: &Cluster| {
        let mut v = vec![("intake".to_owned(), c.http)];
        v.extend(c.ops.iter().map(|(k, a)| (k.clone(), *a)));
        v
    };
    let mut before = HashMap::new();
    for (name, addr) in all(&cluster) {
        before.insert(name, scrape(addr).await);
    }

    // 5 served, 2 refused by the intake (400), 1 the scheduler cannot place in time (504).
    let model = "ppocr_cls";
    let mut served = Vec::new();
    for seed in 0..5 {
        let req = InferenceRequest::new(inputs(model, 1, seed), Some(5_000.0));
        served.push(nats_infer(&cluster, model, &req, None).await);
    }
    for _ in 0..2 {
        let bad = cluster
            .infer(
                model,
                &InferenceRequest::new(inputs("silero_vad", 1, 0), Some(5_000.0)),
                false,
            )
            .await;
        assert!(matches!(bad, Err((ErrorCode::BadRequest, _))), "{bad:?}");
    }
    let hopeless = cluster
        .infer(
            model,
            &InferenceRequest::new(inputs(model, 1, 9), Some(0.01)),
            true,
        )
        .await;
    assert!(
        matches!(hopeless, Err((ErrorCode::DeadlineExceeded, _))),
        "{hopeless:?}"
    );

    let mut after = HashMap::new();
    for (name, addr) in all(&cluster) {
        after.insert(name, scrape(addr).await);
    }
    let delta =
        |svc: &str, f: &dyn Fn(&prometheus_parse::Scrape) -> f64| f(&after[svc]) - f(&before[svc]);
    let m = [("model", model)];
    assert_eq!(
        delta("intake", &|s| sum(s, "synergai_intake_accepted_total", &m)),
        6.0
    );
    assert_eq!(
        delta("intake", &|s| sum(
            s,
            "synergai_intake_refused_total",
            &[("code", "400")]
        )),
        2.0
    );
    // The hopeless request's 504 comes from the scheduler (refused unplaced) or from the worker
    // (expired before it could start): counted once, and as one QoS violation, where it was.
    let answered_504 = delta("scheduler", &|s| {
        sum(s, "synergai_scheduler_answers_total", &[("code", "504")])
    });
    let unplaced = delta("scheduler", &|s| {
        sum(
            s,
            "synergai_qos_violations_total",
            &[
                ("model", model),
                ("policy", "synergai"),
                ("site", "unplaced"),
            ],
        )
    });
    assert_eq!(answered_504, unplaced);
    assert!(
        delta("scheduler", &|s| count(
            s,
            "synergai_scheduler_decision_us",
            &[]
        )) >= 6.0
    );
    // The workers answered the 5, each counted once where it ran, with its inference time.
    let on = |w: &str| served.iter().filter(|r| r.worker == w).count() as f64;
    let mut violations = unplaced;
    let mut expired = 0.0;
    for w in ["edge-a-1", "cloud-1"] {
        assert_eq!(
            delta(w, &|s| sum(
                s,
                "synergai_worker_requests_total",
                &[("model", model), ("code", "200")]
            )),
            on(w),
            "{w}"
        );
        assert_eq!(
            delta(w, &|s| count(
                s,
                "synergai_worker_exec_ms",
                &[("model", model)]
            )),
            on(w),
            "{w}"
        );
        violations += delta(w, &|s| sum(s, "synergai_qos_violations_total", &m));
        expired += delta(w, &|s| {
            sum(
                s,
                "synergai_worker_requests_total",
                &[("model", model), ("code", "504")],
            )
        });
        let a = &after[w];
        assert!(
            a.samples
                .iter()
                .any(|s| s.metric == "synergai_worker_queue_depth"
                    && s.labels.get("worker") == Some(w)),
            "{w}: queue depth gauge"
        );
        assert!(
            a.samples
                .iter()
                .any(|s| s.metric == "synergai_worker_backlog_ms")
        );
    }
    assert_eq!(
        answered_504 + expired,
        1.0,
        "the hopeless request answered once"
    );
    let late = served.iter().filter(|r| r.violated).count() as f64;
    assert_eq!(
        violations,
        late + 1.0,
        "violations counted where they happened"
    );

    // The store writes the 6 outcomes to the ledger, and times how long that took.
    let store = cluster.ops["store"];
    let start = Instant::now();
    loop {
        let now = scrape(store).await;
        let written = sum(&now, "synergai_store_ledger_rows_total", &[])
            - sum(&before["store"], "synergai_store_ledger_rows_total", &[]);
        let lagged = count(&now, "synergai_store_write_lag_ms", &[("kind", "outcome")])
            - count(
                &before["store"],
                "synergai_store_write_lag_ms",
                &[("kind", "outcome")],
            );
        if written >= 6.0 {
            assert_eq!(lagged, written, "one lag observation per ledger row");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ledger rows: {written}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop().await;
    Ok(())
}
