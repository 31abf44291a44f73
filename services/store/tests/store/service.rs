//! The store over NATS: every subject, bad input, events, and the profile cache.

use std::time::Duration;

use futures_util::StreamExt;
use sqlx::PgPool;
use synergai_contract::profile::Unsupported;
use synergai_contract::serving::WorkerHeartbeat;
use synergai_contract::store::{
    BestRequest, JobObservation, KneeMetric, KneeRule, LedgerDimension, LedgerQuery, Outcome,
    ProfileKey, ProfilesUpdated, TableRequest, UpdateSource, UpsertProfiles, WorkerStatus,
};
use synergai_contract::{ErrorCode, StoreOp, Tier, Token};
use synergai_store_client::{ColdStart, EstimateSource, ProfileCache, StoreError};

use crate::helpers::{TestApp, config, eventually, http_get, point};

const WAIT: Duration = Duration::from_secs(10);

fn campaign() -> UpsertProfiles {
    UpsertProfiles {
        points: vec![
            point("x86-2c", "ort", "squeezenet", 1, 1, 2.85),
            point("x86-2c", "ort", "squeezenet", 2, 1, 1.91),
            point("x86-2c", "ort", "squeezenet", 1, 8, 24.8),
            point("x86-2c", "ort", "squeezenet", 2, 8, 13.5),
            point("x86-2c", "tract", "squeezenet", 1, 1, 7.9),
            point("x86-2c", "tract", "squeezenet", 2, 1, 8.2),
        ],
        unsupported: vec![Unsupported {
            model: "silero_vad".into(),
            engine: "tract".into(),
            unsupported: "unsupported by tract: If".into(),
            device_class: "x86-2c".into(),
            worker: "w1".into(),
        }],
    }
}

fn remote_code(e: StoreError) -> ErrorCode {
    match e {
        StoreError::Remote { code, .. } => code,
        other => panic!("expected an error reply, got {other}"),
    }
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn every_subject_round_trips(pool: PgPool) -> anyhow::Result<()> {
    let app = TestApp::spawn(pool).await;
    let mut updates = app.nats.subscribe(app.subjects.profiles_updated()).await?;

    let up = app.client.upsert_profiles(&campaign()).await?;
    assert_eq!(
        (up.inserted, up.replaced, up.ignored, up.unsupported),
        (6, 0, 0, 1)
    );
    let event: ProfilesUpdated = serde_json::from_slice(
        &tokio::time::timeout(WAIT, updates.next())
            .await?
            .expect("event")
            .payload,
    )?;
    assert_eq!(
        (event.source, event.revision, event.moved.len()),
        (UpdateSource::Offline, up.revision, 6)
    );

    let best = app
        .client
        .best(&BestRequest {
            device_class: "x86-2c".into(),
            model: "squeezenet".into(),
            rule: None,
            batch: None,
            engine: None,
        })
        .await?;
    let got = |c: &synergai_contract::store::ConfigEstimate| (c.engine.clone(), c.threads, c.batch);
    assert_eq!(got(&best.best), ("ort".into(), 2, 8));
    assert_eq!(
        best.alternatives.iter().map(got).collect::<Vec<_>>(),
        [("ort".into(), 2, 1), ("tract".into(), 1, 1)]
    );
    let latency = app
        .client
        .best(&BestRequest {
            device_class: "x86-2c".into(),
            model: "squeezenet".into(),
            rule: Some(KneeRule {
                metric: KneeMetric::P95,
                epsilon: 0.05,
            }),
            batch: Some(1),
            engine: Some("ort".into()),
        })
        .await?;
    assert_eq!(got(&latency.best), ("ort".into(), 2, 1));
    assert!(latency.alternatives.is_empty());

    let table = app.client.table(&TableRequest::default()).await?;
    assert_eq!(
        (
            table.revision,
            table.profiles.len(),
            table.unsupported.len()
        ),
        (up.revision, 6, 1)
    );
    assert!(
        app.client
            .table(&TableRequest {
                device_class: Some("other".into())
            })
            .await?
            .profiles
            .is_empty()
    );

    let t0 = time::OffsetDateTime::now_utc();
    let outcome = Outcome {
        request_id: "req-1".into(),
        model: "squeezenet".into(),
        slo_ms: 10.0,
        arrival: t0,
        policy: "synergai".into(),
        site: Some("local".into()),
        worker: Some("w1".into()),
        engine: Some("ort".into()),
        threads: Some(2),
        batch: Some(1),
        code: 200,
        queue_ms: Some(0.2),
        exec_ms: Some(1.9),
        total_ms: 12.5,
        violated: true,
        excess_ms: 2.5,
    };
    app.events
        .outcome(&Token::parse("local")?, &outcome)
        .await?;
    let summary = eventually(WAIT, "the outcome in the ledger", || async {
        let q = LedgerQuery {
            group_by: vec![LedgerDimension::Policy],
            ..Default::default()
        };
        app.client
            .ledger_summary(&q)
            .await
            .ok()
            .filter(|s| !s.groups.is_empty())
    })
    .await;
    assert_eq!(
        (summary.groups[0].count, summary.groups[0].violations),
        (1, 1)
    );
    assert_eq!(summary.groups[0].excess_ms_total, 2.5);

    let stats = app.client.stats().await?;
    assert_eq!(stats.outcomes_written, 1);
    assert!(stats.database_up);

    // The operations endpoint answers too.
    let live = http_get(app.http, "/health/live").await?;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    app.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn bad_requests_get_4xx_and_the_store_keeps_serving(pool: PgPool) -> anyhow::Result<()> {
    let mut cfg = config();
    cfg.limits.max_request_bytes = 64 * 1024;
    let app = TestApp::spawn_with(pool, cfg).await;
    let good = serde_json::to_vec(&campaign())?;
    let cases: Vec<(StoreOp, Vec<u8>, ErrorCode, &str)> = vec![
        (StoreOp::UpsertProfiles, b"{".to_vec(), ErrorCode::BadRequest, "invalid request"),
        (StoreOp::UpsertProfiles, good[..good.len() / 2].to_vec(), ErrorCode::BadRequest, "invalid request"),
        (StoreOp::UpsertProfiles, vec![], ErrorCode::BadRequest, "empty request"),
        (StoreOp::UpsertProfiles, vec![0xff, 0xfe, 0x00], ErrorCode::BadRequest, "invalid request"),
        (StoreOp::UpsertProfiles, br#"{"points": [], "extra": 1}"#.to_vec(), ErrorCode::BadRequest, "unknown field `extra`"),
        (StoreOp::UpsertProfiles, vec![b' '; 70 * 1024], ErrorCode::PayloadTooLarge, "exceeds the store's limit"),
        (StoreOp::Best, br#"{"device_class": "x", "model": "m", "rulez": 1}"#.to_vec(), ErrorCode::BadRequest, "unknown field"),
        (StoreOp::Best, br#"{"device_class": "x", "model": "no.such"}"#.to_vec(), ErrorCode::BadRequest, "invalid model name"),
        (StoreOp::Best, br#"{"device_class": "x", "model": "squeezenet"}"#.to_vec(), ErrorCode::NotFound, "no profile"),
        (
            StoreOp::Best,
            br#"{"device_class": "x", "model": "squeezenet", "rule": {"metric": "qps", "epsilon": 2}}"#.to_vec(),
            ErrorCode::BadRequest,
            "epsilon",
        ),
        (StoreOp::Table, br#"{"device": "x"}"#.to_vec(), ErrorCode::BadRequest, "unknown field"),
        (StoreOp::LedgerSummary, br#"{"group_by": ["worker"]}"#.to_vec(), ErrorCode::BadRequest, "unknown variant"),
        (
            StoreOp::LedgerSummary,
            br#"{"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}"#.to_vec(),
            ErrorCode::BadRequest,
            "from must be before to",
        ),
        (StoreOp::LedgerSummary, br#"{"from": "yesterday"}"#.to_vec(), ErrorCode::BadRequest, "invalid request"),
        (StoreOp::Stats, br#"{"verbose": true}"#.to_vec(), ErrorCode::BadRequest, "unknown field"),
    ];
    for (op, body, code, says) in cases {
        let err = app.client.call_raw(op, body).await.expect_err(says);
        let StoreError::Remote { code: got, message } = err else {
            panic!("{says}: {err}")
        };
        assert_eq!(got, code, "{says}: {message}");
        assert!(message.contains(says), "{message:?} does not say {says:?}");
    }
    // Invalid values inside a well-formed upsert.
    let mut bad = campaign();
    bad.points[0].p50_ms = -1.0;
    assert_eq!(
        remote_code(
            app.client
                .upsert_profiles(&bad)
                .await
                .expect_err("negative")
        ),
        ErrorCode::BadRequest
    );
    let mut bad = campaign();
    bad.points[0].threads = 0;
    assert_eq!(
        remote_code(
            app.client
                .upsert_profiles(&bad)
                .await
                .expect_err("0 threads")
        ),
        ErrorCode::BadRequest
    );
    let mut bad = campaign();
    bad.points[0].device_class = "line\nbreak".into();
    assert_eq!(
        remote_code(app.client.upsert_profiles(&bad).await.expect_err("control")),
        ErrorCode::BadRequest
    );

    // Still serving, and nothing of the refused requests was stored.
    assert!(
        app.client
            .table(&TableRequest::default())
            .await?
            .profiles
            .is_empty()
    );
    let up = app.client.upsert_profiles(&campaign()).await?;
    assert_eq!(up.inserted, 6);
    app.stop().await;
    Ok(())
}

fn job(k: &ProfileKey, exec_ms: f64) -> JobObservation {
    JobObservation {
        worker: "w1".into(),
        key: k.clone(),
        exec_ms,
        request_ids: vec![],
    }
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn telemetry_refines_estimates_and_registers_workers(pool: PgPool) -> anyhow::Result<()> {
    let app = TestApp::spawn(pool.clone()).await;
    app.client.upsert_profiles(&campaign()).await?;
    let mut updates = app.nats.subscribe(app.subjects.profiles_updated()).await?;
    let k = ProfileKey {
        device_class: "x86-2c".into(),
        engine: "ort".into(),
        model: "squeezenet".into(),
        threads: 1,
        batch: 1,
    };
    app.events
        .heartbeat(&WorkerHeartbeat {
            status: WorkerStatus {
                id: "w1".into(),
                site: "local".into(),
                tier: Tier::Cloud,
                arch: "x86_64".into(),
                device_class: "x86-2c".into(),
                core_set: vec![0, 1],
                engines: vec!["ort".into(), "tract".into()],
            },
            seq: 1,
            interval_ms: 500,
            loaded: vec![],
            queued: 0,
            running: 0,
            backlog_ms: 0.0,
            draining: false,
            jobs: vec![],
        })
        .await?;
    // The profile said 2.85 ms; the machine now takes 6 ms (say, a noisy neighbour).
    for _ in 0..20 {
        app.events.job(&job(&k, 6.0)).await?;
    }
    // Malformed events are counted and dropped, not stored.
    app.nats
        .publish(
            app.subjects.job_event(&Token::parse("w1")?),
            "{not json".into(),
        )
        .await?;
    app.nats.publish(app.subjects.job_event(&Token::parse("w1")?), br#"{"worker":"w1","key":{"device_class":"x","engine":"ort","model":"m","threads":0,"batch":1},"exec_ms":1}"#.to_vec().into()).await?;

    let stats = eventually(WAIT, "telemetry written", || async {
        app.client
            .stats()
            .await
            .ok()
            .filter(|s| s.telemetry_written == 21 && s.telemetry_rejected == 2)
    })
    .await;
    assert_eq!(
        (
            stats.telemetry_received,
            stats.telemetry_dropped,
            stats.telemetry_pending
        ),
        (23, 0, 0)
    );

    let table = app.client.table(&TableRequest::default()).await?;
    let row = table
        .profiles
        .iter()
        .find(|r| r.config.threads == 1 && r.config.batch == 1 && r.config.engine == "ort")
        .expect("row");
    assert_eq!(row.config.online_count, 20);
    assert!(
        (row.config.online_ms.expect("online") - 6.0).abs() < 1e-9,
        "every observation is 6 ms"
    );
    assert!(
        row.config.drifted,
        "6 ms against a 2.85 ms profile is drift"
    );
    let online_event = tokio::time::timeout(WAIT, async {
        while let Some(m) = updates.next().await {
            if let Ok(e) = serde_json::from_slice::<ProfilesUpdated>(&m.payload)
                && e.source == UpdateSource::Online
            {
                return Some(e);
            }
        }
        None
    })
    .await?
    .expect("an online update event");
    assert!(online_event.moved.iter().all(|m| m.key == k));

    let worker: (String, Vec<String>) =
        sqlx::query_as("SELECT site, engines FROM workers WHERE id = 'w1'")
            .fetch_one(&pool)
            .await?;
    assert_eq!(worker, ("local".into(), vec!["ort".into(), "tract".into()]));

    let ready = http_get(app.http, "/health/ready").await?;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    // The drift is a metric too.
    let metrics = http_get(app.http, "/metrics").await?;
    let drift_line = metrics
        .lines()
        .find(|l| {
            l.starts_with("synergai_profile_drift_ratio{")
                && l.contains("device_class=\"x86-2c\"")
                && l.contains("engine=\"ort\"")
                && l.contains("model=\"squeezenet\"")
                && l.contains("threads=\"1\"")
                && l.contains("batch=\"1\"")
        })
        .unwrap_or_else(|| panic!("no drift gauge in /metrics:\n{metrics}"));
    let value: f64 = drift_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!((value - (6.0 / 2.85 - 1.0)).abs() < 1e-6, "{drift_line}");
    app.stop().await;
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn profile_cache_follows_updates_and_outlives_the_store(pool: PgPool) -> anyhow::Result<()> {
    let app = TestApp::spawn(pool).await;
    let cache = ProfileCache::new(app.nats.clone(), app.subjects.clone(), ColdStart::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let follower = cache.follow(Duration::from_secs(3600), cancel.clone());
    let k = ProfileKey {
        device_class: "x86-2c".into(),
        engine: "ort".into(),
        model: "squeezenet".into(),
        threads: 2,
        batch: 1,
    };
    assert_eq!(
        cache.estimate(&k).source,
        EstimateSource::ColdStart,
        "nothing profiled yet"
    );

    let up = app.client.upsert_profiles(&campaign()).await?;
    // The follower refreshes on the update event, not on its (hour-long) timer.
    eventually(WAIT, "the cache at the new revision", || async {
        (cache.revision() == Some(up.revision)).then_some(())
    })
    .await;
    let e = cache.estimate(&k);
    assert_eq!((e.source, e.exec_ms), (EstimateSource::Profile, 1.91));

    // The store goes away: refreshes fail, the cache keeps serving what it had.
    app.stop().await;
    let err = cache.refresh().await.expect_err("no store");
    assert!(err.is_transient(), "{err}");
    assert_eq!(cache.last_error(), Some(err));
    assert_eq!(cache.revision(), Some(up.revision));
    assert_eq!(cache.estimate(&k).exec_ms, 1.91);
    assert!(
        !cache
            .snapshot()
            .expect("kept")
            .supported("x86-2c", "tract", "silero_vad")
    );
    cancel.cancel();
    follower.await?;
    Ok(())
}
