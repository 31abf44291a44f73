//! Every query the store runs. Values are always bound, never spliced into SQL; the only SQL
//! built at run time is the ledger summary's GROUP BY, and its column names come from an enum.

use std::collections::{BTreeMap, HashMap};

use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use synergai_contract::catalog::ModelEntry;
use synergai_contract::profile::{ProfilePoint, Unsupported};
use synergai_contract::store::{
    ConfigEstimate, JobObservation, LedgerDimension, LedgerGroup, LedgerQuery, MovedEstimate,
    OnlineOnly, Outcome, ProfileKey, ProfileRow, UpsertProfiles, UpsertResult, WorkerStatus,
};

/// The workspace's migrations (`migrations/`), embedded.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// How online estimates are judged against offline profiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DriftRule {
    /// Relative drift (`online / p50 - 1`) beyond which a key is flagged, e.g. 0.25.
    pub threshold: f64,
    /// Observations needed before a key can be flagged.
    pub min_count: i64,
}

impl DriftRule {
    /// Drift of an online estimate from an offline p50, and whether it is beyond the rule.
    pub fn judge(
        &self,
        online_ms: Option<f64>,
        count: i64,
        p50_ms: Option<f64>,
    ) -> (Option<f64>, bool) {
        match (online_ms, p50_ms) {
            (Some(online), Some(p50)) if p50 > 0.0 => {
                let drift = online / p50 - 1.0;
                (
                    Some(drift),
                    count >= self.min_count && drift.abs() > self.threshold,
                )
            }
            _ => (None, false),
        }
    }
}

/// Takes the next profile revision inside a writing transaction.
///
/// A sequence value is visible to everyone at once, committed or not, and two writers may
/// commit out of order. So every writer first takes one transaction-scoped advisory lock: the
/// writes, and their revisions, then commit in revision order, and the largest revision
/// *stored* ([`revision`]) is a point every later change lies beyond.
async fn next_revision(tx: &mut sqlx::PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('synergai.profile_revision'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar("SELECT nextval('profile_revision')")
        .fetch_one(tx)
        .await
}

/// The current profile revision: the largest committed one (0 before any write).
pub async fn revision(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT GREATEST((SELECT COALESCE(max(revision), 0) FROM profiles),
                         (SELECT COALESCE(max(revision), 0) FROM unsupported),
                         (SELECT COALESCE(max(revision), 0) FROM online_observations))",
    )
    .fetch_one(pool)
    .await
}

/// Registers catalogue models (insert or refresh).
pub async fn register_models(pool: &PgPool, models: &[ModelEntry]) -> Result<(), sqlx::Error> {
    let mut names = Vec::new();
    let mut tasks = Vec::new();
    let mut dynamic = Vec::new();
    let mut max_batch: Vec<Option<i32>> = Vec::new();
    let mut shas = Vec::new();
    let mut sources = Vec::new();
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for m in models {
        names.push(m.name.to_string());
        tasks.push(m.task.clone());
        dynamic.push(m.dynamic_batch);
        max_batch.push(m.max_batch.map(|b| b as i32));
        shas.push(m.sha256.clone());
        sources.push(format!("{}=={}", m.source.package, m.source.version));
        inputs.push(serde_json::to_value(&m.inputs).unwrap_or_default());
        outputs.push(serde_json::to_value(&m.outputs).unwrap_or_default());
    }
    sqlx::query(
        "INSERT INTO models (name, task, dynamic_batch, max_batch, sha256, source, inputs, outputs)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::bool[], $4::int[], $5::text[], $6::text[], $7::jsonb[], $8::jsonb[])
         ON CONFLICT (name) DO UPDATE SET task = EXCLUDED.task, dynamic_batch = EXCLUDED.dynamic_batch,
             max_batch = EXCLUDED.max_batch, sha256 = EXCLUDED.sha256, source = EXCLUDED.source,
             inputs = EXCLUDED.inputs, outputs = EXCLUDED.outputs, updated_at = now()",
    )
    .bind(names)
    .bind(tasks)
    .bind(dynamic)
    .bind(max_batch)
    .bind(shas)
    .bind(sources)
    .bind(inputs)
    .bind(outputs)
    .execute(pool)
    .await?;
    Ok(())
}

async fn ensure_refs(
    tx: &mut sqlx::PgConnection,
    classes: &BTreeMap<String, String>,
    models: &[String],
) -> Result<(), sqlx::Error> {
    let (names, arches): (Vec<String>, Vec<String>) =
        classes.iter().map(|(k, v)| (k.clone(), v.clone())).unzip();
    sqlx::query(
        "INSERT INTO device_classes (name, arch) SELECT * FROM UNNEST($1::text[], $2::text[])
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(names)
    .bind(arches)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO models (name) SELECT * FROM UNNEST($1::text[]) ON CONFLICT (name) DO NOTHING",
    )
    .bind(models)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn key_of(p: &ProfilePoint) -> ProfileKey {
    ProfileKey {
        device_class: p.device_class.clone(),
        engine: p.engine.clone(),
        model: p.model.clone(),
        threads: p.threads,
        batch: p.batch,
    }
}

/// A Postgres integer-array literal (`{0,1}`), for per-row arrays passed through `UNNEST`.
fn int_array_literal<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(T::to_string).collect();
    format!("{{{}}}", parts.join(","))
}

/// Upserts offline points by the merge rule of [`UpsertProfiles`]; returns the counts and the
/// keys that changed.
pub async fn upsert_profiles(
    pool: &PgPool,
    req: &UpsertProfiles,
) -> Result<(UpsertResult, Vec<MovedEstimate>), sqlx::Error> {
    // Within one request the newest point per key wins; the rest count as ignored.
    let mut newest: BTreeMap<ProfileKey, &ProfilePoint> = BTreeMap::new();
    for p in &req.points {
        let slot = newest.entry(key_of(p)).or_insert(p);
        if p.measured_at > slot.measured_at {
            *slot = p;
        }
    }
    let duplicates = (req.points.len() - newest.len()) as u32;
    let mut unsupported: BTreeMap<(String, String, String), &Unsupported> = BTreeMap::new();
    for u in &req.unsupported {
        unsupported.insert(
            (u.device_class.clone(), u.engine.clone(), u.model.clone()),
            u,
        );
    }

    let mut classes = BTreeMap::new();
    let mut models: Vec<String> = Vec::new();
    for p in newest.values() {
        classes
            .entry(p.device_class.clone())
            .or_insert_with(|| p.arch.clone());
        models.push(p.model.clone());
    }
    for u in unsupported.values() {
        classes
            .entry(u.device_class.clone())
            .or_insert_with(|| "unknown".into());
        models.push(u.model.clone());
    }
    models.sort();
    models.dedup();

    let mut tx = pool.begin().await?;
    let rev = next_revision(&mut tx).await?;
    ensure_refs(&mut tx, &classes, &models).await?;

    let points: Vec<&ProfilePoint> = newest.values().copied().collect();
    let col = |f: &dyn Fn(&ProfilePoint) -> String| points.iter().map(|p| f(p)).collect::<Vec<_>>();
    let num = |f: &dyn Fn(&ProfilePoint) -> f64| points.iter().map(|p| f(p)).collect::<Vec<_>>();
    let rows = sqlx::query(
        "INSERT INTO profiles AS p (device_class, engine, model, threads, batch, mean_ms, p50_ms, p95_ms, p99_ms,
             min_ms, max_ms, qps, peak_rss_bytes, runs, warmup, measured_at, worker, arch, cpu_model, core_set,
             engine_version, library_version, revision)
         SELECT d, e, m, t, b, mean, p50, p95, p99, mn, mx, q, rss, r, w, at, wk, a, cpu, cs::integer[], ev, lv, $23
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::float8[], $7::float8[], $8::float8[],
             $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::int8[], $14::int[], $15::int[],
             $16::timestamptz[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], $22::text[])
             AS u(d, e, m, t, b, mean, p50, p95, p99, mn, mx, q, rss, r, w, at, wk, a, cpu, cs, ev, lv)
         ON CONFLICT (device_class, engine, model, threads, batch) DO UPDATE SET
             mean_ms = EXCLUDED.mean_ms, p50_ms = EXCLUDED.p50_ms, p95_ms = EXCLUDED.p95_ms,
             p99_ms = EXCLUDED.p99_ms, min_ms = EXCLUDED.min_ms, max_ms = EXCLUDED.max_ms, qps = EXCLUDED.qps,
             peak_rss_bytes = EXCLUDED.peak_rss_bytes, runs = EXCLUDED.runs, warmup = EXCLUDED.warmup,
             measured_at = EXCLUDED.measured_at, worker = EXCLUDED.worker, arch = EXCLUDED.arch,
             cpu_model = EXCLUDED.cpu_model, core_set = EXCLUDED.core_set,
             engine_version = EXCLUDED.engine_version, library_version = EXCLUDED.library_version,
             revision = EXCLUDED.revision
         WHERE p.measured_at < EXCLUDED.measured_at
         RETURNING device_class, engine, model, threads, batch, (xmax = 0) AS inserted",
    )
    .bind(col(&|p| p.device_class.clone()))
    .bind(col(&|p| p.engine.clone()))
    .bind(col(&|p| p.model.clone()))
    .bind(points.iter().map(|p| p.threads as i32).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.batch as i32).collect::<Vec<_>>())
    .bind(num(&|p| p.mean_ms))
    .bind(num(&|p| p.p50_ms))
    .bind(num(&|p| p.p95_ms))
    .bind(num(&|p| p.p99_ms))
    .bind(num(&|p| p.min_ms))
    .bind(num(&|p| p.max_ms))
    .bind(num(&|p| p.qps))
    .bind(points.iter().map(|p| p.peak_rss_bytes as i64).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.runs as i32).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.warmup as i32).collect::<Vec<_>>())
    .bind(points.iter().map(|p| p.measured_at).collect::<Vec<_>>())
    .bind(col(&|p| p.worker.clone()))
    .bind(col(&|p| p.arch.clone()))
    .bind(col(&|p| p.cpu_model.clone()))
    .bind(col(&|p| int_array_literal(&p.core_set)))
    .bind(col(&|p| p.engine_version.clone()))
    .bind(col(&|p| p.library_version.clone()))
    .bind(rev)
    .fetch_all(&mut *tx)
    .await?;

    let mut inserted = 0u32;
    let mut moved = Vec::with_capacity(rows.len());
    for row in &rows {
        let key = ProfileKey {
            device_class: row.try_get("device_class")?,
            engine: row.try_get("engine")?,
            model: row.try_get("model")?,
            threads: row.try_get::<i32, _>("threads")? as u32,
            batch: row.try_get::<i32, _>("batch")? as u32,
        };
        if row.try_get::<bool, _>("inserted")? {
            inserted += 1;
        }
        moved.push(MovedEstimate {
            key,
            online_ms: None,
            drift: None,
            drifted: false,
        });
    }
    // A fresh offline point is the new truth for its key: its online estimate starts over.
    let changed_keys: Vec<&ProfileKey> = moved.iter().map(|m| &m.key).collect();
    let (rd, re, rm, rt, rb) = key_columns(&changed_keys);
    sqlx::query(
        "DELETE FROM online_observations o USING UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::int[])
             AS k(d, e, m, t, b)
         WHERE o.device_class = k.d AND o.engine = k.e AND o.model = k.m AND o.threads = k.t AND o.batch = k.b",
    )
    .bind(rd)
    .bind(re)
    .bind(rm)
    .bind(rt)
    .bind(rb)
    .execute(&mut *tx)
    .await?;

    let us: Vec<&Unsupported> = unsupported.values().copied().collect();
    sqlx::query(
        "INSERT INTO unsupported (device_class, engine, model, reason, worker, revision)
         SELECT d, e, m, r, w, $6 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(d, e, m, r, w)
         ON CONFLICT (device_class, engine, model) DO UPDATE SET reason = EXCLUDED.reason, worker = EXCLUDED.worker,
             recorded_at = now(), revision = EXCLUDED.revision",
    )
    .bind(us.iter().map(|u| u.device_class.clone()).collect::<Vec<_>>())
    .bind(us.iter().map(|u| u.engine.clone()).collect::<Vec<_>>())
    .bind(us.iter().map(|u| u.model.clone()).collect::<Vec<_>>())
    .bind(us.iter().map(|u| u.unsupported.clone()).collect::<Vec<_>>())
    .bind(us.iter().map(|u| u.worker.clone()).collect::<Vec<_>>())
    .bind(rev)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;

    let changed = rows.len() as u32;
    Ok((
        UpsertResult {
            inserted,
            replaced: changed - inserted,
            ignored: points.len() as u32 - changed + duplicates,
            unsupported: us.len() as u32,
            revision: rev,
        },
        moved,
    ))
}

/// Offline profiles with their online estimates, optionally for one device class and model.
pub async fn profiles(
    pool: &PgPool,
    device_class: Option<&str>,
    model: Option<&str>,
    drift: DriftRule,
) -> Result<Vec<ProfileRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT p.device_class, p.engine, p.model, p.threads, p.batch, p.mean_ms, p.p50_ms, p.p95_ms, p.p99_ms,
                p.qps, p.runs, p.peak_rss_bytes, p.measured_at, p.worker, p.engine_version, p.library_version,
                o.ewma_ms, COALESCE(o.count, 0) AS online_count
         FROM profiles p
         LEFT JOIN online_observations o USING (device_class, engine, model, threads, batch)
         WHERE ($1::text IS NULL OR p.device_class = $1) AND ($2::text IS NULL OR p.model = $2)
         ORDER BY p.device_class, p.model, p.engine, p.batch, p.threads",
    )
    .bind(device_class)
    .bind(model)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let p50: f64 = r.try_get("p50_ms")?;
            let online: Option<f64> = r.try_get("ewma_ms")?;
            let count: i64 = r.try_get("online_count")?;
            let (d, drifted) = drift.judge(online, count, Some(p50));
            Ok(ProfileRow {
                device_class: r.try_get("device_class")?,
                model: r.try_get("model")?,
                config: ConfigEstimate {
                    engine: r.try_get("engine")?,
                    threads: r.try_get::<i32, _>("threads")? as u32,
                    batch: r.try_get::<i32, _>("batch")? as u32,
                    mean_ms: r.try_get("mean_ms")?,
                    p50_ms: p50,
                    p95_ms: r.try_get("p95_ms")?,
                    p99_ms: r.try_get("p99_ms")?,
                    qps: r.try_get("qps")?,
                    online_ms: online,
                    online_count: count,
                    drift: d,
                    drifted,
                },
                runs: r.try_get("runs")?,
                peak_rss_bytes: r.try_get("peak_rss_bytes")?,
                measured_at: r.try_get("measured_at")?,
                worker: r.try_get("worker")?,
                engine_version: r.try_get("engine_version")?,
                library_version: r.try_get("library_version")?,
            })
        })
        .collect()
}

/// Keys observed online that have no offline profile.
pub async fn online_only(
    pool: &PgPool,
    device_class: Option<&str>,
) -> Result<Vec<OnlineOnly>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT o.device_class, o.engine, o.model, o.threads, o.batch, o.ewma_ms, o.count
         FROM online_observations o
         WHERE ($1::text IS NULL OR o.device_class = $1) AND NOT EXISTS (
             SELECT 1 FROM profiles p WHERE p.device_class = o.device_class AND p.engine = o.engine
                 AND p.model = o.model AND p.threads = o.threads AND p.batch = o.batch)
         ORDER BY o.device_class, o.model, o.engine, o.batch, o.threads",
    )
    .bind(device_class)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(OnlineOnly {
                key: ProfileKey {
                    device_class: r.try_get("device_class")?,
                    engine: r.try_get("engine")?,
                    model: r.try_get("model")?,
                    threads: r.try_get::<i32, _>("threads")? as u32,
                    batch: r.try_get::<i32, _>("batch")? as u32,
                },
                online_ms: r.try_get("ewma_ms")?,
                online_count: r.try_get("count")?,
            })
        })
        .collect()
}

/// Pairs an engine cannot run.
pub async fn unsupported(
    pool: &PgPool,
    device_class: Option<&str>,
) -> Result<Vec<Unsupported>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT device_class, engine, model, reason, worker FROM unsupported
         WHERE ($1::text IS NULL OR device_class = $1) ORDER BY device_class, model, engine",
    )
    .bind(device_class)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Unsupported {
                model: r.try_get("model")?,
                engine: r.try_get("engine")?,
                unsupported: r.try_get("reason")?,
                device_class: r.try_get("device_class")?,
                worker: r.try_get("worker")?,
            })
        })
        .collect()
}

/// Folds job observations into each key's EWMA (`estimate ← alpha·x + (1 − alpha)·estimate`,
/// the first observation seeding it). Returns the revision and the new estimates with their
/// drift from the offline p50.
///
/// Several store replicas may flush at once: the revision lock ([`next_revision`]), taken before
/// reading, serialises the read-modify-write, so no observation is folded twice or lost.
pub async fn apply_observations(
    pool: &PgPool,
    observations: &[JobObservation],
    alpha: f64,
    drift: DriftRule,
) -> Result<(i64, Vec<MovedEstimate>), sqlx::Error> {
    let mut by_key: BTreeMap<&ProfileKey, Vec<f64>> = BTreeMap::new();
    for o in observations {
        by_key.entry(&o.key).or_default().push(o.exec_ms);
    }
    let keys: Vec<&ProfileKey> = by_key.keys().copied().collect();
    let (d, e, m, t, b) = key_columns(&keys);
    let mut tx = pool.begin().await?;
    let rev = next_revision(&mut tx).await?;
    let current = sqlx::query(
        "SELECT k.d, k.e, k.m, k.t, k.b, o.ewma_ms, COALESCE(o.count, 0) AS count, p.p50_ms
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::int[]) AS k(d, e, m, t, b)
         LEFT JOIN online_observations o
             ON (o.device_class, o.engine, o.model, o.threads, o.batch) = (k.d, k.e, k.m, k.t, k.b)
         LEFT JOIN profiles p
             ON (p.device_class, p.engine, p.model, p.threads, p.batch) = (k.d, k.e, k.m, k.t, k.b)",
    )
    .bind(&d)
    .bind(&e)
    .bind(&m)
    .bind(&t)
    .bind(&b)
    .fetch_all(&mut *tx)
    .await?;
    let mut prior: HashMap<ProfileKey, (Option<f64>, i64, Option<f64>)> = HashMap::new();
    for r in &current {
        let key = ProfileKey {
            device_class: r.try_get("d")?,
            engine: r.try_get("e")?,
            model: r.try_get("m")?,
            threads: r.try_get::<i32, _>("t")? as u32,
            batch: r.try_get::<i32, _>("b")? as u32,
        };
        prior.insert(
            key,
            (
                r.try_get("ewma_ms")?,
                r.try_get("count")?,
                r.try_get("p50_ms")?,
            ),
        );
    }
    let mut ewma = Vec::with_capacity(keys.len());
    let mut count = Vec::with_capacity(keys.len());
    let mut last = Vec::with_capacity(keys.len());
    let mut moved = Vec::with_capacity(keys.len());
    for (key, values) in &by_key {
        let (mut estimate, mut n, p50) = prior.get(*key).copied().unwrap_or((None, 0, None));
        for &x in values {
            estimate = Some(estimate.map_or(x, |e| alpha * x + (1.0 - alpha) * e));
            n += 1;
        }
        let (drift, drifted) = drift.judge(estimate, n, p50);
        ewma.push(estimate.unwrap_or_default());
        count.push(n);
        last.push(values[values.len() - 1]);
        moved.push(MovedEstimate {
            key: (*key).clone(),
            online_ms: estimate,
            drift,
            drifted,
        });
    }
    sqlx::query(
        "INSERT INTO online_observations (device_class, engine, model, threads, batch, ewma_ms, count, last_ms,
             last_update, revision)
         SELECT d, e, m, t, b, x, n, l, now(), $9
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::float8[], $7::int8[], $8::float8[])
             AS u(d, e, m, t, b, x, n, l)
         ON CONFLICT (device_class, engine, model, threads, batch) DO UPDATE SET ewma_ms = EXCLUDED.ewma_ms,
             count = EXCLUDED.count, last_ms = EXCLUDED.last_ms, last_update = now(), revision = EXCLUDED.revision",
    )
    .bind(&d)
    .bind(&e)
    .bind(&m)
    .bind(&t)
    .bind(&b)
    .bind(ewma)
    .bind(count)
    .bind(last)
    .bind(rev)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((rev, moved))
}

type KeyColumns = (Vec<String>, Vec<String>, Vec<String>, Vec<i32>, Vec<i32>);

/// A list of keys as five parallel columns, for `UNNEST`.
fn key_columns(keys: &[&ProfileKey]) -> KeyColumns {
    let mut cols: KeyColumns = Default::default();
    for k in keys {
        cols.0.push(k.device_class.clone());
        cols.1.push(k.engine.clone());
        cols.2.push(k.model.clone());
        cols.3.push(k.threads as i32);
        cols.4.push(k.batch as i32);
    }
    cols
}

/// Records workers' status: first sight registers them, later ones move `last_seen`.
pub async fn upsert_workers(pool: &PgPool, statuses: &[WorkerStatus]) -> Result<(), sqlx::Error> {
    let mut latest: HashMap<&str, &WorkerStatus> = HashMap::new();
    for s in statuses {
        latest.insert(s.id.as_str(), s);
    }
    let ws: Vec<&WorkerStatus> = latest.into_values().collect();
    let classes: BTreeMap<String, String> = ws
        .iter()
        .map(|w| (w.device_class.clone(), w.arch.clone()))
        .collect();
    let mut tx = pool.begin().await?;
    ensure_refs(&mut tx, &classes, &[]).await?;
    sqlx::query(
        "INSERT INTO workers (id, site, tier, arch, device_class, core_set, engines)
         SELECT id, site, tier, arch, dc, cs::integer[], en::text[]
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
             AS u(id, site, tier, arch, dc, cs, en)
         ON CONFLICT (id) DO UPDATE SET site = EXCLUDED.site, tier = EXCLUDED.tier, arch = EXCLUDED.arch,
             device_class = EXCLUDED.device_class, core_set = EXCLUDED.core_set, engines = EXCLUDED.engines,
             last_seen = now()",
    )
    .bind(ws.iter().map(|w| w.id.clone()).collect::<Vec<_>>())
    .bind(ws.iter().map(|w| w.site.clone()).collect::<Vec<_>>())
    .bind(ws.iter().map(|w| w.tier.to_string()).collect::<Vec<_>>())
    .bind(ws.iter().map(|w| w.arch.clone()).collect::<Vec<_>>())
    .bind(ws.iter().map(|w| w.device_class.clone()).collect::<Vec<_>>())
    .bind(ws.iter().map(|w| int_array_literal(&w.core_set)).collect::<Vec<_>>())
    .bind(ws.iter().map(|w| text_array_literal(&w.engines)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A Postgres text-array literal with every element quoted and escaped.
fn text_array_literal(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// Writes outcomes to the ledger; an id already there is ignored. Returns rows inserted.
pub async fn insert_outcomes(pool: &PgPool, outcomes: &[Outcome]) -> Result<u64, sqlx::Error> {
    let col = |f: &dyn Fn(&Outcome) -> Option<String>| outcomes.iter().map(f).collect::<Vec<_>>();
    let done = sqlx::query(
        "INSERT INTO ledger (request_id, model, slo_ms, arrival, policy, site, worker, engine, threads, batch,
             code, queue_ms, exec_ms, total_ms, violated, excess_ms)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::timestamptz[], $5::text[], $6::text[],
             $7::text[], $8::text[], $9::int[], $10::int[], $11::int2[], $12::float8[], $13::float8[], $14::float8[],
             $15::bool[], $16::float8[])
         ON CONFLICT (request_id) DO NOTHING",
    )
    .bind(outcomes.iter().map(|o| o.request_id.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.model.clone()).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.slo_ms).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.arrival).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.policy.clone()).collect::<Vec<_>>())
    .bind(col(&|o| o.site.clone()))
    .bind(col(&|o| o.worker.clone()))
    .bind(col(&|o| o.engine.clone()))
    .bind(outcomes.iter().map(|o| o.threads.map(|t| t as i32)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.batch.map(|b| b as i32)).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.code as i16).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.queue_ms).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.exec_ms).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.total_ms).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.violated).collect::<Vec<_>>())
    .bind(outcomes.iter().map(|o| o.excess_ms).collect::<Vec<_>>())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

fn column(d: LedgerDimension) -> &'static str {
    match d {
        LedgerDimension::Policy => "policy",
        LedgerDimension::Model => "model",
        LedgerDimension::Site => "site",
    }
}

/// Summarises the ledger: count, violations, excess time and latency percentiles per group.
pub async fn ledger_summary(
    pool: &PgPool,
    q: &LedgerQuery,
) -> Result<Vec<LedgerGroup>, sqlx::Error> {
    let mut dims: Vec<LedgerDimension> = Vec::new();
    for d in &q.group_by {
        if !dims.contains(d) {
            dims.push(*d);
        }
    }
    let mut b: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    for d in &dims {
        b.push(column(*d)).push(", ");
    }
    b.push(
        "count(*) AS count, count(*) FILTER (WHERE code = 200) AS ok, count(*) FILTER (WHERE violated) AS violations,
         COALESCE(sum(excess_ms), 0) AS excess,
         percentile_cont(0.5) WITHIN GROUP (ORDER BY total_ms) AS p50,
         percentile_cont(0.95) WITHIN GROUP (ORDER BY total_ms) AS p95,
         percentile_cont(0.99) WITHIN GROUP (ORDER BY total_ms) AS p99
         FROM ledger WHERE true",
    );
    if let Some(from) = q.from {
        b.push(" AND arrival >= ").push_bind(from);
    }
    if let Some(to) = q.to {
        b.push(" AND arrival < ").push_bind(to);
    }
    for (dim, value) in [
        (LedgerDimension::Policy, &q.policy),
        (LedgerDimension::Model, &q.model),
        (LedgerDimension::Site, &q.site),
    ] {
        if let Some(v) = value {
            b.push(" AND ")
                .push(column(dim))
                .push(" = ")
                .push_bind(v.clone());
        }
    }
    if !dims.is_empty() {
        b.push(" GROUP BY ");
        let mut sep = b.separated(", ");
        for d in &dims {
            sep.push(column(*d));
        }
    }
    // Without grouping, an empty range still aggregates to one row; HAVING drops it.
    b.push(" HAVING count(*) > 0");
    if !dims.is_empty() {
        b.push(" ORDER BY ");
        let mut sep = b.separated(", ");
        for d in &dims {
            sep.push(column(*d));
        }
    }
    let rows = b.build().fetch_all(pool).await?;
    rows.iter()
        .map(|r| {
            let count: i64 = r.try_get("count")?;
            let violations: i64 = r.try_get("violations")?;
            let get = |d: LedgerDimension| -> Result<Option<String>, sqlx::Error> {
                if dims.contains(&d) {
                    r.try_get(column(d))
                } else {
                    Ok(None)
                }
            };
            Ok(LedgerGroup {
                policy: get(LedgerDimension::Policy)?,
                model: get(LedgerDimension::Model)?,
                site: get(LedgerDimension::Site)?,
                count,
                ok: r.try_get("ok")?,
                violations,
                violation_rate: violations as f64 / count as f64,
                excess_ms_total: r.try_get("excess")?,
                p50_ms: r.try_get("p50")?,
                p95_ms: r.try_get("p95")?,
                p99_ms: r.try_get("p99")?,
            })
        })
        .collect()
}
