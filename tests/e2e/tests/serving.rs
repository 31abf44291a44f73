//! The serving path end to end: real intake, scheduler, workers and store processes on the real
//! NATS, PostgreSQL and ONNX Runtime.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use sqlx::PgPool;
use synergai_contract::oip::{InferenceRequest, ReplyParameters};
use synergai_contract::{ErrorCode, Tensor};
use synergai_e2e::{Cluster, WorkerSpec, catalog, database_url, inputs};
use synergai_platform::nats::error_of;

const MODELS: [&str; 3] = ["squeezenet", "ppocr_cls", "silero_vad"];

fn two_workers() -> Vec<WorkerSpec> {
    vec![
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "0", &MODELS),
        WorkerSpec::new("cloud-1", "cloud", "cloud", "1", &MODELS),
    ]
}

fn request(model: &str, seed: u64, slo_ms: f64) -> InferenceRequest {
    InferenceRequest::new(inputs(model, 1, seed), Some(slo_ms))
}

/// Checks a reply against the catalogue and the request.
fn check_reply(model: &str, params: &ReplyParameters, outputs: &[Tensor]) {
    let catalog = catalog();
    let entry = catalog.model(model).expect("catalogued");
    assert_eq!(outputs.len(), entry.outputs.len(), "{model}");
    for (o, spec) in outputs.iter().zip(&entry.outputs) {
        assert_eq!(
            (o.name.as_str(), o.shape.clone()),
            (spec.name.as_str(), spec.shape_for_batch(1)),
            "{model}"
        );
    }
    assert!(!params.request_id.is_empty() && !params.worker.is_empty() && !params.site.is_empty());
    assert!(
        ["ort", "tract"].contains(&params.engine.as_str()),
        "{params:?}"
    );
    assert!(params.threads >= 1 && params.batch >= 1);
    assert!(
        params.exec_ms > 0.0 && params.total_ms >= params.exec_ms && params.queue_ms >= 0.0,
        "{params:?}"
    );
    assert_eq!(params.violated, params.total_ms > params.slo_ms);
    assert_eq!(params.policy, "synergai");
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn three_models_over_nats_and_http_each_answered_once(pool: PgPool) -> anyhow::Result<()> {
    let cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()).await;

    // NATS: all requests on one inbox, so a second reply to any of them would be seen.
    let inbox = cluster.nats.new_inbox();
    let mut replies = cluster.nats.subscribe(inbox.clone()).await?;
    let mut sent = 0;
    for (i, model) in MODELS.iter().enumerate() {
        for binary in [false, true] {
            // A 224x224 image as JSON text is 1.6 MB, past NATS's default 1 MB max_payload:
            // over NATS it travels in the binary form (HTTP below takes the JSON).
            if *model == "squeezenet" && !binary {
                continue;
            }
            let mut req = request(model, i as u64, 5_000.0);
            req.id = Some(format!("{model}-{binary}"));
            req.binary_output = binary;
            cluster.publish(model, &req, binary, &inbox, None).await;
            sent += 1;
        }
    }
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut client_ids = Vec::new();
    while seen.values().sum::<u32>() < sent {
        let msg = tokio::time::timeout(Duration::from_secs(60), replies.next())
            .await
            .unwrap_or_else(|_| panic!("missing replies\n{}", cluster.logs()))
            .expect("subscribed");
        assert!(
            error_of(&msg).is_none(),
            "{:?}\n{}",
            error_of(&msg),
            cluster.logs()
        );
        let n = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Inference-Header-Content-Length"))
            .and_then(|v| v.as_str().parse().ok());
        let resp = synergai_contract::oip::decode_response(&msg.payload, n)?;
        let params = resp.reply_parameters()?;
        check_reply(&resp.model_name, &params, &resp.outputs);
        *seen.entry(params.request_id).or_default() += 1;
        client_ids.push(resp.id.expect("client id echoed"));
    }
    // Nothing more arrives: no request is answered twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), replies.next())
            .await
            .is_err(),
        "a second reply arrived"
    );
    assert_eq!(seen.len(), sent as usize);
    assert!(seen.values().all(|&n| n == 1));
    client_ids.sort();
    assert_eq!(client_ids.len(), sent as usize);

    // HTTP: JSON and binary for each model.
    for (i, model) in MODELS.iter().enumerate() {
        let req = request(model, 10 + i as u64, 5_000.0);
        for binary in [false, true] {
            let resp = cluster
                .infer_http(model, &req, binary)
                .await
                .unwrap_or_else(|e| panic!("{e:?}\n{}", cluster.logs()));
            check_reply(model, &resp.reply_parameters()?, &resp.outputs);
        }
    }

    // The ledger has every request.
    let rows = wait_for_rows(&pool, i64::from(sent) + 6).await;
    assert_eq!(rows, i64::from(sent) + 6);
    cluster.stop().await;
    Ok(())
}

async fn wait_for_rows(pool: &PgPool, n: i64) -> i64 {
    for _ in 0..200 {
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
            .fetch_one(pool)
            .await
            .unwrap_or(0);
        if rows >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// A hostile request: model, body, binary header length, the code and the words expected back.
type Case<'a> = (&'a str, Vec<u8>, Option<String>, ErrorCode, &'a str);

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn bad_input_gets_the_right_code_and_the_services_stay_up(
    pool: PgPool,
) -> anyhow::Result<()> {
    let cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()[..1]).await;
    let good = request("silero_vad", 1, 5_000.0);
    let json = |v: serde_json::Value| serde_json::to_vec(&v).expect("json");
    let vad = |data_len: usize,
               shape: serde_json::Value,
               datatype: &str,
               slo: serde_json::Value| {
        json(serde_json::json!({
            "inputs": [
                {"name": "input", "shape": shape, "datatype": datatype, "data": vec![0.5; data_len]},
                {"name": "state", "shape": [2, 1, 128], "datatype": "FP32", "data": vec![0.0; 256]},
                {"name": "sr", "shape": [], "datatype": "INT64", "data": [16000]}
            ],
            "parameters": {"slo_ms": slo}
        }))
    };
    let enc = good.encode(true)?;
    let n = enc.header_len.expect("binary");
    let cases: Vec<Case<'_>> = vec![
        (
            "silero_vad",
            b"{not json".to_vec(),
            None,
            ErrorCode::BadRequest,
            "invalid JSON",
        ),
        (
            "silero_vad",
            vad(512, serde_json::json!([1, 512]), "FP64", 100.into()),
            None,
            ErrorCode::BadRequest,
            "datatype FP64",
        ),
        (
            "silero_vad",
            vad(1024, serde_json::json!([1, 1024]), "FP32", 100.into()),
            None,
            ErrorCode::BadRequest,
            "shape [1, 1024]",
        ),
        (
            "silero_vad",
            vad(500, serde_json::json!([1, 512]), "FP32", 100.into()),
            None,
            ErrorCode::BadRequest,
            "holds 512 elements but data has 500",
        ),
        (
            "silero_vad",
            vad(600, serde_json::json!([1, 512]), "FP32", 100.into()),
            None,
            ErrorCode::BadRequest,
            "holds 512 elements but data has 600",
        ),
        (
            "silero_vad",
            vad(
                1,
                serde_json::json!([4294967296u64, 4294967296u64, 4294967296u64]),
                "FP32",
                100.into(),
            ),
            None,
            ErrorCode::PayloadTooLarge,
            "overflows",
        ),
        (
            "silero_vad",
            enc.body.clone(),
            Some((enc.body.len() + 10).to_string()),
            ErrorCode::BadRequest,
            "has only",
        ),
        (
            "silero_vad",
            enc.body[..n + 100].to_vec(),
            Some(n.to_string()),
            ErrorCode::BadRequest,
            "runs past the end",
        ),
        (
            "no_such_model",
            vad(512, serde_json::json!([1, 512]), "FP32", 100.into()),
            None,
            ErrorCode::NotFound,
            "unknown model",
        ),
        (
            "silero_vad",
            vad(512, serde_json::json!([1, 512]), "FP32", 0.into()),
            None,
            ErrorCode::BadRequest,
            "slo_ms must be a positive",
        ),
        (
            "silero_vad",
            vad(512, serde_json::json!([1, 512]), "FP32", (-5).into()),
            None,
            ErrorCode::BadRequest,
            "slo_ms must be a positive",
        ),
        (
            "silero_vad",
            vad(512, serde_json::json!([1, 512]), "FP32", 1e12.into()),
            None,
            ErrorCode::BadRequest,
            "up to",
        ),
        (
            "silero_vad",
            vad(512, serde_json::json!([1, 512]), "FP32", "soon".into()),
            None,
            ErrorCode::BadRequest,
            "slo_ms must be a number",
        ),
    ];
    for (model, body, header_len, code, says) in &cases {
        // NATS.
        let inbox = cluster.nats.new_inbox();
        let mut sub = cluster.nats.subscribe(inbox.clone()).await?;
        let mut headers = async_nats::HeaderMap::new();
        if let Some(h) = header_len {
            headers.insert("Inference-Header-Content-Length", h.as_str());
        }
        let subject = format!("{}.infer.{model}", cluster.subjects.root());
        cluster
            .nats
            .publish_with_reply_and_headers(subject, inbox, headers, body.clone().into())
            .await?;
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await?
            .expect("reply");
        let (got, text) = error_of(&msg).unwrap_or_else(|| panic!("{says}: no error reply"));
        assert_eq!(got, *code, "NATS {says}: {text}");
        assert!(text.contains(says), "NATS: {text:?} does not say {says:?}");
        // HTTP.
        let extra = header_len
            .as_ref()
            .map(|h| format!("Inference-Header-Content-Length: {h}\r\n"))
            .unwrap_or_default();
        let reply = cluster
            .http("POST", &format!("/v2/models/{model}/infer"), &extra, body)
            .await?;
        let text = String::from_utf8_lossy(&reply.body);
        assert_eq!(reply.status, code.as_u16(), "HTTP {says}: {text}");
        assert!(
            text.contains(says) || *code == ErrorCode::NotFound,
            "HTTP: {text:?} does not say {says:?}"
        );
    }
    // Everything still serves.
    let ok = cluster
        .infer("silero_vad", &good, false)
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(ok.outputs.len(), 2);
    assert_eq!(
        cluster
            .http("GET", "/v2/health/ready", "", b"")
            .await?
            .status,
        200
    );
    let meta = cluster
        .http("GET", "/v2/models/silero_vad", "", b"")
        .await?;
    assert_eq!(meta.status, 200);
    assert!(String::from_utf8_lossy(&meta.body).contains("\"stateN\""));
    cluster.stop().await;
    Ok(())
}

/// Publishes `n` requests on one inbox; returns the subscription.
async fn burst(
    cluster: &Cluster,
    model: &str,
    n: usize,
    slo_ms: f64,
) -> anyhow::Result<async_nats::Subscriber> {
    let inbox = cluster.nats.new_inbox();
    let sub = cluster.nats.subscribe(inbox.clone()).await?;
    for i in 0..n {
        let mut req = request(model, i as u64, slo_ms);
        req.id = Some(format!("req-{i}"));
        cluster.publish(model, &req, true, &inbox, None).await;
    }
    Ok(sub)
}

/// Collects replies until `ids` have each been answered, then waits `quiet` for strays; returns
/// (client id → replies, code counts, worker per successful reply).
async fn collect(
    cluster: &Cluster,
    sub: &mut async_nats::Subscriber,
    n: usize,
    quiet: Duration,
) -> (
    HashMap<String, u32>,
    HashMap<u16, u32>,
    HashMap<String, u32>,
) {
    let mut per_request: HashMap<String, u32> = HashMap::new();
    let mut codes: HashMap<u16, u32> = HashMap::new();
    let mut workers: HashMap<String, u32> = HashMap::new();
    loop {
        let wait = if per_request.len() < n {
            Duration::from_secs(60)
        } else {
            quiet
        };
        let Ok(Some(msg)) = tokio::time::timeout(wait, sub.next()).await else {
            break;
        };
        match error_of(&msg) {
            Some((code, text)) => {
                *codes.entry(code.as_u16()).or_default() += 1;
                // Error replies carry no client id; count them under the request id they name.
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Synergai-Request-Id"))
                    .map(|v| v.as_str().to_owned());
                *per_request
                    .entry(id.unwrap_or_else(|| format!("error:{text}:{}", per_request.len())))
                    .or_default() += 1;
            }
            None => {
                let n = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Inference-Header-Content-Length"))
                    .and_then(|v| v.as_str().parse().ok());
                let resp =
                    synergai_contract::oip::decode_response(&msg.payload, n).expect("decodes");
                let p = resp.reply_parameters().expect("parameters");
                *codes.entry(200).or_default() += 1;
                *workers.entry(p.worker).or_default() += 1;
                *per_request.entry(resp.id.expect("client id")).or_default() += 1;
            }
        }
    }
    assert_eq!(
        per_request.len(),
        n,
        "not every request was answered: {codes:?}\n{}",
        cluster.logs()
    );
    (per_request, codes, workers)
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_worker_killed_while_holding_jobs_leaves_every_request_answered_once(
    pool: PgPool,
) -> anyhow::Result<()> {
    let workers = vec![
        WorkerSpec::new("w-doomed", "edge-a", "edge", "0", &["resnet50"]),
        WorkerSpec::new("w-survivor", "edge-b", "edge", "1", &["resnet50"]),
    ];
    // Round robin gives both workers a queue; resnet50 takes ~35 ms a run on one core.
    let mut cluster = Cluster::start(&database_url(&pool), "round-robin", &workers).await;
    let n = 24;
    let mut sub = burst(&cluster, "resnet50", n, 20_000.0).await?;
    tokio::time::sleep(Duration::from_millis(150)).await;
    cluster.signal("w-doomed", "KILL");
    let (per_request, codes, by_worker) =
        collect(&cluster, &mut sub, n, Duration::from_secs(2)).await;
    assert!(
        per_request.values().all(|&k| k == 1),
        "a request was answered twice: {per_request:?}"
    );
    let doomed = by_worker.get("w-doomed").copied().unwrap_or(0);
    assert!(
        doomed < (n / 2) as u32,
        "the killed worker answered {doomed} of its ~{} jobs: nothing to recover",
        n / 2
    );
    assert!(
        cluster.log("scheduler").contains("worker lost"),
        "{}",
        cluster.log("scheduler")
    );
    eprintln!("after SIGKILL: codes {codes:?}, answered by {by_worker:?}");
    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn accepted_requests_survive_a_scheduler_restart(pool: PgPool) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()[..1]).await;
    cluster.signal("scheduler", "KILL");
    assert!(
        cluster
            .wait_exit("scheduler", Duration::from_secs(5))
            .is_some()
    );
    // Accepted by the intake into the work queue while no scheduler runs.
    let mut sub = burst(&cluster, "silero_vad", 5, 30_000.0).await?;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "answered without a scheduler?"
    );
    cluster.spawn_scheduler();
    let (per_request, codes, _) = collect(&cluster, &mut sub, 5, Duration::from_millis(500)).await;
    assert_eq!(codes.get(&200), Some(&5), "{codes:?}");
    assert!(per_request.values().all(|&k| k == 1));
    cluster.stop().await;
    Ok(())
}

/// The scheduler is killed once it has dispatched: the worker answers what it holds; the
/// restarted scheduler gets every request that was never acknowledged again, and answers,
/// adopts or places each so that every request is answered once and run once.
#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_restarted_scheduler_neither_loses_nor_reruns_what_was_dispatched(
    pool: PgPool,
) -> anyhow::Result<()> {
    use std::collections::HashSet;
    let mut cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()[..1]).await;
    let mut runs = cluster
        .nats
        .subscribe(cluster.subjects.job_events())
        .await?;
    let mut dispatches = cluster
        .nats
        .subscribe(format!("{}.workers.jobs.*", cluster.subjects.root()))
        .await?;
    let n = 12;
    let mut sub = burst(&cluster, "squeezenet", n, 60_000.0).await?;
    tokio::time::timeout(Duration::from_secs(10), dispatches.next())
        .await?
        .expect("a dispatch");
    cluster.signal("scheduler", "KILL");
    assert!(
        cluster
            .wait_exit("scheduler", Duration::from_secs(5))
            .is_some()
    );
    cluster.spawn_scheduler();
    // Redelivery comes after `scheduler.redeliver_after_ms` (2 s in these tests).
    let (per_request, codes, _) = collect(&cluster, &mut sub, n, Duration::from_secs(4)).await;
    assert_eq!(codes.get(&200), Some(&(n as u32)), "{codes:?}");
    assert!(per_request.values().all(|&k| k == 1), "{per_request:?}");
    let mut ran: HashMap<String, u32> = HashMap::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), runs.next()).await {
        let o: synergai_contract::store::JobObservation = serde_json::from_slice(&m.payload)?;
        for id in o.request_ids.into_iter().collect::<HashSet<_>>() {
            *ran.entry(id).or_default() += 1;
        }
    }
    // Every dispatch seen (by both schedulers), for the failure message.
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    while let Ok(Some(m)) =
        tokio::time::timeout(Duration::from_millis(100), dispatches.next()).await
    {
        let meta = m
            .headers
            .as_ref()
            .and_then(|h| h.get(synergai_contract::serving::JOB_HEADER))
            .and_then(|v| {
                serde_json::from_str::<synergai_contract::serving::DispatchMeta>(v.as_str()).ok()
            });
        if let Some(d) = meta {
            sent.entry(d.job.request_id).or_default().push(format!(
                "{} attempt {} to {}",
                d.scheduler, d.attempt, m.subject
            ));
        }
    }
    let again = cluster.log("edge-a-1").matches("dispatched again").count();
    eprintln!(
        "requests dispatched more than once: {}; dispatches the worker took as already held: {again}",
        sent.values().filter(|d| d.len() > 1).count()
    );
    assert_eq!(ran.len(), n, "runs: {ran:?}\n{}", cluster.logs());
    assert!(
        ran.values().all(|&k| k == 1),
        "a request ran twice: {ran:?}\ndispatches: {sent:#?}\n{}",
        cluster.logs()
    );
    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn one_trace_across_intake_scheduler_and_worker(pool: PgPool) -> anyhow::Result<()> {
    use synergai_contract::trace::TraceContext;
    let cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()[..1]).await;
    let mut envelopes = cluster
        .nats
        .subscribe(cluster.subjects.sched_requests())
        .await?;
    let mut dispatches = cluster
        .nats
        .subscribe(format!("{}.workers.jobs.*", cluster.subjects.root()))
        .await?;
    let client = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .expect("valid");
    let inbox = cluster.nats.new_inbox();
    let mut replies = cluster.nats.subscribe(inbox.clone()).await?;
    cluster
        .publish(
            "silero_vad",
            &request("silero_vad", 3, 5_000.0),
            false,
            &inbox,
            Some(&client.to_string()),
        )
        .await;
    let trace_of = |m: &async_nats::Message| {
        synergai_platform::nats::trace_of(m.headers.as_ref()).expect("traceparent")
    };
    let envelope = trace_of(
        &tokio::time::timeout(Duration::from_secs(10), envelopes.next())
            .await?
            .expect("envelope"),
    );
    let dispatch = trace_of(
        &tokio::time::timeout(Duration::from_secs(10), dispatches.next())
            .await?
            .expect("dispatch"),
    );
    let reply = trace_of(
        &tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await?
            .expect("reply"),
    );
    for (hop, ctx) in [
        ("intake", envelope),
        ("scheduler", dispatch),
        ("worker", reply),
    ] {
        assert_eq!(ctx.trace_id, client.trace_id, "{hop} left the trace");
    }
    let spans = [
        client.span_id,
        envelope.span_id,
        dispatch.span_id,
        reply.span_id,
    ];
    for i in 0..spans.len() {
        for j in i + 1..spans.len() {
            assert_ne!(spans[i], spans[j], "each hop has a span of its own");
        }
    }
    // A request without trace context starts one.
    let started = cluster
        .infer("silero_vad", &request("silero_vad", 4, 5_000.0), false)
        .await;
    assert!(started.is_ok());
    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn the_policy_switches_at_run_time(pool: PgPool) -> anyhow::Result<()> {
    let cluster = Cluster::start(&database_url(&pool), "synergai", &two_workers()).await;
    let policy_of = |r: Result<synergai_contract::oip::InferenceResponse, (ErrorCode, String)>| {
        r.map_err(|e| format!("{e:?}"))
            .and_then(|r| r.reply_parameters().map_err(|e| e.to_string()))
            .map(|p| p.policy)
    };
    assert_eq!(
        policy_of(
            cluster
                .infer("silero_vad", &request("silero_vad", 1, 5_000.0), false)
                .await
        ),
        Ok("synergai".into())
    );
    for name in [
        "slo-mael",
        "round-robin",
        "least-loaded",
        "mael",
        "random",
        "edge-only",
        "cloud-only",
    ] {
        let state = cluster
            .control(Some(name))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        assert_eq!(state.policy, name);
        assert_eq!(
            policy_of(
                cluster
                    .infer("silero_vad", &request("silero_vad", 2, 5_000.0), false)
                    .await
            ),
            Ok(name.into())
        );
    }
    let err = cluster
        .control(Some("fastest"))
        .await
        .expect_err("unknown policy");
    assert_eq!(err.0, ErrorCode::BadRequest);
    assert!(err.1.contains("unknown policy"), "{}", err.1);
    cluster.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn sigterm_drains_a_worker_and_expired_jobs_get_504(pool: PgPool) -> anyhow::Result<()> {
    let mut cluster = Cluster::start(
        &database_url(&pool),
        "synergai",
        &[WorkerSpec::new(
            "w1",
            "local",
            "cloud",
            "0-1",
            &["resnet50"],
        )],
    )
    .await;
    let mut decisions = cluster
        .nats
        .subscribe(cluster.subjects.decision_events())
        .await?;

    // A target no run can meet: queued behind others, the job's deadline passes before it
    // starts, and the worker answers 504 without running it.
    let mut sub = burst(&cluster, "resnet50", 6, 20_000.0).await?;
    let mut hopeless = request("resnet50", 99, 1.0);
    hopeless.id = Some("hopeless".into());
    let inbox = cluster.nats.new_inbox();
    let mut hopeless_reply = cluster.nats.subscribe(inbox.clone()).await?;
    cluster
        .publish("resnet50", &hopeless, true, &inbox, None)
        .await;
    let msg = tokio::time::timeout(Duration::from_secs(30), hopeless_reply.next())
        .await?
        .expect("reply");
    let (code, text) = error_of(&msg).unwrap_or_else(|| panic!("expected 504\n{}", cluster.logs()));
    assert_eq!(code, ErrorCode::DeadlineExceeded, "{text}");

    // The decision events name the choice and what was weighed.
    let event: synergai_contract::serving::DecisionEvent = serde_json::from_slice(
        &tokio::time::timeout(Duration::from_secs(10), decisions.next())
            .await?
            .expect("event")
            .payload,
    )?;
    assert_eq!(event.chosen.as_ref().map(|c| c.worker.as_str()), Some("w1"));
    assert!(
        !event.candidates.is_empty() && event.considered >= 1,
        "{event:?}"
    );

    // SIGTERM while jobs are queued: every one is answered, then the worker exits cleanly.
    let mut more = burst(&cluster, "resnet50", 8, 20_000.0).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.signal("w1", "TERM");
    let (per_request, codes, _) = collect(&cluster, &mut more, 8, Duration::from_millis(500)).await;
    assert!(per_request.values().all(|&k| k == 1), "{per_request:?}");
    assert_eq!(codes.values().sum::<u32>(), 8, "{codes:?}");
    let exit = cluster
        .wait_exit("w1", Duration::from_secs(30))
        .expect("the worker exits after draining");
    assert!(exit.success(), "{exit:?}\n{}", cluster.log("w1"));
    let (first, _, _) = collect(&cluster, &mut sub, 6, Duration::from_millis(100)).await;
    assert_eq!(first.len(), 6);
    assert!(cluster.log("w1").contains("draining"));
    cluster.stop().await;
    Ok(())
}
