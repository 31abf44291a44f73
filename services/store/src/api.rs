//! Request-reply handlers for `synergai.v1.store.*`: decode and validate at the edge, run the
//! query, encode the reply. Every failure maps to a reply code; nothing here panics.

use serde::Serialize;
use serde::de::DeserializeOwned;
use synergai_contract::store::{
    BestRequest, BestResponse, ConfigEstimate, LedgerQuery, LedgerSummary, ProfileTable,
    ProfilesUpdated, StoreStats, TableRequest, UpdateSource, UpsertProfiles,
};
use synergai_contract::validate;
use synergai_contract::{ModelName, StoreOp};

use crate::db;
use crate::error::ApiError;
use crate::state::StoreState;

pub use synergai_contract::validate::MAX_TEXT;

/// A request that takes no arguments: `{}` or an empty body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

fn invalid(e: validate::Invalid) -> ApiError {
    ApiError::BadRequest(e.0)
}

/// Decodes a JSON request. An empty body means "all defaults" where `T` has them.
fn decode<T: DeserializeOwned>(payload: &[u8], empty_ok: Option<T>) -> Result<T, ApiError> {
    validate::decode_request(payload, empty_ok).map_err(invalid)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Internal(format!("encoding reply: {e}")))
}

/// Checks a free-text field: present, bounded, printable.
pub fn check_text(field: &str, value: &str) -> Result<(), ApiError> {
    validate::check_text(field, value).map_err(invalid)
}

/// Handles one request; `payload` has already passed the size limit.
pub async fn handle(state: &StoreState, op: StoreOp, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
    match op {
        StoreOp::UpsertProfiles => {
            let req: UpsertProfiles = decode(payload, None)?;
            validate::check_upsert(&req).map_err(invalid)?;
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
