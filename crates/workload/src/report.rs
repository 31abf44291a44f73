//! Per-request records and the report computed from them.
//!
//! A request *violates* its latency target when it was answered later than the target (as the
//! client measured it, from send to reply) or answered with an error: a refused or shed request
//! missed its target too. `lost` counts requests that got no answer at all; it must be 0.
//! `excess_ms_total` sums, over late answers, how far past the target they came. Goodput is
//! answers within target per second of the run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What happened to one request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the planned sequence.
    pub seq: u64,
    /// Model.
    pub model: String,
    /// Planned send time, ms from the start.
    pub planned_ms: f64,
    /// Actual send time, ms from the start.
    pub sent_ms: f64,
    /// Latency target, ms.
    pub slo_ms: f64,
    /// End-to-end latency seen by the client (send to reply), ms; `None` when no answer came.
    pub latency_ms: Option<f64>,
    /// 200, an error code (400, 404, 413, 500, 503, 504), or 0 when no answer came.
    pub code: u16,
    /// The error message of an error answer.
    pub error: Option<String>,
    /// Request id given by intake.
    pub request_id: Option<String>,
    /// Site that ran it.
    pub site: Option<String>,
    /// Worker that ran it.
    pub worker: Option<String>,
    /// Device class of that worker.
    pub device_class: Option<String>,
    /// Engine.
    pub engine: Option<String>,
    /// Intra-op threads.
    pub threads: Option<u32>,
    /// Samples per run.
    pub batch: Option<u32>,
    /// Time queued at the worker, ms (server side).
    pub queue_ms: Option<f64>,
    /// Execution time, ms (server side).
    pub exec_ms: Option<f64>,
    /// Arrival at intake to reply, ms (server side).
    pub total_ms: Option<f64>,
    /// Policy that placed it, as the reply says.
    pub policy: Option<String>,
    /// Answers beyond the first (must be 0: every request is answered at most once).
    #[serde(default)]
    pub duplicates: u32,
}

impl Record {
    /// Whether an answer came.
    pub fn answered(&self) -> bool {
        self.code != 0
    }

    /// Whether it was answered with a result.
    pub fn ok(&self) -> bool {
        self.code == 200
    }

    /// Whether it missed its target (late, or answered with an error).
    pub fn violated(&self) -> bool {
        match (self.code, self.latency_ms) {
            (200, Some(l)) => l > self.slo_ms,
            (0, _) => false,
            _ => true,
        }
    }

    /// How far past the target a late result came, ms.
    pub fn excess_ms(&self) -> f64 {
        match (self.code, self.latency_ms) {
            (200, Some(l)) => (l - self.slo_ms).max(0.0),
            _ => 0.0,
        }
    }
}

/// Counts and latency percentiles of a set of records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Requests sent.
    pub sent: u64,
    /// Answered with a result.
    pub ok: u64,
    /// Answered with an error.
    pub errors: u64,
    /// Not answered.
    pub lost: u64,
    /// Missed their target (late or error).
    pub violations: u64,
    /// `violations / (ok + errors)`.
    pub violation_rate: f64,
    /// Sum over late results of the time past the target, ms.
    pub excess_ms_total: f64,
    /// Latency percentiles of results (client side), ms.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Results within target per second.
    pub goodput_rps: f64,
    /// Error answers by code.
    pub error_codes: BTreeMap<u16, u64>,
}

impl Breakdown {
    /// The breakdown of `records` over a run of `secs` seconds.
    pub fn of<'a>(records: impl IntoIterator<Item = &'a Record>, secs: f64) -> Breakdown {
        let mut b = Breakdown::default();
        let mut lat = Vec::new();
        let mut good = 0u64;
        for r in records {
            b.sent += 1;
            match r.code {
                0 => b.lost += 1,
                200 => {
                    b.ok += 1;
                    if let Some(l) = r.latency_ms {
                        lat.push(l);
                    }
                }
                c => {
                    b.errors += 1;
                    *b.error_codes.entry(c).or_default() += 1;
                }
            }
            if r.violated() {
                b.violations += 1;
            } else if r.ok() {
                good += 1;
            }
            b.excess_ms_total += r.excess_ms();
        }
        let answered = b.ok + b.errors;
        b.violation_rate = if answered == 0 {
            0.0
        } else {
            b.violations as f64 / answered as f64
        };
        lat.sort_by(f64::total_cmp);
        b.p50_ms = percentile(&lat, 50.0);
        b.p95_ms = percentile(&lat, 95.0);
        b.p99_ms = percentile(&lat, 99.0);
        b.goodput_rps = if secs > 0.0 { good as f64 / secs } else { 0.0 };
        b
    }
}

/// The nearest-rank percentile of sorted values (0 for none).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A run's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Policy the scheduler ran.
    pub policy: String,
    /// `live` or `simulated`.
    pub mode: String,
    /// Seed of the planned sequence.
    pub seed: u64,
    /// Length of the run (planned arrivals), seconds.
    pub duration_s: f64,
    /// Offered load, requests per second (planned).
    pub offered_rps: f64,
    /// Offered load as a fraction of the capacity the profiles predict, when known.
    pub load_fraction: Option<f64>,
    /// Emulated parts of the setup (WAN delays, device profiles of hardware not present); empty
    /// when everything was real.
    pub emulated: Vec<String>,
    /// Requests sent.
    pub sent: u64,
    /// Answered with a result.
    pub ok: u64,
    /// Answered with an error.
    pub errors: u64,
    /// Not answered (must be 0).
    pub lost: u64,
    /// Answers beyond the first to the same request (must be 0).
    #[serde(default)]
    pub duplicates: u64,
    /// Missed their target (late or error).
    pub violations: u64,
    /// `violations / (ok + errors)`.
    pub violation_rate: f64,
    /// Sum over late results of the time past the target, ms.
    pub excess_ms_total: f64,
    /// Client-side latency percentiles of results, ms.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Results within target per second.
    pub goodput_rps: f64,
    /// Error answers by code.
    pub error_codes: BTreeMap<u16, u64>,
    /// Per model.
    pub per_model: BTreeMap<String, Breakdown>,
    /// Per site that ran the request (`-` for requests no site ran: refused or lost).
    pub per_site: BTreeMap<String, Breakdown>,
}

/// What a report says about its run besides the records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunInfo {
    /// Policy.
    pub policy: String,
    /// `live` or `simulated`.
    pub mode: String,
    /// Seed.
    pub seed: u64,
    /// Length of the planned arrivals, seconds.
    pub duration_s: f64,
    /// Offered load as a fraction of predicted capacity.
    pub load_fraction: Option<f64>,
    /// Emulated parts.
    pub emulated: Vec<String>,
}

impl Report {
    /// The report of `records`.
    pub fn new(info: RunInfo, records: &[Record]) -> Report {
        let secs = info.duration_s;
        let all = Breakdown::of(records, secs);
        let mut by_model: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
        let mut by_site: BTreeMap<String, Vec<&Record>> = BTreeMap::new();
        for r in records {
            by_model.entry(r.model.clone()).or_default().push(r);
            by_site
                .entry(r.site.clone().unwrap_or_else(|| "-".into()))
                .or_default()
                .push(r);
        }
        let group = |m: BTreeMap<String, Vec<&Record>>| {
            m.into_iter()
                .map(|(k, v)| (k, Breakdown::of(v, secs)))
                .collect()
        };
        Report {
            policy: info.policy,
            mode: info.mode,
            seed: info.seed,
            duration_s: secs,
            offered_rps: if secs > 0.0 {
                records.len() as f64 / secs
            } else {
                0.0
            },
            load_fraction: info.load_fraction,
            emulated: info.emulated,
            sent: all.sent,
            ok: all.ok,
            errors: all.errors,
            lost: all.lost,
            duplicates: records.iter().map(|r| u64::from(r.duplicates)).sum(),
            violations: all.violations,
            violation_rate: all.violation_rate,
            excess_ms_total: all.excess_ms_total,
            p50_ms: all.p50_ms,
            p95_ms: all.p95_ms,
            p99_ms: all.p99_ms,
            goodput_rps: all.goodput_rps,
            error_codes: all.error_codes,
            per_model: group(by_model),
            per_site: group(by_site),
        }
    }

    /// One line for a terminal.
    pub fn summary(&self) -> String {
        format!(
            "{policy}: sent {sent}, ok {ok}, errors {errors}, lost {lost}; violations {v} ({rate:.2}%), \
             excess {excess:.0} ms; p50 {p50:.1} ms, p95 {p95:.1} ms, p99 {p99:.1} ms; goodput {good:.1}/s",
            policy = self.policy,
            sent = self.sent,
            ok = self.ok,
            errors = self.errors,
            lost = self.lost,
            v = self.violations,
            rate = self.violation_rate * 100.0,
            excess = self.excess_ms_total,
            p50 = self.p50_ms,
            p95 = self.p95_ms,
            p99 = self.p99_ms,
            good = self.goodput_rps,
        )
    }
}

/// The per-request records as CSV, a header line first.
pub fn records_csv(records: &[Record]) -> String {
    fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
        v.as_ref().map(ToString::to_string).unwrap_or_default()
    }
    fn text(v: &Option<String>) -> String {
        // Quoted, with quotes doubled: messages may hold commas.
        v.as_ref()
            .map(|s| format!("\"{}\"", s.replace('"', "\"\"")))
            .unwrap_or_default()
    }
    let mut s = String::from(
        "seq,model,planned_ms,sent_ms,slo_ms,latency_ms,code,violated,excess_ms,request_id,site,worker,\
         device_class,engine,threads,batch,queue_ms,exec_ms,total_ms,policy,error\n",
    );
    for r in records {
        let _ = writeln!(
            s,
            "{},{},{:.3},{:.3},{:.3},{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{}",
            r.seq,
            r.model,
            r.planned_ms,
            r.sent_ms,
            r.slo_ms,
            r.latency_ms.map(|l| format!("{l:.3}")).unwrap_or_default(),
            r.code,
            r.violated(),
            r.excess_ms(),
            opt(&r.request_id),
            opt(&r.site),
            opt(&r.worker),
            text(&r.device_class),
            opt(&r.engine),
            opt(&r.threads),
            opt(&r.batch),
            opt(&r.queue_ms),
            opt(&r.exec_ms),
            opt(&r.total_ms),
            opt(&r.policy),
            text(&r.error),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, code: u16, latency: Option<f64>, slo: f64, site: Option<&str>) -> Record {
        Record {
            seq,
            model: if seq.is_multiple_of(2) { "a" } else { "b" }.into(),
            slo_ms: slo,
            latency_ms: latency,
            code,
            site: site.map(Into::into),
            ..Record::default()
        }
    }

    #[test]
    fn counts_violations_excess_and_percentiles() {
        let mut records: Vec<Record> = (0..100)
            .map(|i| rec(i, 200, Some(i as f64 + 1.0), 90.0, Some("edge-1")))
            .collect();
        records.push(rec(100, 504, Some(3.0), 90.0, None));
        records.push(rec(101, 503, Some(1.0), 90.0, None));
        records.push(rec(102, 0, None, 90.0, None));
        let r = Report::new(
            RunInfo {
                policy: "synergai".into(),
                mode: "live".into(),
                duration_s: 10.0,
                ..RunInfo::default()
            },
            &records,
        );
        assert_eq!((r.sent, r.ok, r.errors, r.lost), (103, 100, 2, 1));
        // Latencies 91..=100 are late (10) and both errors missed their target.
        assert_eq!(r.violations, 12);
        assert!((r.violation_rate - 12.0 / 102.0).abs() < 1e-12);
        assert!((r.excess_ms_total - (1..=10).sum::<i32>() as f64).abs() < 1e-9);
        assert_eq!((r.p50_ms, r.p95_ms, r.p99_ms), (50.0, 95.0, 99.0));
        assert!((r.goodput_rps - 9.0).abs() < 1e-12);
        assert_eq!(r.error_codes.get(&504), Some(&1));
        assert_eq!(r.per_site["edge-1"].sent, 100);
        assert_eq!(r.per_site["-"].sent, 3);
        assert_eq!(r.per_model["a"].sent + r.per_model["b"].sent, 103);
        assert!(r.summary().contains("lost 1"));
    }

    #[test]
    fn csv_has_a_line_per_record_and_quotes_messages() {
        let mut r = rec(0, 400, Some(1.0), 10.0, None);
        r.error = Some("bad, \"very\" bad".into());
        let csv = records_csv(&[r, rec(1, 200, Some(2.0), 10.0, Some("s"))]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].ends_with("\"bad, \"\"very\"\" bad\""),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[0].split(',').count(),
            lines[2].split(',').count(),
            "{csv}"
        );
    }
}
