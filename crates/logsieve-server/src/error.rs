//! The one error type handlers return, and the one JSON shape every error
//! has: `{"error":{"code":"…","message":"…"}}`, plus `line` and `column`
//! (numbers, 1-based) and `field` (a column or field name) where known. The
//! table in [`AppError::status`] maps kinds to status codes; 5xx bodies
//! stay generic and the real cause goes to the log. [`one_shape`] puts
//! errors that did not come from here (a layer's bare 415, a rejection's
//! plain text) into the same shape.

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
    #[error("unsupported content encoding `{got}`; expected {expected}")]
    UnsupportedEncoding { got: String, expected: &'static str },
    /// Bad input: unparsable JSON, missing fields or columns.
    #[error("{}{message}", location(*line, *column, field.as_deref()))]
    Validation {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
        field: Option<String>,
    },
    #[error("the request body stalled: no data for {0} ms")]
    BodyTimeout(u64),
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

fn location(line: Option<u64>, column: Option<u64>, field: Option<&str>) -> String {
    let mut s = String::new();
    if let Some(l) = line {
        s.push_str(&format!("line {l}"));
    }
    if let Some(c) = column {
        s.push_str(&format!("{}column {c}", if s.is_empty() { "" } else { " " }));
    }
    if let Some(f) = field {
        s.push_str(&format!("{}field `{f}`", if s.is_empty() { "" } else { " " }));
    }
    if !s.is_empty() {
        s.push_str(": ");
    }
    s
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
            UnsupportedEncoding { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding"),
            Validation { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "validation"),
            BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
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
            column: Some(e.column() as u64),
            field: None,
        }
    }

    /// Bad input with no place to name.
    pub fn validation(message: impl Into<String>) -> Self {
        AppError::Validation {
            message: message.into(),
            line: None,
            column: None,
            field: None,
        }
    }

    /// An upload that cannot be read as rows (no header, no `log_message` column).
    /// A numeric column is a `column`, a named one a `field`.
    pub fn input(e: logsieve_pipeline::io::InputError) -> Self {
        let (column, field) = match e.column {
            Some(c) => match c.parse::<u64>() {
                Ok(n) => (Some(n), None),
                Err(_) => (None, Some(c)),
            },
            None => (None, None),
        };
        AppError::Validation {
            message: e.message,
            line: Some(e.line),
            column,
            field,
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
            if let AppError::Validation {
                line, column, field, ..
            } = &self
            {
                if let Some(l) = line {
                    error["line"] = (*l).into();
                }
                if let Some(c) = column {
                    error["column"] = (*c).into();
                }
                if let Some(f) = field {
                    error["field"] = f.clone().into();
                }
            }
        }
        let mut resp = (status, Json(serde_json::json!({ "error": error }))).into_response();
        resp.extensions_mut().insert(Shaped);
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

/// Marks a response whose body is already the one error shape.
#[derive(Clone, Copy)]
struct Shaped;

/// Middleware: an error response that did not come from [`AppError`] (a
/// layer's bare 415, an extractor's plain-text rejection, a 408 or 413 from
/// a body limit) gets the one JSON shape, its text kept as the message.
pub async fn one_shape(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || resp.extensions().get::<Shaped>().is_some()
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let encoded = parts.headers.contains_key(axum::http::header::CONTENT_ENCODING);
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(b) if !encoded => String::from_utf8_lossy(&b).trim().to_string(),
        _ => String::new(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "validation",
        StatusCode::TOO_MANY_REQUESTS => "overloaded",
        StatusCode::SERVICE_UNAVAILABLE => "not_ready",
        StatusCode::GATEWAY_TIMEOUT => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let message = if status.is_server_error() {
        tracing::warn!(status = status.as_u16(), body = %text, "error response from a layer");
        "internal error".to_string()
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut resp = (
        status,
        Json(serde_json::json!({ "error": { "code": code, "message": message } })),
    )
        .into_response();
    use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
    for (k, v) in parts.headers.iter() {
        if k != CONTENT_TYPE && k != CONTENT_LENGTH && k != CONTENT_ENCODING {
            resp.headers_mut().append(k.clone(), v.clone());
        }
    }
    resp
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
                ..
            } => {
                assert_eq!(line, Some(2));
                assert_eq!(column, Some(8));
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
