//! Owns [`LlmStage`], the object the pipeline calls: it turns a row into a
//! prompt, asks through the cache, the adaptive concurrency limit, the call
//! budget and the circuit breaker, waits patiently on a server that is up but
//! busy, retries what is worth retrying, falls back to a simpler response
//! format when a server refuses one, validates the answer against the label
//! set, and always hands back an [`LlmOutcome`].

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cache::AnswerCache;
use crate::client::{
    truncate, ChatMessage, ChatRequest, Completion, HttpClient, Liveness, LlmClient, LlmError,
};
use crate::config::{ApiKey, ConfigError, LlmConfig, ResponseFormat};
use crate::limiter::{Limiter, Signal};
use crate::prompt::{self, Answer, LabelSpec, UNCLASSIFIED};
use crate::resilience::{retry_delay, Breaker, Budget, RetryDelay};

/// One row for the LLM.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LlmRequest {
    /// The system that logged the line (`LegacyCRM`).
    pub source: String,
    /// The log line.
    pub message: String,
    /// Labelled examples for the prompt, `(message, label)`: typically the
    /// nearest training rows. At most `max_examples` are used.
    pub examples: Vec<(String, String)>,
}

/// How the row's label was reached: the `method` output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The LLM answered (its answer may still be `Unclassified`).
    Llm,
    /// The stage was off or the call failed.
    None,
}

impl Method {
    /// `"llm"` or `"none"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Llm => "llm",
            Method::None => "none",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stage's verdict on one row; fields map one-to-one to the output
/// columns `target_label`, `method`, `confidence`, `detail`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LlmOutcome {
    /// An allowed label, or `Unclassified`.
    pub label: String,
    pub method: Method,
    /// The model's stated confidence clamped to 0..=1, `confidence` from the
    /// config when it stated none, 0 for `Unclassified`.
    pub confidence: f32,
    /// The model's short reason, or why there is no label.
    pub detail: String,
}

impl LlmOutcome {
    /// `Unclassified`, method `none`: the stage could not ask.
    pub fn failed(detail: impl Into<String>) -> Self {
        LlmOutcome {
            label: UNCLASSIFIED.to_string(),
            method: Method::None,
            confidence: 0.0,
            detail: detail.into(),
        }
    }

    /// `Unclassified` from a model answer that gave no usable label.
    fn unclassified_answer(detail: String) -> Self {
        LlmOutcome {
            label: UNCLASSIFIED.to_string(),
            method: Method::Llm,
            confidence: 0.0,
            detail,
        }
    }
}

/// Counters since the stage was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LlmStats {
    /// The response format asked now (lower than configured once a server
    /// refused it).
    pub response_format: ResponseFormat,
    /// Rows handed to the stage.
    pub requests: u64,
    /// HTTP calls made (first attempts and retries).
    pub calls: u64,
    /// Calls that were retries (including the one retry without JSON mode).
    pub retries: u64,
    /// Calls that failed (timeout, connection, non-2xx, malformed body).
    pub failed_calls: u64,
    /// Rows that came out with method `none` (off, failed, breaker, budget).
    pub failures: u64,
    /// Rows answered from the cache or by joining an identical call in flight.
    pub cache_hits: u64,
    /// Rows that had to ask.
    pub cache_misses: u64,
    /// Times the circuit breaker opened.
    pub breaker_opens: u64,
    /// Rows refused because the breaker was open.
    pub breaker_rejections: u64,
    /// Rows refused because the per-minute budget would have made them wait
    /// longer than `budget_max_wait_secs`.
    pub budget_rejections: u64,
    /// Answers outside the label set or not understood.
    pub invalid_answers: u64,
    /// Calls repeated with a simpler response format after a server refused one.
    pub format_fallbacks: u64,
    /// Liveness probes sent (a call had waited `timeout_secs`).
    pub probes: u64,
    /// Calls that outlived `timeout_secs` on a server that answered the probe:
    /// queued or slow, waited for rather than failed.
    pub queued_calls: u64,
    /// Prompt tokens over all answered calls, as the server counted them.
    pub prompt_tokens: u64,
    /// ... of which the server took from its prompt cache.
    pub cached_prompt_tokens: u64,
    /// Largest prompt of one call.
    pub prompt_tokens_max: u64,
    /// Answer tokens over all answered calls.
    pub completion_tokens: u64,
    /// Answered calls whose server reported token counts.
    pub calls_with_usage: u64,
    /// Latency of answered calls, milliseconds: median, 99th percentile, most.
    pub latency_ms_p50: u64,
    pub latency_ms_p99: u64,
    pub latency_ms_max: u64,
    /// Answered calls and their latencies added up, milliseconds (every
    /// call, not only the ones the percentiles keep): the mean over any
    /// interval is the difference of two snapshots.
    pub answered_calls: u64,
    pub latency_ms_total: u64,
    /// Calls in flight allowed now (adaptive), the most it reached, and how
    /// often it was lowered.
    pub concurrency_limit: usize,
    pub concurrency_peak: usize,
    pub concurrency_decreases: u64,
}

impl LlmStats {
    /// Mean prompt tokens per call that reported them.
    pub fn prompt_tokens_per_call(&self) -> f64 {
        if self.calls_with_usage == 0 {
            0.0
        } else {
            self.prompt_tokens as f64 / self.calls_with_usage as f64
        }
    }
}

/// Latencies kept for the percentiles (the first ones; a run that makes more
/// calls reports on these).
const MAX_LATENCIES: usize = 100_000;

#[derive(Default)]
struct Counters {
    format_fallbacks: AtomicU64,
    probes: AtomicU64,
    queued_calls: AtomicU64,
    prompt_tokens: AtomicU64,
    cached_prompt_tokens: AtomicU64,
    prompt_tokens_max: AtomicU64,
    completion_tokens: AtomicU64,
    calls_with_usage: AtomicU64,
    latencies_ms: Mutex<Vec<u64>>,
    answered_calls: AtomicU64,
    latency_ms_total: AtomicU64,
    requests: AtomicU64,
    calls: AtomicU64,
    retries: AtomicU64,
    failed_calls: AtomicU64,
    failures: AtomicU64,
    breaker_opens: AtomicU64,
    breaker_rejections: AtomicU64,
    budget_rejections: AtomicU64,
    invalid_answers: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The LLM stage. Cheap to share (`Arc` it); all methods take `&self`.
pub struct LlmStage {
    inner: Arc<Inner>,
    /// For [`LlmStage::classify_many`]: a runtime handle given by the caller,
    /// else one built on first use.
    handle: Option<tokio::runtime::Handle>,
    runtime: OnceLock<Result<tokio::runtime::Runtime, String>>,
}

struct Inner {
    config: LlmConfig,
    labels: Vec<LabelSpec>,
    system_prompt: String,
    /// `Err(reason)` when the stage is off.
    client: Result<Arc<dyn LlmClient>, String>,
    status: String,
    /// The response format asked now, as `format_code`; only ever lowered.
    format: AtomicU8,
    /// `response_format` bodies by format, built once.
    format_bodies: [Option<serde_json::Value>; 3],
    limiter: Limiter,
    budget: Budget,
    breaker: Breaker,
    cache: AnswerCache<LlmOutcome>,
    counters: Counters,
}

impl fmt::Debug for LlmStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmStage")
            .field("status", &self.inner.status)
            .field(
                "labels",
                &self.inner.labels.iter().map(|l| &l.name).collect::<Vec<_>>(),
            )
            .field("stats", &self.stats())
            .finish()
    }
}

/// Longest example message put in a prompt.
const MAX_EXAMPLE_CHARS: usize = 200;

impl LlmStage {
    /// The stage as a user runs it: `config` with `LOGSIEVE_LLM_BASE_URL` /
    /// `LOGSIEVE_LLM_MODEL` applied, the key from `LOGSIEVE_LLM_API_KEY`,
    /// `GROQ_API_KEY` or `OPENAI_API_KEY`. See [`LlmStage::new`].
    pub fn from_env(config: LlmConfig, labels: &[impl AsRef<str>]) -> Result<Self, ConfigError> {
        let key = ApiKey::from_env();
        let from = key.as_ref().map(|(_, name)| *name);
        Self::build(config.with_env_overrides(), labels, key.map(|(k, _)| k), from)
    }

    /// The stage over HTTP. `labels` are the pipeline's labels (the model's);
    /// the keys of `config.labels` are added to them.
    ///
    /// The stage is *off* (every row `Unclassified`, method `none`, the
    /// reason in `detail`; [`LlmStage::status`] says why) when
    /// `config.enabled` is false, or when there is no API key and `base_url`
    /// is not on this machine. Local servers (Ollama, llama.cpp, vLLM on
    /// localhost) need no key; a remote server without auth takes any
    /// placeholder key.
    ///
    /// Errors only for an invalid `config`.
    pub fn new(
        config: LlmConfig,
        labels: &[impl AsRef<str>],
        api_key: Option<ApiKey>,
    ) -> Result<Self, ConfigError> {
        Self::build(config, labels, api_key, None)
    }

    fn build(
        config: LlmConfig,
        labels: &[impl AsRef<str>],
        api_key: Option<ApiKey>,
        key_from: Option<&str>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let client: Result<Arc<dyn LlmClient>, String> = if !config.enabled {
            Err("llm stage off: disabled in the configuration (llm.enabled = false)".to_string())
        } else if api_key.is_none() && !config.is_local() {
            Err(format!(
                "llm stage off: no API key for {} (set LOGSIEVE_LLM_API_KEY, GROQ_API_KEY or OPENAI_API_KEY, \
                 or point LOGSIEVE_LLM_BASE_URL at a local server)",
                config.display_base_url()
            ))
        } else {
            HttpClient::new(&config, api_key.clone())
                .map(|c| Arc::new(c) as Arc<dyn LlmClient>)
                .map_err(|e| format!("llm stage off: {e}"))
        };
        let status = match &client {
            Ok(_) => format!(
                "llm stage on: model {} at {}{}",
                config.model,
                config.display_base_url(),
                match (key_from, &api_key) {
                    (Some(var), _) => format!(" (API key from {var})"),
                    (None, Some(_)) => " (API key given)".to_string(),
                    (None, None) => " (no API key: local server)".to_string(),
                }
            ),
            Err(reason) => reason.clone(),
        };
        Ok(Self::assemble(config, labels, client, status))
    }

    /// The stage over any [`LlmClient`] (another provider, a test double).
    /// On unless `config.enabled` is false; no API key is involved.
    pub fn with_client(
        config: LlmConfig,
        labels: &[impl AsRef<str>],
        client: Arc<dyn LlmClient>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (client, status) = if config.enabled {
            (
                Ok(client),
                format!("llm stage on: model {} via a custom client", config.model),
            )
        } else {
            let reason = "llm stage off: disabled in the configuration (llm.enabled = false)".to_string();
            (Err(reason.clone()), reason)
        };
        Ok(Self::assemble(config, labels, client, status))
    }

    fn assemble(
        config: LlmConfig,
        labels: &[impl AsRef<str>],
        client: Result<Arc<dyn LlmClient>, String>,
        status: String,
    ) -> Self {
        let mut specs: Vec<LabelSpec> = Vec::new();
        let names = labels
            .iter()
            .map(|l| l.as_ref().trim().to_string())
            .chain(config.labels.keys().cloned());
        for name in names {
            if name.is_empty()
                || name.eq_ignore_ascii_case(UNCLASSIFIED)
                || specs.iter().any(|s| s.name.eq_ignore_ascii_case(&name))
            {
                continue;
            }
            let description = config
                .labels
                .get(&name)
                .cloned()
                .unwrap_or_else(|| "(no description given)".to_string());
            specs.push(LabelSpec { name, description });
        }
        prompt::by_priority(&mut specs);
        match &client {
            Ok(_) => tracing::info!(target: "logsieve_llm", labels = specs.len(), "{status}"),
            Err(_) => tracing::warn!(target: "logsieve_llm", "{status}"),
        }
        let now = Instant::now();
        let format_bodies = [
            ResponseFormat::JsonSchema,
            ResponseFormat::JsonObject,
            ResponseFormat::None,
        ]
        .map(|f| prompt::response_format(f, &specs));
        let inner = Inner {
            system_prompt: prompt::system_prompt(&specs),
            labels: specs,
            client,
            status,
            format: AtomicU8::new(format_code(config.effective_response_format())),
            format_bodies,
            limiter: Limiter::new(config.max_concurrency, config.adaptive_concurrency),
            budget: Budget::new(
                config.effective_calls_per_minute(),
                Duration::from_secs_f64(config.budget_max_wait_secs),
                now,
            ),
            breaker: Breaker::new(
                config.breaker_failures,
                Duration::from_secs_f64(config.breaker_cooldown_secs),
            ),
            cache: AnswerCache::new(config.cache_capacity),
            counters: Counters::default(),
            config,
        };
        LlmStage {
            inner: Arc::new(inner),
            handle: None,
            runtime: OnceLock::new(),
        }
    }

    /// Runs the stage's work on this runtime instead of a private one. Must
    /// be a multi-thread runtime with time and I/O enabled, and outlive the
    /// stage.
    pub fn with_runtime(mut self, handle: tokio::runtime::Handle) -> Self {
        self.handle = Some(handle);
        self
    }

    /// One line for the CLI to print once: whether the stage is on (model,
    /// endpoint, where the key came from — never the key) or why it is off.
    pub fn status(&self) -> &str {
        &self.inner.status
    }

    /// False when rows will come out `Unclassified`/`none` without asking.
    pub fn is_enabled(&self) -> bool {
        self.inner.client.is_ok()
    }

    /// The labels the model may answer, canonical spelling, with descriptions.
    pub fn labels(&self) -> &[LabelSpec] {
        &self.inner.labels
    }

    /// Classifies one row. Never panics and never loses the row: failures
    /// come back as `Unclassified` with method `none` and the reason.
    ///
    /// The work runs on the stage's own runtime (see
    /// [`LlmStage::with_runtime`]), whatever runtime awaits it: pooled HTTP
    /// connections then never belong to a caller's runtime that might be
    /// blocked or gone when the next row reuses them.
    pub async fn classify(&self, request: LlmRequest) -> LlmOutcome {
        let handle = match self.runner() {
            Ok(handle) => handle,
            Err(detail) => return self.refuse(&detail),
        };
        let outcome = handle.spawn(self.inner.clone().classify(request)).await;
        outcome.unwrap_or_else(|e| self.inner.fail(format!("llm task failed: {e}")))
    }

    /// Classifies rows from synchronous code, at most `max_concurrency`
    /// calls at once; one outcome per request, in input order. Blocks the
    /// calling thread. From async code prefer `classify`; this works there
    /// too, by blocking a helper thread instead of the caller's runtime.
    pub fn classify_many(&self, requests: Vec<LlmRequest>) -> Vec<LlmOutcome> {
        let n = requests.len();
        if n == 0 {
            return Vec::new();
        }
        let handle = match self.runner() {
            Ok(handle) => handle,
            Err(detail) => return (0..n).map(|_| self.refuse(&detail)).collect(),
        };
        let inner = &self.inner;
        let work = async {
            let tasks: Vec<_> = requests
                .into_iter()
                .map(|r| handle.spawn(inner.clone().classify(r)))
                .collect();
            let mut out = Vec::with_capacity(n);
            for task in tasks {
                out.push(
                    task.await
                        .unwrap_or_else(|e| inner.fail(format!("llm task failed: {e}"))),
                );
            }
            out
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return handle.block_on(work);
        }
        // Blocking inside a runtime would panic; block a helper thread instead.
        std::thread::scope(|s| s.spawn(|| handle.block_on(work)).join()).unwrap_or_else(|_| {
            (0..n)
                .map(|_| self.inner.fail("llm stage worker thread panicked".to_string()))
                .collect()
        })
    }

    /// The runtime the stage's work runs on: the caller's, when given, else
    /// a private one (2 worker threads) started on first use. `Err(detail)`
    /// when rows cannot be asked: the stage is off (no runtime is started
    /// then) or the runtime would not start.
    fn runner(&self) -> Result<tokio::runtime::Handle, String> {
        if let Err(reason) = &self.inner.client {
            return Err(reason.clone());
        }
        if let Some(handle) = &self.handle {
            return Ok(handle.clone());
        }
        let runtime = self.runtime.get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("logsieve-llm")
                .enable_all()
                .build()
                .map_err(|e| format!("llm stage could not run: cannot start the async runtime: {e}"))
        });
        runtime
            .as_ref()
            .map(|rt| rt.handle().clone())
            .map_err(Clone::clone)
    }

    /// A row that is not asked.
    fn refuse(&self, detail: &str) -> LlmOutcome {
        bump(&self.inner.counters.requests);
        self.inner.fail(detail.to_string())
    }

    /// Counters since the stage was built.
    pub fn stats(&self) -> LlmStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (p50, p99, max) = {
            let mut l = c.latencies_ms.lock().unwrap_or_else(|e| e.into_inner()).clone();
            l.sort_unstable();
            let at = |q: f64| match l.len() {
                0 => 0,
                n => l[((n as f64 * q).ceil() as usize).clamp(1, n) - 1],
            };
            (at(0.50), at(0.99), l.last().copied().unwrap_or(0))
        };
        let limiter = self.inner.limiter.stats();
        LlmStats {
            response_format: self.inner.format(),
            format_fallbacks: get(&c.format_fallbacks),
            probes: get(&c.probes),
            queued_calls: get(&c.queued_calls),
            prompt_tokens: get(&c.prompt_tokens),
            cached_prompt_tokens: get(&c.cached_prompt_tokens),
            prompt_tokens_max: get(&c.prompt_tokens_max),
            completion_tokens: get(&c.completion_tokens),
            calls_with_usage: get(&c.calls_with_usage),
            latency_ms_p50: p50,
            latency_ms_p99: p99,
            latency_ms_max: max,
            answered_calls: get(&c.answered_calls),
            latency_ms_total: get(&c.latency_ms_total),
            concurrency_limit: limiter.concurrency_limit,
            concurrency_peak: limiter.concurrency_peak,
            concurrency_decreases: limiter.concurrency_decreases,
            requests: get(&c.requests),
            calls: get(&c.calls),
            retries: get(&c.retries),
            failed_calls: get(&c.failed_calls),
            failures: get(&c.failures),
            cache_hits: self.inner.cache.hits(),
            cache_misses: self.inner.cache.misses(),
            breaker_opens: get(&c.breaker_opens),
            breaker_rejections: get(&c.breaker_rejections),
            budget_rejections: get(&c.budget_rejections),
            invalid_answers: get(&c.invalid_answers),
        }
    }
}

impl Drop for LlmStage {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; let it wind down in
        // the background instead.
        if tokio::runtime::Handle::try_current().is_ok() {
            if let Some(Ok(rt)) = self.runtime.take() {
                rt.shutdown_background();
            }
        }
    }
}

impl Inner {
    async fn classify(self: Arc<Self>, request: LlmRequest) -> LlmOutcome {
        bump(&self.counters.requests);
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(reason) => return self.fail(reason.clone()),
        };
        let message = request.message.trim();
        let key = (request.source.clone(), message.to_string());
        let answer = self
            .cache
            .get_or_compute(key, || {
                self.ask(&*client, &request.source, message, &request.examples)
            })
            .await;
        answer.unwrap_or_else(|detail| self.fail(detail))
    }

    fn fail(&self, detail: String) -> LlmOutcome {
        bump(&self.counters.failures);
        LlmOutcome::failed(detail)
    }

    /// One row's question. `Ok` for any model answer (cached), `Err(detail)`
    /// when no answer came.
    async fn ask(
        &self,
        client: &dyn LlmClient,
        source: &str,
        message: &str,
        examples: &[(String, String)],
    ) -> Result<LlmOutcome, String> {
        let message = truncate(message, self.config.max_message_chars);
        let examples: Vec<(String, String)> = examples
            .iter()
            .take(self.config.max_examples)
            .map(|(m, l)| (truncate(m.trim(), MAX_EXAMPLE_CHARS), l.clone()))
            .collect();
        let mut request = ChatRequest {
            model: self.config.model.clone(),
            messages: vec![
                ChatMessage {
                    role: "system".into(),
                    content: self.system_prompt.clone(),
                },
                ChatMessage {
                    role: "user".into(),
                    content: prompt::user_prompt(source, &message, &examples),
                },
            ],
            temperature: self.config.temperature,
            max_tokens: self.config.effective_max_tokens(),
            response_format: None,
        };
        let answer = self.call_with_retries(client, &mut request).await?;
        Ok(self.outcome(prompt::parse_answer(&answer.text, &self.labels)))
    }

    fn format(&self) -> ResponseFormat {
        format_of(self.format.load(Ordering::Relaxed))
    }

    /// Counts an answered call: latency and token counts.
    fn record_answer(&self, latency: Duration, answer: &Completion, format: ResponseFormat) {
        let c = &self.counters;
        let ms = latency.as_millis() as u64;
        bump(&c.answered_calls);
        c.latency_ms_total.fetch_add(ms, Ordering::Relaxed);
        {
            let mut l = c.latencies_ms.lock().unwrap_or_else(|e| e.into_inner());
            if l.len() < MAX_LATENCIES {
                l.push(ms);
            }
        }
        let u = answer.usage;
        if let Some(p) = u.prompt_tokens {
            bump(&c.calls_with_usage);
            c.prompt_tokens.fetch_add(p, Ordering::Relaxed);
            c.prompt_tokens_max.fetch_max(p, Ordering::Relaxed);
            c.cached_prompt_tokens
                .fetch_add(u.cached_prompt_tokens.unwrap_or(0), Ordering::Relaxed);
            c.completion_tokens
                .fetch_add(u.completion_tokens.unwrap_or(0), Ordering::Relaxed);
        }
        tracing::debug!(
            target: "logsieve_llm",
            latency_ms = ms,
            prompt_tokens = u.prompt_tokens,
            cached_prompt_tokens = u.cached_prompt_tokens,
            completion_tokens = u.completion_tokens,
            response_format = format.as_str(),
            "llm call answered"
        );
    }

    fn outcome(&self, answer: Answer) -> LlmOutcome {
        match answer {
            Answer::Label {
                label,
                reason,
                confidence,
            } => {
                let confidence = confidence.unwrap_or(self.config.confidence);
                if confidence < self.config.min_confidence {
                    let mut outcome = LlmOutcome::unclassified_answer(format!(
                        "llm said {label} with confidence {confidence:.2} < min_confidence {:.2}: {reason}",
                        self.config.min_confidence
                    ));
                    outcome.confidence = confidence;
                    return outcome;
                }
                LlmOutcome {
                    label,
                    method: Method::Llm,
                    confidence,
                    detail: reason,
                }
            }
            Answer::NoFit { reason } => LlmOutcome::unclassified_answer(if reason.is_empty() {
                "llm: no label fits".to_string()
            } else {
                format!("llm: no label fits: {reason}")
            }),
            Answer::OutsideSet { raw } => {
                bump(&self.counters.invalid_answers);
                LlmOutcome::unclassified_answer(format!("llm answer outside the label set: {raw}"))
            }
            Answer::NotUnderstood { raw } => {
                bump(&self.counters.invalid_answers);
                LlmOutcome::unclassified_answer(format!("llm answer not understood: {raw}"))
            }
        }
    }

    /// Attempts until an answer, a final error, or a refusal by the breaker
    /// or the budget. `Err` is the row's `detail`.
    async fn call_with_retries(
        &self,
        client: &dyn LlmClient,
        request: &mut ChatRequest,
    ) -> Result<Completion, String> {
        let cfg = &self.config;
        let mut retry = 0u32;
        let mut attempts = 0u32;
        // This row's format: starts at the stage's, steps down on a refusal.
        let mut format = self.format();
        // Said in a budget refusal that comes mid-retry, so the cause is not lost.
        let mut last_error: Option<LlmError> = None;
        let after_last = |last: &Option<LlmError>| match last {
            Some(e) => format!(" (this row's last error: {e})"),
            None => String::new(),
        };
        loop {
            let started;
            let result = {
                // The permit covers the budget wait too, so queued rows take
                // budget in turn instead of all reserving at once.
                let permit = self
                    .limiter
                    .acquire()
                    .await
                    .map_err(|_| "llm stage shut down".to_string())?;
                if let Err(open) = self.breaker.check(Instant::now()) {
                    bump(&self.counters.breaker_rejections);
                    return Err(format!(
                        "llm circuit open after {} consecutive failed calls (last: {}); calls resume in {:.0}s",
                        open.failures,
                        open.last_failure,
                        open.remaining.as_secs_f64().ceil(),
                    ));
                }
                match self.budget.reserve(Instant::now()) {
                    Ok(wait) if wait.is_zero() => {}
                    Ok(wait) => tokio::time::sleep(wait).await,
                    Err(wait) => {
                        bump(&self.counters.budget_rejections);
                        return Err(format!(
                            "llm call budget exhausted: {} calls/min, next call in {:.1}s, longer than budget_max_wait_secs = {}{}",
                            cfg.effective_calls_per_minute(),
                            wait.as_secs_f64(),
                            cfg.budget_max_wait_secs,
                            after_last(&last_error)
                        ));
                    }
                }
                bump(&self.counters.calls);
                attempts += 1;
                request.response_format = self.format_bodies[format_code(format) as usize].clone();
                started = Instant::now();
                let (result, queued) = self.call_patiently(client, request).await;
                let signal = match &result {
                    // It came, but only after queueing: fewer calls in flight.
                    Ok(_) if queued => Signal::Overload,
                    Ok(_) => Signal::Success(started.elapsed()),
                    Err(e) if e.is_overload() => Signal::Overload,
                    Err(_) => Signal::Neutral,
                };
                self.limiter.record(&permit, signal);
                result
            };
            let error = match result {
                Ok(answer) => {
                    self.breaker.record_success();
                    self.record_answer(started.elapsed(), &answer, format);
                    if format_code(format) > self.format.fetch_max(format_code(format), Ordering::Relaxed) {
                        tracing::warn!(
                            target: "logsieve_llm",
                            "the server refused a richer response_format; asking with {} from now on",
                            format.as_str()
                        );
                    }
                    return Ok(answer);
                }
                Err(e) => e,
            };
            bump(&self.counters.failed_calls);
            if request.response_format.is_some() && error.rejects_response_format() {
                if let Some(lower) = format.fallback() {
                    // The server is up; it just lacks this format. Asked again
                    // at once, one step lower; kept for the stage once it works.
                    tracing::debug!(target: "logsieve_llm", "response_format {} refused ({error}); trying {}", format.as_str(), lower.as_str());
                    format = lower;
                    bump(&self.counters.format_fallbacks);
                    bump(&self.counters.retries);
                    continue;
                }
            }
            if self.breaker.record_failure(Instant::now(), &error.to_string()) {
                bump(&self.counters.breaker_opens);
                tracing::warn!(
                    target: "logsieve_llm",
                    failures = cfg.breaker_failures,
                    cooldown_secs = cfg.breaker_cooldown_secs,
                    "llm circuit breaker opened: {error}"
                );
            }
            let attempts_text = if attempts == 1 {
                "1 attempt".to_string()
            } else {
                format!("{attempts} attempts")
            };
            if !error.is_retryable() || retry >= cfg.max_retries {
                return Err(format!("llm call failed after {attempts_text}: {error}"));
            }
            let retry_after = match &error {
                LlmError::Status { retry_after, .. } => *retry_after,
                _ => None,
            };
            let base = Duration::from_secs_f64(cfg.backoff_base_secs);
            let max = Duration::from_secs_f64(cfg.backoff_max_secs);
            let delay = retry_delay(retry, retry_after, base, max, &mut rand::rng());
            match delay {
                RetryDelay::Wait(wait) => {
                    last_error = Some(error.clone());
                    tracing::debug!(target: "logsieve_llm", retry, wait_ms = wait.as_millis() as u64, "retrying llm call: {error}");
                    bump(&self.counters.retries);
                    retry += 1;
                    tokio::time::sleep(wait).await;
                }
                RetryDelay::TooLong(asked) => {
                    return Err(format!(
                        "llm call failed after {attempts_text}: {error}; server asked to wait {}s, more than backoff_max_secs = {}",
                        asked.as_secs(),
                        cfg.backoff_max_secs
                    ));
                }
            }
        }
    }

    /// One call, waited for as long as the server is up. Every
    /// `timeout_secs` without an answer the server is probed: down (or a
    /// client that cannot tell) fails the call, up means the request is
    /// queued or slow and the wait goes on, to `max_call_secs` at most. The
    /// flag says the call had to wait past `timeout_secs` on a live server.
    async fn call_patiently(
        &self,
        client: &dyn LlmClient,
        request: &ChatRequest,
    ) -> (Result<Completion, LlmError>, bool) {
        let patience = self.config.timeout();
        let hard = self.config.max_call();
        let start = Instant::now();
        let call = client.complete(request);
        tokio::pin!(call);
        let mut queued = false;
        loop {
            let left = hard.saturating_sub(start.elapsed());
            if let Ok(result) = tokio::time::timeout(patience.min(left), &mut call).await {
                return (result, queued);
            }
            if start.elapsed() >= hard {
                return (Err(LlmError::Timeout(hard)), queued);
            }
            bump(&self.counters.probes);
            let probe = client.probe();
            tokio::pin!(probe);
            let liveness = tokio::select! {
                result = &mut call => return (result, queued),
                liveness = &mut probe => liveness,
            };
            match liveness {
                Liveness::Alive => {
                    if !queued {
                        queued = true;
                        bump(&self.counters.queued_calls);
                        tracing::debug!(
                            target: "logsieve_llm",
                            waited_ms = start.elapsed().as_millis() as u64,
                            "llm call still unanswered, the server is up: waiting on"
                        );
                    }
                }
                Liveness::Down(why) => {
                    return (
                        Err(LlmError::Unresponsive {
                            waited: start.elapsed(),
                            probe: why,
                        }),
                        queued,
                    )
                }
                Liveness::Unknown => return (Err(LlmError::Timeout(patience)), queued),
            }
        }
    }
}

fn format_code(f: ResponseFormat) -> u8 {
    match f {
        ResponseFormat::JsonSchema => 0,
        ResponseFormat::JsonObject => 1,
        ResponseFormat::None => 2,
    }
}

fn format_of(code: u8) -> ResponseFormat {
    match code {
        0 => ResponseFormat::JsonSchema,
        1 => ResponseFormat::JsonObject,
        _ => ResponseFormat::None,
    }
}
