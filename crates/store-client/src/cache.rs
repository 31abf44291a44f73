use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_nats::Client;
use futures_util::StreamExt;
use synergai_contract::Subjects;
use synergai_contract::store::{
    ProfileKey, ProfileRow, ProfileTable, ProfilesUpdated, TableRequest,
};
use tokio_util::sync::CancellationToken;

use crate::{StoreClient, StoreError};

/// The cold-start rule: what to assume for a key nobody has measured.
///
/// SynergAI uses a conservative estimate rather than profiling on first use: the slowest
/// per-sample p99 of that model on any device class and engine we know, times the batch, times
/// `factor`; and for a model never profiled anywhere, `default_ms` per sample. A request placed
/// on such a guess still runs, and its measured time replaces the guess through the online
/// estimate (`min_online` observations make it trusted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColdStart {
    /// Safety factor over the slowest known figure.
    pub factor: f64,
    /// Per-sample time for a model with no profile at all, ms.
    pub default_ms: f64,
    /// Online observations before the online estimate replaces the offline one.
    pub min_online: i64,
}

impl Default for ColdStart {
    fn default() -> Self {
        ColdStart {
            factor: 2.0,
            default_ms: 1000.0,
            min_online: 3,
        }
    }
}

/// Where an estimate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EstimateSource {
    /// Measured online (EWMA of completed jobs).
    Online,
    /// The offline profile.
    Profile,
    /// The cold-start rule: nothing measured for this key.
    ColdStart,
}

/// Expected execution time of one batch under a configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    /// Expected time, ms.
    pub exec_ms: f64,
    /// Tail (95th percentile) time, ms.
    pub p95_ms: f64,
    /// Where it came from.
    pub source: EstimateSource,
}

/// One fetched profile table, indexed.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Revision it reflects.
    pub revision: i64,
    /// When it was fetched.
    pub fetched_at: Instant,
    profiles: HashMap<ProfileKey, ProfileRow>,
    online_only: HashMap<ProfileKey, (f64, i64)>,
    unsupported: HashSet<(String, String, String)>,
    worst_per_sample: HashMap<String, f64>,
}

impl Snapshot {
    /// Indexes a profile table.
    pub fn from_table(table: ProfileTable) -> Self {
        let mut worst_per_sample: HashMap<String, f64> = HashMap::new();
        let mut profiles = HashMap::with_capacity(table.profiles.len());
        for row in table.profiles {
            let per_sample = row.config.p99_ms / f64::from(row.config.batch.max(1));
            let w = worst_per_sample.entry(row.model.clone()).or_insert(0.0);
            *w = w.max(per_sample);
            let key = ProfileKey {
                device_class: row.device_class.clone(),
                engine: row.config.engine.clone(),
                model: row.model.clone(),
                threads: row.config.threads,
                batch: row.config.batch,
            };
            profiles.insert(key, row);
        }
        Snapshot {
            revision: table.revision,
            fetched_at: Instant::now(),
            profiles,
            online_only: table
                .online_only
                .into_iter()
                .map(|o| (o.key, (o.online_ms, o.online_count)))
                .collect(),
            unsupported: table
                .unsupported
                .into_iter()
                .map(|u| (u.device_class, u.engine, u.model))
                .collect(),
            worst_per_sample,
        }
    }

    /// Profiled keys and their rows.
    pub fn profiles(&self) -> impl Iterator<Item = (&ProfileKey, &ProfileRow)> {
        self.profiles.iter()
    }

    /// Whether `engine` can run `model` on `device_class` (false only when recorded so).
    pub fn supported(&self, device_class: &str, engine: &str, model: &str) -> bool {
        !self
            .unsupported
            .contains(&(device_class.to_owned(), engine.to_owned(), model.to_owned()))
    }

    /// The estimate for a key: online when trusted, else offline, else the cold-start rule.
    pub fn estimate(&self, key: &ProfileKey, cold: &ColdStart) -> Estimate {
        if let Some(row) = self.profiles.get(key) {
            let c = &row.config;
            return match c.online_ms {
                Some(online) if c.online_count >= cold.min_online && c.p50_ms > 0.0 => Estimate {
                    exec_ms: online,
                    p95_ms: c.p95_ms * online / c.p50_ms,
                    source: EstimateSource::Online,
                },
                _ => Estimate {
                    exec_ms: c.mean_ms,
                    p95_ms: c.p95_ms,
                    source: EstimateSource::Profile,
                },
            };
        }
        if let Some(&(online, count)) = self.online_only.get(key)
            && count >= cold.min_online
        {
            return Estimate {
                exec_ms: online,
                p95_ms: online * cold.factor,
                source: EstimateSource::Online,
            };
        }
        cold_start(
            self.worst_per_sample.get(&key.model).copied(),
            key.batch,
            cold,
        )
    }
}

fn cold_start(worst_per_sample: Option<f64>, batch: u32, cold: &ColdStart) -> Estimate {
    let per_sample = worst_per_sample.map_or(cold.default_ms, |w| w * cold.factor);
    let ms = per_sample * f64::from(batch.max(1));
    Estimate {
        exec_ms: ms,
        p95_ms: ms,
        source: EstimateSource::ColdStart,
    }
}

/// The profile table held in memory for a scheduler.
///
/// It refreshes when a `profiles updated` event carries a newer revision, and on a timer as a
/// safety net. A failed refresh keeps the last good snapshot: the scheduler serves from it while
/// the store or PostgreSQL is down, and the failure is visible through [`ProfileCache::last_error`].
pub struct ProfileCache {
    client: StoreClient,
    nats: Client,
    subjects: Subjects,
    cold: ColdStart,
    current: RwLock<Option<Arc<Snapshot>>>,
    last_error: Mutex<Option<StoreError>>,
}

impl ProfileCache {
    /// An empty cache; call [`ProfileCache::refresh`] or [`ProfileCache::follow`] to fill it.
    pub fn new(nats: Client, subjects: Subjects, cold: ColdStart) -> Arc<Self> {
        Arc::new(ProfileCache {
            client: StoreClient::new(nats.clone(), subjects.clone()),
            nats,
            subjects,
            cold,
            current: RwLock::new(None),
            last_error: Mutex::new(None),
        })
    }

    /// The current snapshot, if any was ever fetched.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.current.read().ok().and_then(|s| s.clone())
    }

    /// The revision of the current snapshot.
    pub fn revision(&self) -> Option<i64> {
        self.snapshot().map(|s| s.revision)
    }

    /// The error of the last refresh, if it failed.
    pub fn last_error(&self) -> Option<StoreError> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// The estimate for a key (the cold-start rule when nothing was ever fetched).
    pub fn estimate(&self, key: &ProfileKey) -> Estimate {
        match self.snapshot() {
            Some(s) => s.estimate(key, &self.cold),
            None => cold_start(None, key.batch, &self.cold),
        }
    }

    /// Fetches the table; on failure the previous snapshot stays in use.
    pub async fn refresh(&self) -> Result<i64, StoreError> {
        let result = self.client.table(&TableRequest::default()).await;
        let outcome = match result {
            Ok(table) => {
                let snapshot = Arc::new(Snapshot::from_table(table));
                let revision = snapshot.revision;
                if let Ok(mut current) = self.current.write() {
                    *current = Some(snapshot);
                }
                Ok(revision)
            }
            Err(e) => Err(e),
        };
        if let Ok(mut last) = self.last_error.lock() {
            *last = outcome.as_ref().err().cloned();
        }
        outcome
    }

    /// Keeps the cache current until cancelled: refreshes on newer `profiles updated` events and
    /// every `poll` (also retrying after failures).
    pub fn follow(
        self: &Arc<Self>,
        poll: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            let mut events = match cache
                .nats
                .subscribe(cache.subjects.profiles_updated())
                .await
            {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot follow profile updates; polling only");
                    None
                }
            };
            if let Err(e) = cache.refresh().await {
                tracing::warn!(error = %e, "initial profile fetch failed; will retry");
            }
            let mut tick = tokio::time::interval(poll);
            loop {
                let newer = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => true,
                    msg = async {
                        match events.as_mut() {
                            Some(s) => s.next().await,
                            None => std::future::pending().await,
                        }
                    } => match msg {
                        Some(m) => serde_json::from_slice::<ProfilesUpdated>(&m.payload)
                            .map(|u| cache.revision().is_none_or(|r| u.revision > r))
                            .unwrap_or(true),
                        None => { events = None; false }
                    },
                };
                if newer && let Err(e) = cache.refresh().await {
                    tracing::debug!(error = %e, "profile refresh failed; serving the cached snapshot");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synergai_contract::profile::Unsupported;
    use synergai_contract::store::{ConfigEstimate, OnlineOnly};

    fn row(
        dc: &str,
        model: &str,
        threads: u32,
        batch: u32,
        mean: f64,
        p99: f64,
        online: Option<(f64, i64)>,
    ) -> ProfileRow {
        ProfileRow {
            device_class: dc.into(),
            model: model.into(),
            config: ConfigEstimate {
                engine: "ort".into(),
                threads,
                batch,
                mean_ms: mean,
                p50_ms: mean,
                p95_ms: mean * 1.2,
                p99_ms: p99,
                qps: f64::from(batch) * 1000.0 / mean,
                online_ms: online.map(|o| o.0),
                online_count: online.map_or(0, |o| o.1),
                drift: None,
                drifted: false,
            },
            runs: 10,
            peak_rss_bytes: 1,
            measured_at: time::OffsetDateTime::UNIX_EPOCH,
            worker: "w".into(),
            engine_version: "v".into(),
            library_version: "v".into(),
        }
    }

    fn key(dc: &str, model: &str, threads: u32, batch: u32) -> ProfileKey {
        ProfileKey {
            device_class: dc.into(),
            engine: "ort".into(),
            model: model.into(),
            threads,
            batch,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot::from_table(ProfileTable {
            revision: 7,
            drift_threshold: 0.25,
            profiles: vec![
                row("edge", "resnet50", 1, 1, 50.0, 60.0, None),
                row("edge", "resnet50", 2, 1, 30.0, 36.0, Some((45.0, 5))),
                row("cloud", "resnet50", 1, 4, 80.0, 100.0, Some((90.0, 1))),
            ],
            online_only: vec![OnlineOnly {
                key: key("edge", "vgg19", 1, 1),
                online_ms: 200.0,
                online_count: 4,
            }],
            unsupported: vec![Unsupported {
                model: "silero_vad".into(),
                engine: "tract".into(),
                unsupported: "unsupported by tract: x".into(),
                device_class: "edge".into(),
                worker: "w".into(),
            }],
        })
    }

    #[test]
    fn estimates_prefer_trusted_online_then_profile() {
        let s = snapshot();
        let cold = ColdStart::default();
        let e = s.estimate(&key("edge", "resnet50", 1, 1), &cold);
        assert_eq!((e.exec_ms, e.source), (50.0, EstimateSource::Profile));
        let e = s.estimate(&key("edge", "resnet50", 2, 1), &cold);
        assert_eq!((e.exec_ms, e.source), (45.0, EstimateSource::Online));
        assert!(
            (e.p95_ms - 36.0 * 45.0 / 30.0).abs() < 1e-9,
            "tail scales with the online drift"
        );
        // One observation is not trusted yet.
        let e = s.estimate(&key("cloud", "resnet50", 1, 4), &cold);
        assert_eq!((e.exec_ms, e.source), (80.0, EstimateSource::Profile));
        let e = s.estimate(&key("edge", "vgg19", 1, 1), &cold);
        assert_eq!((e.exec_ms, e.source), (200.0, EstimateSource::Online));
    }

    #[test]
    fn cold_start_is_conservative() {
        let s = snapshot();
        let cold = ColdStart::default();
        // Worst per-sample p99 of resnet50 is 60 ms (edge, batch 1): ×2 safety, ×8 batch.
        let e = s.estimate(&key("new-class", "resnet50", 4, 8), &cold);
        assert_eq!(e.source, EstimateSource::ColdStart);
        assert!((e.exec_ms - 60.0 * 2.0 * 8.0).abs() < 1e-9, "{e:?}");
        // A model never profiled anywhere: the default per sample.
        let e = s.estimate(&key("edge", "squeezenet", 1, 2), &cold);
        assert_eq!((e.exec_ms, e.source), (2000.0, EstimateSource::ColdStart));
    }

    #[test]
    fn unsupported_pairs_are_known() {
        let s = snapshot();
        assert!(!s.supported("edge", "tract", "silero_vad"));
        assert!(s.supported("edge", "ort", "silero_vad"));
        assert!(s.supported("cloud", "tract", "silero_vad"));
    }
}
