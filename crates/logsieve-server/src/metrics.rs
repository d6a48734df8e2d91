//! Prometheus metrics: the server's own series (requests, latency, rows,
//! batch sizes) in a registry, plus the pipeline's and the LLM stage's
//! counters read at scrape time. The `track` middleware records every
//! request by its route pattern (never the raw path) and its method from a
//! closed set, so no request can add a series: unknown methods are `other`,
//! unmatched paths `unmatched`.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use logsieve_pipeline::Decision;
use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::AppState;

pub struct Metrics {
    registry: Registry,
    /// Requests by route pattern, method and status.
    pub requests: IntCounterVec,
    /// Time to the response head, by route (uploads stream on after it).
    pub latency: HistogramVec,
    /// Rows decided, by method and label.
    pub rows: IntCounterVec,
    /// Rows per `Pipeline::classify` call made by the batcher.
    pub batch_rows: Histogram,
    /// Requests merged into one classify call.
    pub batch_requests: Histogram,
    /// Jobs dropped before classification because their caller had gone.
    pub skipped_jobs: IntCounter,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    r.expect("static metric definitions are valid")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = must(IntCounterVec::new(
            Opts::new(
                "logsieve_http_requests_total",
                "HTTP requests by route, method and status.",
            ),
            &["route", "method", "status"],
        ));
        let latency = must(HistogramVec::new(
            HistogramOpts::new(
                "logsieve_http_request_duration_seconds",
                "Time from request to response head, by route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        ));
        let rows = must(IntCounterVec::new(
            Opts::new("logsieve_rows_total", "Rows classified, by method and label."),
            &["method", "label"],
        ));
        let batch_rows = must(Histogram::with_opts(
            HistogramOpts::new(
                "logsieve_batch_rows",
                "Rows per classify call (merged batch size).",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
            ]),
        ));
        let batch_requests = must(Histogram::with_opts(
            HistogramOpts::new(
                "logsieve_batch_requests",
                "Requests merged into one classify call.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
        ));
        let skipped_jobs = must(IntCounter::new(
            "logsieve_batch_skipped_jobs_total",
            "Queued jobs skipped because the caller had gone (timeout, disconnect).",
        ));
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(latency.clone()),
            Box::new(rows.clone()),
            Box::new(batch_rows.clone()),
            Box::new(batch_requests.clone()),
            Box::new(skipped_jobs.clone()),
        ] {
            must(registry.register(c));
        }
        Self {
            registry,
            requests,
            latency,
            rows,
            batch_rows,
            batch_requests,
            skipped_jobs,
        }
    }

    pub fn count_row(&self, d: &Decision) {
        self.rows
            .with_label_values(&[d.method.as_str(), d.target_label.as_str()])
            .inc();
    }

    /// The text exposition: the registry, then the pipeline's and LLM stage's counters.
    pub fn render(&self, st: &AppState) -> String {
        let mut out = prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default();
        let mut put = |name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        put(
            "logsieve_queue_in_flight",
            "gauge",
            "Jobs queued or being classified.",
            st.batcher.in_flight() as u64,
        );
        put(
            "logsieve_queue_capacity",
            "gauge",
            "Jobs admitted at once; more get 429.",
            st.batcher.capacity() as u64,
        );
        let ps = st.pipeline.stats();
        put(
            "logsieve_encoded_texts_total",
            "counter",
            "Distinct texts that went through the encoder.",
            ps.encoded_texts,
        );
        put(
            "logsieve_encoded_tokens_total",
            "counter",
            "Tokens those texts had.",
            ps.encoded_tokens,
        );
        put(
            "logsieve_template_cache_hits_total",
            "counter",
            "Rows decided from the template cache (source + masked text).",
            ps.template_cache.hits,
        );
        put(
            "logsieve_template_cache_misses_total",
            "counter",
            "Rows whose template-cache key was not cached.",
            ps.template_cache.misses,
        );
        let llm = st.pipeline.llm().stats();
        put(
            "logsieve_llm_requests_total",
            "counter",
            "Rows handed to the LLM stage.",
            llm.requests,
        );
        put(
            "logsieve_llm_calls_total",
            "counter",
            "HTTP calls the LLM stage made.",
            llm.calls,
        );
        put(
            "logsieve_llm_retries_total",
            "counter",
            "LLM calls that were retries.",
            llm.retries,
        );
        put(
            "logsieve_llm_failed_calls_total",
            "counter",
            "LLM calls that failed.",
            llm.failed_calls,
        );
        put(
            "logsieve_llm_cache_hits_total",
            "counter",
            "LLM rows answered from the cache.",
            llm.cache_hits,
        );
        put(
            "logsieve_llm_cache_misses_total",
            "counter",
            "LLM rows not in the cache.",
            llm.cache_misses,
        );
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The `method` label: the standard methods by name, anything else `other`.
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Middleware: count and time every request by its route pattern.
pub async fn track(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let t0 = Instant::now();
    let resp = next.run(req).await;
    st.metrics
        .latency
        .with_label_values(&[route.as_str()])
        .observe(t0.elapsed().as_secs_f64());
    st.metrics
        .requests
        .with_label_values(&[route.as_str(), method, resp.status().as_str()])
        .inc();
    resp
}
