//! `logsieve bench`: print the stages' speed and memory on a data file.
//!
//! Figures, never assertions: rules lines/s; encoder sentences/s and
//! tokens/s at batch 1, 16 and 64 (length-sorted) for every engine in the
//! build, measured interleaved in one run, with batch-1 latency percentiles
//! and memory; sentence-transformers in the same run when
//! `LOGSIEVE_ST_PYTHON` names a Python that has it; end-to-end `classify`
//! rows/s; peak RSS. The last line is a JSON object with every figure.
//!
//! Files: this one has the arguments, the rules and `classify` figures and
//! runs the encoder measurements, each in a file of its own: `memory`
//! (RSS), `throughput` (sentences/s per batch size), `latency` (batch-1
//! percentiles), `st` (the sentence-transformers runner); `replay` is
//! `bench replay`.

mod latency;
mod memory;
mod replay;
mod st;
mod throughput;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_embed::Engine;
use logsieve_pipeline::io::{CsvReader, CsvWriter, RowReader};
use logsieve_pipeline::run::classify_stream;
use serde_json::{json, Value};

use crate::common::{mib, peak_rss_bytes, ConfigArgs, EncoderSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    Rules,
    Embed,
    Classify,
    /// `--data` (any input format) classified `--passes` times through one
    /// pipeline: pass 1 fills the template cache, later passes show the
    /// warm path. Not part of `all`.
    Replay,
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
    /// Encoder engines to time (default: every engine in the build).
    #[arg(long, value_delimiter = ',')]
    pub engines: Vec<String>,
    /// A Python with sentence-transformers, timed on the same messages.
    #[arg(long, env = "LOGSIEVE_ST_PYTHON")]
    pub st_python: Option<PathBuf>,
    /// replay: input format (default: from the file name, else sniffed).
    #[arg(long)]
    pub format: Option<logsieve_pipeline::io::Format>,
    /// replay: source for plain-text lines (and rows without one).
    #[arg(long)]
    pub source: Option<String>,
    /// replay: passes over the data.
    #[arg(long, default_value_t = 2)]
    pub passes: usize,
    /// replay: also through a pipeline on this decision store (best a new
    /// file), pass by pass interleaved with the store-less one, then once
    /// through a new pipeline warmed from the store (a restart).
    #[arg(long)]
    pub store: Option<std::path::PathBuf>,
    /// replay: also count every row into the dashboard's aggregates, as
    /// `serve` does (one send per chunk to the aggregator thread; each pass
    /// waits for the aggregator to catch up before its clock stops).
    #[arg(long)]
    pub aggregates: bool,
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

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    if a.stage == Stage::Replay {
        return replay::run(cfg, &a);
    }
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
        let p = crate::common::builder(config.clone())?.build()?;
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
        bench_embed(&config, &a, &rows, &mut result)?;
    }

    if matches!(a.stage, Stage::Classify | Stage::All) {
        let p = crate::common::builder(config.clone())?.build()?;
        p.embedder()?; // load outside the timing
        let bytes = std::fs::read(&a.data)?;
        let t0 = Instant::now();
        let mut reader = CsvReader::new(bytes.as_slice(), None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let header = reader.columns().to_vec();
        let mut writer = CsvWriter::new(std::io::sink(), Some(&header))?;
        let s = classify_stream(&p, &mut reader, &mut writer, |_| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let rps = s.rows as f64 / secs;
        let st = serde_json::to_value(p.stats())?;
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

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// What the encoder measurements share.
struct EncoderRun<'a> {
    config: &'a logsieve_pipeline::Config,
    args: &'a Args,
    /// The encoder: the classifier's fine-tuned one, a local copy, else the cache.
    encoder: EncoderSource,
    /// The engines to time, the build's default first.
    engines: Vec<Engine>,
    texts: Vec<&'a str>,
}

impl EncoderRun<'_> {
    fn default_engine(&self) -> Engine {
        self.engines[0]
    }
}

fn bench_embed(
    config: &logsieve_pipeline::Config,
    a: &Args,
    rows: &[(String, String)],
    result: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let encoder = crate::common::encoder_source(config)?;
    let dir = encoder.dir.clone();
    let dir = dir.as_deref();
    let mut texts: Vec<&str> = rows.iter().map(|(_, m)| m.as_str()).collect();
    if a.limit > 0 {
        texts.truncate(a.limit);
    }
    let engines: Vec<Engine> = Engine::all()
        .iter()
        .copied()
        .filter(|e| a.engines.is_empty() || a.engines.iter().any(|n| n == e.name()))
        .collect();
    if engines.is_empty() {
        anyhow::bail!(
            "--engines {:?}: this build has {}",
            a.engines,
            Engine::all()
                .iter()
                .map(|e| e.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "encoder: engines: {} (build default {}); lean matrix products on {} (LOGSIEVE_LEAN_GEMM)",
        engines.iter().map(|e| e.name()).collect::<Vec<_>>().join(", "),
        Engine::default().name(),
        logsieve_embed::lean::kernels::Backend::from_env().name()
    );
    result.insert(
        "lean_gemm".into(),
        json!(logsieve_embed::lean::kernels::Backend::from_env().name()),
    );
    let run = EncoderRun {
        config,
        args: a,
        encoder,
        engines,
        texts,
    };
    let default = run.default_engine();
    let counts = memory::measure(&run, result)?;
    let texts = &run.texts;
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| counts[i]);
    let sorted: Vec<&str> = order.iter().map(|&i| texts[i]).collect();
    let total_tokens: usize = counts.iter().sum();
    println!(
        "encoder: {} messages, {} tokens ({:.1} per message), length-sorted",
        texts.len(),
        total_tokens,
        total_tokens as f64 / texts.len().max(1) as f64
    );
    result.insert("tokens".into(), json!(total_tokens));
    result.insert(
        "tokens_per_message".into(),
        json!(total_tokens as f64 / texts.len().max(1) as f64),
    );

    let st = a
        .st_python
        .as_ref()
        .map(|py| st::StRunner::new(py, dir, &sorted))
        .transpose()?;
    if st.is_none() {
        println!("encoder: sentence-transformers skipped (set LOGSIEVE_ST_PYTHON to a Python that has it)");
    }
    let t = throughput::measure(&run, &sorted, total_tokens, st.as_ref())?;
    let latency = latency::measure(&run, &counts, result)?;

    let (sps, b) = t.best[0];
    println!(
        "encoder: {} (default) best {sps:.1} sentences/s at batch {b}",
        default.name()
    );
    result.insert("engine".into(), json!(default.name()));
    result.insert("best_batch".into(), json!(b));
    result.insert("sentences_per_s".into(), json!(round1(sps)));
    result.insert("batches".into(), Value::Object(t.per_engine[0].clone()));
    let mut all = serde_json::Map::new();
    for (e, engine) in run.engines.iter().enumerate() {
        all.insert(
            engine.name().into(),
            json!({"batches": t.per_engine[e], "sentences_per_s": round1(t.best[e].0), "best_batch": t.best[e].1,
                   "latency": latency.get(engine.name())}),
        );
    }
    result.insert("engines".into(), Value::Object(all));
    if st.is_some() {
        println!(
            "encoder: sentence-transformers best {:.1} sentences/s; {} / sentence-transformers = {:.2}x",
            t.st_best,
            default.name(),
            sps / t.st_best
        );
        result.insert(
            "sentence_transformers".into(),
            json!({"batches": t.st_figures, "sentences_per_s": round1(t.st_best), "ratio": sps / t.st_best}),
        );
    }
    Ok(())
}
