//! Hostile input against a real cluster (intake, scheduler, worker, store on the real NATS,
//! PostgreSQL and ONNX Runtime): every request of a corpus of malformed and abusive requests is
//! answered with the right code over NATS and HTTP, and a normal request from another client is
//! served after each batch. A flood from one client is shed with 503 while another client keeps
//! being served. The malformed cases of `serving.rs` are not repeated here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use sqlx::PgPool;
use synergai_contract::oip::InferenceRequest;
use synergai_contract::trace::TraceContext;
use synergai_contract::{ErrorCode, ModelName, TensorData};
use synergai_e2e::{Cluster, WorkerSpec, database_url, inputs, nats_url};
use synergai_platform::nats::error_of;

/// A hostile request: what it is, the model, the body, `Inference-Header-Content-Length`, the
/// code it must get and a piece of the reason.
struct Case {
    what: &'static str,
    model: String,
    body: Vec<u8>,
    header_len: Option<String>,
    code: ErrorCode,
    says: &'static str,
}

fn case(
    what: &'static str,
    body: Vec<u8>,
    header_len: Option<String>,
    code: ErrorCode,
    says: &'static str,
) -> Case {
    Case {
        what,
        model: "silero_vad".into(),
        body,
        header_len,
        code,
        says,
    }
}

fn vad(seed: u64) -> InferenceRequest {
    InferenceRequest::new(inputs("silero_vad", 1, seed), Some(5_000.0))
}

/// A silero_vad request in JSON whose `input` data is `data` (JSON text).
fn vad_json(shape: &str, data: &str) -> Vec<u8> {
    format!(
        r#"{{"inputs":[{{"name":"input","shape":{shape},"datatype":"FP32","data":{data}}},{{"name":"state","shape":[2,1,128],"datatype":"FP32","data":[{}]}},{{"name":"sr","shape":[],"datatype":"INT64","data":[16000]}}],"parameters":{{"slo_ms":5000}}}}"#,
        vec!["0"; 256].join(",")
    )
    .into_bytes()
}

/// 512 floats as JSON with the one at index 7 replaced by `odd`.
fn floats_with(odd: &str) -> String {
    let mut v = vec!["0.5"; 512];
    v[7] = odd;
    format!("[{}]", v.join(","))
}

/// A binary-form body: the JSON header for `input` (with `shape` and `binary_data_size`), and
/// the other two inputs, then `tail`; returns the body and its header length.
fn vad_binary(shape: &str, size: &str, input_tail: &[u8]) -> (Vec<u8>, usize) {
    let header = format!(
        r#"{{"inputs":[{{"name":"input","shape":{shape},"datatype":"FP32","parameters":{{"binary_data_size":{size}}}}},{{"name":"state","shape":[2,1,128],"datatype":"FP32","parameters":{{"binary_data_size":1024}}}},{{"name":"sr","shape":[],"datatype":"INT64","parameters":{{"binary_data_size":8}}}}]}}"#
    );
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(input_tail);
    body.extend_from_slice(&[0u8; 1024]);
    body.extend_from_slice(&16000i64.to_le_bytes());
    (body, header.len())
}

/// The good request with one `input` element replaced by `x`, encoded in the binary form.
fn vad_binary_with(x: f32) -> (Vec<u8>, usize) {
    let mut req = vad(3);
    if let TensorData::Fp32(v) = &mut req.inputs[0].data {
        v[11] = x;
    }
    let enc = req.encode(true).expect("encodes");
    let n = enc.header_len.expect("binary");
    (enc.body, n)
}

fn corpus() -> Vec<(&'static str, Vec<Case>)> {
    use ErrorCode::{BadRequest, NotFound, PayloadTooLarge};
    let floats = |n: usize| vec![0u8; n * 4];
    let mut batches = Vec::new();

    // Non-finite values: JSON has no literal for them, the binary form carries their bit
    // patterns; an input that is not a finite number is refused at admission.
    let mut non_finite = vec![
        case(
            "NaN literal",
            vad_json("[1,512]", &floats_with("NaN")),
            None,
            BadRequest,
            "invalid JSON",
        ),
        case(
            "Infinity literal",
            vad_json("[1,512]", &floats_with("Infinity")),
            None,
            BadRequest,
            "invalid JSON",
        ),
        case(
            "-Infinity literal",
            vad_json("[1,512]", &floats_with("-Infinity")),
            None,
            BadRequest,
            "invalid JSON",
        ),
        case(
            "1e999",
            vad_json("[1,512]", &floats_with("1e999")),
            None,
            BadRequest,
            "out of range",
        ),
        case(
            "3.5e38 (past f32)",
            vad_json("[1,512]", &floats_with("3.5e38")),
            None,
            BadRequest,
            "does not fit",
        ),
    ];
    for (what, x) in [
        ("binary NaN", f32::NAN),
        ("binary +inf", f32::INFINITY),
        ("binary -inf", f32::NEG_INFINITY),
        ("binary signalling NaN", f32::from_bits(0x7f80_0001)),
    ] {
        let (body, n) = vad_binary_with(x);
        non_finite.push(case(what, body, Some(n.to_string()), BadRequest, "finite"));
    }
    batches.push(("non-finite values", non_finite));

    // Declared shapes that would allocate without bound, or are nonsense.
    let (b1, n1) = vad_binary("[1,4294967296,4294967296,3]", "8", &floats(2));
    let (b2, n2) = vad_binary("[1,2147483648,2147483648,3]", "8", &floats(2));
    let (b3, n3) = vad_binary("[-1,512]", "2048", &floats(512));
    let (b4, n4) = vad_binary(&format!("[{}]", vec!["1"; 17].join(",")), "4", &floats(1));
    batches.push((
        "declared shapes",
        vec![
            case(
                "JSON shape overflowing usize",
                vad_json("[1,4294967296,4294967296,3]", "[1]"),
                None,
                PayloadTooLarge,
                "overflows",
            ),
            case(
                "JSON shape of 2^62 elements",
                vad_json("[1,2147483648,2147483648,3]", "[1]"),
                None,
                BadRequest,
                "but data has 1",
            ),
            case(
                "JSON negative dimension",
                vad_json("[-1,512]", &floats_with("0")),
                None,
                BadRequest,
                "negative dimension",
            ),
            case(
                "JSON i64::MIN dimension",
                vad_json("[-9223372036854775808]", "[1]"),
                None,
                BadRequest,
                "negative dimension",
            ),
            case(
                "JSON dimension past i64",
                vad_json("[18446744073709551616]", "[1]"),
                None,
                BadRequest,
                "invalid JSON",
            ),
            case(
                "binary shape overflowing usize",
                b1,
                Some(n1.to_string()),
                PayloadTooLarge,
                "overflows",
            ),
            case(
                "binary shape whose byte size overflows",
                b2,
                Some(n2.to_string()),
                PayloadTooLarge,
                "too large",
            ),
            case(
                "binary negative dimension",
                b3,
                Some(n3.to_string()),
                BadRequest,
                "negative dimension",
            ),
            case(
                "17 dimensions",
                b4,
                Some(n4.to_string()),
                BadRequest,
                "at most 16",
            ),
        ],
    ));

    // Binary sizes that disagree with each other.
    let (longer, nl) = vad_binary("[1,512]", "2048", &floats(513));
    let (size_off, ns) = vad_binary("[1,512]", "2044", &floats(511));
    let (size_neg, nn) = vad_binary("[1,512]", "-2048", &floats(512));
    let (size_text, nt) = vad_binary("[1,512]", "\"2048\"", &floats(512));
    let (good_body, good_n) = vad_binary("[1,512]", "2048", &floats(512));
    batches.push((
        "binary sizes",
        vec![
            case(
                "tail longer than the tensors",
                longer,
                Some(nl.to_string()),
                BadRequest,
                "bytes of binary data follow",
            ),
            case(
                "binary_data_size disagreeing with the shape",
                size_off,
                Some(ns.to_string()),
                BadRequest,
                "needs 2048 bytes",
            ),
            case(
                "negative binary_data_size",
                size_neg,
                Some(nn.to_string()),
                BadRequest,
                "non-negative integer",
            ),
            case(
                "binary_data_size as text",
                size_text,
                Some(nt.to_string()),
                BadRequest,
                "non-negative integer",
            ),
            case(
                "binary body without its header length",
                good_body.clone(),
                None,
                BadRequest,
                "invalid JSON",
            ),
            case(
                "header length inside the JSON",
                good_body.clone(),
                Some((good_n - 5).to_string()),
                BadRequest,
                "invalid JSON",
            ),
            case(
                "header length not a number",
                good_body.clone(),
                Some("lots".into()),
                BadRequest,
                "not a byte count",
            ),
            case(
                "negative header length",
                good_body.clone(),
                Some("-12".into()),
                BadRequest,
                "not a byte count",
            ),
            case(
                "header length past u64",
                good_body,
                Some("99999999999999999999999".into()),
                BadRequest,
                "not a byte count",
            ),
        ],
    ));

    // Text that is not what it claims to be.
    let mut bad_utf8 = vad_json("[1,512]", &floats_with("0"));
    let at = bad_utf8
        .windows(8)
        .position(|w| w == br#""name":""#)
        .expect("a name")
        + 8;
    bad_utf8.splice(at..at, [0xff, 0xfe, 0xc3]);
    let deep_array = "[".repeat(100_000).into_bytes();
    let deep_data = vad_json(
        "[1,512]",
        &format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)),
    );
    let deep_object = format!(
        r#"{{"inputs":[],"parameters":{}1{}}}"#,
        r#"{"a":"#.repeat(50_000),
        "}".repeat(50_000)
    )
    .into_bytes();
    let mut nul = vad_json("[1,512]", &floats_with("0"));
    nul.insert(2, 0);
    batches.push((
        "malformed text",
        vec![
            case("invalid UTF-8", bad_utf8, None, BadRequest, "invalid JSON"),
            case("100k nested arrays", deep_array, None, BadRequest, "invalid JSON"),
            case("100k nested data arrays", deep_data, None, BadRequest, "recursion limit"),
            case("50k nested objects", deep_object, None, BadRequest, "recursion limit"),
            case("NUL byte", nul, None, BadRequest, "invalid JSON"),
            case("empty body", Vec::new(), None, BadRequest, "invalid JSON"),
            case(
                "duplicate input",
                br#"{"inputs":[{"name":"sr","shape":[],"datatype":"INT64","data":[16000]},{"name":"sr","shape":[],"datatype":"INT64","data":[16000]}]}"#
                    .to_vec(),
                None,
                BadRequest,
                "given twice",
            ),
        ],
    ));

    // Model names: unknown, too long, characters no model name has.
    let long = "m".repeat(200);
    batches.push((
        "model names",
        ["resnet51", long.as_str(), "bad$name", "Silero_VAD!", "-"]
            .into_iter()
            .map(|m| Case {
                model: m.to_owned(),
                ..case(
                    "bad model name",
                    vad_json("[1,512]", &floats_with("0")),
                    None,
                    NotFound,
                    "unknown model",
                )
            })
            .collect(),
    ));
    batches
}

/// A normal request from a client of its own must be served, over NATS and HTTP.
async fn still_serves(cluster: &Cluster, after: &str, seed: u64) {
    let resp = cluster
        .infer("silero_vad", &vad(seed), seed.is_multiple_of(2))
        .await
        .unwrap_or_else(|e| panic!("after {after}: {e:?}\n{}", cluster.logs()));
    assert_eq!(resp.outputs.len(), 2, "after {after}");
    let http = cluster
        .infer_http("silero_vad", &vad(seed + 1), true)
        .await
        .unwrap_or_else(|e| panic!("after {after} (HTTP): {e:?}"));
    assert_eq!(http.outputs.len(), 2, "after {after}");
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn hostile_requests_get_the_right_code_and_others_are_still_served(
    pool: PgPool,
) -> anyhow::Result<()> {
    let worker = WorkerSpec::new("cloud-1", "cloud", "cloud", "0", &["silero_vad"]);
    let cluster = Cluster::start(&database_url(&pool), "synergai", &[worker]).await;
    let mut checked = 0;
    for (batch, cases) in corpus() {
        for c in &cases {
            let what = format!("{batch}: {}", c.what);
            // NATS.
            let inbox = cluster.nats.new_inbox();
            let mut sub = cluster.nats.subscribe(inbox.clone()).await?;
            let mut headers = async_nats::HeaderMap::new();
            if let Some(h) = &c.header_len {
                headers.insert("Inference-Header-Content-Length", h.as_str());
            }
            let subject = format!("{}.infer.{}", cluster.subjects.root(), c.model);
            cluster
                .nats
                .publish_with_reply_and_headers(subject, inbox, headers, c.body.clone().into())
                .await?;
            let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .map_err(|_| anyhow::anyhow!("{what}: no reply over NATS"))?
                .expect("reply");
            let (got, text) = error_of(&msg).unwrap_or_else(|| panic!("{what}: no error reply"));
            assert_eq!(got, c.code, "NATS {what}: {text}");
            assert!(
                text.contains(c.says),
                "NATS {what}: {text:?} does not say {:?}",
                c.says
            );
            // HTTP.
            let extra = c
                .header_len
                .as_ref()
                .map(|h| format!("Inference-Header-Content-Length: {h}\r\n"))
                .unwrap_or_default();
            let reply = cluster
                .http(
                    "POST",
                    &format!("/v2/models/{}/infer", c.model),
                    &extra,
                    &c.body,
                )
                .await?;
            let text = String::from_utf8_lossy(&reply.body);
            assert_eq!(reply.status, c.code.as_u16(), "HTTP {what}: {text}");
            assert!(
                text.contains(c.says),
                "HTTP {what}: {text:?} does not say {:?}",
                c.says
            );
            checked += 1;
        }
        still_serves(&cluster, batch, checked).await;
    }
    assert!(checked >= 39, "only {checked} hostile cases ran");

    // A model name that is not valid UTF-8 in the HTTP path is refused by the router, not served.
    let reply = cluster
        .http("POST", "/v2/models/%ff%fe/infer", "", b"{}")
        .await?;
    assert_eq!(
        reply.status,
        400,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );

    // Invalid trace context: the request is served, with a fresh trace rather than the
    // client's malformed one.
    let mut req = vad(7);
    req.binary_output = true;
    for tp in [
        "garbage",
        "",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
        "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-zz",
    ] {
        assert!(
            TraceContext::parse(tp).is_none(),
            "{tp:?} is meant to be invalid"
        );
        let (resp, reply_tp) = cluster
            .infer_traced("silero_vad", &req, true, Some(tp))
            .await
            .unwrap_or_else(|e| panic!("traceparent {tp:?}: {e:?}"));
        assert_eq!(resp.outputs.len(), 2);
        let reply_tp =
            reply_tp.unwrap_or_else(|| panic!("traceparent {tp:?}: no trace in the reply"));
        assert!(
            TraceContext::parse(&reply_tp).is_some(),
            "traceparent {tp:?}: the reply's {reply_tp:?} is not valid"
        );
        let enc = req.encode(true)?;
        let n = enc.header_len.expect("binary");
        let reply = cluster
            .http(
                "POST",
                "/v2/models/silero_vad/infer",
                &format!("Inference-Header-Content-Length: {n}\r\ntraceparent: {tp}\r\n"),
                &enc.body,
            )
            .await?;
        assert_eq!(
            reply.status,
            200,
            "HTTP traceparent {tp:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }

    // The intake is still up and ready.
    assert_eq!(
        cluster
            .http("GET", "/v2/health/ready", "", b"")
            .await?
            .status,
        200
    );
    cluster.stop().await;
    Ok(())
}

/// What one flooded request came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Got {
    Ok,
    Code(u16),
    Silence,
}

/// `n` concurrent requests over one connection's request-reply mux (one client).
async fn nats_wave(
    client: &async_nats::Client,
    subject: &str,
    body: &bytes::Bytes,
    header_len: usize,
    n: usize,
) -> Vec<Got> {
    let reqs = (0..n).map(|_| async {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Inference-Header-Content-Length",
            header_len.to_string().as_str(),
        );
        let sent = client.request_with_headers(subject.to_owned(), headers, body.clone());
        match tokio::time::timeout(Duration::from_secs(40), sent).await {
            Ok(Ok(msg)) => match error_of(&msg) {
                None => Got::Ok,
                Some((code, _)) => Got::Code(code.as_u16()),
            },
            _ => Got::Silence,
        }
    });
    futures_util::future::join_all(reqs).await
}

/// One HTTP/1.1 exchange with the intake from the local address `from`: the status.
async fn http_from(to: SocketAddr, from: IpAddr, path: &str, extra: &str, body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let sock = tokio::net::TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(from, 0))?;
        let mut s = sock.connect(to).await?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8_lossy(&out[..out.len().min(64)]).to_string();
        Ok::<_, std::io::Error>(
            text.split(' ')
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
        )
    };
    tokio::time::timeout(Duration::from_secs(40), exchange)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// A connection of its own (a client of its own to the intake), waiting up to 40 s for replies.
async fn connect() -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(40)))
        .connect(nats_url())
        .await?)
}

/// Per-client fairness: the intake caps each client's requests in flight
/// (SYNERGAI_TEST_CLIENT_CAP=0 runs the test without the limit, to see it fail).
const CLIENT_CAP: usize = 8;

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn a_flood_from_one_client_is_shed_and_others_are_served(pool: PgPool) -> anyhow::Result<()> {
    let cap = std::env::var("SYNERGAI_TEST_CLIENT_CAP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CLIENT_CAP);
    // A model with real work per request, so that the flood is far above capacity.
    let model = "squeezenet";
    // Concurrent requests per wave of the flood (SYNERGAI_TEST_FLOOD_WAVE for a bigger one).
    let wave: usize = std::env::var("SYNERGAI_TEST_FLOOD_WAVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let worker = WorkerSpec::new("cloud-1", "cloud", "cloud", "0", &[model]);
    let env = [("SYNERGAI_INTAKE__MAX_IN_FLIGHT_PER_CLIENT", cap.to_string())];
    let cluster = Cluster::start_with_env(&database_url(&pool), "synergai", &[worker], &env).await;
    let subject = cluster
        .subjects
        .infer(&ModelName::parse(model).expect("model name"))
        .to_string();
    let request = |seed: u64, slo_ms: f64| -> (bytes::Bytes, usize) {
        let enc = InferenceRequest::new(inputs(model, 1, seed), Some(slo_ms))
            .encode(true)
            .expect("encodes");
        (enc.body.into(), enc.header_len.expect("binary"))
    };

    // The flooder: one connection, waves of `wave` concurrent requests with a lax target, for as
    // long as the other client runs.
    let flooder = connect().await?;
    let (flood_body, flood_n) = request(1, 20_000.0);
    let stop = tokio_util::sync::CancellationToken::new();
    let flood = {
        let stop = stop.clone();
        let subject = subject.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            while !stop.is_cancelled() {
                let answers = nats_wave(&flooder, &subject, &flood_body, flood_n, wave).await;
                got.extend(answers);
            }
            (got, flooder)
        })
    };

    // The other client: its own connection, one request every 100 ms with a 2 s target.
    let other = connect().await?;
    let (body, n) = request(2, 2_000.0);
    let mut latencies = Vec::new();
    let mut other_got = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..30 {
        let t0 = Instant::now();
        let got = nats_wave(&other, &subject, &body, n, 1).await[0];
        latencies.push(t0.elapsed());
        other_got.push(got);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // HTTP: a flood of concurrent requests from 127.0.0.1 while 127.0.0.2 sends one at a time.
    let path = format!("/v2/models/{model}/infer");
    let (hbody, hn) = request(1, 20_000.0);
    let extra = format!("Inference-Header-Content-Length: {hn}\r\n");
    let http_flood = futures_util::future::join_all((0..60).map(|_| {
        http_from(
            cluster.http,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &path,
            &extra,
            &hbody,
        )
    }));
    let http_other = async {
        let mut codes = Vec::new();
        tokio::time::sleep(Duration::from_millis(200)).await;
        for _ in 0..5 {
            let (b, n) = request(3, 2_000.0);
            let extra = format!("Inference-Header-Content-Length: {n}\r\n");
            codes.push(
                http_from(
                    cluster.http,
                    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)),
                    &path,
                    &extra,
                    &b,
                )
                .await,
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        codes
    };
    let (http_flood, http_other) = tokio::join!(http_flood, http_other);
    stop.cancel();
    let (flood, flooder) = flood.await?;

    let count = |got: &[Got], g: Got| got.iter().filter(|&&x| x == g).count();
    let max_latency = latencies.iter().max().copied().unwrap_or_default();
    let summary = format!(
        "flood: {} sent, {} ok, {} 503, {} 504, {} silent; other: {other_got:?}, max latency {max_latency:?}; \
         HTTP flood {http_flood:?}, HTTP other {http_other:?}",
        flood.len(),
        count(&flood, Got::Ok),
        count(&flood, Got::Code(503)),
        count(&flood, Got::Code(504)),
        count(&flood, Got::Silence),
    );
    println!("{summary}");
    // The other client is unaffected: every request served, within its target.
    assert!(other_got.iter().all(|&g| g == Got::Ok), "{summary}");
    assert!(max_latency < Duration::from_millis(2_000), "{summary}");
    assert!(http_other.iter().all(|&c| c == 200), "{summary}");
    // The flood is answered, never silent: served or shed, and shed it was.
    assert_eq!(count(&flood, Got::Silence), 0, "{summary}");
    assert!(
        flood
            .iter()
            .all(|g| matches!(g, Got::Ok | Got::Code(503) | Got::Code(504))),
        "{summary}"
    );
    assert!(count(&flood, Got::Code(503)) > flood.len() / 2, "{summary}");
    assert!(
        http_flood.iter().all(|c| [200, 503, 504].contains(c)),
        "{summary}"
    );
    assert!(http_flood.contains(&503), "{summary}");

    // The refusals are counted by reason.
    let metrics = cluster.http("GET", "/metrics", "", b"").await?;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines()
            .any(|l| l.starts_with("synergai_intake_shed_total")
                && l.contains("reason=\"client_in_flight\"")),
        "{text}"
    );
    // The flooder's places are given back (as job events name its answered requests, or at
    // their deadlines): once it stops flooding, it is served again.
    let (b, n) = request(4, 5_000.0);
    let start = Instant::now();
    loop {
        let got = nats_wave(&flooder, &subject, &b, n, 1).await;
        if got == [Got::Ok] {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "flooder still refused: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.stop().await;
    Ok(())
}
