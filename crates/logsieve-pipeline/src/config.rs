//! The cascade's part of the one TOML configuration: rules, model, input
//! limits, per-source routes, templates and the LLM. Unknown fields are
//! rejected, with line and column; CLI flags override the file.
//!
//! Each table belongs to the crate that uses it: `[server]` is
//! `logsieve_server::ServerConfig`'s and `[templates] max_templates` the
//! `templates` command's; this struct lets them pass ([`Owned`]) and those
//! owners read them from the same text with [`parse_toml`]. Reading the file
//! is the caller's business (the CLI's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The configuration used when no file is given.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../../../config/default.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
    /// The decision store.
    pub store: StoreConfig,
    /// `[server]`: `logsieve serve`'s, read by `logsieve_server::ServerConfig`.
    #[serde(skip_serializing)]
    server: Owned,
    /// `[kafka]`: `logsieve stream`'s, read by `logsieve_kafka::KafkaConfig`.
    #[serde(skip_serializing)]
    kafka: Owned,
}

/// A table or field another crate reads from the same file: accepted here
/// whatever it holds (its owner checks it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Owned;

impl<'de> Deserialize<'de> for Owned {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Owned)
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
    /// `max_templates`: the `templates` command's (it reads it itself).
    #[serde(skip_serializing, rename = "max_templates")]
    max_templates: Owned,
}

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self {
            masking: None,
            cache_capacity: 100_000,
            max_templates: Owned,
        }
    }
}

/// `[store]`: where decisions are kept across runs (see crates/logsieve-store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The SQLite file. `classify` uses none unless this (or `--store`)
    /// names one; `serve` defaults to `$LOGSIEVE_HOME/store.db`.
    pub path: Option<PathBuf>,
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

impl Route {
    /// As the configuration spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Cascade => "cascade",
            Route::Rules => "rules",
            Route::Model => "model",
            Route::Llm => "llm",
        }
    }
}

/// Deserialise `text` (the file at `path`) as `T`; an error names the file,
/// line and column. For each crate's view of the one configuration file.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
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
    })
}

impl Config {
    /// The built-in configuration.
    pub fn builtin() -> Self {
        Self::from_toml(DEFAULT_CONFIG_TOML, Path::new("<built-in config/default.toml>"))
            .expect("built-in config is valid")
    }

    /// Parse TOML; relative paths (rules, classifier, embedding model,
    /// masking rules) are resolved against the file's directory.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Config = parse_toml(text, path)?;
        if let Some(base) = path.parent().filter(|p| p.exists()) {
            for p in [
                &mut cfg.rules.path,
                &mut cfg.model.classifier,
                &mut cfg.model.embedding_dir,
                &mut cfg.templates.masking,
                &mut cfg.store.path,
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
    fn local_llm_config_is_the_default_but_for_its_llm_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/local-llm.toml");
        let local = Config::from_toml(&std::fs::read_to_string(&path).unwrap(), &path).unwrap();
        let mut builtin = Config::builtin();
        assert_eq!(local.llm.min_example_similarity, 0.45);
        assert!(local.llm.is_local());
        builtin.llm = local.llm.clone();
        assert_eq!(
            serde_json::to_value(&local).unwrap(),
            serde_json::to_value(&builtin).unwrap()
        );
    }

    #[test]
    fn builtin_routes_legacy_crm_to_the_llm() {
        let c = Config::builtin();
        assert_eq!(c.route("LegacyCRM"), Route::Llm);
        assert_eq!(c.route("ModernCRM"), Route::Cascade);
        assert_eq!(c.model.max_tokens, 256);
    }

    #[test]
    fn tables_other_crates_own_pass_through() {
        let c = Config::from_toml(
            "[server]\nport = 80\n[templates]\nmax_templates = 5000\n",
            Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(c.templates.cache_capacity, 100_000);
    }

    #[test]
    fn paths_are_resolved_against_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        let c = Config::from_toml(
            "[rules]\npath = \"r.toml\"\n[templates]\nmasking = \"m.toml\"\n",
            &file,
        )
        .unwrap();
        assert_eq!(c.rules.path, Some(dir.path().join("r.toml")));
        assert_eq!(c.templates.masking, Some(dir.path().join("m.toml")));
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
