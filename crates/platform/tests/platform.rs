//! Platform plumbing against the real thing: config files and environment layering, and a real
//! NATS server (127.0.0.1:4222, or `SYNERGAI_TEST_NATS_URL`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use synergai_contract::ErrorCode;
use synergai_platform::config;
use synergai_platform::nats::{self, NatsConfig};
use synergai_platform::telemetry::TelemetryConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Sample {
    nats: NatsConfig,
    telemetry: TelemetryConfig,
    threads: u32,
    name: String,
}

impl Default for Sample {
    fn default() -> Self {
        Sample {
            nats: NatsConfig::default(),
            telemetry: TelemetryConfig::default(),
            threads: 1,
            name: "default".into(),
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn config_layers_defaults_file_then_environment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("synergai.toml");
    std::fs::write(
        &file,
        "threads = 3\nname = \"from-file\"\n[nats]\nurl = \"nats://file:4222\"\n",
    )?;

    let only_defaults: Sample = config::load(&Sample::default(), None, env(&[]))?;
    assert_eq!(only_defaults, Sample::default());

    let layered: Sample = config::load(
        &Sample::default(),
        Some(&file),
        env(&[
            ("SYNERGAI_THREADS", "4"),
            ("SYNERGAI_NATS__SUBJECT_PREFIX", "t1"),
            ("OTHER_THREADS", "9"),
            ("SYNERGAI_CONFIG", "/ignored"),
            ("SYNERGAI_ENGINES__ORT__ALLOW_SPINNING", "false"),
            ("SYNERGAI_DATABASE__URL", "postgres://elsewhere"),
        ]),
    )?;
    assert_eq!(layered.threads, 4, "environment beats file");
    // Variables for other services' sections do not break this one.
    assert_eq!(layered.name, "from-file", "file beats defaults");
    assert_eq!(layered.nats.url, "nats://file:4222");
    assert_eq!(layered.nats.subject_prefix, "t1");
    assert_eq!(
        layered.nats.connect_timeout_ms,
        NatsConfig::default().connect_timeout_ms
    );
    Ok(())
}

#[test]
fn config_errors_are_clear() -> anyhow::Result<()> {
    let err = config::load(
        &Sample::default(),
        None,
        env(&[("SYNERGAI_THREADS", "many")]),
    )
    .expect_err("not a number");
    assert!(err.to_string().contains("threads"), "{err}");

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[nats]\nurll = \"x\"\n")?;
    let err = config::load(&Sample::default(), Some(&file), env(&[])).expect_err("unknown key");
    assert!(err.to_string().contains("urll"), "{err}");

    let missing = dir.path().join("missing.toml");
    assert!(config::load(&Sample::default(), Some(&missing), env(&[])).is_err());
    Ok(())
}

fn test_nats() -> NatsConfig {
    let mut cfg = NatsConfig::default();
    if let Ok(url) = std::env::var("SYNERGAI_TEST_NATS_URL") {
        cfg.url = url;
    }
    cfg.subject_prefix = format!("test-{}-{}", std::process::id(), line!());
    cfg
}

#[tokio::test]
async fn nats_error_replies_carry_code_and_text() -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let cfg = test_nats();
    let client = nats::connect(&cfg, "platform-test").await?;
    let subject = format!("{}.echo", cfg.subjects().root());
    let mut sub = client.subscribe(subject.clone()).await?;
    let responder = client.clone();
    tokio::spawn(async move {
        if let Some(msg) = sub.next().await {
            let reply = msg.reply.expect("request has a reply subject");
            nats::reply_error(
                &responder,
                reply,
                ErrorCode::NotFound,
                "unknown model \"x\"\nsecond line",
            )
            .await
            .expect("published");
        }
    });
    let reply = tokio::time::timeout(Duration::from_secs(5), client.request(subject, "hi".into()))
        .await??;
    let (code, text) = nats::error_of(&reply).expect("an error reply");
    assert_eq!(code, ErrorCode::NotFound);
    assert_eq!(text, "unknown model \"x\"\nsecond line");
    let header = reply
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Service-Error"))
        .expect("header");
    assert_eq!(header.as_str(), "unknown model \"x\" second line");
    Ok(())
}

#[tokio::test]
async fn nats_connect_failure_names_the_server() {
    let cfg = NatsConfig {
        url: "nats://127.0.0.1:1".into(),
        connect_timeout_ms: 500,
        ..NatsConfig::default()
    };
    let err = nats::connect(&cfg, "platform-test")
        .await
        .expect_err("nothing listens on port 1");
    assert!(err.to_string().contains("nats://127.0.0.1:1"), "{err}");

    let cfg = NatsConfig {
        url: "not a url at all".into(),
        ..NatsConfig::default()
    };
    assert!(nats::connect(&cfg, "platform-test").await.is_err());
}

#[test]
fn telemetry_starts_once_and_names_bad_filters() {
    use synergai_platform::telemetry::{self, TelemetryError};
    let bad = TelemetryConfig {
        log_filter: "info,=[".into(),
        ..TelemetryConfig::default()
    };
    let err = telemetry::init("test", &bad).expect_err("bad filter");
    assert!(matches!(err, TelemetryError::Filter { .. }), "{err}");
    assert!(err.to_string().contains("info,=["), "{err}");

    let guard = telemetry::init("test", &TelemetryConfig::default()).expect("first init");
    let err = telemetry::init("test", &TelemetryConfig::default()).expect_err("second init");
    assert!(matches!(err, TelemetryError::AlreadyInit(_)), "{err}");
    drop(guard);
}

#[tokio::test]
async fn a_reply_is_claimed_once_and_the_claim_is_visible() -> anyhow::Result<()> {
    let cfg = test_nats();
    let client = nats::connect(&cfg, "platform-test").await?;
    let subjects = cfg.subjects();
    let claims = nats::ReplyClaims::open(&client, &subjects, Duration::from_secs(60)).await?;
    let id = "0195f2a4-7b1c-7d3e-9a4b-1c2d3e4f5a6b";
    assert!(!claims.claimed(id).await?, "nothing claimed yet");
    assert!(claims.claim(id, "worker-a").await?, "the first claim wins");
    assert!(!claims.claim(id, "worker-b").await?, "a second claim loses");
    assert!(claims.claimed(id).await?);
    assert!(
        !claims
            .claimed("0195f2a4-0000-7000-8000-000000000000")
            .await?
    );
    async_nats::jetstream::new(client)
        .delete_stream(subjects.reply_bucket())
        .await?;
    Ok(())
}
