//! The one error type handlers return, and the one JSON shape every error
//! has: `{"error":{"code":"…","message":"…"}}` (plus `line`/`column` where
//! known). The table in [`AppError::status`] maps kinds to status codes;
//! 5xx bodies stay generic and the real cause goes to the log.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use logsieve_pipeline::EncoderUnavailable;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("no such endpoint: {0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("unsupported content type `{got}`; expected {expected}")]
    UnsupportedMediaType { got: String, expected: &'static str },
    #[error("unsupported content encoding `{0}`; expected gzip or identity")]
    UnsupportedEncoding(String),
    /// Bad input: unparsable JSON, missing fields or columns.
    #[error("{}{message}", location(*line, column.as_deref()))]
    Validation {
        message: String,
        line: Option<u64>,
        column: Option<String>,
    },
    #[error("the classifier queue is full; retry later")]
    Overloaded,
    #[error("the service is not ready: {0}")]
    NotReady(#[from] NotReady),
    #[error("no result within {0} ms")]
    Timeout(u64),
    /// Anything else; the cause is logged, never sent.
    #[error("internal error")]
    Internal(String),
}

/// Why the service cannot classify with the model yet: every such cause
/// becomes 503 `not_ready` through [`AppError::status`].
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    #[error("the encoder is loading")]
    Loading,
    #[error("encoder: {0}")]
    Encoder(#[from] EncoderUnavailable),
}

impl From<EncoderUnavailable> for AppError {
    fn from(e: EncoderUnavailable) -> Self {
        AppError::NotReady(e.into())
    }
}

fn location(line: Option<u64>, column: Option<&str>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("line {l} column {c}: "),
        (Some(l), None) => format!("line {l}: "),
        _ => String::new(),
    }
}

impl AppError {
    /// Error kind → (status, code).
    pub fn status(&self) -> (StatusCode, &'static str) {
        use AppError::*;
        match self {
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            UnsupportedMediaType { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            UnsupportedEncoding(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            Overloaded => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
            NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// A JSON body that does not parse, or lacks a field: 422 with its place.
    pub fn json(e: &serde_json::Error) -> Self {
        let msg = e.to_string();
        // serde_json appends " at line L column C"; the place has its own fields.
        let message = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        AppError::Validation {
            message: format!("invalid JSON: {message}"),
            line: Some(e.line() as u64),
            column: Some(e.column().to_string()),
        }
    }

    /// An upload that cannot be read as rows (no header, no `log_message` column).
    pub fn input(e: logsieve_pipeline::io::InputError) -> Self {
        AppError::Validation {
            message: e.message,
            line: Some(e.line),
            column: e.column,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let mut error = serde_json::json!({ "code": code });
        if status.is_server_error() {
            match &self {
                AppError::Internal(cause) => tracing::error!(%cause, "request failed"),
                AppError::NotReady(cause) => tracing::warn!(%cause, "not ready"),
                other => tracing::warn!(error = %other, "request failed"),
            }
            // Generic text only: causes stay in the log.
            let generic = match &self {
                AppError::Timeout(_) => self.to_string(),
                AppError::NotReady(_) => "the service is not ready".to_string(),
                _ => "internal error".to_string(),
            };
            error["message"] = generic.into();
        } else {
            error["message"] = self.to_string().into();
            if let AppError::Validation { line, column, .. } = &self {
                if let Some(l) = line {
                    error["line"] = (*l).into();
                }
                if let Some(c) = column {
                    error["column"] = c.clone().into();
                }
            }
        }
        let mut resp = (status, Json(serde_json::json!({ "error": error }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_carry_line_and_column() {
        let e = serde_json::from_str::<serde_json::Value>("{\n  \"a\": ,\n}").unwrap_err();
        match AppError::json(&e) {
            AppError::Validation {
                line,
                column,
                message,
            } => {
                assert_eq!(line, Some(2));
                assert_eq!(column.as_deref(), Some("8"));
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    async fn body_of(e: AppError) -> (StatusCode, String) {
        let resp = e.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn server_errors_do_not_leak_causes() {
        let (status, body) = body_of(AppError::Internal("secret path /etc/x".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.contains("secret") && !body.contains("/etc/x"), "{body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(j["error"]["code"], "internal");
        assert_eq!(j["error"]["message"], "internal error");
        let cause = EncoderUnavailable::NotConfigured;
        let (status, body) = body_of(cause.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body.contains("no encoder configured"), "{body}");
    }
}
