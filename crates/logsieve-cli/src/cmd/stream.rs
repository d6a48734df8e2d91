//! `logsieve stream`: classify Kafka topics with a consumer group, at least
//! once (see crates/logsieve-kafka). Settings come from the config's
//! `[kafka]` table, then flags. `LOGSIEVE_KAFKA_SASL_PASSWORD`, when set,
//! becomes librdkafka's `sasl.password` (never a flag, never printed).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use logsieve_kafka::{KafkaConfig, Metrics, Partitioning, RecordFormat, RunOptions};

use crate::common::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bootstrap brokers, host:port[,host:port…] [config: kafka.brokers].
    #[arg(long, env = "LOGSIEVE_KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Input topic (repeat for several) [kafka.topics].
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Consumer group: processes in one group share the partitions [kafka.group, default logsieve].
    #[arg(long)]
    pub group: Option<String>,
    /// Topic the labelled records go to [kafka.output_topic].
    #[arg(long)]
    pub output_topic: Option<String>,
    /// Dead-letter topic for records that are not valid input [kafka.dlq_topic].
    #[arg(long)]
    pub dlq_topic: Option<String>,
    /// Record format: jsonl (objects with source and log_message) or text [kafka.format].
    #[arg(long)]
    pub format: Option<RecordFormat>,
    /// Source for text records without a `source` header [kafka.source].
    #[arg(long)]
    pub source: Option<String>,
    /// Output partition: same (the input's) or key [kafka.partitioning].
    #[arg(long)]
    pub partitioning: Option<Partitioning>,
    /// Serve /metrics and /health on this port (127.0.0.1, or kafka.metrics_host) [kafka.metrics_port].
    #[arg(long, env = "LOGSIEVE_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// A librdkafka setting for both clients, KEY=VALUE (repeat) [kafka.options].
    #[arg(long = "kafka-option", value_name = "KEY=VALUE")]
    pub kafka_options: Vec<String>,
    /// Stop when every assigned partition has been read to its end (replays, benchmarks).
    #[arg(long)]
    pub stop_at_end: bool,
    /// Print a JSON summary (records in/out, dead letters, rebalances, records/s, CPU, memory) to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

#[derive(serde::Serialize)]
struct Report {
    #[serde(flatten)]
    summary: logsieve_kafka::StreamSummary,
    records_per_s: f64,
    cpu_seconds: f64,
    records_per_cpu_s: f64,
    peak_rss_mib: f64,
    pipeline: logsieve_pipeline::StatsSnapshot,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let stop = crate::interrupt::install().context("installing signal handlers")?;
    let file = cfg.file()?;
    let mut k = KafkaConfig::from_toml(&file.text, &file.path)?;
    if let Some(b) = a.brokers {
        k.brokers = b;
    }
    if !a.topics.is_empty() {
        k.topics = a.topics;
    }
    if let Some(g) = a.group {
        k.group = g;
    }
    if let Some(t) = a.output_topic {
        k.output_topic = t;
    }
    if let Some(t) = a.dlq_topic {
        k.dlq_topic = Some(t);
    }
    if let Some(f) = a.format {
        k.format = f;
    }
    if let Some(s) = a.source {
        k.source = Some(s);
    }
    if let Some(p) = a.partitioning {
        k.partitioning = p;
    }
    if let Some(p) = a.metrics_port {
        k.metrics_port = p;
    }
    for kv in a.kafka_options {
        let (key, value) = kv
            .split_once('=')
            .with_context(|| format!("--kafka-option `{kv}`: expected KEY=VALUE"))?;
        k.options.insert(key.trim().to_string(), value.to_string());
    }
    if let Ok(pw) = std::env::var("LOGSIEVE_KAFKA_SASL_PASSWORD") {
        k.options.insert("sasl.password".into(), pw);
    }
    k.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let pipeline = cfg.pipeline()?;
    let metrics = Metrics::new();
    if k.metrics_port != 0 {
        let addr: SocketAddr = format!("{}:{}", k.metrics_host, k.metrics_port)
            .parse()
            .with_context(|| format!("kafka.metrics_host `{}`", k.metrics_host))?;
        let bound = logsieve_kafka::metrics::serve(metrics.clone(), addr)
            .with_context(|| format!("serving /metrics on {addr}"))?;
        eprintln!("metrics on http://{bound}/metrics, health on http://{bound}/health");
    }
    let cpu0 = crate::common::cpu_seconds().unwrap_or(0.0);
    let summary = logsieve_kafka::run(
        &pipeline,
        &k,
        RunOptions {
            stop: stop.clone(),
            stop_at_end: a.stop_at_end,
            metrics,
        },
    )?;
    let cpu = crate::common::cpu_seconds().unwrap_or(0.0) - cpu0;
    eprintln!(
        "stream: {} records in, {} out, {} to the dead-letter topic, {} rebalances",
        summary.records_in, summary.records_out, summary.dlq, summary.rebalances
    );
    if a.stats {
        let report = Report {
            records_per_s: (summary.records_in as f64 / summary.seconds.max(1e-9)).round(),
            records_per_cpu_s: (summary.records_in as f64 / cpu.max(1e-9)).round(),
            cpu_seconds: (cpu * 100.0).round() / 100.0,
            peak_rss_mib: crate::common::peak_rss_bytes()
                .map_or(0.0, |b| (crate::common::mib(b) * 10.0).round() / 10.0),
            pipeline: pipeline.stats(),
            summary,
        };
        eprintln!("{}", serde_json::to_string(&report)?);
    }
    Ok(if stop.load(std::sync::atomic::Ordering::Relaxed) {
        crate::interrupt::EXIT_INTERRUPTED
    } else {
        0
    })
}
