//! The LLM stage: the third mesh of the sieve. Rows no rule catches and the
//! model is unsure of (and sources routed here whole, like `LegacyCRM`) are
//! put to a chat model over the OpenAI chat-completions protocol.
//!
//! - [`LlmStage`] is what the pipeline calls: [`LlmStage::classify`] (async)
//!   or [`LlmStage::classify_many`] (blocking, input order kept). Every row
//!   yields an [`LlmOutcome`]; failures never panic or drop a row.
//! - [`LlmClient`] is the stage boundary; [`HttpClient`] speaks HTTP to Groq,
//!   OpenAI, DeepSeek, Ollama, vLLM or llama.cpp server.
//! - [`LlmConfig`] is the `[llm]` table. See `README.md` in this crate for
//!   the prompt, the failure behaviour and how to try a provider.

mod cache;
mod client;
mod config;
pub mod prompt;
mod resilience;
mod stage;

pub use client::{ChatMessage, ChatRequest, CompletionFuture, HttpClient, LlmClient, LlmError};
pub use config::{
    ApiKey, ConfigError, LlmConfig, DEFAULT_BASE_URL, DEFAULT_MODEL, ENV_API_KEYS, ENV_BASE_URL, ENV_MODEL,
};
pub use prompt::{LabelSpec, UNCLASSIFIED};
pub use stage::{LlmOutcome, LlmRequest, LlmStage, LlmStats, Method};
