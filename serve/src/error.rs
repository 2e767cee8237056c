//! The one error type every HTTP answer that is not a success is made from: a status, a
//! stable machine-readable code, and a message for people. Rendered as
//! `{"error": {"code": ..., "message": ...}}` (and, for v2 routes, a top-level `"error"` string
//! as the Open Inference Protocol asks).

use std::time::Duration;

use aq_runtime::{InputError, RunError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", message)
    }

    pub fn unknown_model(name: &str) -> ApiError {
        ApiError::new(
            404,
            "model_not_found",
            format!("no model named {name:?} is served"),
        )
    }

    pub fn queue_full(name: &str, capacity: usize) -> ApiError {
        ApiError::new(
            503,
            "queue_full",
            format!("model {name:?} has {capacity} requests waiting; retry later"),
        )
    }

    pub fn overloaded(name: &str, wait: Duration, limit: Duration) -> ApiError {
        ApiError::new(
            503,
            "overloaded",
            format!(
                "model {name:?} is overloaded: this request would wait about {} ms in its queue (limit {} ms); retry later",
                wait.as_millis(),
                limit.as_millis()
            ),
        )
    }

    pub fn overloaded_rows(name: &str, queued: usize, limit: usize) -> ApiError {
        ApiError::new(
            503,
            "overloaded",
            format!(
                "model {name:?} is overloaded: {queued} rows wait in its queue (limit {limit}, two batches per worker); retry later"
            ),
        )
    }

    pub fn timeout(name: &str, after: std::time::Duration) -> ApiError {
        ApiError::new(
            503,
            "timeout",
            format!(
                "model {name:?} did not answer within {}",
                humantime::format_duration(after)
            ),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(503, "unavailable", message)
    }

    /// The body: v1 shape with the code, plus the v2 `error` string for OIP clients.
    pub fn body(&self, v2: bool) -> serde_json::Value {
        if v2 {
            serde_json::json!({ "error": self.message, "code": self.code })
        } else {
            serde_json::json!({ "error": { "code": self.code, "message": self.message } })
        }
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> ApiError {
        let code = match &e {
            InputError::Missing { .. } => "missing_input",
            InputError::Unexpected { .. } => "unknown_input",
            InputError::Duplicate { .. } => "duplicate_input",
            InputError::Count { .. } => "input_count",
            InputError::DType { .. } => "wrong_dtype",
            InputError::Shape { .. } | InputError::BatchMismatch { .. } => "wrong_shape",
        };
        ApiError::new(400, code, e.to_string())
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        match e {
            RunError::Input(i) => i.into(),
            other => ApiError::new(500, "inference_failed", other.to_string()),
        }
    }
}
