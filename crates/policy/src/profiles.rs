//! Execution estimates per (device class, model), indexed for decisions in microseconds.

use crate::{ClassId, EngineId, ModelId};

/// A configuration with a profiled execution time per run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfigOption {
    /// Engine.
    pub engine: EngineId,
    /// Intra-op threads.
    pub threads: u32,
    /// Samples per run.
    pub batch: u32,
}

/// Estimated execution time of one run of each profiled configuration, per (class, model), with
/// a cold-start estimate for what was never measured.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileIndex {
    classes: usize,
    models: usize,
    points: Vec<Vec<(ConfigOption, f64)>>,
    cold_per_sample_ms: Vec<f64>,
    cold_default_ms: f64,
}

impl ProfileIndex {
    /// An index for `classes` device classes and `models` models; a model with no estimate at all
    /// is assumed to take `cold_default_ms` per sample.
    pub fn new(classes: usize, models: usize, cold_default_ms: f64) -> Self {
        ProfileIndex {
            classes,
            models,
            points: vec![Vec::new(); classes * models],
            cold_per_sample_ms: vec![cold_default_ms; models],
            cold_default_ms,
        }
    }

    /// Device classes indexed.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Models indexed.
    pub fn models(&self) -> usize {
        self.models
    }

    fn slot(&self, class: ClassId, model: ModelId) -> Option<usize> {
        let (c, m) = (class as usize, model as usize);
        (c < self.classes && m < self.models).then_some(c * self.models + m)
    }

    /// Adds (or replaces) the execution estimate of one run of `option`.
    pub fn add(&mut self, class: ClassId, model: ModelId, option: ConfigOption, exec_ms: f64) {
        let Some(i) = self.slot(class, model) else {
            return;
        };
        if !(exec_ms.is_finite() && exec_ms >= 0.0) || option.batch == 0 || option.threads == 0 {
            return;
        }
        let list = &mut self.points[i];
        match list.iter_mut().find(|(o, _)| *o == option) {
            Some(entry) => entry.1 = exec_ms,
            None => list.push((option, exec_ms)),
        }
    }

    /// Sets the cold-start estimate per sample for a model (used where a class has no profile).
    pub fn set_cold(&mut self, model: ModelId, per_sample_ms: f64) {
        if let Some(c) = self.cold_per_sample_ms.get_mut(model as usize) {
            *c = per_sample_ms;
        }
    }

    /// The profiled options of a (class, model).
    pub fn options(&self, class: ClassId, model: ModelId) -> &[(ConfigOption, f64)] {
        self.slot(class, model).map_or(&[], |i| &self.points[i])
    }

    fn cold(&self, model: ModelId, samples: u32, max_threads: u32) -> (ConfigOption, f64) {
        let per_sample = self
            .cold_per_sample_ms
            .get(model as usize)
            .copied()
            .unwrap_or(self.cold_default_ms);
        (
            ConfigOption {
                engine: 0,
                threads: max_threads.max(1),
                batch: samples.max(1),
            },
            per_sample * f64::from(samples.max(1)),
        )
    }

    /// The fastest way to run `samples` samples on a class: over every profiled (engine,
    /// threads ≤ `max_threads`, batch ≤ samples), `ceil(samples / batch)` runs each.
    pub fn fastest(
        &self,
        class: ClassId,
        model: ModelId,
        samples: u32,
        max_threads: u32,
    ) -> (ConfigOption, f64) {
        let samples = samples.max(1);
        let mut best: Option<(ConfigOption, f64)> = None;
        for &(option, run_ms) in self.options(class, model) {
            if option.threads > max_threads || option.batch > samples {
                continue;
            }
            let total = f64::from(samples.div_ceil(option.batch)) * run_ms;
            if best.is_none_or(|(_, b)| total < b) {
                best = Some((option, total));
            }
        }
        best.unwrap_or_else(|| self.cold(model, samples, max_threads))
    }

    /// The baselines' fixed configuration: engine 0 (ONNX Runtime) with as many threads as
    /// profiled up to `max_threads`, every sample in one run. Its time comes from the profile of
    /// that batch, else from the largest smaller batch scaled by samples, else from the smallest
    /// larger batch, else cold start.
    pub fn fixed(
        &self,
        class: ClassId,
        model: ModelId,
        samples: u32,
        max_threads: u32,
    ) -> (ConfigOption, f64) {
        let samples = samples.max(1);
        let base = self
            .options(class, model)
            .iter()
            .filter(|(o, _)| o.engine == 0 && o.threads <= max_threads);
        let threads = base.clone().map(|(o, _)| o.threads).max();
        let Some(threads) = threads else {
            return self.cold(model, samples, max_threads);
        };
        let option = ConfigOption {
            engine: 0,
            threads,
            batch: samples,
        };
        let same_threads = base.filter(|(o, _)| o.threads == threads);
        // The largest profiled batch below `samples`, and the smallest above it.
        let mut below: Option<(u32, f64)> = None;
        let mut above: Option<(u32, f64)> = None;
        for &(o, run_ms) in same_threads {
            if o.batch == samples {
                return (option, run_ms);
            }
            if o.batch < samples && below.is_none_or(|(b, _)| o.batch > b) {
                below = Some((o.batch, run_ms));
            }
            if o.batch > samples && above.is_none_or(|(b, _)| o.batch < b) {
                above = Some((o.batch, run_ms));
            }
        }
        match (below, above) {
            (Some((b, run_ms)), _) => (option, run_ms * f64::from(samples) / f64::from(b)),
            // A larger batch's run bounds a smaller one's from above.
            (None, Some((_, run_ms))) => (option, run_ms),
            (None, None) => self.cold(model, samples, max_threads),
        }
    }
}

/// Engines by index, as the index numbers them: 0, ONNX Runtime, is the baselines' engine.
pub const ENGINES: [&str; 2] = ["ort", "tract"];

/// One profiled configuration named as the profiling store names it, for
/// [`ProfileIndex::from_points`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NamedPoint<'a> {
    /// Device class.
    pub device_class: &'a str,
    /// Engine name (one of [`ENGINES`]; others are skipped).
    pub engine: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Intra-op threads.
    pub threads: u32,
    /// Samples per run.
    pub batch: u32,
    /// Estimated time of one run, ms: what decisions use.
    pub exec_ms: f64,
    /// Slow-case time of one run (the p99), ms: the cold-start rule starts from the slowest per
    /// sample of a model.
    pub slow_ms: f64,
}

impl ProfileIndex {
    /// The index a scheduler builds from named profile points, for device classes `classes`
    /// and models `models` (ids are positions in these lists; engine ids are positions in
    /// [`ENGINES`]).
    ///
    /// A point enters the index when its class, model and engine are known and
    /// `loaded(class, model, engine, threads)` says the class's workers run that configuration.
    /// Every point of a known model and engine, whatever its class, counts for the model's
    /// cold-start estimate: `cold_factor` times the slowest per-sample time (`slow_ms / batch`);
    /// a model with no point at all takes `cold_default_ms` per sample.
    pub fn from_points<'a>(
        classes: &[impl AsRef<str>],
        models: &[impl AsRef<str>],
        points: impl IntoIterator<Item = NamedPoint<'a>>,
        loaded: impl Fn(ClassId, ModelId, EngineId, u32) -> bool,
        cold_factor: f64,
        cold_default_ms: f64,
    ) -> ProfileIndex {
        let mut index = ProfileIndex::new(classes.len(), models.len(), cold_default_ms);
        let mut worst: Vec<Option<f64>> = vec![None; models.len()];
        for p in points {
            let (Some(m), Some(e)) = (
                position(models, p.model),
                ENGINES.iter().position(|&x| x == p.engine),
            ) else {
                continue;
            };
            let per_sample = p.slow_ms / f64::from(p.batch.max(1));
            let w = &mut worst[m as usize];
            *w = Some(w.unwrap_or(0.0).max(per_sample));
            let Some(class) = position(classes, p.device_class) else {
                continue;
            };
            if !loaded(class, m, e as EngineId, p.threads) {
                continue;
            }
            index.add(
                class,
                m,
                ConfigOption {
                    engine: e as EngineId,
                    threads: p.threads,
                    batch: p.batch,
                },
                p.exec_ms,
            );
        }
        for (m, w) in worst.into_iter().enumerate() {
            if let Some(w) = w {
                index.set_cold(m as ModelId, w * cold_factor);
            }
        }
        index
    }
}

fn position(names: &[impl AsRef<str>], name: &str) -> Option<u16> {
    names
        .iter()
        .position(|n| n.as_ref() == name)
        .map(|i| i as u16)
}
