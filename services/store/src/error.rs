//! What a store request can fail with, and the reply code each maps to.

use synergai_contract::{ContractError, ErrorCode};

/// A failed store request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid request (400).
    #[error("{0}")]
    BadRequest(String),
    /// Nothing matches (404).
    #[error("{0}")]
    NotFound(String),
    /// Request too large (413).
    #[error("{0}")]
    TooLarge(String),
    /// PostgreSQL is unreachable or overloaded (503): try again later.
    #[error("store database unavailable: {0}")]
    Unavailable(String),
    /// A fault in the store (500).
    #[error("store internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The reply code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::BadRequest(_) => ErrorCode::BadRequest,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::TooLarge(_) => ErrorCode::PayloadTooLarge,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<ContractError> for ApiError {
    fn from(e: ContractError) -> Self {
        match e.code() {
            ErrorCode::PayloadTooLarge => ApiError::TooLarge(e.to_string()),
            ErrorCode::NotFound => ApiError::NotFound(e.to_string()),
            _ => ApiError::BadRequest(e.to_string()),
        }
    }
}

/// Whether a database error means "PostgreSQL is not there right now" rather than a bad query.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions (08), insufficient resources (53), operator intervention (57:
        // shutdown, cannot connect now).
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("53") || c.starts_with("57")),
        _ => false,
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            return ApiError::Unavailable(e.to_string());
        }
        match &e {
            // Data exceptions (22) and integrity violations (23) come from values the request
            // carried.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("22") || c.starts_with("23")) =>
            {
                ApiError::BadRequest(db.message().to_owned())
            }
            _ => ApiError::Internal(e.to_string()),
        }
    }
}
