//! Owns the stage boundary — the [`LlmClient`] trait, the chat request it
//! takes and the typed error it returns — and [`HttpClient`], its
//! implementation for the OpenAI chat-completions protocol (Groq, OpenAI,
//! DeepSeek, Ollama, vLLM, llama.cpp server).
//!
//! A client makes exactly one attempt; retries, timeouts, budget, breaker,
//! concurrency and cache belong to the stage, so every provider gets them
//! alike. Besides the completion a client may answer a liveness probe, which
//! lets the stage tell a request queued on a busy server from a dead server.

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
    /// Sent as `response_format` when set (a JSON schema, or
    /// `{"type": "json_object"}`).
    pub response_format: Option<serde_json::Value>,
}

/// A completion: the text of the first choice, and the token counts when the
/// server reports them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
}

impl From<String> for Completion {
    fn from(text: String) -> Self {
        Completion {
            text,
            usage: Usage::default(),
        }
    }
}

impl From<&str> for Completion {
    fn from(text: &str) -> Self {
        text.to_string().into()
    }
}

/// Token counts of one call (`usage` in the answer), where reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    /// Prompt tokens the server took from its prompt cache
    /// (`usage.prompt_tokens_details.cached_tokens`, or llama.cpp's
    /// `timings.cache_n`).
    pub cached_prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// What a liveness probe found.
#[derive(Clone, Debug, PartialEq)]
pub enum Liveness {
    /// The server answered (any HTTP status): it is up, only busy.
    Alive,
    /// No answer: why.
    Down(String),
    /// This client cannot tell.
    Unknown,
}

/// Why one attempt failed. Messages never contain the API key.
#[derive(Clone, Debug, thiserror::Error, PartialEq)]
pub enum LlmError {
    /// No answer within the configured time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No answer after `timeout_secs`, and the server did not answer a
    /// liveness probe either: it is down or hung, not merely busy.
    #[error("no answer after {waited:?} and the server did not answer a health probe ({probe})")]
    Unresponsive { waited: Duration, probe: String },
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
            LlmError::Timeout(_) | LlmError::Unresponsive { .. } | LlmError::Transport(_) => true,
            LlmError::Status { status, .. } => matches!(status, 408 | 429) || (500..600).contains(status),
            LlmError::Malformed(_) => false,
        }
    }

    /// A 400 or 422 that speaks of the response format (`response_format`,
    /// `json_schema`, a schema or grammar): the server does not take the
    /// format it was sent. Servers word this differently, so any of those
    /// words counts; the stage only keeps a lower format once it has worked.
    pub fn rejects_response_format(&self) -> bool {
        match self {
            LlmError::Status {
                status: 400 | 422,
                body,
                ..
            } => {
                let body = body.to_ascii_lowercase();
                [
                    "response_format",
                    "json_schema",
                    "json_object",
                    "schema",
                    "grammar",
                    "format",
                ]
                .iter()
                .any(|w| body.contains(w))
            }
            _ => false,
        }
    }

    /// The server is overloaded or queueing: a timeout, 429, 503. The
    /// adaptive concurrency limit halves on these.
    pub fn is_overload(&self) -> bool {
        match self {
            LlmError::Timeout(_) | LlmError::Unresponsive { .. } => true,
            LlmError::Status { status, .. } => matches!(status, 429 | 503),
            LlmError::Transport(_) | LlmError::Malformed(_) => false,
        }
    }
}

/// The future a client returns.
pub type CompletionFuture<'a> = Pin<Box<dyn Future<Output = Result<Completion, LlmError>> + Send + 'a>>;

/// The future of a liveness probe.
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = Liveness> + Send + 'a>>;

/// The boundary of the LLM stage: one chat completion, one attempt, answered
/// with the text of the first choice (and token counts where known).
/// Implement it to plug in another provider or a test double;
/// `Box::pin(async move { Ok("...".into()) })` makes the future.
pub trait LlmClient: Send + Sync {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a>;

    /// Is the server up? Asked while a call has waited `timeout_secs`
    /// without an answer. The default cannot tell, and such a call then
    /// fails as a timeout.
    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(async { Liveness::Unknown })
    }
}

impl<T: LlmClient + ?Sized> LlmClient for Arc<T> {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        (**self).complete(request)
    }

    fn probe(&self) -> ProbeFuture<'_> {
        (**self).probe()
    }
}

/// Longest a liveness probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest slice of a server's error body kept in an [`LlmError`].
const MAX_ERROR_BODY: usize = 300;

/// [`LlmClient`] over HTTP: `POST {base_url}/chat/completions` with a bearer
/// token. TLS is rustls (ring) checked against the platform's roots.
pub struct HttpClient {
    http: reqwest::Client,
    url: String,
    /// `{base_url}/models`, the liveness probe.
    probe_url: String,
    api_key: Option<ApiKey>,
    timeout: Duration,
    probe_timeout: Duration,
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
    response_format: Option<&'a serde_json::Value>,
}

#[derive(Deserialize)]
struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// llama.cpp server's own figures.
    #[serde(default)]
    timings: Option<WireTimings>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<WirePromptDetails>,
}

#[derive(Deserialize)]
struct WirePromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct WireTimings {
    #[serde(default)]
    cache_n: Option<u64>,
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
    /// One call may take up to `max_call_secs`; the stage's patience
    /// (`timeout_secs`) and the probe decide when to give up sooner.
    pub fn new(config: &LlmConfig, api_key: Option<ApiKey>) -> Result<Self, LlmError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.max_call())
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            .user_agent(concat!("logsieve/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls_config()?);
        if config.is_local() {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| LlmError::Transport(format!("cannot build HTTP client: {e}")))?;
        let base = config.base_url.trim_end_matches('/');
        Ok(HttpClient {
            http,
            url: format!("{base}/chat/completions"),
            probe_url: format!("{base}/models"),
            api_key,
            timeout: config.max_call(),
            probe_timeout: config.timeout().min(PROBE_TIMEOUT),
        })
    }

    fn authorize(&self, http: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder, LlmError> {
        let Some(key) = &self.api_key else {
            return Ok(http);
        };
        let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {}", key.expose()))
            .map_err(|_| LlmError::Transport("API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        Ok(http.header(reqwest::header::AUTHORIZATION, value))
    }

    /// `GET {base_url}/models`: any HTTP answer within the probe timeout
    /// means the server is up.
    async fn liveness(&self) -> Liveness {
        let request = match self.authorize(self.http.get(&self.probe_url).timeout(self.probe_timeout)) {
            Ok(r) => r,
            Err(e) => return Liveness::Down(e.to_string()),
        };
        match request.send().await {
            Ok(_) => Liveness::Alive,
            Err(e) if e.is_timeout() => Liveness::Down(format!(
                "no answer to GET /models within {:?}",
                self.probe_timeout
            )),
            Err(e) => Liveness::Down(self.redact(self.transport_error(e).to_string())),
        }
    }

    fn redact(&self, text: String) -> String {
        match &self.api_key {
            Some(key) => key.redact(&text),
            None => text,
        }
    }

    async fn send(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let wire = WireRequest {
            model: &request.model,
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            response_format: request.response_format.as_ref(),
        };
        let http = self.authorize(self.http.post(&self.url).json(&wire))?;
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
                return Ok(self.redact(text).into());
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
        let usage = Usage {
            prompt_tokens: parsed.usage.as_ref().and_then(|u| u.prompt_tokens),
            completion_tokens: parsed.usage.as_ref().and_then(|u| u.completion_tokens),
            cached_prompt_tokens: parsed
                .usage
                .as_ref()
                .and_then(|u| u.prompt_tokens_details.as_ref())
                .and_then(|d| d.cached_tokens)
                .or_else(|| parsed.timings.as_ref().and_then(|t| t.cache_n)),
        };
        let message = parsed
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| LlmError::Malformed("no choices in the answer".into()))?
            .message;
        // The answer is text from outside too: an endpoint that echoes
        // what it was sent must not carry the key into `detail`.
        Ok(Completion {
            text: self.redact(message.content.unwrap_or_default()),
            usage,
        })
    }
}

impl LlmClient for HttpClient {
    fn complete<'a>(&'a self, request: &'a ChatRequest) -> CompletionFuture<'a> {
        Box::pin(async move { self.send(request).await.map_err(|e| self.redact_error(e)) })
    }

    fn probe(&self) -> ProbeFuture<'_> {
        Box::pin(self.liveness())
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
    fn response_format_rejections_are_recognised() {
        let status = |status, body: &str| LlmError::Status {
            status,
            retry_after: None,
            body: body.into(),
        };
        for body in [
            r#"{"error":{"message":"response_format is not supported"}}"#,
            r#"{"error":{"message":"`json_schema` is not supported with this model"}}"#,
            r#"{"detail":"Unsupported Format"}"#,
        ] {
            assert!(status(400, body).rejects_response_format(), "{body}");
            assert!(status(422, body).rejects_response_format(), "{body}");
        }
        assert!(!status(400, r#"{"error":"context length exceeded"}"#).rejects_response_format());
        assert!(!status(500, "response_format").rejects_response_format());
    }

    #[test]
    fn overload_signals() {
        let status = |s| LlmError::Status {
            status: s,
            retry_after: None,
            body: String::new(),
        };
        assert!(status(429).is_overload());
        assert!(status(503).is_overload());
        assert!(!status(500).is_overload());
        assert!(LlmError::Timeout(Duration::from_secs(1)).is_overload());
        assert!(!LlmError::Transport("connection refused".into()).is_overload());
    }

    #[test]
    fn usage_is_read_from_openai_and_llama_cpp_answers() {
        let openai: WireResponse = serde_json::from_str(
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":120,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":96}}}"#,
        )
        .unwrap();
        assert_eq!(openai.usage.as_ref().unwrap().prompt_tokens, Some(120));
        let llama: WireResponse = serde_json::from_str(
            r#"{"choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":87,"completion_tokens":25},"timings":{"cache_n":80,"prompt_n":7}}"#,
        )
        .unwrap();
        assert_eq!(llama.timings.unwrap().cache_n, Some(80));
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
