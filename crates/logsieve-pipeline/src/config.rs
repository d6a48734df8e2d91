//! The one TOML configuration: rules, model, input limits and per-source
//! routes. Unknown fields are rejected; CLI flags override the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rules: RulesConfig,
    pub model: ModelConfig,
    pub input: InputConfig,
    /// Source name → route.
    pub routes: BTreeMap<String, Route>,
    /// Masking and the template cache.
    pub templates: TemplatesConfig,
    /// The LLM stage (see crates/logsieve-llm/README.md).
    pub llm: logsieve_llm::LlmConfig,
    /// `logsieve serve` (see crates/logsieve-server/README.md).
    pub server: ServerConfig,
}

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
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TemplatesConfig {
    /// A masking rules TOML (Drain3-style); `None` uses the built-in rules.
    pub masking: Option<PathBuf>,
    /// Decisions kept in the template cache (LRU, keyed by source and masked
    /// text); 0 turns the cache off.
    pub cache_capacity: usize,
    /// `logsieve templates`: most templates the miner keeps; past it the
    /// least recently matched one is evicted (bounded memory on endless
    /// streams). 0: unlimited. `--max-templates` overrides it.
    pub max_templates: usize,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self {
            masking: None,
            cache_capacity: 100_000,
            max_templates: 0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// A rules TOML file; `None` uses the built-in rules.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A classifier directory (or its classifier.json); `None` uses the built-in model.
    pub classifier: Option<PathBuf>,
    /// A local copy of the embedding model; `None` uses the cache (fetched on first use).
    pub embedding_dir: Option<PathBuf>,
    /// Below this top probability a row falls through; `None` uses the classifier's own.
    pub threshold: Option<f32>,
    /// Inputs are truncated to this many tokens.
    pub max_tokens: usize,
    /// Padded tokens per forward pass.
    pub batch_tokens: usize,
    /// Rows per forward pass.
    pub max_batch: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        let b = logsieve_embed::BatchOptions::default();
        Self {
            classifier: None,
            embedding_dir: None,
            threshold: None,
            max_tokens: b.max_tokens,
            batch_tokens: b.batch_tokens,
            max_batch: b.max_batch,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    /// Only this many bytes of a message are classified.
    pub max_message_bytes: usize,
    /// Rows read, classified and written together.
    pub chunk_rows: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 64 * 1024,
            chunk_rows: 2048,
        }
    }
}

/// Where a source's rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Rules, then the model, then the LLM.
    Cascade,
    /// Rules only; unmatched rows are Unclassified.
    Rules,
    /// The model (then the LLM), skipping rules.
    Model,
    /// Straight to the LLM stage.
    Llm,
}

impl Config {
    /// The built-in configuration.
    pub fn builtin() -> Self {
        Self::from_toml(DEFAULT_CONFIG_TOML, Path::new("<built-in config/default.toml>"))
            .expect("built-in config is valid")
    }

    /// Parse TOML; relative paths are resolved against the file's directory.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
                    format!("line {line} column {col}: {}", e.message())
                }
                None => e.message().to_string(),
            },
        })?;
        if let Some(base) = path.parent().filter(|p| p.exists()) {
            for p in [
                &mut cfg.rules.path,
                &mut cfg.model.classifier,
                &mut cfg.model.embedding_dir,
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        if let Some(t) = cfg.model.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(ConfigError::Parse {
                    path: path.display().to_string(),
                    message: format!("model.threshold {t} is outside 0..1"),
                });
            }
        }
        Ok(cfg)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    pub fn route(&self, source: &str) -> Route {
        self.routes.get(source).copied().unwrap_or(Route::Cascade)
    }

    pub fn batch_options(&self) -> logsieve_embed::BatchOptions {
        logsieve_embed::BatchOptions {
            max_tokens: self.model.max_tokens,
            batch_tokens: self.model.batch_tokens,
            max_batch: self.model.max_batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_routes_legacy_crm_to_the_llm() {
        let c = Config::builtin();
        assert_eq!(c.route("LegacyCRM"), Route::Llm);
        assert_eq!(c.route("ModernCRM"), Route::Cascade);
        assert_eq!(c.model.max_tokens, 256);
    }

    #[test]
    fn builtin_server_table_matches_the_defaults() {
        assert_eq!(Config::builtin().server, ServerConfig::default());
        let e = Config::from_toml("[server]\nprot = 80\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("prot"), "{e}");
    }

    #[test]
    fn templates_max_templates_defaults_to_unlimited() {
        assert_eq!(Config::builtin().templates.max_templates, 0);
        let c = Config::from_toml("[templates]\nmax_templates = 5000\n", Path::new("c.toml")).unwrap();
        assert_eq!(c.templates.max_templates, 5000);
        assert_eq!(c.templates.cache_capacity, 100_000);
    }

    #[test]
    fn unknown_fields_are_rejected_with_line() {
        let e = Config::from_toml("[model]\nthreshhold = 0.7\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("c.toml: line 2 column 1"), "{e}");
        assert!(e.contains("threshhold"), "{e}");
    }

    #[test]
    fn bad_route_and_threshold_are_rejected() {
        let e = Config::from_toml("[routes]\nX = \"gpt\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        let e = Config::from_toml("[model]\nthreshold = 1.5\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside 0..1"), "{e}");
    }
}
