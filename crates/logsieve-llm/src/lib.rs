//! The LLM stage: the third mesh of the sieve. Rows no rule catches and the
//! model is unsure of (and sources routed here whole, like `LegacyCRM`) are
//! put to a chat model over the OpenAI chat-completions protocol.
//!
//! - [`LlmStage`] is what the pipeline calls: [`LlmStage::classify`] (async)
//!   or [`LlmStage::classify_many`] (blocking, input order kept). Every row
//!   yields an [`LlmOutcome`]; failures never panic or drop a row.
//! - [`LlmClient`] is the stage boundary; [`HttpClient`] speaks HTTP to Groq,
//!   OpenAI, DeepSeek, Ollama, vLLM or llama.cpp server.
//! - Calls in flight follow the server (an AIMD limit, see `limiter`); a
//!   call that outlives `timeout_secs` is waited for while the server answers
//!   a liveness probe, and fails only when it does not.
//! - [`LlmConfig`] is the `[llm]` table. See `README.md` in this crate for
//!   the prompt, the failure behaviour and how to try a provider.

mod cache;
mod client;
mod config;
mod limiter;
pub mod prompt;
mod resilience;
mod stage;

pub use client::{
    ChatMessage, ChatRequest, Completion, CompletionFuture, HttpClient, Liveness, LlmClient, LlmError,
    ProbeFuture, Usage, PROBE_TIMEOUT,
};
pub use config::{
    ApiKey, ConfigError, LlmConfig, ResponseFormat, DEFAULT_BASE_URL, DEFAULT_HOSTED_CALLS_PER_MINUTE,
    DEFAULT_MAX_TOKENS, DEFAULT_MODEL, ENV_API_KEYS, ENV_BASE_URL, ENV_MODEL,
};
pub use prompt::{LabelSpec, UNCLASSIFIED};
pub use stage::{LlmOutcome, LlmRequest, LlmStage, LlmStats, Method};
