//! The API description, derived from the code: each handler carries a
//! `#[utoipa::path]` attribute and each body type derives `ToSchema`; the
//! router registers documented handlers through `utoipa_axum::routes!`, so a
//! route cannot be served without being described. `/openapi.json` serves
//! what [`document`] returns. The few routes outside the description
//! (trailing-slash aliases, the documentation pages' assets) are listed in
//! one place, `crate::undocumented_routes`.

use std::sync::OnceLock;

use serde::Serialize;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error: `{"error":{"code","message"}}` (plus `line`/`column` where known).
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// bad_request, unauthorized, not_found, method_not_allowed,
    /// payload_too_large, unsupported_media_type, unsupported_encoding,
    /// validation, overloaded, not_ready, timeout, internal.
    pub code: String,
    pub message: String,
    /// Where the input is wrong, when known.
    pub line: Option<u64>,
    pub column: Option<String>,
}

/// The errors every classify route can answer (the body is always [`ErrorBody`]).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum ClassifyErrors {
    #[response(status = 401, description = "Missing or invalid bearer token")]
    Unauthorized(ErrorBody),
    #[response(status = 413, description = "Body over the limit")]
    TooLarge(ErrorBody),
    #[response(status = 415, description = "Wrong content type or encoding")]
    Unsupported(ErrorBody),
    #[response(
        status = 422,
        description = "Unparsable or incomplete input, with line and column"
    )]
    Validation(ErrorBody),
    #[response(status = 429, description = "Queue full; retry (Retry-After)")]
    Overloaded(ErrorBody),
    #[response(status = 504, description = "No result within the request timeout")]
    Timeout(ErrorBody),
}

/// A multipart upload: the file in the field `file`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    #[schema(format = Binary, value_type = String)]
    pub file: Vec<u8>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "logsieve",
        description = "Hybrid log classification: rules, then all-MiniLM-L6-v2 embeddings + logistic regression, then an LLM. Every error has the shape {\"error\":{\"code\",\"message\"}}. Bulk request bodies (/classify, /v1/classify, /v1/logs) may be gzip-compressed (Content-Encoding: gzip; limits count the decompressed bytes), and their answers are gzip-compressed for Accept-Encoding: gzip; /classify-single takes plain bodies."
    ),
    components(schemas(ErrorBody, ErrorDetail, UploadForm)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

/// The `bearer` security scheme the protected routes name.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        let mut http = Http::new(HttpAuthScheme::Bearer);
        http.description = Some("Required when the server runs with LOGSIEVE_API_TOKEN set.".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(http));
    }
}

static DOCUMENT: OnceLock<String> = OnceLock::new();

/// The description of the routes [`crate::app`] serves, as JSON.
pub fn document() -> &'static str {
    DOCUMENT.get_or_init(|| {
        crate::documented_routes()
            .split_for_parts()
            .1
            .to_pretty_json()
            .expect("the API description serialises")
    })
}
