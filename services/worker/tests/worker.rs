//! Worker integration tests on the real models, the real ONNX Runtime library and tract.
//! They need `scripts/setup` to have run (the test command runs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand::rngs::StdRng;
use synergai_contract::catalog::Catalog;
use synergai_contract::profile::ProfileLine;
use synergai_contract::{Datatype, ErrorCode, Tensor, TensorData};
use synergai_worker::Worker;
use synergai_worker::config::WorkerConfig;
use synergai_worker::engine::ort::OrtEngine;
use synergai_worker::engine::tract::TractEngine;
use synergai_worker::engine::{Engine, EngineError, EngineKind};
use synergai_worker::inputs::random_inputs;
use synergai_worker::models::Models;

/// Agreement demanded between ONNX Runtime and tract on the same inputs: |a - b| <= ATOL + RTOL·|b|.
/// The engines order floating-point sums differently (kernels, fusions), so bit equality is not
/// expected; the largest difference observed is under 3e-6 (PP-OCR rec, DenseNet-121).
///
/// Mind what this proves per model: the light zoo's weights are constant, so its softmax
/// outputs are uniform whatever the input, and agreement there says little. The PP-OCR models
/// carry real weights and are the strong evidence.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-3;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config() -> WorkerConfig {
    WorkerConfig {
        catalog: root().join("assets/catalog.json"),
        ..WorkerConfig::default()
    }
}

/// One worker per test binary: ONNX Runtime allows one environment per process.
fn worker() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(|| Worker::build(&config()).expect("worker starts; run scripts/setup first"))
}

fn engine(kind: EngineKind) -> &'static dyn Engine {
    worker()
        .engines
        .iter()
        .find(|e| e.kind() == kind)
        .map(|e| e.as_ref())
        .expect("engine enabled")
}

/// A seed that differs between runs (fresh inputs every time) and is printed to reproduce one.
fn fresh_seed() -> u64 {
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(7, |d| d.as_nanos() as u64);
    eprintln!("random inputs seed: {seed}");
    seed
}

#[test]
fn every_model_runs_on_ort_with_the_catalog_output_shapes() {
    let w = worker();
    let mut rng = StdRng::seed_from_u64(fresh_seed());
    assert_eq!(w.models.catalog().models.len(), 13);
    for entry in &w.models.catalog().models {
        let mut session = w
            .models
            .open(engine(EngineKind::Ort), entry.name.as_str(), 1)
            .expect("loads on ORT");
        let batches: &[usize] = if entry.dynamic_batch { &[1, 4] } else { &[1] };
        for &batch in batches {
            let (outputs, got_batch) = session
                .run(random_inputs(entry, batch, &mut rng))
                .expect("runs");
            assert_eq!(got_batch, batch);
            assert_eq!(outputs.len(), entry.outputs.len(), "{}", entry.name);
            for (out, spec) in outputs.iter().zip(&entry.outputs) {
                assert_eq!(out.name, spec.name);
                assert_eq!(
                    out.shape,
                    spec.shape_for_batch(batch),
                    "{} {} at batch {batch}",
                    entry.name,
                    spec.name
                );
                if let TensorData::Fp32(v) = &out.data {
                    assert!(
                        v.iter().all(|x| x.is_finite()),
                        "{} gives non-finite outputs",
                        entry.name
                    );
                }
            }
        }
    }
}

fn max_violation(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() - RTOL * y.abs())
        .fold(f32::MIN, f32::max)
}

#[test]
fn ort_and_tract_agree_on_fresh_random_inputs() {
    let w = worker();
    let mut rng = StdRng::seed_from_u64(fresh_seed());
    let mut compared = Vec::new();
    for entry in &w.models.catalog().models {
        let name = entry.name.as_str();
        let mut tract = match w.models.open(engine(EngineKind::Tract), name, 1) {
            Ok(s) => s,
            Err(EngineError::Unsupported { engine, reason }) => {
                assert_eq!(engine, EngineKind::Tract);
                assert!(!reason.is_empty());
                eprintln!("{name}: unsupported by tract: {reason}");
                continue;
            }
            Err(e) => panic!("{name}: tract failed other than by lack of support: {e}"),
        };
        let mut ort = w
            .models
            .open(engine(EngineKind::Ort), name, 1)
            .expect("loads on ORT");
        let batch = if entry.dynamic_batch { 2 } else { 1 };
        let inputs = random_inputs(entry, batch, &mut rng);
        let (a, _) = ort.run(inputs.clone()).expect("ORT runs");
        let (b, _) = tract.run(inputs).expect("tract runs");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.name, &x.shape), (&y.name, &y.shape));
            let (TensorData::Fp32(xv), TensorData::Fp32(yv)) = (&x.data, &y.data) else {
                assert_eq!(
                    x.data, y.data,
                    "{name}: non-float outputs must match exactly"
                );
                continue;
            };
            let worst = max_violation(xv, yv);
            let max_abs = xv
                .iter()
                .zip(yv)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            eprintln!("{name} {}: max |ort - tract| = {max_abs:e}", x.name);
            assert!(
                worst <= ATOL,
                "{name} {}: engines differ beyond tolerance ({worst:e} > {ATOL:e})",
                x.name
            );
        }
        compared.push(name.to_owned());
    }
    eprintln!("compared on both engines: {compared:?}");
    assert!(compared.len() >= 12, "tract ran only {compared:?}");
}

#[test]
fn tract_threads_and_batches_run() {
    let w = worker();
    let entry = w.models.entry("squeezenet").expect("catalogued");
    let mut session = w
        .models
        .open(engine(EngineKind::Tract), "squeezenet", 2)
        .expect("loads");
    let mut rng = StdRng::seed_from_u64(3);
    for batch in [1, 3] {
        let (outputs, _) = session
            .run(random_inputs(entry, batch, &mut rng))
            .expect("runs");
        assert_eq!(outputs[0].shape, [batch, 1000, 1, 1]);
    }
}

/// A tensor of `shape` and `datatype` holding zeros.
fn filled(name: &str, shape: Vec<usize>, datatype: Datatype) -> Tensor {
    let n = shape.iter().product::<usize>() * datatype.size();
    Tensor::new(
        name,
        shape,
        TensorData::from_le_bytes(datatype, &vec![0; n]).expect("whole elements"),
    )
    .expect("consistent")
}

#[test]
fn wrong_inputs_are_refused_with_400_and_the_session_keeps_working() {
    let w = worker();
    let entry = w.models.entry("squeezenet").expect("catalogued");
    for kind in EngineKind::ALL {
        let mut session = w.models.open(engine(kind), "squeezenet", 1).expect("loads");
        let cases = [
            (
                vec![filled("data_0", vec![1, 3, 224, 225], Datatype::Fp32)],
                "shape [1, 3, 224, 225]",
            ),
            (
                vec![filled("data_0", vec![1, 3, 224, 224], Datatype::Fp64)],
                "datatype FP64",
            ),
            (
                vec![filled("input", vec![1], Datatype::Fp32)],
                "has no input \"input\"",
            ),
            (vec![], "missing input \"data_0\""),
        ];
        for (inputs, says) in cases {
            let err = session.run(inputs).expect_err(says);
            assert_eq!(err.code(), ErrorCode::BadRequest, "{err}");
            assert!(err.to_string().contains(says), "{err} does not say {says}");
        }
        let mut rng = StdRng::seed_from_u64(4);
        assert!(
            session.run(random_inputs(entry, 1, &mut rng)).is_ok(),
            "{kind} still serves after bad input"
        );
    }
}

#[test]
fn unknown_model_is_404() {
    let err = worker()
        .models
        .open(engine(EngineKind::Ort), "nope", 1)
        .err()
        .expect("unknown");
    assert_eq!(err.code(), ErrorCode::NotFound);
}

/// A private copy of the catalogue and chosen model files, to break without touching assets/.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(models: &[&str]) -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("models")).expect("mkdir");
        let assets = root().join("assets");
        std::fs::copy(assets.join("catalog.json"), dir.path().join("catalog.json"))
            .expect("copy catalog");
        for m in models {
            let file = format!("models/{m}.onnx");
            std::fs::copy(assets.join(&file), dir.path().join(&file)).expect("copy model");
        }
        Scratch { dir }
    }

    fn catalog_path(&self) -> PathBuf {
        self.dir.path().join("catalog.json")
    }

    fn edit_catalog(&self, edit: impl FnOnce(&mut serde_json::Value)) {
        let path = self.catalog_path();
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        edit(&mut json);
        std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write");
    }

    fn model_mut<'j>(json: &'j mut serde_json::Value, name: &str) -> &'j mut serde_json::Value {
        json["models"]
            .as_array_mut()
            .expect("models")
            .iter_mut()
            .find(|m| m["name"] == name)
            .expect("model listed")
    }

    fn models(&self) -> Models {
        Models::load(&self.catalog_path()).expect("catalog loads")
    }
}

#[test]
fn missing_model_file_is_named() {
    let scratch = Scratch::new(&[]);
    let err = scratch
        .models()
        .open(engine(EngineKind::Ort), "squeezenet", 1)
        .err()
        .expect("missing");
    assert!(matches!(err, EngineError::ModelMissing { .. }), "{err}");
    assert!(
        err.to_string().contains("squeezenet.onnx is missing"),
        "{err}"
    );
}

#[test]
fn corrupt_model_file_is_caught_by_checksum_and_by_the_engines() {
    let scratch = Scratch::new(&[]);
    let file = scratch.dir.path().join("models/squeezenet.onnx");
    std::fs::write(&file, b"this is not an ONNX graph").expect("write");
    let err = scratch
        .models()
        .open(engine(EngineKind::Ort), "squeezenet", 1)
        .err()
        .expect("corrupt");
    assert!(matches!(err, EngineError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("corrupt or was replaced"), "{err}");

    // Even with a catalogue that vouches for the garbage, the engines refuse it cleanly.
    let actual = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&file).expect("read")))
    };
    scratch.edit_catalog(|j| Scratch::model_mut(j, "squeezenet")["sha256"] = actual.clone().into());
    let models = scratch.models();
    let err = models
        .open(engine(EngineKind::Ort), "squeezenet", 1)
        .err()
        .expect("ORT refuses");
    assert!(
        matches!(
            err,
            EngineError::Load {
                engine: EngineKind::Ort,
                ..
            }
        ),
        "{err}"
    );
    let err = models
        .open(engine(EngineKind::Tract), "squeezenet", 1)
        .err()
        .expect("tract refuses");
    assert!(err.to_string().contains("tract"), "{err}");
}

#[test]
fn catalog_that_lies_about_shapes_is_caught() {
    // Input shape: ONNX Runtime sees the graph's declared dimensions at load.
    let scratch = Scratch::new(&["squeezenet"]);
    scratch.edit_catalog(|j| {
        Scratch::model_mut(j, "squeezenet")["inputs"][0]["shape"] =
            serde_json::json!([-1, 3, 227, 227])
    });
    let err = scratch
        .models()
        .open(engine(EngineKind::Ort), "squeezenet", 1)
        .err()
        .expect("lie caught");
    assert!(matches!(err, EngineError::CatalogMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains("[-1, 3, 227, 227] in the catalog"),
        "{err}"
    );

    // Output shape: caught on the first run, on both engines.
    let scratch = Scratch::new(&["squeezenet"]);
    scratch.edit_catalog(|j| {
        Scratch::model_mut(j, "squeezenet")["outputs"][0]["shape"] =
            serde_json::json!([-1, 999, 1, 1])
    });
    let models = scratch.models();
    let entry = models.entry("squeezenet").expect("catalogued").clone();
    for kind in EngineKind::ALL {
        let mut session = models.open(engine(kind), "squeezenet", 1).expect("loads");
        let mut rng = StdRng::seed_from_u64(5);
        let err = session
            .run(random_inputs(&entry, 1, &mut rng))
            .expect_err("lie caught");
        assert!(
            matches!(err, EngineError::CatalogMismatch { .. }),
            "{kind}: {err}"
        );
        assert!(
            err.to_string()
                .contains("catalog says softmaxout_1 FP32 [1, 999, 1, 1]"),
            "{err}"
        );
    }
}

#[test]
fn missing_ort_library_is_named() {
    let err = OrtEngine::new(
        Path::new("/nonexistent/libonnxruntime.so"),
        Default::default(),
    )
    .err()
    .expect("missing");
    assert!(matches!(err, EngineError::LibraryMissing(_)), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/libonnxruntime.so"),
        "{err}"
    );
    assert!(err.to_string().contains("scripts/setup"), "{err}");
}

#[test]
fn versions_match_the_lockfile() {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).expect("Cargo.lock");
    let version_of = |name: &str| {
        let at = lock
            .find(&format!("name = \"{name}\"\nversion = \""))
            .expect("locked");
        lock[at..]
            .lines()
            .nth(1)
            .and_then(|l| l.split('"').nth(1))
            .map(str::to_owned)
            .expect("version")
    };
    assert_eq!(
        engine(EngineKind::Ort).engine_version(),
        format!("ort {}", version_of("ort"))
    );
    assert_eq!(
        TractEngine::new().engine_version(),
        format!("tract {}", version_of("tract-onnx"))
    );
    let catalog = Catalog::load(&root().join("assets/catalog.json")).expect("catalog");
    assert_eq!(
        engine(EngineKind::Ort).library_version(),
        format!("onnxruntime {}", catalog.onnxruntime.version)
    );
}

fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_synergai-worker"));
    cmd.current_dir(root())
        .env_remove("SYNERGAI_CONFIG")
        .env("SYNERGAI_TELEMETRY__LOG_FILTER", "warn");
    cmd
}

#[test]
fn cli_profiles_a_single_point_as_json() {
    let out = cli()
        .args([
            "profile",
            "--model",
            "squeezenet",
            "--engine",
            "ort",
            "--threads",
            "1",
            "--batch",
            "2",
        ])
        .args([
            "--json",
            "--warmup",
            "1",
            "--min-runs",
            "3",
            "--budget-ms",
            "0",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    let lines: Vec<ProfileLine> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a profile line"))
        .collect();
    let [ProfileLine::Point(p)] = lines.as_slice() else {
        panic!("one point expected: {stdout}")
    };
    assert_eq!(
        (p.model.as_str(), p.engine.as_str(), p.threads, p.batch),
        ("squeezenet", "ort", 1, 2)
    );
    assert_eq!(p.runs, 3);
    assert!(
        p.min_ms <= p.p50_ms
            && p.p50_ms <= p.p95_ms
            && p.p95_ms <= p.p99_ms
            && p.p99_ms <= p.max_ms
    );
    assert!((p.qps - 2000.0 / p.mean_ms).abs() < 1e-6 * p.qps);
    assert!(p.peak_rss_bytes > 0);
    assert_eq!(p.library_version, engine(EngineKind::Ort).library_version());
}

#[test]
fn cli_records_what_tract_cannot_run_and_pins_cores() {
    let out = cli()
        .args([
            "--cores",
            "0",
            "profile",
            "--model",
            "silero_vad",
            "--model",
            "ppocr_cls",
            "--engine",
            "tract",
        ])
        .args([
            "--threads",
            "1",
            "--batch",
            "1",
            "--json",
            "--warmup",
            "1",
            "--min-runs",
            "2",
            "--budget-ms",
            "0",
        ])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<ProfileLine> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a profile line"))
        .collect();
    let mut points = 0;
    for line in &lines {
        match line {
            ProfileLine::Point(p) => {
                points += 1;
                assert_eq!(p.core_set, [0], "--cores 0 pins the process");
            }
            ProfileLine::Unsupported(u) => {
                assert!(
                    u.unsupported.starts_with("unsupported by tract: "),
                    "{}",
                    u.unsupported
                );
            }
        }
    }
    assert_eq!(lines.len(), 2, "one line per model: {lines:?}");
    assert!(points >= 1, "ppocr_cls runs on tract");
}

#[test]
fn cli_bad_setup_gives_clear_errors_not_panics() {
    let dir = tempfile::tempdir().expect("temp dir");
    let not_a_library = dir.path().join("libonnxruntime.so");
    std::fs::write(&not_a_library, b"not a shared object").expect("write");
    let cases: [(&str, String, &str); 3] = [
        (
            "SYNERGAI_ENGINES__ORT__LIBRARY_PATH",
            not_a_library.display().to_string(),
            "cannot load ONNX Runtime from",
        ),
        (
            "SYNERGAI_ENGINES__ORT__LIBRARY_PATH",
            "/nonexistent/lib.so".into(),
            "ONNX Runtime library not found at /nonexistent/lib.so",
        ),
        (
            "SYNERGAI_CATALOG",
            "/nonexistent/catalog.json".into(),
            "cannot read model catalog /nonexistent/catalog.json",
        ),
    ];
    for (key, value, says) in cases {
        let out = cli().env(key, &value).arg("info").output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(says), "{stderr} does not say {says}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Runs the CLI with `args` against the deployment whose subjects start with `prefix`.
async fn cli_with_prefix(prefix: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = cli();
    cmd.env("SYNERGAI_NATS__SUBJECT_PREFIX", prefix).args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("runs"))
        .await
        .expect("joins")
}

fn profile_lines(out: &std::process::Output) -> Vec<ProfileLine> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a profile line"))
        .collect()
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn profile_publish_reaches_the_store_and_a_rerun_replaces(
    pool: sqlx::PgPool,
) -> anyhow::Result<()> {
    use synergai_contract::store::TableRequest;
    use synergai_store::config::StoreConfig;

    let prefix = format!("wpub{}-{}", std::process::id(), fresh_seed() % 1_000_000);
    let mut cfg = StoreConfig::default();
    cfg.nats.subject_prefix = prefix.clone();
    cfg.http.listen = None;
    cfg.catalog = root().join("assets/catalog.json");
    let cancel = tokio_util::sync::CancellationToken::new();
    let app = synergai_store::Application::build(cfg.clone(), pool, None, cancel.clone()).await?;
    let run = tokio::spawn(app.run_until_stopped());
    let nats = synergai_platform::nats::connect(&cfg.nats, "worker-test").await?;
    let store = synergai_store_client::StoreClient::new(nats.clone(), cfg.nats.subjects());

    let args = [
        "profile",
        "--model",
        "squeezenet",
        "--model",
        "silero_vad",
        "--engine",
        "ort",
        "--engine",
        "tract",
        "--threads",
        "1",
        "--batch",
        "1",
        "--batch",
        "2",
        "--json",
        "--warmup",
        "1",
        "--min-runs",
        "2",
        "--budget-ms",
        "0",
        "--publish",
    ];
    let first = cli_with_prefix(&prefix, &args).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let printed = profile_lines(&first);
    let table = store.table(&TableRequest::default()).await?;
    let points: Vec<_> = printed
        .iter()
        .filter_map(|l| match l {
            ProfileLine::Point(p) => Some(p),
            ProfileLine::Unsupported(_) => None,
        })
        .collect();
    // squeezenet on both engines and silero_vad on ORT, at batch 1 and 2; silero_vad on tract unsupported.
    assert_eq!(points.len(), 6);
    assert_eq!(table.profiles.len(), 6);
    for p in &points {
        let row = table
            .profiles
            .iter()
            .find(|r| {
                r.model == p.model && r.config.engine == p.engine && r.config.batch == p.batch
            })
            .expect("stored");
        assert_eq!(
            (row.config.p50_ms, row.device_class.as_str()),
            (p.p50_ms, p.device_class.as_str())
        );
    }
    assert_eq!(table.unsupported.len(), 1);
    assert!(
        table.unsupported[0]
            .unsupported
            .starts_with("unsupported by tract: ")
    );

    // A second campaign replaces every key with its newer measurement.
    let second = cli_with_prefix(&prefix, &args).await;
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let again = store.table(&TableRequest::default()).await?;
    assert_eq!(again.profiles.len(), 6);
    assert!(again.revision > table.revision);
    for (new, old) in again.profiles.iter().zip(&table.profiles) {
        assert!(
            new.measured_at > old.measured_at,
            "{} {} b{} not replaced",
            new.model,
            new.config.engine,
            new.config.batch
        );
    }

    cancel.cancel();
    run.await?;
    let _ = async_nats::jetstream::new(nats)
        .delete_stream(cfg.nats.subjects().outcome_stream())
        .await;

    // With no store listening the campaign still prints its points, then fails clearly.
    let orphan = cli_with_prefix(&format!("{prefix}-nostore"), &args).await;
    assert_eq!(orphan.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&orphan.stderr);
    assert!(stderr.contains("no store is running"), "{stderr}");
    assert!(
        !profile_lines(&orphan).is_empty(),
        "the measured points are still printed"
    );
    Ok(())
}
