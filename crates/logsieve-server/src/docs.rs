//! API documentation that works offline: the OpenAPI document (derived from
//! the handlers, see `openapi`), Swagger UI
//! at `/docs` and ReDoc at `/redoc`. The UI bundles are vendored from the
//! npm packages `swagger-ui-dist` 5.35.0 and `redoc` 2.5.4 (see
//! assets/*.LICENSE) and served from the binary: no CDN.

use axum::extract::Path;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Response};

use crate::AppError;

const SWAGGER_HTML: &str = r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>logsieve API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui", validatorUrl: null });
</script>
</body>
</html>
"##;

const REDOC_HTML: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>logsieve API</title>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/assets/redoc.standalone.js"></script>
</body>
</html>
"#;

/// `GET /openapi.json`: the description derived from the handlers.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "This document", content_type = "application/json", body = String)))]
pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], crate::openapi::document()).into_response()
}

/// `GET /docs`: Swagger UI.
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "Swagger UI (served locally)", content_type = "text/html", body = String)))]
pub async fn swagger() -> Html<&'static str> {
    Html(SWAGGER_HTML)
}

/// `GET /redoc`: ReDoc.
#[utoipa::path(get, path = "/redoc", tag = "docs",
    responses((status = 200, description = "ReDoc (served locally)", content_type = "text/html", body = String)))]
pub async fn redoc() -> Html<&'static str> {
    Html(REDOC_HTML)
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, AppError> {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "swagger-ui-bundle.js" => (
            include_bytes!("../assets/swagger-ui-bundle.js"),
            "text/javascript; charset=utf-8",
        ),
        "swagger-ui.css" => (
            include_bytes!("../assets/swagger-ui.css"),
            "text/css; charset=utf-8",
        ),
        "redoc.standalone.js" => (
            include_bytes!("../assets/redoc.standalone.js"),
            "text/javascript; charset=utf-8",
        ),
        other => return Err(AppError::NotFound(format!("/docs/assets/{other}"))),
    };
    Ok((
        [(CONTENT_TYPE, kind), (CACHE_CONTROL, "public, max-age=86400")],
        body,
    )
        .into_response())
}
