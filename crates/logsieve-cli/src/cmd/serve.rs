//! `logsieve serve`: the HTTP service. Settings come from the config's
//! `[server]` table, then `LOGSIEVE_*` environment variables, then flags.
//! The API token is read from `LOGSIEVE_API_TOKEN` only (not a flag, so it
//! never shows in `ps`), and is never printed.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::common::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on [config: server.host, default 127.0.0.1].
    #[arg(long, env = "LOGSIEVE_HOST")]
    pub host: Option<String>,
    /// Port to listen on [config: server.port, default 8000].
    #[arg(long, env = "LOGSIEVE_PORT")]
    pub port: Option<u16>,
    /// Requests queued or classifying at once; one more gets 429 [server.queue_capacity].
    #[arg(long, env = "LOGSIEVE_QUEUE_CAPACITY")]
    pub queue_capacity: Option<usize>,
    /// Most rows merged into one classify call [server.max_batch_rows].
    #[arg(long, env = "LOGSIEVE_MAX_BATCH_ROWS")]
    pub max_batch_rows: Option<usize>,
    /// Classifier threads [server.workers].
    #[arg(long, env = "LOGSIEVE_WORKERS")]
    pub workers: Option<usize>,
    /// Per-request timeout in milliseconds; later is 504 [server.request_timeout_ms].
    #[arg(long, env = "LOGSIEVE_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Largest JSON body in bytes; larger is 413 [server.max_body_bytes].
    #[arg(long, env = "LOGSIEVE_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Largest upload in bytes; larger is 413 [server.max_upload_bytes].
    #[arg(long, env = "LOGSIEVE_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Open connections at once; one more is answered 503 and closed [server.max_connections].
    #[arg(long, env = "LOGSIEVE_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Milliseconds a request's headers may take [server.header_timeout_ms].
    #[arg(long, env = "LOGSIEVE_HEADER_TIMEOUT_MS")]
    pub header_timeout_ms: Option<u64>,
    /// Milliseconds a keep-alive connection may stay idle [server.idle_timeout_ms].
    #[arg(long, env = "LOGSIEVE_IDLE_TIMEOUT_MS")]
    pub idle_timeout_ms: Option<u64>,
    /// Milliseconds a request body (or a client reading its answer) may stall [server.body_timeout_ms].
    #[arg(long, env = "LOGSIEVE_BODY_TIMEOUT_MS")]
    pub body_timeout_ms: Option<u64>,
    /// CORS origin to allow (repeat, or comma-separate; `*` for any) [server.cors_origins].
    #[arg(long = "cors-origin", env = "LOGSIEVE_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Decision store (SQLite): decisions and corrections survive a restart
    /// [config: store.path, default $LOGSIEVE_HOME/store.db].
    #[arg(long, env = "LOGSIEVE_STORE")]
    pub store: Option<PathBuf>,
    /// Keep no decisions across restarts (corrections last until the process ends).
    #[arg(long, conflicts_with = "store")]
    pub no_store: bool,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let config = cfg.load()?;
    let file = cfg.file()?;
    let mut server = logsieve_server::ServerConfig::from_toml(&file.text, &file.path)?;
    if let Some(h) = a.host {
        server.host = h;
    }
    if let Some(p) = a.port {
        server.port = p;
    }
    if let Some(n) = a.queue_capacity {
        server.queue_capacity = n;
    }
    if let Some(n) = a.max_batch_rows {
        server.max_batch_rows = n;
    }
    if let Some(n) = a.workers {
        server.workers = n;
    }
    if let Some(n) = a.request_timeout_ms {
        server.request_timeout_ms = n;
    }
    if let Some(n) = a.max_body_bytes {
        server.max_body_bytes = n;
    }
    if let Some(n) = a.max_upload_bytes {
        server.max_upload_bytes = n;
    }
    if let Some(n) = a.max_connections {
        server.max_connections = n;
    }
    if let Some(n) = a.header_timeout_ms {
        server.header_timeout_ms = n;
    }
    if let Some(n) = a.idle_timeout_ms {
        server.idle_timeout_ms = n;
    }
    if let Some(n) = a.body_timeout_ms {
        server.body_timeout_ms = n;
    }
    if !a.cors_origins.is_empty() {
        server.cors_origins = a.cors_origins;
    }
    let token = std::env::var("LOGSIEVE_API_TOKEN").ok().filter(|t| !t.is_empty());
    let store = if a.no_store {
        None
    } else {
        let path = a
            .store
            .or_else(|| config.store.path.clone())
            .unwrap_or_else(|| logsieve_embed::fetch::default_home().join("store.db"));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("store {}: cannot create its directory", path.display()))?;
        }
        Some(crate::common::open_store(&path)?)
    };
    let pipeline = crate::common::pipeline_with_store(config, store)?;
    if let Some((_, s)) = pipeline.store() {
        eprintln!(
            "logsieve: decision store {} ({} decisions read, {} of them corrections{})",
            s.path,
            s.loaded,
            s.corrections,
            if s.stale_model > 0 {
                format!(
                    "; {} model decisions of another model version left out",
                    s.stale_model
                )
            } else {
                String::new()
            }
        );
    }
    logsieve_server::run(pipeline, server, token)?;
    Ok(0)
}
