//! Refusals as HTTP answers: a status, a stable code and a message, sent as a JSON body.

use aq_store::{ErrorKind, StoreError};
use hyper::StatusCode;

use crate::fleet::FleetError;
use crate::tokens::TokenError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl From<crate::work::WorkError> for ApiError {
    fn from(e: crate::work::WorkError) -> Self {
        match e {
            crate::work::WorkError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                format!("{e}; retry later"),
            ),
            crate::work::WorkError::Lost => ApiError::internal(format!("handler failed: {e}")),
        }
    }
}

/// Renders an error with its causes, as the message of an answer.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match e.kind() {
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Integrity => (StatusCode::UNPROCESSABLE_ENTITY, "integrity"),
            ErrorKind::Untrusted => (StatusCode::UNPROCESSABLE_ENTITY, "untrusted"),
            ErrorKind::InvalidInput => (StatusCode::BAD_REQUEST, "bad_request"),
            ErrorKind::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
            _ => {
                tracing::error!(error = %chain(&e), "registry failure");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, chain(&e))
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::NotFound(_) => ApiError::not_found(e.to_string()),
            TokenError::BadName(_) => ApiError::bad_request(e.to_string()),
            _ => {
                tracing::error!(error = %chain(&e), "token store failure");
                ApiError::internal(chain(&e))
            }
        }
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        match e {
            FleetError::UnknownDevice(_) | FleetError::UnknownRollout(_) => {
                ApiError::not_found(e.to_string())
            }
            FleetError::Invalid(_) => ApiError::bad_request(e.to_string()),
            FleetError::Conflict(_) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string())
            }
            FleetError::Refused(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "enrollment_refused", e.to_string())
            }
            FleetError::Busy(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            }
            FleetError::Token(e) => e.into(),
            _ => {
                tracing::error!(error = %chain(&e), "fleet store failure");
                ApiError::internal(chain(&e))
            }
        }
    }
}
