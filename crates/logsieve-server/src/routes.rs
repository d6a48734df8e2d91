//! The small endpoints: health, readiness, metrics, and the JSON ones
//! (`/classify-single`, `/v1/classify`), which go through the batcher with
//! admission (429) and a per-request timeout (504).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use logsieve_pipeline::run::clip;
use logsieve_pipeline::{Correction, Decision, FeedbackError};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::batcher::{BatchError, Row};
use crate::error::NotReady;
use crate::openapi::{ClassifyErrors, ErrorBody};
use crate::{AppError, AppState};

/// Liveness, and which stages are on.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
    pub version: &'static str,
    pub stages: Stages,
    pub queue: Queue,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stages {
    /// Rules loaded.
    pub rules: usize,
    pub model_loaded: bool,
    /// `loading`, `loaded` or `failed`.
    pub model: &'static str,
    /// Whether the LLM stage is on, and why not.
    pub llm: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queue {
    pub in_flight: usize,
    pub capacity: usize,
}

/// `GET /health`: alive, and which stages are on.
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "Liveness and which stages are on", body = Health)))]
pub async fn health(State(st): State<Arc<AppState>>) -> Json<Health> {
    let model = match st.encoder.get() {
        None => "loading",
        Some(Ok(())) => "loaded",
        Some(Err(_)) => "failed",
    };
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        stages: Stages {
            rules: st.pipeline.rules().specs().len(),
            model_loaded: matches!(st.encoder.get(), Some(Ok(()))),
            model,
            llm: st.pipeline.llm().status().to_string(),
        },
        queue: Queue {
            in_flight: st.batcher.in_flight(),
            capacity: st.batcher.capacity(),
        },
    })
}

/// `GET /`: the same as `/health`.
#[utoipa::path(get, path = "/", tag = "service",
    responses((status = 200, description = "Same as /health", body = Health)))]
pub async fn root(st: State<Arc<AppState>>) -> Json<Health> {
    health(st).await
}

/// `/ready`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: &'static str,
}

/// `GET /ready`: 200 once the encoder has loaded and passed its health
/// check (`Embedder::health`, run once by the loader
/// thread, so this never touches the encoder), 503 before or if either
/// failed.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses(
        (status = 200, description = "Ready", body = Ready),
        (status = 503, description = "Encoder loading, or it failed to load or its health check", body = ErrorBody),
    ))]
pub async fn ready(State(st): State<Arc<AppState>>) -> Result<Json<Ready>, AppError> {
    match st.encoder.get() {
        None => Err(NotReady::Loading.into()),
        Some(Err(e)) => Err(e.clone().into()),
        Some(Ok(())) => Ok(Json(Ready { status: "ready" })),
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "service", security(("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
    ))]
pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        st.metrics.render(&st),
    )
        .into_response()
}

pub async fn not_found(uri: Uri) -> AppError {
    AppError::NotFound(uri.path().to_string())
}

pub async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}

/// One row in, as the reference server takes it.
/// Other fields (timestamps, hosts) are ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LogIn {
    #[schema(example = "ModernCRM")]
    pub source: String,
    #[schema(example = "User User1 logged in.")]
    pub log_message: String,
}

/// One decision out.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Decision)]
pub struct DecisionOut {
    #[schema(example = "User Action")]
    pub target_label: String,
    /// `rule`, `model`, `llm`, `feedback` (a person's correction) or `none`.
    pub method: &'static str,
    /// 0–1, rounded to 4 decimals, as in CSV output.
    pub confidence: f64,
    /// The rule id, the model's runner-up, or why the row fell through.
    pub detail: String,
}

impl From<Decision> for DecisionOut {
    fn from(d: Decision) -> Self {
        Self {
            target_label: d.target_label,
            method: d.method.as_str(),
            confidence: (d.confidence as f64 * 10000.0).round() / 10000.0,
            detail: d.detail,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct BatchIn {
    pub logs: Vec<LogIn>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BatchOut {
    pub results: Vec<DecisionOut>,
}

/// A JSON body: checks the content type (415), the size (413, via the
/// body limit) and the syntax and fields (422 with line and column).
fn json_body<T: serde::de::DeserializeOwned>(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, AppError> {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Bulk routes decode gzip before this (and drop the header); a single
    // line's body is not worth compressing, so it must come plain.
    if let Some(enc) = headers.get(axum::http::header::CONTENT_ENCODING) {
        let enc = enc.to_str().unwrap_or("?");
        if !enc.trim().eq_ignore_ascii_case("identity") {
            return Err(AppError::UnsupportedEncoding {
                got: enc.to_string(),
                expected: "identity: this route takes plain bodies (gzip is for /classify, /v1/classify and /v1/logs)",
            });
        }
    }
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if !(mime == "application/json" || mime.ends_with("+json")) {
        return Err(AppError::UnsupportedMediaType {
            got: if ct.is_empty() { "(none)".into() } else { ct.into() },
            expected: "application/json",
        });
    }
    let body = body.map_err(|e| {
        if crate::timeouts::is_body_timeout(&e) {
            AppError::BodyTimeout(st.config.body_timeout_ms)
        } else if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge {
                limit: st.config.max_body_bytes as u64,
            }
        } else {
            AppError::BadRequest(format!("cannot read the body: {e}"))
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| AppError::json(&e))
}

/// Send rows through the queue and wait for them, within the request timeout.
pub async fn classify_rows(st: &AppState, rows: Vec<Row>) -> Result<Vec<Decision>, AppError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    // As for uploads: only the first max_message_bytes of a message are classified.
    let max = st.pipeline.config().input.max_message_bytes.max(1);
    let rows = rows
        .into_iter()
        .map(|(s, m)| {
            let m = if m.len() > max {
                clip(&m, max).to_string()
            } else {
                m
            };
            (s, m)
        })
        .collect();
    let rx = st.batcher.try_submit(rows).map_err(|e| match e {
        BatchError::Overloaded => AppError::Overloaded,
        BatchError::Closed => AppError::Internal("classifier threads stopped".into()),
        BatchError::Timeout => AppError::Timeout(st.config.request_timeout_ms),
    })?;
    match tokio::time::timeout(st.request_timeout(), rx).await {
        Err(_) => Err(AppError::Timeout(st.config.request_timeout_ms)),
        Ok(Err(_)) => Err(AppError::Internal("the classifier dropped the request".into())),
        Ok(Ok(d)) => Ok(d),
    }
}

/// `POST /classify-single`: `{"source","log_message"}` → one decision.
#[utoipa::path(post, path = "/classify-single", tag = "classify", security(("bearer" = [])),
    description = "Also at /classify-single/.",
    request_body = LogIn,
    responses(
        (status = 200, description = "The decision", body = DecisionOut),
        ClassifyErrors,
    ))]
pub async fn classify_single(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DecisionOut>, AppError> {
    let one: LogIn = json_body(&st, &headers, body)?;
    let mut d = classify_rows(&st, vec![(one.source, one.log_message)]).await?;
    let d = d
        .pop()
        .ok_or_else(|| AppError::Internal("no decision for the row".into()))?;
    Ok(Json(d.into()))
}

/// `POST /v1/classify`: `{"logs":[…]}` → `{"results":[…]}`, in order.
#[utoipa::path(post, path = "/v1/classify", tag = "classify", security(("bearer" = [])),
    request_body = BatchIn,
    responses(
        (status = 200, description = "One decision per line, in input order", body = BatchOut),
        ClassifyErrors,
    ))]
pub async fn classify_batch(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<BatchOut>, AppError> {
    let batch: BatchIn = json_body(&st, &headers, body)?;
    let n = batch.logs.len();
    let rows = batch
        .logs
        .into_iter()
        .map(|l| (l.source, l.log_message))
        .collect();
    let decided = classify_rows(&st, rows).await?;
    if decided.len() != n {
        return Err(AppError::Internal(format!(
            "{} decisions for {n} rows",
            decided.len()
        )));
    }
    Ok(Json(BatchOut {
        results: decided.into_iter().map(DecisionOut::from).collect(),
    }))
}

/// A person's correction: every line of this message's template (its source
/// and masked text) gets `target_label` from now on.
#[derive(Debug, Deserialize, ToSchema)]
pub struct FeedbackIn {
    #[schema(example = "BillingSystem")]
    pub source: String,
    #[schema(example = "Payment gateway timeout after 30000 ms for invoice 5512")]
    pub log_message: String,
    /// A known label (the classifier's, the rules' or the LLM's; any letter case).
    #[schema(example = "Workflow Error")]
    pub target_label: String,
}

/// The correction as applied.
#[derive(Debug, Serialize, ToSchema)]
pub struct FeedbackOut {
    /// The masked text every line of the template shares.
    #[schema(example = "Payment gateway timeout after <NUM> ms for invoice <NUM>")]
    pub template: String,
    /// What lines of the template now get (`method` = `feedback`, confidence 1).
    pub decision: DecisionOut,
    /// Whether the correction is in the decision store (so it survives a
    /// restart); false when the server runs without one (`--no-store`).
    pub stored: bool,
}

/// `POST /v1/feedback`: a person's correction, in effect at once for every
/// line with the template and written to the decision store before the answer.
#[utoipa::path(post, path = "/v1/feedback", tag = "feedback", security(("bearer" = [])),
    description = "Corrects the label of a template: from the answer on, every line with this message's source and masked text comes out with `target_label`, `method` = `feedback`, confidence 1, whatever decided it before (a rule included). The correction is written to the decision store before the answer, so it survives a restart.",
    request_body = FeedbackIn,
    responses(
        (status = 200, description = "The correction, applied (and stored)", body = FeedbackOut),
        (status = 401, description = "Missing or invalid bearer token", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 415, description = "Wrong content type or encoding", body = ErrorBody),
        (status = 422, description = "Unknown label (the message lists the known ones; field `target_label`), empty `log_message`, or unparsable JSON", body = ErrorBody),
        (status = 500, description = "Applied, but the store could not write it", body = ErrorBody),
    ))]
pub async fn feedback(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FeedbackOut>, AppError> {
    let f: FeedbackIn = json_body(&st, &headers, body)?;
    let pipeline = st.pipeline.clone();
    // Masking and the store's commit: off the async workers.
    let applied = tokio::task::spawn_blocking(move || {
        pipeline.feedback(&[Correction {
            source: f.source,
            message: f.log_message,
            label: f.target_label,
        }])
    })
    .await
    .map_err(|e| AppError::Internal(format!("feedback task: {e}")))?;
    let field = |message: String, field: &str| AppError::Validation {
        message,
        line: None,
        column: None,
        field: Some(field.into()),
    };
    let mut applied = applied.map_err(|e| match e {
        FeedbackError::UnknownLabel { label, known, .. } => field(
            format!("unknown label `{label}`; known labels: {}", known.join(", ")),
            "target_label",
        ),
        FeedbackError::EmptyMessage { .. } => field("empty log_message".into(), "log_message"),
        FeedbackError::Store(e) => AppError::Internal(e.to_string()),
    })?;
    let a = applied
        .pop()
        .ok_or_else(|| AppError::Internal("no correction applied".into()))?;
    Ok(Json(FeedbackOut {
        template: a.template,
        decision: a.decision.into(),
        stored: st.pipeline.store().is_some(),
    }))
}
