use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use serde::Serialize;
use serde::de::DeserializeOwned;
use synergai_contract::store::{
    BestRequest, BestResponse, LedgerQuery, LedgerSummary, ProfileTable, StoreStats, TableRequest,
    UpsertProfiles, UpsertResult,
};
use synergai_contract::{ErrorCode, StoreOp, Subjects};
use synergai_platform::nats::error_of;

/// Why a store request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// The store answered with an error code.
    #[error("store answered {code}: {message}")]
    Remote {
        /// Code.
        code: ErrorCode,
        /// Text.
        message: String,
    },
    /// No store instance is subscribed.
    #[error("no store is running (no responders)")]
    NoResponders,
    /// No answer in time.
    #[error("store did not answer within {0:?}")]
    Timeout(Duration),
    /// NATS failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// The reply did not decode.
    #[error("undecodable store reply: {0}")]
    Decode(String),
}

impl StoreError {
    /// Whether trying again later may succeed (store or database away, overloaded).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Remote { code, .. } => *code == ErrorCode::Unavailable,
            StoreError::NoResponders | StoreError::Timeout(_) | StoreError::Nats(_) => true,
            StoreError::Decode(_) => false,
        }
    }
}

/// The store's request-reply operations.
#[derive(Debug, Clone)]
pub struct StoreClient {
    nats: Client,
    subjects: Subjects,
    timeout: Duration,
}

impl StoreClient {
    /// A client on `nats` for the deployment whose subjects are `subjects`.
    pub fn new(nats: Client, subjects: Subjects) -> Self {
        StoreClient {
            nats,
            subjects,
            timeout: Duration::from_secs(5),
        }
    }

    /// Sets the per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends raw bytes to an operation and returns the raw reply (for tests of malformed input).
    pub async fn call_raw(&self, op: StoreOp, body: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let request = self.nats.request(self.subjects.store(op), body.into());
        let reply = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => return Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => {
                return Err(match e.kind() {
                    RequestErrorKind::NoResponders => StoreError::NoResponders,
                    RequestErrorKind::TimedOut => StoreError::Timeout(self.timeout),
                    _ => StoreError::Nats(e.to_string()),
                });
            }
            Ok(Ok(r)) => r,
        };
        if let Some((code, message)) = error_of(&reply) {
            return Err(StoreError::Remote { code, message });
        }
        Ok(reply.payload.to_vec())
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        op: StoreOp,
        req: &Req,
    ) -> Result<Resp, StoreError> {
        let body = serde_json::to_vec(req).map_err(|e| StoreError::Decode(e.to_string()))?;
        let reply = self.call_raw(op, body).await?;
        serde_json::from_slice(&reply).map_err(|e| StoreError::Decode(e.to_string()))
    }

    /// Upserts offline profile points.
    pub async fn upsert_profiles(&self, req: &UpsertProfiles) -> Result<UpsertResult, StoreError> {
        self.call(StoreOp::UpsertProfiles, req).await
    }

    /// The best configuration by the knee rule.
    pub async fn best(&self, req: &BestRequest) -> Result<BestResponse, StoreError> {
        self.call(StoreOp::Best, req).await
    }

    /// The whole profile table (or one device class's).
    pub async fn table(&self, req: &TableRequest) -> Result<ProfileTable, StoreError> {
        self.call(StoreOp::Table, req).await
    }

    /// A ledger summary.
    pub async fn ledger_summary(&self, q: &LedgerQuery) -> Result<LedgerSummary, StoreError> {
        self.call(StoreOp::LedgerSummary, q).await
    }

    /// The store's ingest counters.
    pub async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.call(StoreOp::Stats, &serde_json::json!({})).await
    }
}
