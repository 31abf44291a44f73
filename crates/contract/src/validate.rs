//! Decoding and validation of the messages the profiling store reads: telemetry (job
//! observations, worker heartbeats), outcome events, and its request-reply API. Pure functions
//! with no I/O, so the store calls them at its edge and the fuzz targets exercise exactly the
//! same code.

use serde::de::DeserializeOwned;

use crate::ModelName;
use crate::profile::{ProfilePoint, Unsupported};
use crate::serving::WorkerHeartbeat;
use crate::store::{JobObservation, Outcome, UpsertProfiles};
use crate::subjects::is_token;
use crate::{ContractError, ErrorCode};

/// Longest free-text field accepted (device class, CPU model, versions, reasons), characters.
pub const MAX_TEXT: usize = 256;

/// Why a message was refused; the text is the whole reason (answered with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<ContractError> for Invalid {
    fn from(e: ContractError) -> Self {
        Invalid(e.to_string())
    }
}

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks a free-text field: present, bounded, printable.
pub fn check_text(field: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_TEXT} printable characters"
        )));
    }
    Ok(())
}

/// Checks a name that also travels as a subject token (engine, worker, site).
pub fn check_token(field: &str, value: &str) -> Result<(), Invalid> {
    if is_token(value) {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {value:?} must be 1 to 64 of A-Z a-z 0-9 _ -"
        )))
    }
}

/// Checks a measured quantity: finite and not negative.
pub fn check_amount(field: &str, value: f64) -> Result<(), Invalid> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} must be a finite, non-negative number"
        )))
    }
}

/// Checks a job observation (`events.job.<worker>`).
pub fn check_job(o: &JobObservation) -> Result<(), Invalid> {
    check_token("worker", &o.worker)?;
    check_text("device_class", &o.key.device_class)?;
    check_token("engine", &o.key.engine)?;
    ModelName::parse(o.key.model.as_str())?;
    if o.key.threads == 0 || o.key.batch == 0 {
        return Err(invalid("threads and batch must be at least 1"));
    }
    check_amount("exec_ms", o.exec_ms)
}

/// Checks the identity a worker heartbeat carries (`events.worker.<worker>`).
pub fn check_worker(w: &crate::store::WorkerStatus) -> Result<(), Invalid> {
    check_token("id", &w.id)?;
    check_token("site", &w.site)?;
    check_text("arch", &w.arch)?;
    check_text("device_class", &w.device_class)?;
    w.engines.iter().try_for_each(|e| check_token("engine", e))
}

/// Checks an outcome event before it may become a ledger row.
pub fn check_outcome(o: &Outcome) -> Result<(), Invalid> {
    check_text("request_id", &o.request_id)?;
    ModelName::parse(o.model.as_str())?;
    check_text("policy", &o.policy)?;
    for (field, v) in [
        ("site", &o.site),
        ("worker", &o.worker),
        ("engine", &o.engine),
    ] {
        if let Some(v) = v {
            check_text(field, v)?;
        }
    }
    if o.code != 200 && ErrorCode::try_from(o.code).is_err() {
        return Err(invalid(format!("unknown outcome code {}", o.code)));
    }
    if !(o.slo_ms.is_finite() && o.slo_ms > 0.0) {
        return Err(invalid("slo_ms must be positive"));
    }
    check_amount("total_ms", o.total_ms)?;
    check_amount("excess_ms", o.excess_ms)?;
    for (field, v) in [("queue_ms", o.queue_ms), ("exec_ms", o.exec_ms)] {
        if let Some(v) = v {
            check_amount(field, v)?;
        }
    }
    Ok(())
}

/// Checks an offline profiling point.
pub fn check_point(p: &ProfilePoint) -> Result<(), Invalid> {
    ModelName::parse(p.model.as_str())?;
    check_token("engine", &p.engine)?;
    check_text("device_class", &p.device_class)?;
    check_text("arch", &p.arch)?;
    check_text("cpu_model", &p.cpu_model)?;
    check_text("engine_version", &p.engine_version)?;
    check_text("library_version", &p.library_version)?;
    check_text("worker", &p.worker)?;
    if !(1..=4096).contains(&p.threads) || !(1..=65_536).contains(&p.batch) {
        return Err(invalid(format!(
            "threads {} / batch {} out of range",
            p.threads, p.batch
        )));
    }
    if p.runs == 0 {
        return Err(invalid("runs must be at least 1"));
    }
    for (field, v) in [
        ("mean_ms", p.mean_ms),
        ("p50_ms", p.p50_ms),
        ("p95_ms", p.p95_ms),
        ("p99_ms", p.p99_ms),
        ("min_ms", p.min_ms),
        ("max_ms", p.max_ms),
        ("qps", p.qps),
    ] {
        check_amount(field, v)?;
    }
    if i64::try_from(p.peak_rss_bytes).is_err() || p.core_set.len() > 4096 {
        return Err(invalid("peak_rss_bytes or core_set out of range"));
    }
    Ok(())
}

/// Checks a record of a configuration that cannot run.
pub fn check_unsupported(u: &Unsupported) -> Result<(), Invalid> {
    ModelName::parse(u.model.as_str())?;
    check_token("engine", &u.engine)?;
    check_text("device_class", &u.device_class)?;
    check_text("worker", &u.worker)?;
    if u.unsupported.is_empty() || u.unsupported.len() > 4096 {
        return Err(invalid("unsupported reason must be 1 to 4096 bytes"));
    }
    Ok(())
}

/// Checks every point and unsupported record of an upsert.
pub fn check_upsert(req: &UpsertProfiles) -> Result<(), Invalid> {
    req.points.iter().try_for_each(check_point)?;
    req.unsupported.iter().try_for_each(check_unsupported)
}

/// Decodes and checks a job observation.
pub fn decode_job(payload: &[u8]) -> Result<JobObservation, Invalid> {
    let o: JobObservation = serde_json::from_slice(payload).map_err(|e| invalid(e.to_string()))?;
    check_job(&o)?;
    Ok(o)
}

/// Decodes a worker heartbeat and checks the identity it carries.
pub fn decode_heartbeat(payload: &[u8]) -> Result<WorkerHeartbeat, Invalid> {
    let h: WorkerHeartbeat = serde_json::from_slice(payload).map_err(|e| invalid(e.to_string()))?;
    check_worker(&h.status)?;
    Ok(h)
}

/// Decodes and checks an outcome event.
pub fn decode_outcome(payload: &[u8]) -> Result<Outcome, Invalid> {
    let o: Outcome = serde_json::from_slice(payload).map_err(|e| invalid(e.to_string()))?;
    check_outcome(&o)?;
    Ok(o)
}

/// Decodes a JSON store request. An empty (or all-whitespace) body means "all defaults" where
/// `empty_ok` gives them, and is refused otherwise.
pub fn decode_request<T: DeserializeOwned>(
    payload: &[u8],
    empty_ok: Option<T>,
) -> Result<T, Invalid> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return empty_ok.ok_or_else(|| invalid("empty request body"));
    }
    serde_json::from_slice(payload).map_err(|e| invalid(format!("invalid request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_is_decoded_and_checked() {
        let job = br#"{"worker":"w1","key":{"device_class":"d","engine":"ort","model":"m","threads":1,"batch":1},"exec_ms":2.5}"#;
        assert_eq!(decode_job(job).expect("valid").exec_ms, 2.5);
        let zero = br#"{"worker":"w1","key":{"device_class":"d","engine":"ort","model":"m","threads":0,"batch":1},"exec_ms":2.5}"#;
        assert!(
            decode_job(zero)
                .expect_err("zero threads")
                .0
                .contains("at least 1")
        );
        let neg = br#"{"worker":"w1","key":{"device_class":"d","engine":"ort","model":"m","threads":1,"batch":1},"exec_ms":-1}"#;
        assert!(decode_job(neg).expect_err("negative").0.contains("exec_ms"));
        let bad_worker = br#"{"worker":"a.b","key":{"device_class":"d","engine":"ort","model":"m","threads":1,"batch":1},"exec_ms":1}"#;
        assert!(decode_job(bad_worker).is_err());
        assert!(decode_job(b"\xff\xfe").is_err());
        assert!(decode_heartbeat(b"{}").is_err());
        assert!(decode_outcome(b"[]").is_err());
    }

    #[test]
    fn outcomes_are_checked() {
        let ok = br#"{"request_id":"r","model":"m","slo_ms":10,"arrival":"2026-01-01T00:00:00Z","policy":"p","code":200,"total_ms":1,"violated":false,"excess_ms":0}"#;
        assert!(decode_outcome(ok).is_ok());
        let code = br#"{"request_id":"r","model":"m","slo_ms":10,"arrival":"2026-01-01T00:00:00Z","policy":"p","code":418,"total_ms":1,"violated":false,"excess_ms":0}"#;
        assert_eq!(
            decode_outcome(code).expect_err("teapot").0,
            "unknown outcome code 418"
        );
        let text = format!(
            r#"{{"request_id":"{}","model":"m","slo_ms":10,"arrival":"2026-01-01T00:00:00Z","policy":"p","code":200,"total_ms":1,"violated":false,"excess_ms":0}}"#,
            "r".repeat(MAX_TEXT + 1)
        );
        assert!(decode_outcome(text.as_bytes()).is_err());
    }

    #[test]
    fn requests_decode_empty_bodies_only_with_defaults() {
        assert_eq!(decode_request::<Vec<u8>>(b"  ", Some(vec![1])), Ok(vec![1]));
        assert_eq!(
            decode_request::<Vec<u8>>(b"", None),
            Err(Invalid("empty request body".into()))
        );
        assert!(
            decode_request::<Vec<u8>>(b"[1,", None)
                .expect_err("truncated")
                .0
                .starts_with("invalid request:")
        );
    }
}
