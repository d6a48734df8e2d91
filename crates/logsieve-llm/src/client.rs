//! Owns the stage boundary — the [`LlmClient`] trait, the chat request it
//! takes and the typed error it returns — and [`HttpClient`], its
//! implementation for the OpenAI chat-completions protocol (Groq, OpenAI,
//! DeepSeek, Ollama, vLLM, llama.cpp server).
//!
//! A client makes exactly one attempt; retries, timeouts, budget, breaker and
//! cache belong to the stage, so every provider gets them alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ApiKey, LlmConfig};

/// One message of a chat.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

/// What the stage asks of a client: one chat completion.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: f32,
    pub max_tokens: u32,
    /// Ask for `response_format: {"type": "json_object"}`.
    pub json_mode: bool,
}

/// Why one attempt failed. Messages never contain the API key.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// No answer within the configured timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection could not be made, or broke before a full answer.
    #[error("connection failed: {0}")]
    Transport(String),
    /// The server answered with a non-success status.
    #[error("HTTP {status}{}: {body}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        status: u16,
        /// `Retry-After` (seconds or HTTP-date), when sent.
        retry_after: Option<Duration>,
        /// The start of the response body (the provider's error message).
        body: String,
    },
    /// A success status whose body is not a chat completion.
    #[error("malformed response: {0}")]
    Malformed(String),
}

impl LlmError {
    /// Worth another attempt: timeouts, broken connections, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            LlmError::Timeout(_) | LlmError::Transport(_) => true,
            LlmError::Status { status, .. } => matches!(status, 408 | 429) || (500..600).contains(status),
            LlmError::Malformed(_) => false,
        }
    }

    /// A 400 that names `response_format`: the server does not support JSON mode.
    pub fn rejects_json_mode(&self) -> bool {
        matches!(self, LlmError::Status { status: 400, body, .. } if body.contains("response_format"))
    }
}

/// The future a client returns.
pub type CompletionFuture<'a> = Pin<Box<dyn Future<Output = Result<String, LlmError>> + Send + 'a>>;

/// The boundary of the LLM stage: one chat completion, one attempt, answered
/// with the text of the first choice. Implement it to plug in another
/// provider or a test double; `Box::pin(async move { ... })` makes the future.
pub trait LlmClient: Send + Sync {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a>;
}

impl<T: LlmClient + ?Sized> LlmClient for Arc<T> {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        (**self).complete(request)
    }
}

/// Longest slice of a server's error body kept in an [`LlmError`].
const MAX_ERROR_BODY: usize = 300;

/// [`LlmClient`] over HTTP: `POST {base_url}/chat/completions` with a bearer
/// token. TLS is rustls (ring) checked against the platform's roots.
pub struct HttpClient {
    http: reqwest::Client,
    url: String,
    api_key: Option<ApiKey>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .finish()
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    temperature: f32,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    /// Missing or null when the model produced nothing (some servers put
    /// reasoning in a separate field; that is not the answer, so it is
    /// ignored and the row comes out "not understood").
    #[serde(default)]
    content: Option<String>,
}

impl HttpClient {
    /// Builds the client for `config.base_url`. Local servers bypass proxies.
    pub fn new(config: &LlmConfig, api_key: Option<ApiKey>) -> Result<Self, LlmError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            .user_agent(concat!("logsieve/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls_config()?);
        if config.is_local() {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| LlmError::Transport(format!("cannot build HTTP client: {e}")))?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(HttpClient {
            http,
            url,
            api_key,
            timeout: config.timeout(),
        })
    }

    fn redact(&self, text: String) -> String {
        match &self.api_key {
            Some(key) => key.redact(&text),
            None => text,
        }
    }

    async fn send(&self, request: &ChatRequest) -> Result<String, LlmError> {
        let wire = WireRequest {
            model: &request.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            response_format: request
                .json_mode
                .then(|| serde_json::json!({"type": "json_object"})),
        };
        let mut http = self.http.post(&self.url).json(&wire);
        if let Some(key) = &self.api_key {
            let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose()))
                .map_err(|_| LlmError::Transport("API key is not a valid header value".into()))?;
            value.set_sensitive(true);
            http = http.header(reqwest::header::AUTHORIZATION, value);
        }
        let response = http.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::resilience::parse_retry_after);
        let body = response.bytes().await.map_err(|e| self.transport_error(e))?;
        if status == reqwest::StatusCode::BAD_REQUEST {
            if let Some(text) = groq_failed_generation(&body) {
                return Ok(self.redact(text));
            }
        }
        if !status.is_success() {
            return Err(LlmError::Status {
                status: status.as_u16(),
                retry_after,
                // Redacted before it is cut, so that no part of the key survives a cut.
                body: truncate(
                    &self.redact(String::from_utf8_lossy(&body).into_owned()),
                    MAX_ERROR_BODY,
                ),
            });
        }
        let parsed: WireResponse = serde_json::from_slice(&body).map_err(|e| {
            LlmError::Malformed(format!(
                "{e}; body starts {:?}",
                truncate(&self.redact(String::from_utf8_lossy(&body).into_owned()), 120)
            ))
        })?;
        let message = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::Malformed("no choices in the answer".into()))?
            .message;
        // The answer is text from outside too: an endpoint that echoes
        // what it was sent must not carry the key into `detail`.
        Ok(self.redact(message.content.unwrap_or_default()))
    }
}

impl LlmClient for HttpClient {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move { self.send(request).await.map_err(|e| self.redact_error(e)) })
    }
}

impl HttpClient {
    fn redact_error(&self, e: LlmError) -> LlmError {
        match e {
            LlmError::Transport(m) => LlmError::Transport(self.redact(m)),
            LlmError::Malformed(m) => LlmError::Malformed(self.redact(m)),
            LlmError::Status {
                status,
                retry_after,
                body,
            } => LlmError::Status {
                status,
                retry_after,
                body: self.redact(body),
            },
            other => other,
        }
    }
}

impl HttpClient {
    fn transport_error(&self, e: reqwest::Error) -> LlmError {
        if e.is_timeout() {
            return LlmError::Timeout(self.timeout);
        }
        // The chain holds the useful part ("connection closed before message completed").
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        LlmError::Transport(message)
    }
}

/// Groq answers 400 `json_validate_failed` when JSON mode is on and the model
/// wrote something that is not JSON, and returns the text it wrote in
/// `failed_generation`. That text is the model's answer; the parser reads
/// what it can from it (a label inside prose, a bare label, or nothing).
fn groq_failed_generation(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = v.get("error")?;
    if error.get("code")?.as_str()? != "json_validate_failed" {
        return None;
    }
    let text = error.get("failed_generation")?.as_str()?;
    (!text.trim().is_empty()).then(|| text.to_string())
}

fn tls_config() -> Result<rustls::ClientConfig, LlmError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .map_err(|e| LlmError::Transport(format!("cannot load platform certificate roots: {e}")))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LlmError::Transport(format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// The first `max` characters of `text`, with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors() {
        let status = |s| LlmError::Status {
            status: s,
            retry_after: None,
            body: String::new(),
        };
        assert!(status(429).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(status(408).is_retryable());
        assert!(LlmError::Timeout(Duration::from_secs(1)).is_retryable());
        assert!(!LlmError::Malformed("x".into()).is_retryable());
    }

    #[test]
    fn json_mode_rejection_is_recognised() {
        let e = LlmError::Status {
            status: 400,
            retry_after: None,
            body: r#"{"error":{"message":"response_format is not supported"}}"#.into(),
        };
        assert!(e.rejects_json_mode());
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("héllo", 3), "hél…");
        assert_eq!(truncate("hé", 3), "hé");
    }

    #[test]
    fn debug_hides_the_key() {
        let key = ApiKey::new("sk-secret-1").unwrap();
        let client = HttpClient::new(&LlmConfig::default(), Some(key)).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("sk-secret-1") && shown.contains("***"), "{shown}");
    }
}
