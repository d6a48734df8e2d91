//! `logsieve bench`: print the stages' speed and memory on a data file.
//!
//! Figures, never assertions: rules lines/s; encoder sentences/s and
//! tokens/s at batch 1, 16 and 64 (length-sorted), with batch-1 latency
//! percentiles; end-to-end `classify` rows/s; peak RSS. The last line is a
//! JSON object with every figure.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_embed::{BatchOptions, Embedder, MiniLm};
use logsieve_pipeline::io::{CsvReader, CsvWriter, RowReader};
use logsieve_pipeline::run::classify_stream;
use logsieve_pipeline::Pipeline;
use serde_json::{json, Value};

use crate::common::{mib, peak_rss_bytes, ConfigArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    Rules,
    Embed,
    Classify,
    All,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    pub stage: Stage,
    /// A CSV with `source` and `log_message` columns.
    #[arg(long, default_value = "data/synthetic_logs.csv")]
    pub data: PathBuf,
    /// Batch sizes for the encoder.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64])]
    pub batches: Vec<usize>,
    /// At most this many messages per encoder measurement (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Messages for the batch-1 latency measurement.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
}

fn read_rows(path: &PathBuf) -> Result<Vec<(String, String)>> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut r = CsvReader::new(bytes.as_slice(), Some(String::new()))
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    while let Some(row) = r.next_row() {
        let row = row.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        out.push((row.source, row.message));
    }
    Ok(out)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let rows = read_rows(&a.data)?;
    let mut result = serde_json::Map::new();
    result.insert("data".into(), json!(a.data.display().to_string()));
    result.insert("messages".into(), json!(rows.len()));
    result.insert(
        "threads".into(),
        json!(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)),
    );
    let config = cfg.load()?;

    if matches!(a.stage, Stage::Rules | Stage::All) {
        let p = Pipeline::new(config.clone())?;
        let rules = p.rules();
        let target = 1_000_000usize;
        let t0 = Instant::now();
        let mut hits = 0usize;
        let mut n = 0usize;
        while n < target {
            for (s, m) in &rows {
                hits += rules.classify(s, m).is_some() as usize;
                n += 1;
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        let lps = n as f64 / secs;
        println!(
            "rules: {n} lines in {secs:.2}s = {lps:.0} lines/s ({} rules, {:.1}% matched)",
            rules.len(),
            100.0 * hits as f64 / n as f64
        );
        result.insert("rules_lines_per_s".into(), json!(lps.round()));
    }

    if matches!(a.stage, Stage::Embed | Stage::All) {
        let mut texts: Vec<&str> = rows.iter().map(|(_, m)| m.as_str()).collect();
        if a.limit > 0 {
            texts.truncate(a.limit);
        }
        let t0 = Instant::now();
        let probe = MiniLm::load_default(config.model.embedding_dir.as_deref(), config.batch_options())?;
        let load_s = t0.elapsed().as_secs_f64();
        let rss_loaded = peak_rss_bytes().unwrap_or(0);
        println!(
            "encoder: loaded in {load_s:.2}s; peak RSS {:.0} MiB",
            mib(rss_loaded)
        );
        result.insert("model_load_s".into(), json!(load_s));
        result.insert("peak_rss_model_loaded_mib".into(), json!(mib(rss_loaded).round()));
        let counts = probe.token_counts(&texts)?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| counts[i]);
        let sorted: Vec<&str> = order.iter().map(|&i| texts[i]).collect();
        let total_tokens: usize = counts.iter().sum();
        println!(
            "encoder: {} messages, {} tokens ({:.1} per message)",
            texts.len(),
            total_tokens,
            total_tokens as f64 / texts.len().max(1) as f64
        );
        result.insert(
            "tokens_per_message".into(),
            json!(total_tokens as f64 / texts.len().max(1) as f64),
        );
        drop(probe);
        let mut best = 0f64;
        let mut per_batch = serde_json::Map::new();
        for &b in &a.batches {
            let opts = BatchOptions {
                max_batch: b,
                batch_tokens: b * config.model.max_tokens,
                ..config.batch_options()
            };
            let m = MiniLm::load_default(config.model.embedding_dir.as_deref(), opts)?;
            let t0 = Instant::now();
            for chunk in sorted.chunks(b) {
                m.embed(chunk)?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let sps = sorted.len() as f64 / secs;
            let tps = total_tokens as f64 / secs;
            println!("encoder: batch {b:3}: {sps:7.1} sentences/s  {tps:8.0} tokens/s  ({secs:.1}s)");
            per_batch.insert(
                b.to_string(),
                json!({"sentences_per_s": (sps * 10.0).round() / 10.0, "tokens_per_s": tps.round()}),
            );
            best = best.max(sps);
            if b == 64 || b == *a.batches.iter().max().unwrap_or(&b) {
                let rss = peak_rss_bytes().unwrap_or(0);
                result.insert("peak_rss_after_batches_mib".into(), json!(mib(rss).round()));
            }
        }
        // Batch-1 latency on typical log lines (messages of 15–25 tokens).
        let m = MiniLm::load_default(config.model.embedding_dir.as_deref(), config.batch_options())?;
        let typical: Vec<&str> = texts
            .iter()
            .zip(&counts)
            .filter(|(_, &c)| (15..=25).contains(&c))
            .map(|(t, _)| *t)
            .take(a.latency_samples)
            .collect();
        if !typical.is_empty() {
            let mut lat: Vec<f64> = typical
                .iter()
                .map(|t| {
                    let t0 = Instant::now();
                    let _ = m.embed(&[t]);
                    t0.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            lat.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            println!(
                "encoder: batch-1 latency on {} lines of 15-25 tokens: p50 {p50:.2} ms, p99 {p99:.2} ms",
                lat.len()
            );
            result.insert("latency_ms_p50".into(), json!(p50));
            result.insert("latency_ms_p99".into(), json!(p99));
        }
        result.insert("engine".into(), json!("candle"));
        result.insert("batches".into(), Value::Object(per_batch));
        result.insert("sentences_per_s".into(), json!((best * 10.0).round() / 10.0));
    }

    if matches!(a.stage, Stage::Classify | Stage::All) {
        let p = Pipeline::new(config.clone())?;
        p.embedder().map_err(anyhow::Error::msg)?; // load outside the timing
        let bytes = std::fs::read(&a.data)?;
        let t0 = Instant::now();
        let mut reader = CsvReader::new(bytes.as_slice(), None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let header = reader.columns().to_vec();
        let mut writer = CsvWriter::new(std::io::sink(), Some(&header))?;
        let s = classify_stream(&p, &mut reader, &mut writer, |_| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let rps = s.rows as f64 / secs;
        let st = p.stats.snapshot();
        println!("classify: {} rows in {secs:.2}s = {rps:.1} rows/s; {st}", s.rows);
        result.insert("classify_rows_per_s".into(), json!((rps * 10.0).round() / 10.0));
        result.insert("classify_stats".into(), st);
    }
    let rss = peak_rss_bytes().unwrap_or(0);
    println!("peak RSS {:.0} MiB", mib(rss));
    result.insert("peak_rss_mib".into(), json!(mib(rss).round()));
    println!("{}", Value::Object(result));
    Ok(0)
}
