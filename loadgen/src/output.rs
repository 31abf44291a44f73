//! What a run leaves behind: the report (JSON), the per-request records (CSV), plots (SVG), and
//! for comparisons the table of policies against loads with the violation ratios.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use synergai_workload::{Record, Report, plot, report};

/// Writes `report.json`, `records.csv` and `latency-cdf.svg` into `dir`.
pub fn write_run(dir: &Path, report: &Report, records: &[Record]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write(dir, "report.json", &serde_json::to_string_pretty(report)?)?;
    write(dir, "records.csv", &report::records_csv(records))?;
    let lat: Vec<f64> = records.iter().filter_map(|r| r.latency_ms).collect();
    let mut targets: Vec<(String, f64)> = Vec::new();
    for r in records {
        if !targets.iter().any(|(m, _)| m == &r.model) {
            targets.push((r.model.clone(), r.slo_ms));
        }
    }
    let markers: Vec<(String, f64)> = targets
        .into_iter()
        .map(|(m, t)| (format!("{m} target"), t))
        .collect();
    write(
        dir,
        "latency-cdf.svg",
        &plot::latency_cdf(
            &format!("End-to-end latency, {} ({})", report.policy, report.mode),
            &[(report.policy.clone(), lat)],
            &markers,
        ),
    )?;
    Ok(())
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

/// Client latencies of each run of a comparison: (policy, load, latencies in ms).
pub type Latencies = Vec<(String, f64, Vec<f64>)>;

/// Several policies on the same seeded traces at several loads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    /// `live` or `simulated`.
    pub mode: String,
    /// Capacity the profiles predict, requests per second.
    pub capacity_rps: f64,
    /// Emulated parts of the setup.
    pub emulated: Vec<String>,
    /// One report per (load, policy), loads ascending.
    pub runs: Vec<Report>,
}

/// One baseline's violations against `synergai`'s at one load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// Offered load as a fraction of capacity.
    pub load: f64,
    /// Baseline policy.
    pub baseline: String,
    /// Its violations.
    pub baseline_violations: u64,
    /// `synergai`'s violations on the same trace.
    pub synergai_violations: u64,
    /// `baseline_violations / max(synergai_violations, 1)`: with no `synergai` violation the
    /// ratio is a lower bound.
    pub ratio: f64,
}

impl Comparison {
    /// The loads run, ascending.
    pub fn loads(&self) -> Vec<f64> {
        let mut l: Vec<f64> = self.runs.iter().filter_map(|r| r.load_fraction).collect();
        l.sort_by(f64::total_cmp);
        l.dedup();
        l
    }

    /// The policies run, in first-run order.
    pub fn policies(&self) -> Vec<String> {
        let mut p: Vec<String> = Vec::new();
        for r in &self.runs {
            if !p.contains(&r.policy) {
                p.push(r.policy.clone());
            }
        }
        p
    }

    fn run(&self, policy: &str, load: f64) -> Option<&Report> {
        self.runs
            .iter()
            .find(|r| r.policy == policy && r.load_fraction == Some(load))
    }

    /// Every baseline against `synergai` at every load both ran.
    pub fn ratios(&self) -> Vec<Ratio> {
        let mut out = Vec::new();
        for load in self.loads() {
            let Some(s) = self.run("synergai", load) else {
                continue;
            };
            for p in self.policies().into_iter().filter(|p| p != "synergai") {
                if let Some(b) = self.run(&p, load) {
                    out.push(Ratio {
                        load,
                        baseline: p,
                        baseline_violations: b.violations,
                        synergai_violations: s.violations,
                        ratio: b.violations as f64 / s.violations.max(1) as f64,
                    });
                }
            }
        }
        out
    }

    /// The mean ratio of `baseline` over loads in `[lo, hi]`, with how many loads it averages.
    pub fn mean_ratio(&self, baseline: &str, lo: f64, hi: f64) -> Option<(f64, usize)> {
        let r: Vec<f64> = self
            .ratios()
            .into_iter()
            .filter(|r| r.baseline == baseline && r.load >= lo - 1e-9 && r.load <= hi + 1e-9)
            .map(|r| r.ratio)
            .collect();
        (!r.is_empty()).then(|| (r.iter().sum::<f64>() / r.len() as f64, r.len()))
    }

    /// `baseline`'s violations summed over loads in `[lo, hi]`, divided by `synergai`'s summed
    /// over the same loads (floored at 1): unlike the mean of per-load ratios, not dominated by
    /// a load where `synergai` has almost none.
    pub fn pooled_ratio(&self, baseline: &str, lo: f64, hi: f64) -> Option<f64> {
        let r: Vec<Ratio> = self
            .ratios()
            .into_iter()
            .filter(|r| r.baseline == baseline && r.load >= lo - 1e-9 && r.load <= hi + 1e-9)
            .collect();
        let b: u64 = r.iter().map(|r| r.baseline_violations).sum();
        let s: u64 = r.iter().map(|r| r.synergai_violations).sum();
        (!r.is_empty()).then(|| b as f64 / s.max(1) as f64)
    }

    /// The table a person reads: a row per (load, policy).
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:>6} {:>9} {:<13} {:>7} {:>6} {:>5} {:>10} {:>10} {:>10} {:>9} {:>9}",
            "load",
            "offered/s",
            "policy",
            "sent",
            "errors",
            "lost",
            "violations",
            "excess ms",
            "p99 ms",
            "goodput/s",
            "ratio"
        );
        let ratios = self.ratios();
        for load in self.loads() {
            for p in self.policies() {
                let Some(r) = self.run(&p, load) else {
                    continue;
                };
                let ratio = ratios
                    .iter()
                    .find(|x| x.load == load && x.baseline == p)
                    .map(|x| format!("{:.2}x", x.ratio))
                    .unwrap_or_else(|| "-".into());
                let _ = writeln!(
                    s,
                    "{:>5.0}% {:>9.1} {:<13} {:>7} {:>6} {:>5} {:>9.2}% {:>10.0} {:>10.1} {:>9.1} {:>9}",
                    load * 100.0,
                    r.offered_rps,
                    r.policy,
                    r.sent,
                    r.errors,
                    r.lost,
                    r.violation_rate * 100.0,
                    r.excess_ms_total,
                    r.p99_ms,
                    r.goodput_rps,
                    ratio
                );
            }
        }
        let _ = writeln!(
            s,
            "ratio: the policy's violations / synergai's on the same trace (synergai's count floored at 1)"
        );
        for p in self.policies().into_iter().filter(|p| p != "synergai") {
            if let (Some((m, n)), Some(pooled)) = (
                self.mean_ratio(&p, 0.5, 1.0),
                self.pooled_ratio(&p, 0.5, 1.0),
            ) {
                let _ = writeln!(
                    s,
                    "{p} / synergai over loads 50%..100% ({n} loads): mean of ratios {m:.2}x, pooled {pooled:.2}x"
                );
            }
        }
        s
    }

    /// Writes `comparison.json`, `comparison.txt`, `violations.svg` and `latency-cdf.svg` (at the
    /// highest load at or below 100%) into `dir`.
    pub fn write(&self, dir: &Path, latencies: &Latencies) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        write(dir, "comparison.json", &serde_json::to_string_pretty(self)?)?;
        write(dir, "comparison.txt", &self.table())?;
        let series: Vec<(String, Vec<(f64, f64)>)> = self
            .policies()
            .into_iter()
            .map(|p| {
                let pts = self
                    .runs
                    .iter()
                    .filter(|r| r.policy == p)
                    .filter_map(|r| r.load_fraction.map(|l| (l * 100.0, r.violation_rate)))
                    .collect();
                (p, pts)
            })
            .collect();
        write(
            dir,
            "violations.svg",
            &plot::violation_curve(
                &format!("QoS violations against offered load ({})", self.mode),
                "offered load, % of predicted capacity",
                &series,
            ),
        )?;
        let shown = self.loads().into_iter().rfind(|l| *l <= 1.0 + 1e-9);
        if let Some(load) = shown {
            let cdf: Vec<(String, Vec<f64>)> = latencies
                .iter()
                .filter(|(_, l, _)| *l == load)
                .map(|(p, _, v)| (p.clone(), v.clone()))
                .collect();
            write(
                dir,
                "latency-cdf.svg",
                &plot::latency_cdf(
                    &format!(
                        "End-to-end latency at {:.0}% of capacity ({})",
                        load * 100.0,
                        self.mode
                    ),
                    &cdf,
                    &[],
                ),
            )?;
        }
        let bars: Vec<(String, f64)> = self
            .policies()
            .into_iter()
            .filter(|p| p != "synergai")
            .filter_map(|p| self.mean_ratio(&p, 0.5, 1.0).map(|(m, _)| (p, m)))
            .collect();
        write(
            dir,
            "ratios.svg",
            &plot::bars(
                &format!(
                    "Violations relative to synergai, mean over 50-100% load ({})",
                    self.mode
                ),
                "baseline violations / synergai violations",
                &bars,
            ),
        )?;
        Ok(())
    }
}

/// Live against simulated, per (load, policy) both ran: violation rates and p99 with their
/// relative gaps (relative to live), and the mean absolute relative gaps.
pub fn gap_table(live: &Comparison, sim: &Comparison) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6} {:<13} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
        "load", "policy", "live viol", "sim viol", "gap", "live p99", "sim p99", "gap"
    );
    let rel = |l: f64, m: f64| if l.abs() > 0.0 { (m - l) / l } else { f64::NAN };
    let (mut vg, mut pg) = (Vec::new(), Vec::new());
    // Violations and answered requests per policy, live and simulated, over matched runs.
    let mut pooled: Vec<(String, [f64; 4])> = Vec::new();
    for load in live.loads() {
        for p in live.policies() {
            let (Some(l), Some(m)) = (live.run(&p, load), sim.run(&p, load)) else {
                continue;
            };
            let answered = |r: &Report| (r.ok + r.errors) as f64;
            let i = match pooled.iter().position(|(q, _)| *q == p) {
                Some(i) => i,
                None => {
                    pooled.push((p.clone(), [0.0; 4]));
                    pooled.len() - 1
                }
            };
            let acc = &mut pooled[i].1;
            acc[0] += l.violations as f64;
            acc[1] += answered(l);
            acc[2] += m.violations as f64;
            acc[3] += answered(m);
            let v = rel(l.violation_rate, m.violation_rate);
            let q = rel(l.p99_ms, m.p99_ms);
            if v.is_finite() {
                vg.push(v.abs());
            }
            if q.is_finite() {
                pg.push(q.abs());
            }
            let _ = writeln!(
                s,
                "{:>5.0}% {:<13} {:>9.2}% {:>9.2}% {:>7.0}% {:>10.1} {:>10.1} {:>7.0}%",
                load * 100.0,
                p,
                l.violation_rate * 100.0,
                m.violation_rate * 100.0,
                v * 100.0,
                l.p99_ms,
                m.p99_ms,
                q * 100.0
            );
        }
    }
    let mean = |x: &[f64]| {
        if x.is_empty() {
            f64::NAN
        } else {
            x.iter().sum::<f64>() / x.len() as f64
        }
    };
    let _ = writeln!(
        s,
        "mean |relative gap|: violation rate {:.0}% ({} pairs), p99 {:.0}% ({} pairs)",
        mean(&vg) * 100.0,
        vg.len(),
        mean(&pg) * 100.0,
        pg.len()
    );
    // Pooled: each policy's violation rate over all its loads, live against simulated.
    let rate = |v: f64, n: f64| if n > 0.0 { v / n } else { f64::NAN };
    let mut total = [0.0; 4];
    let mut per_policy = Vec::new();
    for (p, a) in &pooled {
        for k in 0..4 {
            total[k] += a[k];
        }
        let g = rel(rate(a[0], a[1]), rate(a[2], a[3]));
        per_policy.push(format!("{p} {:+.0}%", g * 100.0));
    }
    let g = rel(rate(total[0], total[1]), rate(total[2], total[3]));
    let _ = writeln!(
        s,
        "pooled over loads, relative gap of violation rate: all policies {:+.0}% ({:.2}% live, {:.2}% simulated); {}",
        g * 100.0,
        rate(total[0], total[1]) * 100.0,
        rate(total[2], total[3]) * 100.0,
        per_policy.join(", ")
    );
    for c in [live, sim] {
        if let Some((m, n)) = c.mean_ratio("slo-mael", 0.5, 1.0) {
            let _ = writeln!(
                s,
                "{}: slo-mael / synergai violations over 50%..100% ({n} loads): {m:.2}x",
                c.mode
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use synergai_workload::report::RunInfo;

    fn report(policy: &str, load: f64, violations: u64) -> Report {
        let records: Vec<Record> = (0..100)
            .map(|i| Record {
                seq: i,
                model: "m".into(),
                slo_ms: 10.0,
                code: 200,
                latency_ms: Some(if i < violations { 20.0 } else { 5.0 }),
                ..Record::default()
            })
            .collect();
        Report::new(
            RunInfo {
                policy: policy.into(),
                mode: "simulated".into(),
                duration_s: 10.0,
                load_fraction: Some(load),
                ..RunInfo::default()
            },
            &records,
        )
    }

    #[test]
    fn ratios_pair_runs_at_the_same_load() {
        let c = Comparison {
            mode: "simulated".into(),
            capacity_rps: 10.0,
            emulated: vec![],
            runs: vec![
                report("synergai", 0.5, 2),
                report("slo-mael", 0.5, 10),
                report("synergai", 1.0, 0),
                report("slo-mael", 1.0, 30),
                report("slo-mael", 1.3, 50),
            ],
        };
        let r = c.ratios();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].ratio, 5.0);
        // No synergai violation: the count is floored at 1.
        assert_eq!(r[1].ratio, 30.0);
        assert_eq!(c.mean_ratio("slo-mael", 0.5, 1.0), Some((17.5, 2)));
        // (10 + 30) / (2 + 0)
        assert_eq!(c.pooled_ratio("slo-mael", 0.5, 1.0), Some(20.0));
        let t = c.table();
        assert!(t.contains("mean of ratios 17.50x, pooled 20.00x"), "{t}");
        assert_eq!(c.loads(), vec![0.5, 1.0, 1.3]);
    }

    #[test]
    fn the_gap_is_relative_to_live_per_run_and_pooled() {
        let comparison = |mode: &str, runs| Comparison {
            mode: mode.into(),
            capacity_rps: 10.0,
            emulated: vec![],
            runs,
        };
        let live = comparison(
            "live",
            vec![report("synergai", 0.5, 10), report("synergai", 1.0, 30)],
        );
        let sim = comparison(
            "simulated",
            vec![report("synergai", 0.5, 5), report("synergai", 1.0, 35)],
        );
        let t = gap_table(&live, &sim);
        // Per run: -50% and +17%; mean of their sizes 33%.
        assert!(t.contains("violation rate 33% (2 pairs)"), "{t}");
        // Pooled: 40 against 40 violations over the same requests.
        assert!(
            t.contains("all policies +0% (20.00% live, 20.00% simulated); synergai +0%"),
            "{t}"
        );
    }
}
