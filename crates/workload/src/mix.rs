//! Which model each request asks for and its latency target.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::arrivals::Arrivals;
use crate::trace::Planned;

/// Models with weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mix {
    /// (model, weight), weights positive.
    pub models: Vec<(String, f64)>,
}

impl Mix {
    /// Parses `model=weight,...` (a bare model weighs 1), e.g. `squeezenet=3,resnet50`.
    pub fn parse(text: &str) -> Result<Mix, SpecError> {
        let mut models = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once('=') {
                Some((n, w)) => (
                    n.trim(),
                    w.trim()
                        .parse::<f64>()
                        .map_err(|_| SpecError::new(format!("bad weight in '{part}'")))?,
                ),
                None => (part, 1.0),
            };
            if name.is_empty() {
                return Err(SpecError::new(format!("no model in '{part}'")));
            }
            if !(weight.is_finite() && weight > 0.0) {
                return Err(SpecError::new(format!(
                    "weight of {name} must be positive, got {weight}"
                )));
            }
            if models.iter().any(|(m, _)| m == name) {
                return Err(SpecError::new(format!("{name} is in the mix twice")));
            }
            models.push((name.to_owned(), weight));
        }
        if models.is_empty() {
            return Err(SpecError::new("the mix names no model"));
        }
        Ok(Mix { models })
    }

    /// A model drawn by weight.
    fn pick(&self, rng: &mut StdRng) -> &str {
        let total: f64 = self.models.iter().map(|(_, w)| w).sum();
        let mut x = rng.random::<f64>() * total;
        for (m, w) in &self.models {
            if x < *w {
                return m;
            }
            x -= w;
        }
        &self.models[self.models.len() - 1].0
    }
}

/// A latency target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SloSpec {
    /// Milliseconds.
    Absolute(f64),
    /// A multiple of the fastest profiled latency of the model (the SLO-MAEL convention).
    Multiple(f64),
}

impl SloSpec {
    /// Parses `50ms` or `50` (milliseconds) and `x5` or `5x` (a multiple of the fastest).
    pub fn parse(text: &str) -> Result<SloSpec, SpecError> {
        let t = text.trim();
        let bad = || SpecError::new(format!("bad latency target '{text}' (e.g. 50ms or x5)"));
        let (spec, v) = if let Some(m) = t.strip_prefix('x').or_else(|| t.strip_suffix('x')) {
            let v: f64 = m.parse().map_err(|_| bad())?;
            (SloSpec::Multiple(v), v)
        } else {
            let v: f64 = t.trim_end_matches("ms").parse().map_err(|_| bad())?;
            (SloSpec::Absolute(v), v)
        };
        if !(v.is_finite() && v > 0.0) {
            return Err(bad());
        }
        Ok(spec)
    }

    /// The target in ms, given the model's fastest profiled latency (needed for a multiple).
    pub fn resolve(self, model: &str, fastest_ms: Option<f64>) -> Result<f64, SpecError> {
        match self {
            SloSpec::Absolute(ms) => Ok(ms),
            SloSpec::Multiple(k) => fastest_ms.map(|f| k * f).ok_or_else(|| {
                SpecError::new(format!(
                    "{model} has no profile: give its latency target in ms"
                ))
            }),
        }
    }
}

/// A whole workload: arrivals, models, latency targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// When.
    pub arrivals: Arrivals,
    /// What.
    pub mix: Mix,
    /// Latency target of each model not in `slo`.
    pub default_slo: SloSpec,
    /// Per-model latency targets.
    pub slo: BTreeMap<String, SloSpec>,
    /// Samples per request.
    pub samples: u32,
}

impl Workload {
    /// Parses per-model targets `model=spec,...`.
    pub fn parse_slos(text: &str) -> Result<BTreeMap<String, SloSpec>, SpecError> {
        let mut out = BTreeMap::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (m, s) = part
                .split_once('=')
                .ok_or_else(|| SpecError::new(format!("'{part}' is not model=target")))?;
            out.insert(m.trim().to_owned(), SloSpec::parse(s)?);
        }
        Ok(out)
    }

    /// The planned requests under `seed`. `fastest_ms(model)` is the fastest profiled latency
    /// of one request of the model (for targets given as multiples). Models and arrival times
    /// come from separate streams of the seed, so changing the mix keeps the times.
    pub fn plan(
        &self,
        seed: u64,
        fastest_ms: impl Fn(&str) -> Option<f64>,
    ) -> Result<Vec<Planned>, SpecError> {
        let mut targets = BTreeMap::new();
        for (m, _) in &self.mix.models {
            let spec = self.slo.get(m).copied().unwrap_or(self.default_slo);
            targets.insert(m.as_str(), spec.resolve(m, fastest_ms(m))?);
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6d69_785f_6d6f_6465);
        Ok(self
            .arrivals
            .times(seed)
            .into_iter()
            .enumerate()
            .map(|(i, at_ms)| {
                let model = self.mix.pick(&mut rng);
                Planned {
                    seq: i as u64,
                    at_ms,
                    model: model.to_owned(),
                    slo_ms: targets[model],
                    samples: self.samples.max(1),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrivals::{Process, RateSchedule};

    fn workload(mix: &str) -> Workload {
        Workload {
            arrivals: Arrivals {
                process: Process::Poisson,
                schedule: RateSchedule::constant(200.0, 100.0).expect("valid"),
            },
            mix: Mix::parse(mix).expect("valid"),
            default_slo: SloSpec::Multiple(5.0),
            slo: Workload::parse_slos("resnet50=400ms").expect("valid"),
            samples: 1,
        }
    }

    #[test]
    fn the_mix_follows_its_weights_and_targets_resolve() {
        let plan = workload("squeezenet=3,resnet50=1")
            .plan(9, |m| (m == "squeezenet").then_some(4.0))
            .expect("plans");
        let squeeze = plan.iter().filter(|p| p.model == "squeezenet").count() as f64;
        let share = squeeze / plan.len() as f64;
        assert!((share - 0.75).abs() < 0.02, "share {share}");
        for p in &plan {
            let want = if p.model == "squeezenet" { 20.0 } else { 400.0 };
            assert_eq!(p.slo_ms, want);
        }
        assert!(plan.windows(2).all(|w| w[1].seq == w[0].seq + 1));
    }

    #[test]
    fn a_multiple_without_a_profile_is_refused() {
        let e = workload("squeezenet")
            .plan(1, |_| None)
            .expect_err("no profile");
        assert!(e.0.contains("squeezenet"), "{e}");
    }

    #[test]
    fn the_mix_does_not_move_the_times() {
        let a = workload("squeezenet")
            .plan(5, |_| Some(1.0))
            .expect("plans");
        let b = workload("squeezenet=1,resnet50=1")
            .plan(5, |_| Some(1.0))
            .expect("plans");
        let ta: Vec<f64> = a.iter().map(|p| p.at_ms).collect();
        let tb: Vec<f64> = b.iter().map(|p| p.at_ms).collect();
        assert_eq!(ta, tb);
    }

    #[test]
    fn specs_parse_or_say_why_not() {
        assert_eq!(SloSpec::parse("50ms"), Ok(SloSpec::Absolute(50.0)));
        assert_eq!(SloSpec::parse("75"), Ok(SloSpec::Absolute(75.0)));
        assert_eq!(SloSpec::parse("x5"), Ok(SloSpec::Multiple(5.0)));
        assert_eq!(SloSpec::parse("2.5x"), Ok(SloSpec::Multiple(2.5)));
        for bad in ["", "fast", "-5ms", "x0"] {
            assert!(SloSpec::parse(bad).is_err(), "{bad}");
        }
        for bad in ["", "a=0", "a=-1", "a,a", "=2"] {
            assert!(Mix::parse(bad).is_err(), "{bad}");
        }
    }
}
