//! The dashboard page (`GET /dashboard`), its assets, and explanations
//! (`POST /v1/explain`). The page is one HTML file with its script inline
//! and Chart.js 4.6.1, vendored from the npm package `chart.js` (MIT, see
//! assets/chart.js.LICENSE), served from the binary: no CDN. The page
//! itself holds no data, so it is public; everything it shows comes from
//! `/v1/stats`, `/v1/tail` and `/v1/explain`, which need the bearer token
//! when one is set (the page asks for it and keeps it in the browser's
//! local storage). `logsieve report` renders the same page with the data
//! and the chart library inlined ([`report_html`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use logsieve_pipeline::{Explanation, Item};
use serde::Serialize;
use utoipa::ToSchema;

use crate::openapi::ClassifyErrors;
use crate::routes::LogIn;
use crate::stats::StatsOut;
use crate::{AppError, AppState};

/// The page, script inline; `/*__REPORT__*/` is where a report puts its data.
pub const DASHBOARD_HTML: &str = include_str!("../assets/dashboard.html");
/// Chart.js 4.6.1 (`dist/chart.umd.js` of the npm package).
pub const CHART_JS: &str = include_str!("../assets/chart.umd.js");

/// `GET /dashboard`: the monitoring page.
#[utoipa::path(get, path = "/dashboard", tag = "dashboard",
    responses((status = 200, description = "The dashboard page (served locally; its data needs the bearer token when one is set)", content_type = "text/html", body = String)))]
pub async fn page() -> Html<&'static str> {
    Html(DASHBOARD_HTML)
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, AppError> {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "chart.umd.js" => (CHART_JS.as_bytes(), "text/javascript; charset=utf-8"),
        "chart.js.LICENSE" => (
            include_bytes!("../assets/chart.js.LICENSE"),
            "text/plain; charset=utf-8",
        ),
        other => return Err(AppError::NotFound(format!("/dashboard/assets/{other}"))),
    };
    Ok((
        [(CONTENT_TYPE, kind), (CACHE_CONTROL, "public, max-age=86400")],
        body,
    )
        .into_response())
}

/// One page for one file: the dashboard with `stats` and Chart.js inlined,
/// no server needed (the live parts — tail, classify box — are hidden).
pub fn report_html(stats: &StatsOut, title: &str) -> String {
    // `</` inside a script would end it early; JSON allows `<\/`.
    let data = serde_json::to_string(&serde_json::json!({"title": title, "stats": stats}))
        .unwrap_or_else(|_| "null".into())
        .replace("</", "<\\/");
    let chart = CHART_JS.replace("</script", "<\\/script");
    DASHBOARD_HTML
        .replacen(
            r#"<script src="/dashboard/assets/chart.umd.js"></script>"#,
            &format!("<script>{chart}</script>"),
            1,
        )
        .replacen("/*__REPORT__*/null", &format!("/*__REPORT__*/{data}"), 1)
}

/// Why a line got its label.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainOut {
    pub source: String,
    pub log_message: String,
    pub target_label: String,
    /// `rule`, `model`, `llm` or `none`.
    pub method: String,
    pub confidence: f32,
    pub detail: String,
    /// The source's route: `cascade`, `rules`, `model` or `llm`.
    pub route: String,
    /// The message with its variables masked (`<NUM>`, `<IP>`, …).
    #[schema(example = "User <NUM> logged in.")]
    pub masked: String,
    /// 16 hex digits naming the masked text (a hash of it): the same for
    /// every line with this template, as in `/v1/stats`'s templates.
    pub template_id: String,
    /// The rule that matched, when one did.
    pub rule: Option<RuleOut>,
    /// The model stage's view, when it was asked.
    pub model: Option<ModelOut>,
    /// The LLM's reason, when it decided.
    pub llm_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleOut {
    pub id: String,
    /// The rule's regular expression.
    pub pattern: String,
    pub label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelOut {
    /// The three most probable labels, most probable first.
    pub top: Vec<LabelP>,
    /// `model p=…; runner-up …`, or why the model is unsure.
    pub verdict: String,
    /// The training examples nearest the line, most similar first.
    pub nearest: Vec<Nearest>,
    /// Why the model could not be asked (encoder unavailable).
    pub error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LabelP {
    pub label: String,
    pub probability: f32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Nearest {
    pub text: String,
    pub label: String,
    /// Cosine similarity of the sentence vectors.
    pub similarity: f32,
}

impl From<Explanation> for ExplainOut {
    fn from(e: Explanation) -> Self {
        Self {
            source: e.source,
            log_message: e.log_message,
            target_label: e.target_label,
            method: e.method.to_string(),
            confidence: e.confidence,
            detail: e.detail,
            route: e.route.to_string(),
            masked: e.masked,
            template_id: e.template_id,
            rule: e.rule.map(|r| RuleOut {
                id: r.id,
                pattern: r.pattern,
                label: r.label,
            }),
            model: e.model.map(|m| ModelOut {
                top: m
                    .top
                    .into_iter()
                    .map(|t| LabelP {
                        label: t.label,
                        probability: t.probability,
                    })
                    .collect(),
                verdict: m.verdict,
                nearest: m
                    .nearest
                    .into_iter()
                    .map(|n| Nearest {
                        text: n.text,
                        label: n.label,
                        similarity: n.similarity,
                    })
                    .collect(),
                error: m.error,
            }),
            llm_reason: e.llm_reason,
        }
    }
}

/// `POST /v1/explain`: classify one line and say why.
#[utoipa::path(post, path = "/v1/explain", tag = "classify", security(("bearer" = [])),
    description = "Runs the cascade on one line (as /classify-single) and adds the rule id and pattern that matched, or the model's top three labels and the nearest training examples, or the LLM's reason; plus the masked text and template id. Not counted in /v1/stats.",
    request_body = LogIn,
    responses(
        (status = 200, description = "The decision and why", body = ExplainOut),
        ClassifyErrors,
    ))]
pub async fn explain(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ExplainOut>, AppError> {
    let one: LogIn = crate::routes::json_body(&st, &headers, body)?;
    let permit = st
        .explain_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| AppError::Overloaded)?;
    let max = st.pipeline.config().input.max_message_bytes.max(1);
    let message = logsieve_pipeline::run::clip(&one.log_message, max).to_string();
    // A classify call (encoder, maybe the LLM): on a blocking thread, never
    // an async worker; bounded by the request timeout.
    let pipeline = st.pipeline.clone();
    let work = tokio::task::spawn_blocking(move || {
        // Held until the work is done, even when the caller timed out.
        let _permit = permit;
        pipeline.explain(Item {
            source: &one.source,
            message: &message,
        })
    });
    match tokio::time::timeout(st.request_timeout(), work).await {
        Err(_) => Err(AppError::Timeout(st.config.request_timeout_ms)),
        Ok(Err(e)) => Err(AppError::Internal(format!("explaining failed: {e}"))),
        Ok(Ok(e)) => Ok(Json(e.into())),
    }
}
