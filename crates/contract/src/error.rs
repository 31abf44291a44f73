//! Error codes of the wire contract and the error every decode or validation step returns.
//!
//! Codes are HTTP-style numbers carried in the `Nats-Service-Error-Code` header (NATS) or as
//! the status (HTTP); the text goes in `Nats-Service-Error` and in the `{"error": ...}` body.

use serde::{Deserialize, Serialize};

/// The error codes a SynergAI service answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
pub enum ErrorCode {
    /// 400: malformed or invalid input.
    BadRequest,
    /// 404: unknown model (or other named thing).
    NotFound,
    /// 413: the request or a tensor is larger than allowed.
    PayloadTooLarge,
    /// 500: a fault inside the service.
    Internal,
    /// 503: overloaded, shedding, or a dependency is down.
    Unavailable,
    /// 504: the latency target cannot be met or has already passed.
    DeadlineExceeded,
}

impl ErrorCode {
    /// The numeric code.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::DeadlineExceeded => 504,
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.as_u16()
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        Ok(match code {
            400 => ErrorCode::BadRequest,
            404 => ErrorCode::NotFound,
            413 => ErrorCode::PayloadTooLarge,
            500 => ErrorCode::Internal,
            503 => ErrorCode::Unavailable,
            504 => ErrorCode::DeadlineExceeded,
            other => return Err(format!("unknown error code {other}")),
        })
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.as_u16())
    }
}

/// Why a message could not be decoded or a request is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// Malformed or invalid input (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The named model is not in the catalogue (404).
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    /// Too large (413).
    #[error("too large: {0}")]
    PayloadTooLarge(String),
}

impl ContractError {
    /// The code this error is answered with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ContractError::BadRequest(_) => ErrorCode::BadRequest,
            ContractError::UnknownModel(_) => ErrorCode::NotFound,
            ContractError::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
        }
    }
}

/// The body of an error reply: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    /// Human-readable reason.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in [400u16, 404, 413, 500, 503, 504] {
            let parsed = ErrorCode::try_from(code).expect("known code");
            assert_eq!(parsed.as_u16(), code);
        }
        assert!(ErrorCode::try_from(418).is_err());
    }

    #[test]
    fn errors_map_to_codes() {
        assert_eq!(
            ContractError::UnknownModel("x".into()).code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            ContractError::PayloadTooLarge("x".into()).code().as_u16(),
            413
        );
    }
}
