//! When requests arrive. Every process is open-loop: arrival times are fixed before the run,
//! so a slow system cannot slow the arrivals down.
//!
//! A [`RateSchedule`] gives the offered rate over time (steps and linear ramps); a [`Process`]
//! says how regular the arrivals are around that rate. Arrivals are generated in the
//! schedule's operational time (the integral of the rate): unit-mean gaps there become gaps of
//! mean `1 / rate` in real time, wherever the rate is.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::SpecError;

/// How regular arrivals are.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Process {
    /// Evenly spaced (coefficient of variation 0).
    Constant,
    /// Poisson: exponential gaps (coefficient of variation 1).
    Poisson,
    /// Gamma-distributed gaps with coefficient of variation `cv`: above 1 bursty, below 1 more
    /// regular than Poisson.
    Gamma {
        /// Coefficient of variation of the gaps.
        cv: f64,
    },
}

impl Process {
    /// Parses `constant`, `poisson` or `gamma` (with `cv`).
    pub fn parse(name: &str, cv: Option<f64>) -> Result<Process, SpecError> {
        match name {
            "constant" => Ok(Process::Constant),
            "poisson" => Ok(Process::Poisson),
            "gamma" => {
                let cv = cv.ok_or_else(|| SpecError::new("gamma arrivals need --cv"))?;
                if !(cv.is_finite() && cv > 0.0) {
                    return Err(SpecError::new(format!(
                        "coefficient of variation must be positive, got {cv}"
                    )));
                }
                Ok(Process::Gamma { cv })
            }
            other => Err(SpecError::new(format!(
                "unknown arrival process '{other}' (constant, poisson, gamma)"
            ))),
        }
    }

    /// The coefficient of variation of the gaps.
    pub fn cv(self) -> f64 {
        match self {
            Process::Constant => 0.0,
            Process::Poisson => 1.0,
            Process::Gamma { cv } => cv,
        }
    }

    /// One gap of unit mean.
    fn gap(self, rng: &mut StdRng) -> f64 {
        match self {
            Process::Constant => 1.0,
            Process::Poisson => exponential(rng),
            Process::Gamma { cv } => {
                let shape = 1.0 / (cv * cv);
                gamma(rng, shape) / shape
            }
        }
    }
}

/// One part of a schedule: `secs` seconds with the rate going linearly from `from_rps` to
/// `to_rps` (equal for a step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// Length, seconds.
    pub secs: f64,
    /// Rate at the start, requests per second.
    pub from_rps: f64,
    /// Rate at the end, requests per second.
    pub to_rps: f64,
}

impl Segment {
    /// Expected arrivals in the segment.
    fn mass(&self) -> f64 {
        (self.from_rps + self.to_rps) / 2.0 * self.secs
    }

    /// The time into the segment (s) by which `mass` arrivals are expected.
    fn time_of(&self, mass: f64) -> f64 {
        let a = self.from_rps;
        let slope = (self.to_rps - self.from_rps) / self.secs;
        if slope.abs() < 1e-12 {
            return mass / a;
        }
        // a t + slope t² / 2 = mass
        let disc = (a * a + 2.0 * slope * mass).max(0.0);
        ((disc.sqrt() - a) / slope).clamp(0.0, self.secs)
    }
}

/// The offered rate over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateSchedule {
    /// Parts, in order.
    pub segments: Vec<Segment>,
}

impl RateSchedule {
    /// `rps` for `secs` seconds.
    pub fn constant(rps: f64, secs: f64) -> Result<RateSchedule, SpecError> {
        RateSchedule::new(vec![Segment {
            secs,
            from_rps: rps,
            to_rps: rps,
        }])
    }

    /// A schedule of checked segments.
    pub fn new(segments: Vec<Segment>) -> Result<RateSchedule, SpecError> {
        if segments.is_empty() {
            return Err(SpecError::new("a schedule needs at least one segment"));
        }
        for s in &segments {
            if !(s.secs.is_finite() && s.secs > 0.0) {
                return Err(SpecError::new(format!(
                    "segment length must be positive, got {} s",
                    s.secs
                )));
            }
            for r in [s.from_rps, s.to_rps] {
                if !(r.is_finite() && r >= 0.0) {
                    return Err(SpecError::new(format!(
                        "rate must be zero or more, got {r}/s"
                    )));
                }
            }
        }
        Ok(RateSchedule { segments })
    }

    /// Parses `SECS:RATE` steps and `SECS:FROM..TO` ramps, comma-separated, e.g.
    /// `30:5,60:5..40,30:40` (seconds may carry an `s`).
    pub fn parse(text: &str) -> Result<RateSchedule, SpecError> {
        let mut segments = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (secs, rate) = part.split_once(':').ok_or_else(|| {
                SpecError::new(format!("schedule part '{part}' is not SECS:RATE"))
            })?;
            let secs: f64 = secs
                .trim()
                .trim_end_matches('s')
                .parse()
                .map_err(|_| SpecError::new(format!("bad duration in '{part}'")))?;
            let num = |t: &str| {
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| SpecError::new(format!("bad rate in '{part}'")))
            };
            let (from_rps, to_rps) = match rate.split_once("..") {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let r = num(rate)?;
                    (r, r)
                }
            };
            segments.push(Segment {
                secs,
                from_rps,
                to_rps,
            });
        }
        RateSchedule::new(segments)
    }

    /// Total length, seconds.
    pub fn secs(&self) -> f64 {
        self.segments.iter().map(|s| s.secs).sum()
    }

    /// Expected arrivals over the whole schedule.
    pub fn expected(&self) -> f64 {
        self.segments.iter().map(Segment::mass).sum()
    }

    /// Mean offered rate, requests per second.
    pub fn mean_rps(&self) -> f64 {
        self.expected() / self.secs()
    }

    /// The time (ms from the start) by which `mass` arrivals are expected; `None` past the end.
    fn time_of(&self, mut mass: f64) -> Option<f64> {
        let mut start = 0.0;
        for s in &self.segments {
            let m = s.mass();
            if mass < m {
                return Some((start + s.time_of(mass)) * 1000.0);
            }
            mass -= m;
            start += s.secs;
        }
        None
    }
}

/// An arrival process over a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arrivals {
    /// Regularity.
    pub process: Process,
    /// Offered rate over time.
    pub schedule: RateSchedule,
}

impl Arrivals {
    /// Arrival times, ms from the start, ascending; the same `seed` gives the same times.
    pub fn times(&self, seed: u64) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(self.schedule.expected().ceil() as usize + 16);
        // The first arrival falls a random fraction of a gap in, so that constant arrivals at
        // different seeds are not all aligned at zero.
        let mut mass = match self.process {
            Process::Constant => rng.random::<f64>(),
            _ => self.process.gap(&mut rng),
        };
        while let Some(t) = self.schedule.time_of(mass) {
            out.push(t);
            mass += self.process.gap(&mut rng);
        }
        out
    }
}

fn exponential(rng: &mut StdRng) -> f64 {
    // 1 - U is in (0, 1]: never ln(0).
    -(1.0 - rng.random::<f64>()).ln()
}

fn standard_normal(rng: &mut StdRng) -> f64 {
    // Box-Muller.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia and Tsang, with the usual boost below shape 1.
fn gamma(rng: &mut StdRng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.random::<f64>();
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(times: &[f64]) -> Vec<f64> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn mean_cv(x: &[f64]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn rates_and_burstiness_are_what_was_asked() {
        let schedule = RateSchedule::constant(100.0, 600.0).expect("valid");
        for (process, cv) in [
            (Process::Constant, 0.0),
            (Process::Poisson, 1.0),
            (Process::Gamma { cv: 3.0 }, 3.0),
            (Process::Gamma { cv: 0.5 }, 0.5),
        ] {
            let a = Arrivals {
                process,
                schedule: schedule.clone(),
            };
            let t = a.times(7);
            let n = t.len() as f64;
            assert!(
                (n - 60_000.0).abs() < 60_000.0 * 0.05,
                "{process:?}: {n} arrivals"
            );
            let (mean, got_cv) = mean_cv(&gaps(&t));
            assert!((mean - 10.0).abs() < 0.6, "{process:?}: mean gap {mean}");
            assert!(
                (got_cv - cv).abs() < 0.1 * cv.max(0.5),
                "{process:?}: cv {got_cv}"
            );
            assert!(t.windows(2).all(|w| w[0] <= w[1]));
            assert!(t.iter().all(|&x| (0.0..600_000.0).contains(&x)));
        }
    }

    #[test]
    fn a_seed_fixes_the_sequence() {
        let a = Arrivals {
            process: Process::Gamma { cv: 2.0 },
            schedule: RateSchedule::parse("10:5,10:5..50").expect("valid"),
        };
        assert_eq!(a.times(3), a.times(3));
        assert_ne!(a.times(3), a.times(4));
    }

    #[test]
    fn ramps_and_steps_follow_the_schedule() {
        let s = RateSchedule::parse("100s:10, 100:10..50, 100:0").expect("valid");
        assert_eq!(s.secs(), 300.0);
        assert!((s.expected() - (1000.0 + 3000.0)).abs() < 1e-9);
        let t = Arrivals {
            process: Process::Poisson,
            schedule: s,
        }
        .times(1);
        let count = |a: f64, b: f64| t.iter().filter(|&&x| x >= a && x < b).count() as f64;
        assert!((count(0.0, 100_000.0) - 1000.0).abs() < 120.0);
        // The ramp's second half carries (30+50)/2*50 = 2000, its first (10+30)/2*50 = 1000.
        assert!((count(100_000.0, 150_000.0) - 1000.0).abs() < 120.0);
        assert!((count(150_000.0, 200_000.0) - 2000.0).abs() < 180.0);
        assert_eq!(count(200_000.0, 300_000.0), 0.0);
    }

    #[test]
    fn bad_schedules_are_refused_with_a_reason() {
        for bad in ["", "10", "x:5", "10:-1", "0:5", "10:5..y"] {
            let e = RateSchedule::parse(bad).expect_err(bad);
            assert!(!e.0.is_empty());
        }
        assert!(Process::parse("gamma", None).is_err());
        assert!(Process::parse("gamma", Some(0.0)).is_err());
        assert!(Process::parse("uniform", None).is_err());
    }
}
