//! Optional bearer-token auth (`LOGSIEVE_API_TOKEN`). Only the token's
//! SHA-256 is kept, and tokens are compared as digests in constant time,
//! so neither the token's bytes nor its length leak through timing. The
//! token is never logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{AppError, AppState};

pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Middleware on the classify and metrics routes: 401 unless the request
/// carries `Authorization: Bearer <token>` (when a token is configured).
pub async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(want) = st.token_digest else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    match given {
        Some(t) if bool::from(digest(t).ct_eq(&want)) => next.run(req).await,
        _ => AppError::Unauthorized.into_response(),
    }
}
