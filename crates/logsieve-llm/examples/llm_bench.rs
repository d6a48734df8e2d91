//! Benchmark of the LLM stage against the local fake chat server: throughput
//! at 10/50/200 ms answer latency under the concurrency cap, then the cache
//! hit rate when replaying a dataset's messages through the stage.
//!
//! cargo run --release -p logsieve-llm --example llm_bench -- [--concurrency N] [--csv PATH]

#[path = "../tests/support/fake_server.rs"]
mod fake_server;

use std::time::{Duration, Instant};

use fake_server::{FakeServer, Reply};
use logsieve_llm::{ApiKey, LlmConfig, LlmRequest, LlmStage, Method};

const DEFAULT_CSV: &str = "../shared/datasets/synthetic_logs.csv";
const MODEL_LABELS: [&str; 7] = [
    "HTTP Status",
    "Critical Error",
    "Error",
    "Security Alert",
    "System Notification",
    "Resource Usage",
    "User Action",
];

fn main() {
    let mut concurrency = LlmConfig::default().max_concurrency;
    let mut csv_path = std::env::var("LOGSIEVE_BENCH_CSV").unwrap_or_else(|_| DEFAULT_CSV.to_string());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--concurrency", Some(n)) => concurrency = n.parse().expect("--concurrency takes a number"),
            ("--csv", Some(p)) => csv_path = p,
            _ => {
                eprintln!("usage: llm_bench [--concurrency N] [--csv PATH]");
                std::process::exit(2);
            }
        }
    }

    println!("LLM stage throughput, fake server on 127.0.0.1, max_concurrency = {concurrency}, cache off");
    println!(
        "{:>10} {:>6} {:>10} {:>10} {:>12}",
        "latency", "rows", "seconds", "rows/s", "ceiling/s"
    );
    for (latency_ms, rows) in [(10u64, 400usize), (50, 200), (200, 60)] {
        let server = FakeServer::start(move |_| {
            Reply::Slow(
                Duration::from_millis(latency_ms),
                r#"{"label":"Workflow Error","reason":"bench","confidence":0.9}"#.into(),
            )
        });
        let stage = stage(&server, concurrency, 0);
        let requests = (0..rows)
            .map(|i| request("LegacyCRM", &format!("bench line {i}")))
            .collect();
        let start = Instant::now();
        let outcomes = stage.classify_many(requests);
        let secs = start.elapsed().as_secs_f64();
        assert!(
            outcomes.iter().all(|o| o.method == Method::Llm),
            "every row answered"
        );
        assert_eq!(server.requests(), rows);
        let ceiling = concurrency as f64 * 1000.0 / latency_ms as f64;
        println!(
            "{:>8}ms {:>6} {:>10.2} {:>10.1} {:>12.1}",
            latency_ms,
            rows,
            secs,
            rows as f64 / secs,
            ceiling
        );
    }

    let mut reader = match csv::Reader::from_path(&csv_path) {
        Ok(r) => r,
        Err(e) => {
            println!("\ncache replay skipped: cannot read {csv_path}: {e}");
            return;
        }
    };
    let headers = reader.headers().expect("CSV header").clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name} column"))
    };
    let (source_col, message_col) = (col("source"), col("log_message"));
    let requests: Vec<LlmRequest> = reader
        .records()
        .map(|r| r.expect("CSV row"))
        .map(|r| request(&r[source_col], &r[message_col]))
        .collect();
    let server = FakeServer::start(|_| Reply::Slow(Duration::from_millis(10), r#"{"label":"Error"}"#.into()));
    let stage = stage(&server, concurrency, LlmConfig::default().cache_capacity);
    let start = Instant::now();
    let outcomes = stage.classify_many(requests);
    let secs = start.elapsed().as_secs_f64();
    let stats = stage.stats();
    let asked = stats.cache_hits + stats.cache_misses;
    println!(
        "\ncache replay of {csv_path}: {} rows, {} calls, hit rate {:.1}% ({} hits / {} misses), {:.2}s at 10ms latency",
        outcomes.len(),
        server.requests(),
        100.0 * stats.cache_hits as f64 / asked.max(1) as f64,
        stats.cache_hits,
        stats.cache_misses,
        secs
    );
}

fn stage(server: &FakeServer, concurrency: usize, cache_capacity: usize) -> LlmStage {
    let config = LlmConfig {
        base_url: server.base_url.clone(),
        max_concurrency: concurrency,
        calls_per_minute: Some(0),
        cache_capacity,
        ..LlmConfig::default()
    };
    LlmStage::new(config, &MODEL_LABELS, ApiKey::new("sk-bench")).expect("valid config")
}

fn request(source: &str, message: &str) -> LlmRequest {
    LlmRequest {
        source: source.to_string(),
        message: message.to_string(),
        examples: vec![
            (
                "Lead conversion failed for prospect ID 7842 due to missing contact information.".into(),
                "Workflow Error".into(),
            ),
            (
                "API endpoint 'getCustomerDetails' is deprecated and will be removed in version 3.2.".into(),
                "Deprecation Warning".into(),
            ),
        ],
    }
}
