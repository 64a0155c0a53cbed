//! Errors as the original API answered them: `{"status": "error", "error":
//! "..."}` with a 4xx code for bad input (DuckDB's message kept verbatim)
//! and 5xx only for server faults.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::engine::{EngineError, ErrorClass};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// More fields of the error object (e.g. a batch's per-row errors).
    pub extra: Map<String, Value>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            extra: Map::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn with(mut self, key: &str, value: Value) -> ApiError {
        self.extra.insert(key.to_string(), value);
        self
    }
}

/// The HTTP status of an engine error class.
pub fn status_of(class: ErrorClass) -> StatusCode {
    match class {
        ErrorClass::InvalidArgument | ErrorClass::Cancelled => StatusCode::BAD_REQUEST,
        ErrorClass::NotFound => StatusCode::NOT_FOUND,
        ErrorClass::AlreadyExists | ErrorClass::Aborted | ErrorClass::FailedPrecondition => {
            StatusCode::CONFLICT
        }
        ErrorClass::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorClass::Unauthenticated => StatusCode::UNAUTHORIZED,
        // The statement ran longer than --query-timeout allows.
        ErrorClass::DeadlineExceeded => StatusCode::REQUEST_TIMEOUT,
        ErrorClass::ResourceExhausted | ErrorClass::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorClass::Internal | ErrorClass::WrongNode => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        ApiError::new(status_of(e.class), e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = Map::new();
        body.insert("status".into(), json!("error"));
        body.insert("error".into(), json!(self.message));
        let retry = self
            .extra
            .get("retry_after_s")
            .and_then(Value::as_u64)
            .map(|s| s.to_string());
        body.extend(self.extra);
        let mut resp = (self.status, Json(Value::Object(body))).into_response();
        if let Some(v) = retry.and_then(|s| axum::http::HeaderValue::from_str(&s).ok()) {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        resp
    }
}
