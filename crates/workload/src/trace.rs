//! Planned requests and trace files (one request per line: `at_ms,model,slo_ms[,samples]`,
//! an optional header line, `#` comments).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// One request to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    /// Position in the sequence, from 0.
    pub seq: u64,
    /// When to send it, ms from the start of the run.
    pub at_ms: f64,
    /// Model.
    pub model: String,
    /// Latency target, ms.
    pub slo_ms: f64,
    /// Samples (batch dimension).
    pub samples: u32,
}

/// Reads a trace; lines must be in time order.
pub fn parse(text: &str) -> Result<Vec<Planned>, SpecError> {
    let mut out: Vec<Planned> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("at_ms")) {
            continue;
        }
        let bad = |what: &str| SpecError::new(format!("trace line {}: {what}: '{line}'", i + 1));
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if !(3..=4).contains(&f.len()) {
            return Err(bad("expected at_ms,model,slo_ms[,samples]"));
        }
        let at_ms: f64 = f[0].parse().map_err(|_| bad("bad time"))?;
        let slo_ms: f64 = f[2].parse().map_err(|_| bad("bad latency target"))?;
        let samples: u32 = match f.get(3) {
            Some(s) => s.parse().map_err(|_| bad("bad samples"))?,
            None => 1,
        };
        if !(at_ms.is_finite() && at_ms >= 0.0) {
            return Err(bad("time must be zero or more"));
        }
        if !(slo_ms.is_finite() && slo_ms > 0.0) {
            return Err(bad("latency target must be positive"));
        }
        if f[1].is_empty() {
            return Err(bad("no model"));
        }
        if samples == 0 {
            return Err(bad("samples must be at least 1"));
        }
        if out.last().is_some_and(|p| p.at_ms > at_ms) {
            return Err(bad("times go backwards"));
        }
        out.push(Planned {
            seq: out.len() as u64,
            at_ms,
            model: f[1].to_owned(),
            slo_ms,
            samples,
        });
    }
    if out.is_empty() {
        return Err(SpecError::new("the trace holds no request"));
    }
    Ok(out)
}

/// Writes a trace that [`parse`] reads back unchanged.
pub fn render(plan: &[Planned]) -> String {
    let mut s = String::from("at_ms,model,slo_ms,samples\n");
    for p in plan {
        let _ = writeln!(s, "{},{},{},{}", p.at_ms, p.model, p.slo_ms, p.samples);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_round_trips() {
        let plan = vec![
            Planned {
                seq: 0,
                at_ms: 0.125,
                model: "squeezenet".into(),
                slo_ms: 20.0,
                samples: 1,
            },
            Planned {
                seq: 1,
                at_ms: 3.0 / 7.0,
                model: "resnet50".into(),
                slo_ms: 333.3,
                samples: 4,
            },
        ];
        assert_eq!(parse(&render(&plan)), Ok(plan));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let e = parse("0,a,10\n5,b\n").expect_err("short line");
        assert!(e.0.contains("line 2"), "{e}");
        assert!(parse("5,a,10\n1,a,10").is_err());
        assert!(parse("0,a,0").is_err());
        assert!(parse("# nothing\n").is_err());
        assert_eq!(parse("# c\n0,a,10\n\n").map(|p| p.len()), Ok(1));
    }
}
