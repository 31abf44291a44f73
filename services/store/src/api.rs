//! Request-reply handlers for `synergai.v1.store.*`: decode and validate at the edge, run the
//! query, encode the reply. Every failure maps to a reply code; nothing here panics.

use serde::Serialize;
use serde::de::DeserializeOwned;
use synergai_contract::profile::{ProfilePoint, Unsupported};
use synergai_contract::store::{
    BestRequest, BestResponse, ConfigEstimate, LedgerQuery, LedgerSummary, ProfileTable,
    ProfilesUpdated, StoreStats, TableRequest, UpdateSource, UpsertProfiles,
};
use synergai_contract::subjects::is_token;
use synergai_contract::{ModelName, StoreOp};

use crate::db;
use crate::error::ApiError;
use crate::state::StoreState;

/// Longest free-text field accepted (device class, CPU model, versions, reasons), characters.
pub const MAX_TEXT: usize = 256;

/// A request that takes no arguments: `{}` or an empty body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Decodes a JSON request. An empty body means "all defaults" where `T` has them.
fn decode<T: DeserializeOwned>(payload: &[u8], empty_ok: Option<T>) -> Result<T, ApiError> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        return empty_ok.ok_or_else(|| ApiError::BadRequest("empty request body".into()));
    }
    serde_json::from_slice(payload)
        .map_err(|e| ApiError::BadRequest(format!("invalid request: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("encoding reply: {e}")))
}

/// Checks a free-text field: present, bounded, printable.
pub fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > MAX_TEXT || value.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{field} must be 1 to {MAX_TEXT} printable characters"
        )));
    }
    Ok(())
}

/// Checks a name that also travels as a subject token (engine, worker, site).
pub fn check_token(field: &str, value: &str) -> Result<(), ApiError> {
    if is_token(value) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{field} {value:?} must be 1 to 64 of A-Z a-z 0-9 _ -"
        )))
    }
}

/// Checks a measured quantity: finite and not negative.
pub fn check_amount(field: &str, value: f64) -> Result<(), ApiError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "{field} must be a finite, non-negative number"
        )))
    }
}

fn check_point(p: &ProfilePoint) -> Result<(), ApiError> {
    ModelName::parse(p.model.as_str())?;
    check_token("engine", &p.engine)?;
    check_text("device_class", &p.device_class)?;
    check_text("arch", &p.arch)?;
    check_text("cpu_model", &p.cpu_model)?;
    check_text("engine_version", &p.engine_version)?;
    check_text("library_version", &p.library_version)?;
    check_text("worker", &p.worker)?;
    if !(1..=4096).contains(&p.threads) || !(1..=65_536).contains(&p.batch) {
        return Err(ApiError::BadRequest(format!(
            "threads {} / batch {} out of range",
            p.threads, p.batch
        )));
    }
    if p.runs == 0 {
        return Err(ApiError::BadRequest("runs must be at least 1".into()));
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
        return Err(ApiError::BadRequest(
            "peak_rss_bytes or core_set out of range".into(),
        ));
    }
    Ok(())
}

fn check_unsupported(u: &Unsupported) -> Result<(), ApiError> {
    ModelName::parse(u.model.as_str())?;
    check_token("engine", &u.engine)?;
    check_text("device_class", &u.device_class)?;
    check_text("worker", &u.worker)?;
    if u.unsupported.is_empty() || u.unsupported.len() > 4096 {
        return Err(ApiError::BadRequest(
            "unsupported reason must be 1 to 4096 bytes".into(),
        ));
    }
    Ok(())
}

/// Handles one request; `payload` has already passed the size limit.
pub async fn handle(state: &StoreState, op: StoreOp, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match op {
        StoreOp::UpsertProfiles => {
            let req: UpsertProfiles = decode(payload, None)?;
            req.points.iter().try_for_each(check_point)?;
            req.unsupported.iter().try_for_each(check_unsupported)?;
            let (result, moved) = state.observe(db::upsert_profiles(&state.pool, &req).await)?;
            if !moved.is_empty() || result.unsupported > 0 {
                state
                    .publish_update(&ProfilesUpdated {
                        revision: result.revision,
                        source: UpdateSource::Offline,
                        moved,
                    })
                    .await;
            }
            encode(&result)
        }
        StoreOp::Best => {
            let req: BestRequest = decode(payload, None)?;
            check_text("device_class", &req.device_class)?;
            ModelName::parse(req.model.as_str())?;
            let rule = req.rule.unwrap_or(state.config.knee);
            if !(0.0..1.0).contains(&rule.epsilon) {
                return Err(ApiError::BadRequest(
                    "rule.epsilon must be in [0, 1)".into(),
                ));
            }
            let rows = state.observe(
                db::profiles(
                    &state.pool,
                    Some(&req.device_class),
                    Some(&req.model),
                    state.drift(),
                )
                .await,
            )?;
            let configs: Vec<ConfigEstimate> = rows
                .into_iter()
                .map(|r| r.config)
                .filter(|c| req.batch.is_none_or(|b| c.batch == b))
                .filter(|c| req.engine.as_deref().is_none_or(|e| c.engine == e))
                .collect();
            let mut ranked = crate::knee::rank(&configs, &rule).into_iter();
            let best = ranked.next().ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no profile of model {} on device class {} matches",
                    req.model, req.device_class
                ))
            })?;
            encode(&BestResponse {
                device_class: req.device_class,
                model: req.model,
                rule,
                best,
                alternatives: ranked.collect(),
            })
        }
        StoreOp::Table => {
            let req: TableRequest = decode(payload, Some(TableRequest::default()))?;
            if let Some(dc) = &req.device_class {
                check_text("device_class", dc)?;
            }
            let dc = req.device_class.as_deref();
            // The revision is read first, so it never claims more than the rows show.
            let revision = state.observe(db::revision(&state.pool).await)?;
            let profiles =
                state.observe(db::profiles(&state.pool, dc, None, state.drift()).await)?;
            let online_only = state.observe(db::online_only(&state.pool, dc).await)?;
            let unsupported = state.observe(db::unsupported(&state.pool, dc).await)?;
            encode(&ProfileTable {
                revision,
                drift_threshold: state.config.refine.drift_threshold,
                profiles,
                online_only,
                unsupported,
            })
        }
        StoreOp::LedgerSummary => {
            let q: LedgerQuery = decode(payload, Some(LedgerQuery::default()))?;
            if let (Some(from), Some(to)) = (q.from, q.to)
                && from >= to
            {
                return Err(ApiError::BadRequest("from must be before to".into()));
            }
            for (field, v) in [
                ("policy", &q.policy),
                ("model", &q.model),
                ("site", &q.site),
            ] {
                if let Some(v) = v {
                    check_text(field, v)?;
                }
            }
            let groups = state.observe(db::ledger_summary(&state.pool, &q).await)?;
            encode(&LedgerSummary { groups })
        }
        StoreOp::Stats => {
            let _: Empty = decode(payload, Some(Empty {}))?;
            let stats: StoreStats = state.stats();
            encode(&stats)
        }
    }
}
