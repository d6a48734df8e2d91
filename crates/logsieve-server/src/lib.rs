//! logsieve's HTTP service: the router, the shared state and the process
//! around them (binding, signals, graceful shutdown).
//!
//! Layers, as in TEI: HTTP handlers (`routes`, `upload`) → the batching
//! queue (`batcher`, classifier threads) → `logsieve_pipeline::Pipeline`.
//! No classification runs on an async worker. The API description
//! (`/openapi.json`) is derived from the handlers (`openapi`): routes are
//! registered from their `#[utoipa::path]` attributes. The configuration's
//! `[server]` table is this crate's (`config`).

pub mod agg_store;
pub mod aggregates;
mod auth;
pub mod batcher;
pub mod config;
pub mod dashboard;
mod docs;
pub mod error;
pub mod metrics;
mod multipart_guard;
pub mod openapi;
mod routes;
pub mod stats;
pub mod timeouts;
mod upload;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method};
use axum::routing::{get, post};
use axum::{middleware, Router};
use logsieve_pipeline::{EncoderUnavailable, Pipeline};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use batcher::Batcher;
pub use config::ServerConfig;
pub use config::ServerConfig as Config;
pub use error::AppError;

/// Everything a handler needs; one `Arc<AppState>` is shared by all.
pub struct AppState {
    /// The cascade. Handlers read its settings and counters; only the
    /// batcher's threads call `classify` on it.
    pub pipeline: Arc<Pipeline>,
    /// The bounded queue in front of the classifier threads.
    pub batcher: Batcher,
    /// Limits, timeouts, CORS (the `[server]` table plus overrides).
    pub config: ServerConfig,
    /// SHA-256 of the bearer token when auth is on; the token itself is not kept.
    pub token_digest: Option<[u8; 32]>,
    /// Prometheus registry and the server's own series.
    pub metrics: Arc<metrics::Metrics>,
    /// The dashboard's aggregates, fed by the batcher.
    pub recorder: Arc<aggregates::Recorder>,
    /// Turns true when the server begins to shut down: endless answers
    /// (the `/v1/tail` event stream) end then, so the graceful shutdown
    /// does not wait on them.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// `/v1/explain` runs the cascade outside the batcher (it needs the
    /// model's view, not only the decision): at most this many at once,
    /// more get 429 as a full queue does.
    pub explain_permits: Arc<tokio::sync::Semaphore>,
    /// Set once the encoder has loaded and passed its health check (`Ok`)
    /// or failed to (`Err`, why).
    pub encoder: Arc<OnceLock<Result<(), EncoderUnavailable>>>,
}

impl AppState {
    /// Start the classifier threads and load the encoder in the background
    /// (`/ready` turns 200 when it is loaded). `token`: the bearer token
    /// requests must carry, if any.
    pub fn new(pipeline: Arc<Pipeline>, config: ServerConfig, token: Option<&str>) -> Arc<Self> {
        Self::with_store(pipeline, config, token, None)
    }

    /// [`AppState::new`] with the dashboard's aggregates kept in `store`
    /// (loaded now, appended to as lines are classified).
    pub fn with_store(
        pipeline: Arc<Pipeline>,
        config: ServerConfig,
        token: Option<&str>,
        store: Option<Box<dyn aggregates::AggregateStore>>,
    ) -> Arc<Self> {
        let metrics = Arc::new(metrics::Metrics::new());
        let recorder = Arc::new(aggregates::Recorder::start(
            aggregates::RecorderConfig {
                alert_capacity: config.alert_tail,
                retention: Duration::from_secs(config.stats_retention_hours.saturating_mul(3600)),
                ..Default::default()
            },
            pipeline.masker().clone(),
            {
                let p = pipeline.clone();
                Box::new(move || aggregates::SieveCounts::of(&p))
            },
            store,
        ));
        let batcher = Batcher::start(pipeline.clone(), &config, metrics.clone(), recorder.clone());
        let encoder = Arc::new(OnceLock::new());
        {
            let (pipeline, encoder) = (pipeline.clone(), encoder.clone());
            std::thread::Builder::new()
                .name("logsieve-encoder-load".into())
                .spawn(move || {
                    let r = pipeline.encoder_health();
                    match &r {
                        Ok(()) => tracing::info!("encoder loaded"),
                        Err(e) => tracing::error!(error = %e, "encoder failed to load; model-stage rows come out `none`"),
                    }
                    let _ = encoder.set(r);
                })
                .expect("spawn the encoder loader");
        }
        Arc::new(Self {
            pipeline,
            batcher,
            config,
            token_digest: token.filter(|t| !t.is_empty()).map(auth::digest),
            metrics,
            recorder,
            closing: tokio::sync::watch::Sender::new(false),
            explain_permits: Arc::new(tokio::sync::Semaphore::new(EXPLAIN_AT_ONCE)),
            encoder,
        })
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms.max(1))
    }
}

/// Explanations computed at once (see [`AppState::explain_permits`]).
pub const EXPLAIN_AT_ONCE: usize = 4;

/// Routes served but left out of the API description: trailing-slash
/// aliases of documented routes, and the documentation pages' assets.
pub const UNDOCUMENTED: [&str; 5] = [
    "/docs/",
    "/docs/assets/{file}",
    "/dashboard/assets/{file}",
    "/classify/",
    "/classify-single/",
];

/// The documented routes by the middleware they get: public, bulk (gzip),
/// single lines, metrics (compressed answers). Each is registered through
/// `routes!`, from the handler's `#[utoipa::path]`, so serving a route means
/// describing it.
struct RouteGroups {
    public: OpenApiRouter<Arc<AppState>>,
    bulk: OpenApiRouter<Arc<AppState>>,
    single: OpenApiRouter<Arc<AppState>>,
    metrics: OpenApiRouter<Arc<AppState>>,
}

fn route_groups() -> RouteGroups {
    RouteGroups {
        public: OpenApiRouter::new()
            .routes(routes!(routes::root))
            .routes(routes!(routes::health))
            .routes(routes!(routes::ready))
            .routes(routes!(docs::openapi))
            .routes(routes!(docs::swagger))
            .routes(routes!(docs::redoc))
            .routes(routes!(dashboard::page)),
        bulk: OpenApiRouter::new()
            .routes(routes!(upload::classify_upload))
            .routes(routes!(routes::classify_batch))
            .routes(routes!(upload::ingest_logs)),
        single: OpenApiRouter::new()
            .routes(routes!(routes::classify_single))
            .routes(routes!(routes::feedback))
            .routes(routes!(dashboard::explain))
            .routes(routes!(stats::stats))
            .routes(routes!(stats::tail)),
        metrics: OpenApiRouter::new().routes(routes!(routes::metrics)),
    }
}

/// Every documented route, without middleware: what the API description is
/// made from.
pub(crate) fn documented_routes() -> OpenApiRouter<Arc<AppState>> {
    let g = route_groups();
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(g.public)
        .merge(g.bulk)
        .merge(g.single)
        .merge(g.metrics)
}

/// The router: every endpoint, its limits and middleware.
pub fn app(state: Arc<AppState>) -> Router {
    let g = route_groups();
    let public = g
        .public
        .route("/docs/", get(docs::swagger))
        .route("/docs/assets/{file}", get(docs::asset))
        .route("/dashboard/assets/{file}", get(dashboard::asset));
    // Bulk routes take `Content-Encoding: gzip` bodies (log shippers
    // compress; limits count the decompressed bytes) and answer gzip to
    // `Accept-Encoding: gzip`. Single lines skip both layers: they save
    // nothing there and cost per-request work on the hottest route.
    let bulk = g
        .bulk
        .route("/classify/", post(upload::classify_upload))
        .layer(RequestDecompressionLayer::new())
        .layer(middleware::from_fn(only_gzip_bodies))
        .layer(CompressionLayer::new());
    let protected = g
        .single
        .route("/classify-single/", post(routes::classify_single))
        .merge(g.metrics.layer(CompressionLayer::new()))
        .merge(bulk)
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let body_timeout = Duration::from_millis(state.config.body_timeout_ms.max(1));
    let (router, _) = public.merge(protected).split_for_parts();
    let mut router = router
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // JSON bodies; uploads read the body as a stream and count it themselves.
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            body_timeout,
            timeouts::body_timeout,
        ))
        .layer(middleware::from_fn(error::one_shape))
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track));
    if let Some(cors) = cors_layer(&state.config.cors_origins) {
        router = router.layer(cors);
    }
    // Outermost: the connection is busy until the answer is sent in full.
    router
        .layer(middleware::from_fn(timeouts::track_busy))
        .with_state(state)
}

/// A body in an encoding other than one gzip layer is refused in the one
/// error shape (before the decompression layer would answer 415 with no
/// body): `gzip, gzip` and the like included.
async fn only_gzip_bodies(
    mut req: axum::extract::Request,
    next: middleware::Next,
) -> Result<axum::response::Response, AppError> {
    let values: Vec<String> = req
        .headers()
        .get_all(axum::http::header::CONTENT_ENCODING)
        .iter()
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .collect();
    if !values.is_empty() {
        let codings: Vec<String> = values
            .iter()
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "identity")
            .collect();
        let ok = codings.len() <= 1 && codings.iter().all(|c| c == "gzip" || c == "x-gzip");
        if !ok {
            return Err(AppError::UnsupportedEncoding {
                got: values.join(", "),
                expected: "a single `gzip` (or `identity`)",
            });
        }
        // The decompression layer knows exactly `gzip`: say it that way.
        let headers = req.headers_mut();
        headers.remove(axum::http::header::CONTENT_ENCODING);
        if !codings.is_empty() {
            headers.insert(
                axum::http::header::CONTENT_ENCODING,
                HeaderValue::from_static("gzip"),
            );
        }
    }
    Ok(next.run(req).await)
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring an invalid CORS origin");
                None
            }
        }))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
            ]),
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// Bind `config.host:config.port` and serve until SIGTERM or ctrl-c, then
/// finish the requests in flight. Builds its own tokio runtime.
///
/// When the pipeline has a decision store, the dashboard's aggregates are
/// kept in it too ([`agg_store::SqliteAggregates`]): loaded now, so
/// `/v1/stats` goes on from where the last run stopped, and committed
/// before this returns.
pub fn run(pipeline: Pipeline, config: ServerConfig, token: Option<String>) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("logsieve-http")
        .build()?;
    rt.block_on(async move {
        let addr = format!("{}:{}", config.host, config.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ServeError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener.local_addr()?;
        let pipeline = Arc::new(pipeline);
        let aggregates = pipeline.store().map(|(store, _)| {
            Box::new(agg_store::SqliteAggregates::new(store.clone())) as Box<dyn aggregates::AggregateStore>
        });
        let state = AppState::with_store(pipeline.clone(), config, token.as_deref(), aggregates);
        eprintln!(
            "logsieve: listening on http://{local} (docs at http://{local}/docs; auth {})",
            if state.token_digest.is_some() { "on" } else { "off" }
        );
        serve(listener, state.clone(), shutdown_signal()).await?;
        // The last counts go to the store (the recorder's thread commits them).
        {
            let recorder = state.recorder.clone();
            let _ = tokio::task::spawn_blocking(move || recorder.flush()).await;
        }
        // What the classifier threads decided last goes to the store.
        if let Err(e) = pipeline.flush_store() {
            tracing::error!(error = %e, "the decision store did not take the last decisions");
        }
        eprintln!("logsieve: stopped");
        Ok(())
    })
}

/// Serve on `listener` until `shutdown` resolves; in-flight requests finish.
/// Connections are capped and timed out as the config says (see `timeouts`).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut limits = timeouts::Limits::from_config(&state.config);
    limits.max_connections = timeouts::fit_descriptor_limit(limits.max_connections);
    let listener = timeouts::GuardedListener::new(listener, limits);
    let closing = state.closing.clone();
    let shutdown = async move {
        shutdown.await;
        closing.send_replace(true);
    };
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<timeouts::ConnMeta>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
