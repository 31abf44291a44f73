//! Snapshot tests of the serialised wire JSON. A shipped contract version is frozen: if one of
//! these fails, the change breaks clients; make a new version instead of accepting it.

use synergai_contract::oip::{
    InferenceRequest, InferenceResponse, ReplyParameters, RequestedOutput,
};
use synergai_contract::profile::{ProfileLine, ProfilePoint, Unsupported};
use synergai_contract::{ErrorBody, Tensor, TensorData};

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

fn image() -> Tensor {
    Tensor::new(
        "data_0",
        vec![1, 2, 2],
        TensorData::Fp32(vec![0.0, 0.5, 1.0, 1.5]),
    )
    .expect("consistent")
}

#[test]
fn request_json() {
    let mut req = InferenceRequest::new(vec![image()], Some(40.0));
    req.id = Some("client-7".into());
    req.outputs = vec![RequestedOutput {
        name: "prob_1".into(),
        parameters: Default::default(),
    }];
    let enc = req.encode(false).expect("encodes");
    insta::assert_json_snapshot!("request_json", json(&enc.body));
}

#[test]
fn request_binary_header() {
    let req = InferenceRequest::new(vec![image()], Some(40.0));
    let enc = req.encode(true).expect("encodes");
    let n = enc.header_len.expect("binary form");
    insta::assert_json_snapshot!("request_binary_header", json(&enc.body[..n]));
    assert_eq!(&enc.body[n..n + 8], &[0, 0, 0, 0, 0, 0, 0, 0x3f]);
}

#[test]
fn response_json() {
    let params = ReplyParameters {
        request_id: "01J9Z5R8M4".into(),
        site: "edge-a".into(),
        worker: "edge-a-w1".into(),
        arch: "aarch64".into(),
        device_class: "aarch64-jetson-orin-nx".into(),
        engine: "tract".into(),
        threads: 2,
        batch: 4,
        queue_ms: 1.5,
        exec_ms: 12.25,
        total_ms: 15.0,
        slo_ms: 40.0,
        violated: false,
        policy: "synergai".into(),
    };
    let resp = InferenceResponse {
        model_name: "squeezenet".into(),
        id: Some("client-7".into()),
        parameters: params.to_parameters(),
        outputs: vec![
            Tensor::new(
                "softmaxout_1",
                vec![1, 2],
                TensorData::Fp32(vec![0.25, 0.75]),
            )
            .expect("consistent"),
        ],
    };
    let enc = resp.encode(|_| false).expect("encodes");
    insta::assert_json_snapshot!("response_json", json(&enc.body));
}

#[test]
fn error_body() {
    insta::assert_json_snapshot!(
        "error_body",
        ErrorBody {
            error: "unknown model \"nope\"".into()
        }
    );
}

#[test]
fn profile_lines() {
    let point = ProfileLine::Point(ProfilePoint {
        model: "squeezenet".into(),
        engine: "ort".into(),
        threads: 1,
        batch: 1,
        mean_ms: 3.1,
        p50_ms: 3.0,
        p95_ms: 3.5,
        p99_ms: 3.9,
        min_ms: 2.9,
        max_ms: 4.0,
        qps: 322.58,
        runs: 50,
        warmup: 5,
        peak_rss_bytes: 104_857_600,
        device_class: "x86_64-cloud-2c".into(),
        arch: "x86_64".into(),
        cpu_model: "Example CPU".into(),
        core_set: vec![0, 1],
        engine_version: "ort 2.0.0-rc.15".into(),
        library_version: "onnxruntime 1.31.1".into(),
        worker: "local".into(),
        measured_at: time::macros::datetime!(2026-11-28 18:00:00.250 UTC),
    });
    let skip = ProfileLine::Unsupported(Unsupported {
        model: "silero_vad".into(),
        engine: "tract".into(),
        unsupported: "unsupported by tract: If with a runtime condition".into(),
        device_class: "x86_64-cloud-2c".into(),
        worker: "local".into(),
    });
    insta::assert_json_snapshot!("profile_point", point);
    insta::assert_json_snapshot!("profile_unsupported", skip);
    for line in [&point, &skip] {
        let text = serde_json::to_string(line).expect("serialises");
        let back: ProfileLine = serde_json::from_str(&text).expect("parses");
        assert_eq!(&back, line);
    }
}
