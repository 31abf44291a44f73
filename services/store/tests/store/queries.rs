//! Every store query on a fresh migrated database (`#[sqlx::test]` on the workspace migrations).

use sqlx::{PgPool, Row};
use synergai_contract::Tier;
use synergai_contract::catalog::Catalog;
use synergai_contract::profile::Unsupported;
use synergai_contract::store::{
    JobObservation, KneeMetric, KneeRule, LedgerDimension, LedgerQuery, Outcome, ProfileKey,
    UpsertProfiles, WorkerStatus,
};
use synergai_store::db::{self, DriftRule};
use synergai_store::knee;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::helpers::{point, workspace};

const DRIFT: DriftRule = DriftRule {
    threshold: 0.25,
    min_count: 3,
};

fn key(dc: &str, engine: &str, model: &str, threads: u32, batch: u32) -> ProfileKey {
    ProfileKey {
        device_class: dc.into(),
        engine: engine.into(),
        model: model.into(),
        threads,
        batch,
    }
}

fn obs(k: &ProfileKey, exec_ms: f64) -> JobObservation {
    JobObservation {
        worker: "w1".into(),
        key: k.clone(),
        exec_ms,
        request_ids: vec![],
    }
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn migrations_create_every_table(pool: PgPool) -> anyhow::Result<()> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .fetch_all(&pool)
    .await?;
    for t in [
        "device_classes",
        "ledger",
        "models",
        "online_observations",
        "profiles",
        "unsupported",
        "workers",
    ] {
        assert!(tables.iter().any(|x| x == t), "{t} missing from {tables:?}");
    }
    // Running them again is a no-op (they are recorded).
    synergai_store::MIGRATOR.run(&pool).await?;
    assert_eq!(db::revision(&pool).await?, 0);
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn catalogue_models_register(pool: PgPool) -> anyhow::Result<()> {
    let catalog = Catalog::load(&workspace().join("assets/catalog.json"))?;
    db::register_models(&pool, &catalog.models).await?;
    db::register_models(&pool, &catalog.models).await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM models")
        .fetch_one(&pool)
        .await?;
    assert_eq!(n, 13);
    let source: String = sqlx::query_scalar("SELECT source FROM models WHERE name = 'ppocr_det'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(source, "rapidocr-onnxruntime==1.4.4");
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn upsert_inserts_replaces_newer_and_ignores_older(pool: PgPool) -> anyhow::Result<()> {
    let mut a = point("x86-2c", "ort", "squeezenet", 1, 1, 3.0);
    let b = point("x86-2c", "ort", "squeezenet", 2, 1, 2.0);
    let first = db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: vec![a.clone(), b.clone()],
            unsupported: vec![],
        },
    )
    .await?
    .0;
    assert_eq!((first.inserted, first.replaced, first.ignored), (2, 0, 0));
    assert_eq!(first.revision, 1);

    // Seed an online estimate for key a; a newer point for a must reset it.
    let ka = key("x86-2c", "ort", "squeezenet", 1, 1);
    db::apply_observations(&pool, &[obs(&ka, 9.0)], 0.2, DRIFT).await?;

    // Replay of the same campaign: nothing newer, all ignored.
    let replay = db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: vec![a.clone(), b.clone()],
            unsupported: vec![],
        },
    )
    .await?
    .0;
    assert_eq!(
        (replay.inserted, replay.replaced, replay.ignored),
        (0, 0, 2)
    );

    // A newer measurement of a (and an older duplicate in the same request) replaces it.
    let older = a.clone();
    a.measured_at = OffsetDateTime::now_utc();
    a.p50_ms = 3.5;
    let (second, moved) = db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: vec![older, a.clone()],
            unsupported: vec![],
        },
    )
    .await?;
    assert_eq!(
        (second.inserted, second.replaced, second.ignored),
        (0, 1, 1)
    );
    assert!(second.revision > first.revision);
    assert_eq!(moved.iter().map(|m| &m.key).collect::<Vec<_>>(), [&ka]);

    let rows = db::profiles(&pool, Some("x86-2c"), Some("squeezenet"), DRIFT).await?;
    assert_eq!(rows.len(), 2);
    let ra = rows.iter().find(|r| r.config.threads == 1).expect("key a");
    assert_eq!(ra.config.p50_ms, 3.5);
    assert_eq!(
        ra.config.online_ms, None,
        "a newer offline point resets the online estimate"
    );
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn unsupported_pairs_are_recorded(pool: PgPool) -> anyhow::Result<()> {
    let u = Unsupported {
        model: "silero_vad".into(),
        engine: "tract".into(),
        unsupported: "unsupported by tract: If".into(),
        device_class: "arm-4c".into(),
        worker: "edge-1".into(),
    };
    let r = db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: vec![],
            unsupported: vec![u.clone(), u.clone()],
        },
    )
    .await?
    .0;
    assert_eq!(r.unsupported, 1);
    assert_eq!(db::unsupported(&pool, None).await?, vec![u.clone()]);
    assert!(db::unsupported(&pool, Some("other")).await?.is_empty());
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn values_that_would_break_sql_are_stored_verbatim(pool: PgPool) -> anyhow::Result<()> {
    let nasty = "x'); DROP TABLE profiles; --\"\\";
    let mut p = point(nasty, "ort", "squeezenet", 1, 1, 3.0);
    p.cpu_model = "O'Reilly \"quoted\" {braces},".into();
    db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: vec![p],
            unsupported: vec![],
        },
    )
    .await?;
    let rows = db::profiles(&pool, Some(nasty), None, DRIFT).await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].device_class, nasty);
    let cpu: String = sqlx::query_scalar("SELECT cpu_model FROM profiles")
        .fetch_one(&pool)
        .await?;
    assert_eq!(cpu, "O'Reilly \"quoted\" {braces},");
    let w = WorkerStatus {
        id: "w1".into(),
        site: "edge-a".into(),
        tier: Tier::Edge,
        arch: "aarch64".into(),
        device_class: nasty.into(),
        core_set: vec![0, 3],
        engines: vec!["ort".into(), "tr\"a,c}t".into()],
    };
    db::upsert_workers(&pool, &[w]).await?;
    let engines: Vec<String> = sqlx::query_scalar("SELECT engines FROM workers")
        .fetch_one(&pool)
        .await?;
    assert_eq!(engines, ["ort", "tr\"a,c}t"]);
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn ewma_folds_observations_and_flags_drift(pool: PgPool) -> anyhow::Result<()> {
    let k = key("x86-2c", "ort", "resnet50", 1, 1);
    db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: vec![point("x86-2c", "ort", "resnet50", 1, 1, 10.0)],
            unsupported: vec![],
        },
    )
    .await?;
    // alpha 0.5: 10 seeds, then 20 -> 15, then (next batch) 30 -> 22.5.
    let (_, moved) =
        db::apply_observations(&pool, &[obs(&k, 10.0), obs(&k, 20.0)], 0.5, DRIFT).await?;
    assert_eq!(moved[0].online_ms, Some(15.0));
    assert!(!moved[0].drifted, "2 observations are below min_count 3");
    let (rev, moved) = db::apply_observations(&pool, &[obs(&k, 30.0)], 0.5, DRIFT).await?;
    assert_eq!(moved[0].online_ms, Some(22.5));
    assert!((moved[0].drift.expect("profiled") - 1.25).abs() < 1e-12);
    assert!(moved[0].drifted, "22.5 against a 10 ms p50 is past 25%");
    assert_eq!(db::revision(&pool).await?, rev);

    let rows = db::profiles(&pool, None, None, DRIFT).await?;
    assert_eq!(rows[0].config.online_ms, Some(22.5));
    assert_eq!(rows[0].config.online_count, 3);
    assert!(rows[0].config.drifted);

    // A key observed but never profiled is listed as online-only.
    let cold = key("arm-4c", "tract", "resnet50", 2, 1);
    db::apply_observations(&pool, &[obs(&cold, 80.0)], 0.5, DRIFT).await?;
    let only = db::online_only(&pool, None).await?;
    assert_eq!(only.len(), 1);
    assert_eq!(
        (only[0].key.clone(), only[0].online_ms, only[0].online_count),
        (cold, 80.0, 1)
    );
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn concurrent_flushes_fold_every_observation_once(pool: PgPool) -> anyhow::Result<()> {
    let k = key("x86-2c", "ort", "squeezenet", 1, 1);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let pool = pool.clone();
            let k = k.clone();
            tokio::spawn(async move {
                let batch: Vec<JobObservation> = (0..25).map(|_| obs(&k, 4.0)).collect();
                db::apply_observations(&pool, &batch, 0.2, DRIFT).await
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let count: i64 = sqlx::query_scalar("SELECT count FROM online_observations")
        .fetch_one(&pool)
        .await?;
    assert_eq!(count, 200);
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn workers_keep_first_seen_and_move_last_seen(pool: PgPool) -> anyhow::Result<()> {
    let w = WorkerStatus {
        id: "edge-a-1".into(),
        site: "edge-a".into(),
        tier: Tier::Edge,
        arch: "aarch64".into(),
        device_class: "arm-4c".into(),
        core_set: vec![0, 1, 2, 3],
        engines: vec!["ort".into(), "tract".into()],
    };
    db::upsert_workers(&pool, std::slice::from_ref(&w)).await?;
    let first: (OffsetDateTime, OffsetDateTime) =
        sqlx::query_as("SELECT first_seen, last_seen FROM workers")
            .fetch_one(&pool)
            .await?;
    db::upsert_workers(&pool, &[w]).await?;
    let second: (OffsetDateTime, OffsetDateTime) =
        sqlx::query_as("SELECT first_seen, last_seen FROM workers")
            .fetch_one(&pool)
            .await?;
    assert_eq!(first.0, second.0);
    assert!(second.1 >= first.1);
    let row = sqlx::query("SELECT tier, core_set, device_class FROM workers")
        .fetch_one(&pool)
        .await?;
    assert_eq!(row.try_get::<String, _>("tier")?, "edge");
    assert_eq!(row.try_get::<Vec<i32>, _>("core_set")?, [0, 1, 2, 3]);
    let class: String = sqlx::query_scalar("SELECT arch FROM device_classes WHERE name = 'arm-4c'")
        .fetch_one(&pool)
        .await?;
    assert_eq!(class, "aarch64");
    Ok(())
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn knee_rule_on_hand_made_profiles(pool: PgPool) -> anyhow::Result<()> {
    // Throughput flattens past 2 threads for ort batch 1 (2 → 4 threads gains 3%), and batch 4
    // gains real throughput only with 4 threads; tract's best is 1 thread.
    let pts = vec![
        point("x86-8c", "ort", "resnet50", 1, 1, 30.0), // 33.3 qps
        point("x86-8c", "ort", "resnet50", 2, 1, 16.0), // 62.5
        point("x86-8c", "ort", "resnet50", 4, 1, 15.5), // 64.5
        point("x86-8c", "ort", "resnet50", 1, 4, 110.0), // 36.4
        point("x86-8c", "ort", "resnet50", 4, 4, 40.0), // 100
        point("x86-8c", "tract", "resnet50", 1, 1, 50.0), // 20
        point("x86-8c", "tract", "resnet50", 2, 1, 52.0), // 19.2
    ];
    db::upsert_profiles(
        &pool,
        &UpsertProfiles {
            points: pts,
            unsupported: vec![],
        },
    )
    .await?;
    let configs: Vec<_> = db::profiles(&pool, Some("x86-8c"), Some("resnet50"), DRIFT)
        .await?
        .into_iter()
        .map(|r| r.config)
        .collect();
    let ranked = knee::rank(
        &configs,
        &KneeRule {
            metric: KneeMetric::Qps,
            epsilon: 0.05,
        },
    );
    let got: Vec<(&str, u32, u32)> = ranked
        .iter()
        .map(|c| (c.engine.as_str(), c.threads, c.batch))
        .collect();
    assert_eq!(got, [("ort", 4, 4), ("ort", 2, 1), ("tract", 1, 1)]);
    let by_latency = knee::rank(
        &configs,
        &KneeRule {
            metric: KneeMetric::P95,
            epsilon: 0.05,
        },
    );
    let got: Vec<(&str, u32, u32)> = by_latency
        .iter()
        .map(|c| (c.engine.as_str(), c.threads, c.batch))
        .collect();
    assert_eq!(got, [("ort", 2, 1), ("ort", 4, 4), ("tract", 1, 1)]);
    Ok(())
}

/// An outcome of request `id` placed by `policy` for `model` on `site`.
fn outcome(
    id: usize,
    (policy, model, site): (&str, &str, &str),
    total_ms: f64,
    slo_ms: f64,
    code: u16,
    at: OffsetDateTime,
) -> Outcome {
    let violated = code != 200 || total_ms > slo_ms;
    Outcome {
        request_id: format!("r-{id}"),
        model: model.into(),
        slo_ms,
        arrival: at,
        policy: policy.into(),
        site: Some(site.into()),
        worker: Some(format!("{site}-w1")),
        engine: Some("ort".into()),
        threads: Some(1),
        batch: Some(1),
        code,
        queue_ms: Some(0.5),
        exec_ms: Some(total_ms - 1.0),
        total_ms,
        violated,
        excess_ms: (total_ms - slo_ms).max(0.0),
    }
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn ledger_ignores_duplicates_and_summarises(pool: PgPool) -> anyhow::Result<()> {
    let t0 = datetime!(2026-11-28 12:00 UTC);
    // synergai: totals 1..=100 ms against a 90 ms target on edge-a; slo-mael: 20 requests, 5
    // errors (503) on cloud.
    let mut rows: Vec<Outcome> = (1..=100)
        .map(|i| {
            outcome(
                i,
                ("synergai", "resnet50", "edge-a"),
                i as f64,
                90.0,
                200,
                t0 + time::Duration::seconds(i as i64),
            )
        })
        .collect();
    rows.extend((101..=120).map(|i| {
        let code = if i <= 105 { 503 } else { 200 };
        outcome(
            i,
            ("slo-mael", "squeezenet", "cloud"),
            10.0,
            50.0,
            code,
            t0 + time::Duration::minutes(10),
        )
    }));
    assert_eq!(db::insert_outcomes(&pool, &rows).await?, 120);
    assert_eq!(
        db::insert_outcomes(&pool, &rows[..10]).await?,
        0,
        "redelivered outcomes are ignored"
    );

    let all = db::ledger_summary(&pool, &LedgerQuery::default()).await?;
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].count, all[0].ok, all[0].violations), (120, 115, 15));

    let q = LedgerQuery {
        group_by: vec![LedgerDimension::Policy],
        ..Default::default()
    };
    let by_policy = db::ledger_summary(&pool, &q).await?;
    let names: Vec<Option<&str>> = by_policy.iter().map(|g| g.policy.as_deref()).collect();
    assert_eq!(names, [Some("slo-mael"), Some("synergai")]);
    let s = &by_policy[1];
    assert_eq!((s.count, s.violations), (100, 10));
    assert!((s.violation_rate - 0.10).abs() < 1e-12);
    assert!((s.excess_ms_total - (1..=10).sum::<i32>() as f64).abs() < 1e-9);
    // percentile_cont over 1..=100.
    assert!(
        (s.p50_ms - 50.5).abs() < 1e-9
            && (s.p95_ms - 95.05).abs() < 1e-9
            && (s.p99_ms - 99.01).abs() < 1e-9
    );
    let m = &by_policy[0];
    assert_eq!((m.count, m.ok, m.violations), (20, 15, 5));

    // Time range and filter: the first 30 seconds of synergai on edge-a.
    let q = LedgerQuery {
        from: Some(t0),
        to: Some(t0 + time::Duration::seconds(31)),
        group_by: vec![
            LedgerDimension::Site,
            LedgerDimension::Model,
            LedgerDimension::Site,
        ],
        site: Some("edge-a".into()),
        ..Default::default()
    };
    let ranged = db::ledger_summary(&pool, &q).await?;
    assert_eq!(ranged.len(), 1);
    assert_eq!(
        (
            ranged[0].site.as_deref(),
            ranged[0].model.as_deref(),
            ranged[0].count
        ),
        (Some("edge-a"), Some("resnet50"), 30)
    );
    assert_eq!(ranged[0].policy, None);

    // Nothing in range: no groups, not a group of zero.
    let empty = LedgerQuery {
        from: Some(t0 + time::Duration::days(1)),
        ..Default::default()
    };
    assert!(db::ledger_summary(&pool, &empty).await?.is_empty());
    // A filter value that would break spliced SQL matches nothing and breaks nothing.
    let nasty = LedgerQuery {
        policy: Some("x' OR '1'='1".into()),
        ..Default::default()
    };
    assert!(db::ledger_summary(&pool, &nasty).await?.is_empty());
    Ok(())
}

#[sqlx::test(migrations = false)]
async fn replicas_starting_together_migrate_once(pool: PgPool) -> anyhow::Result<()> {
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { synergai_store::MIGRATOR.run(&pool).await })
        })
        .collect();
    for r in runs {
        r.await??;
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await?;
    assert_eq!(applied as usize, synergai_store::MIGRATOR.iter().count());
    Ok(())
}
