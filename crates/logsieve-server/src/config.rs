//! The `[server]` table of the configuration file: `logsieve serve`'s
//! settings. This crate owns it; the cascade's tables are
//! `logsieve_pipeline::Config`'s. `logsieve serve` flags and `LOGSIEVE_*`
//! environment variables override it (in the CLI).

use std::path::Path;

use logsieve_pipeline::config::{parse_toml, ConfigError};
use serde::{Deserialize, Serialize};

/// The HTTP service's settings; `logsieve serve` flags and `LOGSIEVE_*`
/// environment variables override them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub host: String,
    /// Port to listen on (0 picks a free one).
    pub port: u16,
    /// Largest JSON request body (`/classify-single`, `/v1/classify`), in bytes; larger is 413.
    pub max_body_bytes: usize,
    /// Largest upload (`/classify`, `/v1/logs`), in bytes; larger is 413. Uploads are
    /// streamed, so this bounds the work, not the memory.
    pub max_upload_bytes: u64,
    /// Requests (or upload chunks) queued or being classified at once; one more is 429.
    pub queue_capacity: usize,
    /// The batcher merges queued requests into one classify call of at most this many rows
    /// (a single larger request goes alone).
    pub max_batch_rows: usize,
    /// ... and at most this many message bytes (a rough token budget: ~4 bytes a token).
    pub max_batch_bytes: usize,
    /// Threads running the classifier, each taking batches from the one queue.
    pub workers: usize,
    /// A request waiting longer than this for its result gets 504, in milliseconds.
    /// Uploads: applies to the wait before the response starts.
    pub request_timeout_ms: u64,
    /// Origins allowed by CORS (`*` for any); empty sends no CORS headers.
    pub cors_origins: Vec<String>,
    /// Connections open at once; past it a new connection is answered 503
    /// `too_many_connections` and closed. Lowered at start to what the
    /// process's descriptor limit allows.
    pub max_connections: usize,
    /// A request's headers must arrive within this many milliseconds of its
    /// first byte (or of the connection opening); later, the connection is closed.
    pub header_timeout_ms: u64,
    /// A keep-alive connection with no request for this many milliseconds is closed.
    pub idle_timeout_ms: u64,
    /// A request body that sends nothing for this many milliseconds is cut
    /// (408 `request_timeout` when the answer has not started), and a client
    /// that takes nothing of its answer for as long is disconnected.
    pub body_timeout_ms: u64,
    /// The dashboard's alert tail: the newest Security Alert and Critical
    /// Error lines kept (and listed back after a restart when stored).
    pub alert_tail: usize,
    /// The dashboard's counts older than this many hours are pruned, in
    /// memory and in the decision store's `agg_*` tables alike (every
    /// minute, in the background).
    pub stats_retention_hours: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            max_body_bytes: 2 * 1024 * 1024,
            max_upload_bytes: 1024 * 1024 * 1024,
            queue_capacity: 256,
            max_batch_rows: 256,
            max_batch_bytes: 256 * 1024,
            workers: 1,
            request_timeout_ms: 30_000,
            cors_origins: Vec::new(),
            max_connections: 1000,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_timeout_ms: 30_000,
            alert_tail: 1000,
            stats_retention_hours: 7 * 24,
        }
    }
}

/// The file as this crate sees it: only `[server]`.
#[derive(Deserialize)]
struct File {
    #[serde(default)]
    server: ServerConfig,
}

impl ServerConfig {
    /// The `[server]` table of the configuration file `text` (read from
    /// `path`); defaults where it is absent. Errors name file, line and column.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        Ok(parse_toml::<File>(text, path)?.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_server_table_matches_the_defaults() {
        let builtin = ServerConfig::from_toml(
            logsieve_pipeline::config::DEFAULT_CONFIG_TOML,
            Path::new("default.toml"),
        )
        .unwrap();
        assert_eq!(builtin, ServerConfig::default());
        let e = ServerConfig::from_toml("[server]\nprot = 80\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("prot"), "{e}");
        let c = ServerConfig::from_toml(
            "[model]\nthreshold = 0.7\n[server]\nport = 9\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.port, 9);
    }
}
