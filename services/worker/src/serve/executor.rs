//! The executor: one dedicated thread that owns the sessions and runs the queue's jobs, so
//! inference never runs on the async runtime and no session is shared behind a lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use rand::SeedableRng;
use synergai_contract::Tensor;
use synergai_contract::catalog::{ModelEntry, TensorSpec};
use synergai_contract::serving::LoadedConfig;
use synergai_contract::store::ProfileKey;
use synergai_store_client::{EstimateSource, ProfileCache};
use tokio::sync::mpsc::UnboundedSender;

use super::queue::{Job, JobQueue};
use super::unix_us;
use crate::Worker;
use crate::engine::{EngineError, EngineKind};
use crate::inputs::random_inputs;
use crate::models::ModelSession;

/// One run of the engine: its configuration key and time.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// Engine.
    pub engine: EngineKind,
    /// Threads.
    pub threads: u32,
    /// Samples in the run.
    pub batch: u32,
    /// Wall time, ms.
    pub exec_ms: f64,
}

/// What the executor hands back to the async side.
pub enum Done {
    /// Jobs ran; `outputs[i]` belongs to `jobs[i]`.
    Ran {
        /// The jobs.
        jobs: Vec<Job>,
        /// Their outputs.
        outputs: Vec<Vec<Tensor>>,
        /// When the first run started.
        started: Instant,
        /// The engine runs.
        runs: Vec<Run>,
    },
    /// The deadline passed before the job could start.
    Expired(Box<Job>),
    /// The engine failed.
    Failed(Vec<Job>, EngineError),
}

/// Sessions by (model, engine, threads).
type Sessions = HashMap<(String, EngineKind, usize), ModelSession>;

/// Loads every configuration to serve and warms it up (tract compiles a plan per batch size).
/// Pairs an engine cannot run are skipped; returns what is loaded.
pub fn preload(
    worker: &Worker,
    models: &[String],
    engines: &[EngineKind],
    threads: &[usize],
    batches: &[usize],
) -> Result<(Sessions, Vec<LoadedConfig>), EngineError> {
    let mut sessions = Sessions::new();
    let mut loaded = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for model in models {
        let entry = worker.models.entry(model)?.clone();
        for &kind in engines {
            let Some(engine) = worker.engines.iter().find(|e| e.kind() == kind) else {
                continue;
            };
            for &t in threads {
                let mut session = match worker.models.open(engine.as_ref(), model, t) {
                    Ok(s) => s,
                    Err(e @ EngineError::Unsupported { .. }) => {
                        tracing::info!(model, engine = %kind, reason = %e, "not served on this engine");
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let max = entry.max_batch().map_or(usize::MAX, |m| m as usize);
                for &b in batches.iter().filter(|&&b| b <= max) {
                    let warm = random_inputs(&entry, b, &mut rng);
                    session.run_checked(&warm, b)?;
                }
                sessions.insert((model.clone(), kind, t), session);
                loaded.push(LoadedConfig {
                    model: model.clone(),
                    engine: kind.to_string(),
                    threads: t as u32,
                });
            }
        }
    }
    Ok((sessions, loaded))
}

/// The executor's loop: runs groups from the queue until it is closed and empty.
pub struct Executor {
    /// Sessions.
    pub sessions: Sessions,
    /// The worker (for sessions opened on demand).
    pub worker: Arc<Worker>,
    /// Estimates, for deciding whether merging queued jobs pays.
    pub profiles: Option<Arc<ProfileCache>>,
    /// This worker's device class.
    pub device_class: String,
    /// Answer 504 to jobs whose deadline passed before they start.
    pub drop_expired: bool,
    /// Merge queued jobs when it pays.
    pub batching: bool,
    /// Most samples per merged run.
    pub max_batch: usize,
}

fn samples(job: &Job) -> usize {
    job.meta.job.samples.max(1) as usize
}

/// Inputs without a batch axis (a sample rate, say) must be equal for jobs to share a run.
fn same_fixed_inputs(a: &Job, b: &Job, specs: &[TensorSpec]) -> bool {
    specs
        .iter()
        .zip(a.inputs.iter().zip(&b.inputs))
        .all(|(s, (x, y))| s.batch_axis.is_some() || x == y)
}

impl Executor {
    fn estimate(&self, job: &Job, batch: usize) -> Option<f64> {
        let cache = self.profiles.as_ref()?;
        let e = cache.estimate(&ProfileKey {
            device_class: self.device_class.clone(),
            engine: job.meta.engine.clone(),
            model: job.meta.job.model.clone(),
            threads: job.meta.threads,
            batch: batch as u32,
        });
        (e.source != EstimateSource::ColdStart).then_some(e.exec_ms)
    }

    /// Whether `cand` may join `head` and `group` in one run: same model and configuration, room
    /// in the batch, the merged run expected faster than separate ones, and every job still
    /// within its deadline.
    fn mergeable(&self, head: &Job, group: &[&Job], cand: &Job) -> bool {
        if !self.batching {
            return false;
        }
        let m = &head.meta;
        let c = &cand.meta;
        if c.job.model != m.job.model || c.engine != m.engine || c.threads != m.threads {
            return false;
        }
        // Jobs the scheduler asked to split into smaller runs are not merged.
        if [head]
            .iter()
            .chain(group)
            .chain([&cand])
            .any(|j| samples(j) > j.meta.batch as usize)
        {
            return false;
        }
        let Some(entry) = self.worker.models.entry(&m.job.model).ok() else {
            return false;
        };
        if !same_fixed_inputs(head, cand, &entry.inputs) {
            return false;
        }
        let total: usize =
            samples(head) + group.iter().map(|j| samples(j)).sum::<usize>() + samples(cand);
        let limit = entry
            .max_batch()
            .map_or(self.max_batch, |b| (b as usize).min(self.max_batch));
        if total > limit {
            return false;
        }
        let Some(merged_ms) = self.estimate(head, total) else {
            return false;
        };
        let separate: f64 = [head]
            .iter()
            .chain(group)
            .chain([&cand])
            .map(|j| j.meta.est_exec_ms)
            .sum();
        let finish_us = unix_us() + (merged_ms * 1000.0) as i64;
        merged_ms < separate
            && [head]
                .iter()
                .chain(group)
                .chain([&cand])
                .all(|j| finish_us <= j.meta.job.deadline_us)
    }

    fn session(
        &mut self,
        model: &str,
        engine: EngineKind,
        threads: usize,
    ) -> Result<&mut ModelSession, EngineError> {
        let key = (model.to_owned(), engine, threads);
        if !self.sessions.contains_key(&key) {
            let e = self
                .worker
                .engines
                .iter()
                .find(|e| e.kind() == engine)
                .ok_or_else(|| EngineError::Unsupported {
                    engine,
                    reason: "engine not enabled on this worker".into(),
                })?;
            let s = self.worker.models.open(e.as_ref(), model, threads)?;
            self.sessions.insert(key.clone(), s);
        }
        self.sessions.get_mut(&key).ok_or_else(|| EngineError::Run {
            engine,
            model: model.to_owned(),
            reason: "session vanished".into(),
        })
    }

    /// Runs one group: merged jobs in one run, or one job in runs of its configured batch.
    fn run_group(&mut self, jobs: &[Job]) -> Result<(Vec<Vec<Tensor>>, Vec<Run>), EngineError> {
        let head = &jobs[0].meta;
        let engine: EngineKind =
            head.engine
                .parse()
                .map_err(|reason| EngineError::Unsupported {
                    engine: EngineKind::Ort,
                    reason,
                })?;
        let threads = head.threads.max(1) as usize;
        let entry: ModelEntry = self.worker.models.entry(&head.job.model)?.clone();
        let session = self.session(&head.job.model, engine, threads)?;
        let input_axes: Vec<Option<usize>> = entry.inputs.iter().map(|s| s.batch_axis).collect();
        let output_axes: Vec<Option<usize>> = entry.outputs.iter().map(|s| s.batch_axis).collect();
        let mut runs = Vec::new();
        let mut timed = |session: &mut ModelSession, inputs: &[Tensor], batch: usize| {
            let t = Instant::now();
            let out = session.run_checked(inputs, batch);
            runs.push(Run {
                engine,
                threads: threads as u32,
                batch: batch as u32,
                exec_ms: t.elapsed().as_secs_f64() * 1000.0,
            });
            out
        };
        if jobs.len() == 1 {
            let job = &jobs[0];
            let n = samples(job);
            let chunk = (job.meta.batch.max(1) as usize).min(n);
            if chunk >= n {
                return Ok((vec![timed(session, &job.inputs, n)?], runs));
            }
            let mut parts = Vec::new();
            for start in (0..n).step_by(chunk) {
                let len = chunk.min(n - start);
                let inputs = slice_inputs(&job.inputs, &input_axes, start, len)?;
                parts.push(timed(session, &inputs, len)?);
            }
            let outputs = concat_outputs(&parts, &output_axes)?;
            return Ok((vec![outputs], runs));
        }
        let counts: Vec<usize> = jobs.iter().map(samples).collect();
        let total: usize = counts.iter().sum();
        let merged: Vec<Tensor> = input_axes
            .iter()
            .enumerate()
            .map(|(k, axis)| match axis {
                Some(a) => {
                    let parts: Vec<&Tensor> = jobs.iter().map(|j| &j.inputs[k]).collect();
                    Tensor::concat_axis(&parts, *a)
                }
                None => Ok(jobs[0].inputs[k].clone()),
            })
            .collect::<Result<_, _>>()?;
        let outputs = timed(session, &merged, total)?;
        let mut per_job = Vec::with_capacity(jobs.len());
        let mut start = 0;
        for &n in &counts {
            per_job.push(slice_inputs(&outputs, &output_axes, start, n)?);
            start += n;
        }
        Ok((per_job, runs))
    }

    /// Runs the queue until it is closed and empty.
    pub fn run(mut self, queue: Arc<JobQueue>, done: UnboundedSender<Done>) {
        loop {
            let group = {
                let this = &self;
                queue.next_group(|head, group, cand| this.mergeable(head, group, cand))
            };
            let Some(mut group) = group else { break };
            for job in &mut group {
                // Out of the queue: its `queue` span ends here.
                job.waiting = tracing::Span::none();
            }
            let now = unix_us();
            let (expired, live): (Vec<Job>, Vec<Job>) = group
                .into_iter()
                .partition(|j| self.drop_expired && now > j.meta.job.deadline_us);
            for job in expired {
                let _ = done.send(Done::Expired(Box::new(job)));
            }
            if live.is_empty() {
                continue;
            }
            let started = Instant::now();
            let spans: Vec<tracing::Span> = live
                .iter()
                .map(|j| {
                    tracing::info_span!(
                        parent: &j.span,
                        "inference",
                        engine = j.meta.engine.as_str(),
                        threads = i64::from(j.meta.threads),
                        jobs_in_run = live.len() as i64,
                        exec_ms = tracing::field::Empty,
                    )
                })
                .collect();
            let ran = self.run_group(&live);
            if let Ok((_, runs)) = &ran {
                let exec_ms: f64 = runs.iter().map(|r| r.exec_ms).sum();
                for s in &spans {
                    s.record("exec_ms", exec_ms);
                }
            }
            drop(spans);
            let message = match ran {
                Ok((outputs, runs)) => Done::Ran {
                    jobs: live,
                    outputs,
                    started,
                    runs,
                },
                Err(e) => Done::Failed(live, e),
            };
            if done.send(message).is_err() {
                break;
            }
        }
    }
}

fn slice_inputs(
    tensors: &[Tensor],
    axes: &[Option<usize>],
    start: usize,
    len: usize,
) -> Result<Vec<Tensor>, EngineError> {
    tensors
        .iter()
        .zip(axes)
        .map(|(t, axis)| match axis {
            Some(a) => t.slice_axis(*a, start, len).map_err(EngineError::from),
            None => Ok(t.clone()),
        })
        .collect()
}

fn concat_outputs(
    parts: &[Vec<Tensor>],
    axes: &[Option<usize>],
) -> Result<Vec<Tensor>, EngineError> {
    axes.iter()
        .enumerate()
        .map(|(k, axis)| match axis {
            Some(a) => {
                let pieces: Vec<&Tensor> = parts.iter().map(|p| &p[k]).collect();
                Tensor::concat_axis(&pieces, *a).map_err(EngineError::from)
            }
            // An output without a batch axis: the last run's.
            None => parts.last().map(|p| p[k].clone()).ok_or_else(|| {
                EngineError::from(synergai_contract::ContractError::BadRequest(
                    "no runs".into(),
                ))
            }),
        })
        .collect()
}
