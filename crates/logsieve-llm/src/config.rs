//! Owns the `[llm]` configuration table, its defaults and validation, the
//! environment overrides, and the API key (a type that never prints itself).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Environment variable that overrides [`LlmConfig::base_url`].
pub const ENV_BASE_URL: &str = "LOGSIEVE_LLM_BASE_URL";
/// Environment variable that overrides [`LlmConfig::model`].
pub const ENV_MODEL: &str = "LOGSIEVE_LLM_MODEL";
/// Environment variables searched for the API key, first match wins.
pub const ENV_API_KEYS: [&str; 3] = ["LOGSIEVE_LLM_API_KEY", "GROQ_API_KEY", "OPENAI_API_KEY"];

/// Groq's OpenAI-compatible endpoint.
pub const DEFAULT_BASE_URL: &str = "https://api.groq.com/openai/v1";
/// A current Llama model served by Groq.
pub const DEFAULT_MODEL: &str = "llama-3.3-70b-versatile";

/// Configuration of the LLM stage (the `[llm]` table of the logsieve config).
///
/// Every field has a default, so an empty table is valid; unknown fields are
/// rejected so a typo does not silently fall back to a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Turn the stage off entirely: rows that reach it come out
    /// `Unclassified` with method `none`.
    pub enabled: bool,
    /// Base URL of an OpenAI-compatible API; the stage posts to
    /// `{base_url}/chat/completions`. Groq by default; e.g.
    /// `http://localhost:11434/v1` for Ollama. Overridden by
    /// `LOGSIEVE_LLM_BASE_URL`.
    pub base_url: String,
    /// Model name sent with every request. Overridden by `LOGSIEVE_LLM_MODEL`.
    pub model: String,
    /// Sampling temperature; 0 keeps answers repeatable (and cacheable).
    pub temperature: f32,
    /// Upper bound on tokens in the answer (`max_tokens`). Unset: 300 for a
    /// hosted endpoint (reasoning models that think aloud need room), 48 for
    /// a server on this machine, where every token costs CPU time and small
    /// models write long reasons whatever they are told; the label comes
    /// first in the answer, so one cut short still counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// How the server is asked to hold the answer to the label set:
    /// `json_schema` (a JSON schema whose `label` is an enum of the allowed
    /// labels: OpenAI, Groq, vLLM, llama.cpp, Ollama), `json_object` (any
    /// JSON object) or `none` (the prompt alone asks for JSON). A server that
    /// refuses the format with a 400 is asked again one step lower, and the
    /// lower step is kept for the rest of the process once it works.
    pub response_format: ResponseFormat,
    /// Deprecated: `false` means `response_format = "none"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_mode: Option<bool>,
    /// Patience, in seconds: a call with no answer after this long makes the
    /// stage probe the server (`GET {base_url}/models`). A server that does
    /// not answer the probe is down and the call fails (retried like any
    /// timeout); one that does is busy (the request is queued behind others,
    /// or the model is slow), and the call goes on waiting, probing again
    /// every `timeout_secs`, up to `max_call_secs`.
    pub timeout_secs: f64,
    /// Longest one call may take even on a server that is up, in seconds.
    pub max_call_secs: f64,
    /// Most HTTP calls in flight at once, across all rows: the ceiling of
    /// the adaptive limit, or the fixed limit.
    pub max_concurrency: usize,
    /// Start at one call in flight and adapt (AIMD): one more after each
    /// answer that came back in about the usual time, one fewer after a much
    /// slower one, half as many after a timeout, 429, 503 or a queued call.
    /// `false` keeps `max_concurrency` calls in flight.
    pub adaptive_concurrency: bool,
    /// Retries after the first attempt, for timeouts, dropped connections,
    /// 429 and 5xx answers. Other 4xx answers are not retried.
    pub max_retries: u32,
    /// Base of the exponential backoff, in seconds: retry `n` (from 0) waits
    /// a uniformly random time in `0..=min(backoff_max, base * 2^n)`.
    pub backoff_base_secs: f64,
    /// Cap on one backoff wait, in seconds. A `Retry-After` longer than this
    /// makes the row fail at once (with the server's figure in the detail)
    /// instead of stalling the pipeline.
    pub backoff_max_secs: f64,
    /// Most HTTP calls started per minute (retries included), enforced by a
    /// token bucket holding up to this many calls; 0 means no limit. Unset:
    /// 30 for a hosted endpoint (Groq's free tier), no limit for a server on
    /// this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_per_minute: Option<u32>,
    /// How long a row may wait for the per-minute budget, in seconds. Rows
    /// that would wait longer fail with "llm call budget exhausted"; 0 fails
    /// at once (for servers that must answer quickly).
    pub budget_max_wait_secs: f64,
    /// Consecutive failed calls that open the circuit breaker; 0 disables it.
    pub breaker_failures: u32,
    /// Seconds the breaker stays open; rows meanwhile come out with detail
    /// "llm circuit open". After the cool-down calls are let through again;
    /// one more failure re-opens it, one success closes it.
    pub breaker_cooldown_secs: f64,
    /// Answers remembered per process, keyed by (source, trimmed message);
    /// least recently used evicted first. 0 disables the cache.
    pub cache_capacity: usize,
    /// Confidence reported when the model's answer states none (or an
    /// unusable one). A stated confidence is clamped to 0..=1.
    pub confidence: f32,
    /// The LLM's threshold: an answer whose confidence (stated, else
    /// `confidence`) is below this comes out `Unclassified`, with the label
    /// it had in `detail`. 0 accepts every answer in the label set.
    pub min_confidence: f32,
    /// Most labelled examples put in one prompt; extra ones are dropped.
    pub max_examples: usize,
    /// Least cosine similarity (of the encoder's vectors) an example needs
    /// to the line to be shown. Examples that are merely the least unlike
    /// the line can mislead a small model more than they teach it: the
    /// nearest seed example to real-corpus lines the model was unsure of
    /// scored 0.10–0.44 (one 0.65), and showing them cost Qwen 0.5B most of
    /// its right answers (README), so `config/local-llm.toml` sets 0.45;
    /// LegacyCRM lines score 0.29–0.50 against their labels' examples, which
    /// a large model uses well, hence 0 (every example) by default.
    pub min_example_similarity: f32,
    /// Longest message (in characters) sent to the model; longer lines are
    /// cut, with a marker, to bound cost.
    pub max_message_chars: usize,
    /// Label vocabulary of the LLM: label -> one-line description. Every key
    /// is an allowed answer (this is how LLM-only labels such as
    /// `Workflow Error` are added); labels the pipeline passes in are allowed
    /// too and take their description from here when present. Empty by
    /// default: the pipeline then fills it from its taxonomy
    /// (config/labels.toml); setting it replaces those.
    pub labels: BTreeMap<String, String>,
}

impl Default for LlmConfig {
    fn default() -> Self {
        LlmConfig {
            enabled: true,
            base_url: DEFAULT_BASE_URL.to_string(),
            model: DEFAULT_MODEL.to_string(),
            temperature: 0.0,
            max_tokens: None,
            response_format: ResponseFormat::JsonSchema,
            json_mode: None,
            timeout_secs: 30.0,
            max_call_secs: 300.0,
            max_concurrency: 4,
            adaptive_concurrency: true,
            max_retries: 3,
            backoff_base_secs: 0.5,
            backoff_max_secs: 20.0,
            calls_per_minute: None,
            budget_max_wait_secs: 120.0,
            breaker_failures: 5,
            breaker_cooldown_secs: 30.0,
            cache_capacity: 10_000,
            confidence: 0.7,
            min_confidence: 0.0,
            max_examples: 5,
            min_example_similarity: 0.0,
            max_message_chars: 2_000,
            labels: BTreeMap::new(),
        }
    }
}

/// Calls per minute for a hosted endpoint when `calls_per_minute` is unset.
pub const DEFAULT_HOSTED_CALLS_PER_MINUTE: u32 = 30;
/// `max_tokens` when unset: hosted endpoint, server on this machine.
pub const DEFAULT_MAX_TOKENS: (u32, u32) = (300, 48);

/// How the answer's shape is asked of the server (`response_format`), from
/// the strictest down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// `{"type": "json_schema", ...}` with the labels as an enum.
    #[default]
    JsonSchema,
    /// `{"type": "json_object"}`.
    JsonObject,
    /// No `response_format`; the prompt asks for JSON.
    None,
}

impl ResponseFormat {
    /// The next format to try when a server refuses this one.
    pub fn fallback(self) -> Option<ResponseFormat> {
        match self {
            ResponseFormat::JsonSchema => Some(ResponseFormat::JsonObject),
            ResponseFormat::JsonObject => Some(ResponseFormat::None),
            ResponseFormat::None => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::JsonSchema => "json_schema",
            ResponseFormat::JsonObject => "json_object",
            ResponseFormat::None => "none",
        }
    }
}

/// Why an [`LlmConfig`] cannot be used. Names the field at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("llm.{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

impl LlmConfig {
    /// Applies `LOGSIEVE_LLM_BASE_URL` and `LOGSIEVE_LLM_MODEL` when set and
    /// non-empty.
    pub fn with_env_overrides(self) -> Self {
        self.with_overrides_from(|name| std::env::var(name).ok())
    }

    /// [`Self::with_env_overrides`] with a custom lookup (tests, or another
    /// source of variables).
    pub fn with_overrides_from(mut self, lookup: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(url) = lookup(ENV_BASE_URL).filter(|v| !v.trim().is_empty()) {
            self.base_url = url.trim().to_string();
        }
        if let Some(model) = lookup(ENV_MODEL).filter(|v| !v.trim().is_empty()) {
            self.model = model.trim().to_string();
        }
        self
    }

    /// Checks every field that could make the stage misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| invalid("base_url", format!("`{}` is not a URL: {e}", self.base_url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid(
                "base_url",
                format!("`{}` must be http or https", self.base_url),
            ));
        }
        if self.model.trim().is_empty() {
            return Err(invalid("model", "must not be empty"));
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(invalid("temperature", "must be between 0 and 2"));
        }
        for (field, secs) in [
            ("timeout_secs", self.timeout_secs),
            ("max_call_secs", self.max_call_secs),
            ("backoff_base_secs", self.backoff_base_secs),
            ("backoff_max_secs", self.backoff_max_secs),
            ("budget_max_wait_secs", self.budget_max_wait_secs),
            ("breaker_cooldown_secs", self.breaker_cooldown_secs),
        ] {
            if !(secs.is_finite() && (0.0..=86_400.0).contains(&secs)) {
                return Err(invalid(
                    field,
                    format!("{secs} is not a number of seconds between 0 and 86400"),
                ));
            }
        }
        if self.timeout_secs == 0.0 {
            return Err(invalid("timeout_secs", "must be above 0"));
        }
        if self.max_call_secs < self.timeout_secs {
            return Err(invalid(
                "max_call_secs",
                format!(
                    "{} is less than timeout_secs = {}",
                    self.max_call_secs, self.timeout_secs
                ),
            ));
        }
        if self.max_concurrency == 0 {
            return Err(invalid("max_concurrency", "must be at least 1"));
        }
        if self.max_tokens == Some(0) {
            return Err(invalid("max_tokens", "must be at least 1"));
        }
        for (field, v) in [
            ("confidence", self.confidence),
            ("min_confidence", self.min_confidence),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(invalid(field, "must be between 0 and 1"));
            }
        }
        if !(self.min_example_similarity.is_finite() && (-1.0..=1.0).contains(&self.min_example_similarity)) {
            return Err(invalid("min_example_similarity", "must be between -1 and 1"));
        }
        if self.max_message_chars == 0 {
            return Err(invalid("max_message_chars", "must be at least 1"));
        }
        for label in self.labels.keys() {
            if label.trim().is_empty() || label.trim() != label {
                return Err(invalid(
                    "labels",
                    format!("label `{label}` is empty or has surrounding spaces"),
                ));
            }
        }
        Ok(())
    }

    /// True when `base_url` names this machine (localhost, 127.0.0.0/8,
    /// ::1): local servers such as Ollama or llama.cpp need no API key, and
    /// requests to them bypass any HTTP proxy.
    pub fn is_local(&self) -> bool {
        let Ok(url) = reqwest::Url::parse(&self.base_url) else {
            return false;
        };
        let Some(host) = url.host_str() else { return false };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        }
    }

    /// `base_url` fit to print: a password in it is replaced by `***`.
    pub fn display_base_url(&self) -> String {
        match reqwest::Url::parse(&self.base_url) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("***"));
                url.to_string()
            }
            _ => self.base_url.clone(),
        }
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    pub(crate) fn max_call(&self) -> Duration {
        Duration::from_secs_f64(self.max_call_secs)
    }

    /// The format asked first: `response_format`, or `none` when the
    /// deprecated `json_mode = false` is set.
    pub fn effective_response_format(&self) -> ResponseFormat {
        match self.json_mode {
            Some(false) => ResponseFormat::None,
            _ => self.response_format,
        }
    }

    /// `max_tokens`, or its default for this endpoint: 300 hosted, 48 local.
    pub fn effective_max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(if self.is_local() {
            DEFAULT_MAX_TOKENS.1
        } else {
            DEFAULT_MAX_TOKENS.0
        })
    }

    /// `calls_per_minute`, or its default for this endpoint: 30 hosted,
    /// 0 (no limit) on this machine.
    pub fn effective_calls_per_minute(&self) -> u32 {
        self.calls_per_minute.unwrap_or(if self.is_local() {
            0
        } else {
            DEFAULT_HOSTED_CALLS_PER_MINUTE
        })
    }
}

/// An API key. Its `Debug` and `Display` print `***`; the only way to the
/// text is [`ApiKey::expose`], used when building the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; surrounding whitespace (a trailing newline from a file)
    /// is removed. Returns `None` for an empty key.
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(key.to_string()))
    }

    /// The first non-empty of `LOGSIEVE_LLM_API_KEY`, `GROQ_API_KEY`,
    /// `OPENAI_API_KEY`, with the name of the variable it came from.
    pub fn from_env() -> Option<(ApiKey, &'static str)> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Self::from_env`] with a custom lookup.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Option<(ApiKey, &'static str)> {
        ENV_API_KEYS
            .iter()
            .find_map(|name| lookup(name).and_then(ApiKey::new).map(|k| (k, *name)))
    }

    /// The secret itself. Only for the request header; never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Replaces every occurrence of the key in `text` by `***`, for error
    /// text that may echo what the server was sent.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "***")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_gives_defaults_and_unknown_fields_are_rejected() {
        let cfg: LlmConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, LlmConfig::default());
        let err = toml::from_str::<LlmConfig>("modle = \"x\"").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_name_groq_llama() {
        let cfg = LlmConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.base_url, "https://api.groq.com/openai/v1");
        assert!(cfg.model.starts_with("llama"));
        // Label descriptions are the pipeline's taxonomy's, not this crate's.
        assert!(cfg.labels.is_empty());
    }

    #[test]
    fn validation_names_the_field() {
        let cfg = LlmConfig {
            timeout_secs: f64::NAN,
            ..LlmConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("llm.timeout_secs"));
        let cfg = LlmConfig {
            base_url: "ftp://x".into(),
            ..LlmConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("llm.base_url"));
        let cfg = LlmConfig {
            confidence: 1.5,
            ..LlmConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("llm.confidence"));
    }

    #[test]
    fn env_overrides_and_key_precedence() {
        let env = |name: &str| match name {
            ENV_BASE_URL => Some("http://localhost:11434/v1".to_string()),
            ENV_MODEL => Some(" ".to_string()),
            "GROQ_API_KEY" => Some("gsk-groq".to_string()),
            "OPENAI_API_KEY" => Some("sk-openai".to_string()),
            _ => None,
        };
        let cfg = LlmConfig::default().with_overrides_from(env);
        assert_eq!(cfg.base_url, "http://localhost:11434/v1");
        assert_eq!(cfg.model, DEFAULT_MODEL, "blank override is ignored");
        assert!(cfg.is_local());
        let (key, from) = ApiKey::from_lookup(env).unwrap();
        assert_eq!((key.expose(), from), ("gsk-groq", "GROQ_API_KEY"));
    }

    #[test]
    fn response_format_and_its_fallbacks() {
        let cfg: LlmConfig = toml::from_str("response_format = \"json_object\"").unwrap();
        assert_eq!(cfg.effective_response_format(), ResponseFormat::JsonObject);
        let cfg: LlmConfig = toml::from_str("json_mode = false").unwrap();
        assert_eq!(cfg.effective_response_format(), ResponseFormat::None);
        assert_eq!(
            LlmConfig::default().effective_response_format(),
            ResponseFormat::JsonSchema
        );
        let ladder: Vec<_> = std::iter::successors(Some(ResponseFormat::JsonSchema), |f| f.fallback())
            .map(ResponseFormat::as_str)
            .collect();
        assert_eq!(ladder, ["json_schema", "json_object", "none"]);
        assert!(toml::from_str::<LlmConfig>("response_format = \"xml\"").is_err());
    }

    #[test]
    fn budget_default_depends_on_where_the_server_is() {
        assert_eq!(LlmConfig::default().effective_calls_per_minute(), 30);
        let local = LlmConfig {
            base_url: "http://127.0.0.1:8080/v1".into(),
            ..LlmConfig::default()
        };
        assert_eq!(local.effective_calls_per_minute(), 0);
        assert_eq!(
            (
                LlmConfig::default().effective_max_tokens(),
                local.effective_max_tokens()
            ),
            (300, 48)
        );
        let capped = LlmConfig {
            calls_per_minute: Some(5),
            ..local
        };
        assert_eq!(capped.effective_calls_per_minute(), 5);
    }

    #[test]
    fn max_call_must_cover_the_patience() {
        let cfg = LlmConfig {
            timeout_secs: 60.0,
            max_call_secs: 30.0,
            ..LlmConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("llm.max_call_secs"));
    }

    #[test]
    fn local_hosts() {
        for (url, local) in [
            ("http://localhost:11434/v1", true),
            ("http://127.0.0.1:8080/v1", true),
            ("http://[::1]:8080/v1", true),
            ("https://api.groq.com/openai/v1", false),
            ("http://10.0.0.5:8000/v1", false),
        ] {
            let cfg = LlmConfig {
                base_url: url.into(),
                ..LlmConfig::default()
            };
            assert_eq!(cfg.is_local(), local, "{url}");
        }
    }

    #[test]
    fn printed_base_url_hides_a_password() {
        let cfg = LlmConfig {
            base_url: "https://u:hunter2@llm.example/v1".into(),
            ..LlmConfig::default()
        };
        assert_eq!(cfg.display_base_url(), "https://u:***@llm.example/v1");
        assert_eq!(LlmConfig::default().display_base_url(), DEFAULT_BASE_URL);
    }

    #[test]
    fn api_key_never_formats_itself() {
        let key = ApiKey::new("sk-very-secret\n").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
        assert_eq!(format!("{key}"), "***");
        assert_eq!(key.expose(), "sk-very-secret");
        assert_eq!(key.redact("bad key sk-very-secret!"), "bad key ***!");
        assert!(ApiKey::new("  ").is_none());
    }
}
