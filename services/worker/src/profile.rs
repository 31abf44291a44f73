//! The offline phase: sweep model × engine × intra-op threads × batch and measure each point.
//!
//! Each point gets untimed warm-up runs (they also absorb tract's per-batch compilation), then
//! timed runs until both a minimum count and a time budget are reached (or a maximum count).
//! The peak resident set is reset before each point (`/proc/self/clear_refs`) so it is the
//! point's own, not the sweep's.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::rngs::StdRng;
use synergai_contract::profile::{ProfileLine, ProfilePoint, Unsupported};
use synergai_contract::{Tensor, TensorData};

use crate::engine::{Engine, EngineError, EngineKind};
use crate::inputs::random_inputs;
use crate::models::Models;

/// What the measured machine is; copied into every record.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFacts {
    /// Worker id.
    pub worker: String,
    /// Device class.
    pub device_class: String,
    /// CPU architecture.
    pub arch: String,
    /// CPU model.
    pub cpu_model: String,
    /// Cores the process may run on.
    pub core_set: Vec<usize>,
}

/// One sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Models, in order.
    pub models: Vec<String>,
    /// Engines, in order.
    pub engines: Vec<EngineKind>,
    /// Intra-op thread counts.
    pub threads: Vec<usize>,
    /// Batch sizes (each model skips those above its largest batch).
    pub batches: Vec<usize>,
    /// Untimed runs per point.
    pub warmup: u32,
    /// Timed runs at least.
    pub min_runs: u32,
    /// Timed runs at most.
    pub max_runs: u32,
    /// Time to keep measuring after `min_runs`.
    pub budget: Duration,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Raw little-endian bytes to use as the (single) input instead of random data.
    pub input: Option<Vec<u8>>,
}

/// Summary statistics of run times, in ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Fastest.
    pub min: f64,
    /// Slowest.
    pub max: f64,
}

/// Nearest-rank percentiles of `samples_ms` (which it sorts). `None` when empty.
pub fn stats(samples_ms: &mut [f64]) -> Option<Stats> {
    if samples_ms.is_empty() {
        return None;
    }
    samples_ms.sort_by(f64::total_cmp);
    let n = samples_ms.len();
    let rank = |p: f64| samples_ms[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    Some(Stats {
        mean: samples_ms.iter().sum::<f64>() / n as f64,
        p50: rank(0.50),
        p95: rank(0.95),
        p99: rank(0.99),
        min: samples_ms[0],
        max: samples_ms[n - 1],
    })
}

/// Resets the kernel's peak-RSS mark for this process; false where the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set of this process since the last reset, bytes.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Replaces the single input's data with raw bytes, checking they fit.
fn override_input(inputs: &mut [Tensor], bytes: &[u8]) -> Result<(), EngineError> {
    let bad = |msg: String| EngineError::Input(synergai_contract::ContractError::BadRequest(msg));
    let [only] = inputs else {
        return Err(bad(format!(
            "--input needs a model with one input, this one has {}",
            inputs.len()
        )));
    };
    if bytes.len() != only.data.byte_len() {
        return Err(bad(format!(
            "--input has {} bytes, input {:?} {:?} of {} needs {}",
            bytes.len(),
            only.name,
            only.shape,
            only.datatype(),
            only.data.byte_len()
        )));
    }
    only.data = TensorData::from_le_bytes(only.datatype(), bytes)?;
    Ok(())
}

/// Runs the sweep, handing each line to `sink` as soon as it is measured.
pub fn run(
    models: &Models,
    engines: &[&dyn Engine],
    facts: &DeviceFacts,
    plan: &Plan,
    mut sink: impl FnMut(&ProfileLine),
) -> Result<Vec<ProfileLine>, EngineError> {
    let mut work = Vec::new();
    for model in &plan.models {
        let entry = models.entry(model)?;
        let max = entry.max_batch().map_or(usize::MAX, |m| m as usize);
        let batches: Vec<usize> = plan.batches.iter().copied().filter(|&b| b <= max).collect();
        for kind in &plan.engines {
            let engine = engines
                .iter()
                .find(|e| e.kind() == *kind)
                .copied()
                .ok_or_else(|| EngineError::Unsupported {
                    engine: *kind,
                    reason: "engine disabled on this worker".into(),
                })?;
            work.push((model.as_str(), engine, batches.clone()));
        }
    }
    let total: usize = work
        .iter()
        .map(|(_, _, b)| b.len() * plan.threads.len())
        .sum();
    let interactive = std::io::stderr().is_terminal();
    let bar = if interactive {
        ProgressBar::new(total as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} points  {msg}  [{elapsed} < {eta}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let mut lines = Vec::new();
    let mut rng = StdRng::seed_from_u64(plan.seed);
    for (model, engine, batches) in work {
        let points = (batches.len() * plan.threads.len()) as u64;
        let start = bar.position();
        let mut emit = |line: ProfileLine| {
            sink(&line);
            lines.push(line);
        };
        let pair = Pair {
            model,
            engine,
            batches: &batches,
            plan,
            facts,
        };
        match pair.profile(models, &mut rng, &bar, &mut emit) {
            Ok(()) => {}
            // tract is the optional engine: what it cannot do is recorded, not fatal.
            Err(e) if engine.kind() == EngineKind::Tract => {
                emit(unsupported(model, engine.kind(), &e, facts));
                bar.set_position(start + points);
            }
            Err(e) => return Err(e),
        }
    }
    bar.finish_and_clear();
    Ok(lines)
}

/// One (model, engine) pair of a sweep: every thread count and batch size.
struct Pair<'a> {
    model: &'a str,
    engine: &'a dyn Engine,
    batches: &'a [usize],
    plan: &'a Plan,
    facts: &'a DeviceFacts,
}

impl Pair<'_> {
    fn profile(
        &self,
        models: &Models,
        rng: &mut StdRng,
        bar: &ProgressBar,
        emit: &mut impl FnMut(ProfileLine),
    ) -> Result<(), EngineError> {
        let (model, engine, plan) = (self.model, self.engine, self.plan);
        for &threads in &plan.threads {
            let mut session = models.open(engine, model, threads)?;
            for &batch in self.batches {
                bar.set_message(format!("{model} {} t{threads} b{batch}", engine.kind()));
                let mut inputs = random_inputs(session.entry(), batch, rng);
                if let Some(bytes) = &plan.input {
                    override_input(&mut inputs, bytes)?;
                }
                let (mut samples, peak) = measure(&mut session, &inputs, batch, plan)?;
                let runs = samples.len() as u32;
                let Some(s) = stats(&mut samples) else {
                    continue;
                };
                if bar.is_hidden() {
                    tracing::info!(model, engine = %engine.kind(), threads, batch, p50_ms = s.p50, "profiled");
                }
                emit(ProfileLine::Point(ProfilePoint {
                    model: model.to_owned(),
                    engine: engine.kind().to_string(),
                    threads: threads as u32,
                    batch: batch as u32,
                    mean_ms: s.mean,
                    p50_ms: s.p50,
                    p95_ms: s.p95,
                    p99_ms: s.p99,
                    min_ms: s.min,
                    max_ms: s.max,
                    qps: batch as f64 * 1000.0 / s.mean,
                    runs,
                    warmup: plan.warmup,
                    peak_rss_bytes: peak,
                    device_class: self.facts.device_class.clone(),
                    arch: self.facts.arch.clone(),
                    cpu_model: self.facts.cpu_model.clone(),
                    core_set: self.facts.core_set.clone(),
                    engine_version: engine.engine_version(),
                    library_version: engine.library_version(),
                    worker: self.facts.worker.clone(),
                    measured_at: time::OffsetDateTime::now_utc(),
                }));
                bar.inc(1);
            }
        }
        Ok(())
    }
}

fn unsupported(
    model: &str,
    engine: EngineKind,
    e: &EngineError,
    facts: &DeviceFacts,
) -> ProfileLine {
    let text = e.to_string();
    let prefix = format!("unsupported by {engine}: ");
    let unsupported = if text.starts_with(&prefix) {
        text
    } else {
        format!("{prefix}{text}")
    };
    tracing::warn!(model, %engine, reason = %unsupported, "engine cannot run model");
    ProfileLine::Unsupported(Unsupported {
        model: model.to_owned(),
        engine: engine.to_string(),
        unsupported,
        device_class: facts.device_class.clone(),
        worker: facts.worker.clone(),
    })
}

/// Warm-up, then timed runs; returns the run times in ms and the point's peak RSS.
fn measure(
    session: &mut crate::models::ModelSession,
    inputs: &[Tensor],
    batch: usize,
    plan: &Plan,
) -> Result<(Vec<f64>, u64), EngineError> {
    reset_peak_rss();
    for _ in 0..plan.warmup.max(1) {
        session.run_checked(inputs, batch)?;
    }
    let mut samples = Vec::with_capacity(plan.min_runs as usize);
    let start = Instant::now();
    while samples.len() < plan.max_runs as usize
        && (samples.len() < plan.min_runs as usize || start.elapsed() < plan.budget)
    {
        let t = Instant::now();
        session.run_checked(inputs, batch)?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((samples, peak_rss_bytes()))
}

/// A human-readable table of a sweep's lines.
pub fn table(lines: &[ProfileLine]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:<6} {:>7} {:>5} {:>10} {:>10} {:>10} {:>9} {:>5} {:>9}",
        "model",
        "engine",
        "threads",
        "batch",
        "p50 ms",
        "p95 ms",
        "mean ms",
        "inf/s",
        "runs",
        "peak MiB"
    );
    for line in lines {
        if let ProfileLine::Point(p) = line {
            let _ = writeln!(
                out,
                "{:<13} {:<6} {:>7} {:>5} {:>10.3} {:>10.3} {:>10.3} {:>9.1} {:>5} {:>9.1}",
                p.model,
                p.engine,
                p.threads,
                p.batch,
                p.p50_ms,
                p.p95_ms,
                p.mean_ms,
                p.qps,
                p.runs,
                p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }
    for line in lines {
        if let ProfileLine::Unsupported(u) = line {
            let _ = writeln!(out, "{:<13} {:<6} {}", u.model, u.engine, u.unsupported);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = stats(&mut samples).expect("non-empty");
        assert_eq!(
            (s.p50, s.p95, s.p99, s.min, s.max),
            (50.0, 95.0, 99.0, 1.0, 100.0)
        );
        assert!((s.mean - 50.5).abs() < 1e-9);
        let mut one = vec![7.0];
        let s = stats(&mut one).expect("non-empty");
        assert_eq!((s.p50, s.p99), (7.0, 7.0));
        assert!(stats(&mut []).is_none());
    }

    #[test]
    fn peak_rss_is_read() {
        let before = peak_rss_bytes();
        assert!(before > 0);
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        assert!(
            peak_rss_bytes() >= before + (32 << 20),
            "touching 64 MiB raises the peak"
        );
    }
}
