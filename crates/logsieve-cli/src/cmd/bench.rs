//! `logsieve bench`: print the stages' speed and memory on a data file.
//!
//! Figures, never assertions: rules lines/s; encoder sentences/s and
//! tokens/s at batch 1, 16 and 64 (length-sorted) for every engine in the
//! build, measured interleaved in one run, with batch-1 latency percentiles
//! and memory; sentence-transformers in the same run when
//! `LOGSIEVE_ST_PYTHON` names a Python that has it; end-to-end `classify`
//! rows/s; peak RSS. The last line is a JSON object with every figure.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_embed::{BatchOptions, Embedder, Engine, MiniLm};
use logsieve_pipeline::io::{CsvReader, CsvWriter, RowReader};
use logsieve_pipeline::run::classify_stream;
use serde_json::{json, Value};

use crate::common::{cpu_seconds, mib, peak_rss_bytes, rss_bytes, ConfigArgs};

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
    if a.stage == Stage::Replay {
        return replay(cfg, &a);
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

/// Classify the file `passes` times through one pipeline (so one template
/// cache), into JSON lines thrown away; rows/s by wall clock and per CPU
/// second for each pass.
fn replay(cfg: &ConfigArgs, a: &Args) -> Result<i32> {
    let p = cfg.pipeline()?;
    let bytes = std::fs::read(&a.data).with_context(|| format!("{}: cannot read", a.data.display()))?;
    let name = a.data.file_name().map(|n| n.to_string_lossy().into_owned());
    let format = a.format.unwrap_or_else(|| {
        logsieve_pipeline::io::sniff_format(name.as_deref(), &bytes[..bytes.len().min(4096)])
    });
    let mut passes = Vec::new();
    for pass in 1..=a.passes.max(1) {
        let before = p.stats();
        let (t0, c0) = (Instant::now(), cpu_seconds().unwrap_or(0.0));
        let mut reader = logsieve_pipeline::io::reader(bytes.as_slice(), format, a.source.clone())
            .map_err(|e| anyhow::anyhow!("{}: {e}", a.data.display()))?;
        let mut writer = logsieve_pipeline::io::JsonlWriter::new(std::io::sink());
        let s = classify_stream(&p, reader.as_mut(), &mut writer, |_| {})?;
        let secs = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds().unwrap_or(0.0) - c0;
        let delta = p.stats().since(&before);
        let hits = delta.template_cache.hits;
        let rps = s.rows as f64 / secs;
        let per_cpu = s.rows as f64 / cpu.max(0.01);
        println!(
            "replay pass {pass}: {} rows in {secs:.2}s = {rps:.0} rows/s; {cpu:.2} CPU-s = {per_cpu:.0} rows per CPU-second; \
             {} texts encoded; template cache hits {hits} ({:.1}% of rows)",
            s.rows,
            delta.encoded_texts,
            100.0 * hits as f64 / s.rows.max(1) as f64,
        );
        passes.push(json!({
            "pass": pass, "rows": s.rows, "seconds": round1(secs * 10.0) / 10.0,
            "rows_per_s": rps.round(), "cpu_seconds": cpu, "rows_per_cpu_s": per_cpu.round(),
            "encoded_texts": delta.encoded_texts, "cache_hits": hits,
        }));
    }
    let rss = peak_rss_bytes().unwrap_or(0);
    println!("peak RSS {:.0} MiB", mib(rss));
    println!(
        "{}",
        json!({"data": a.data.display().to_string(), "passes": passes, "peak_rss_mib": mib(rss).round()})
    );
    Ok(0)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn bench_embed(
    config: &logsieve_pipeline::Config,
    a: &Args,
    rows: &[(String, String)],
    result: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let dir = config.model.embedding_dir.as_deref();
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
    let default = engines[0];
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

    // Memory first, one engine at a time, the default first so the process
    // peak still reflects it alone: RSS after loading, after a 64-sentence batch.
    let mut memory = serde_json::Map::new();
    let mut counts = Vec::new();
    for &engine in &engines {
        let before = rss_bytes().unwrap_or(0);
        let t0 = Instant::now();
        let m = MiniLm::load_default_with(dir, config.batch_options(), engine)?;
        let load_s = t0.elapsed().as_secs_f64();
        let (loaded, peak_loaded) = (rss_bytes().unwrap_or(0), peak_rss_bytes().unwrap_or(0));
        if counts.is_empty() {
            counts = m.token_counts(&texts)?;
        }
        let batch: Vec<&str> = texts.iter().copied().take(64).collect();
        m.embed(&batch)?;
        let (after, peak_after) = (rss_bytes().unwrap_or(0), peak_rss_bytes().unwrap_or(0));
        println!(
            "encoder[{}]: loaded in {load_s:.2}s; RSS {:.0} MiB loaded (+{:.0}), {:.0} MiB after a 64-sentence batch; \
             process peak {:.0} / {:.0} MiB",
            engine.name(),
            mib(loaded),
            mib(loaded.saturating_sub(before)),
            mib(after),
            mib(peak_loaded),
            mib(peak_after)
        );
        memory.insert(
            engine.name().into(),
            json!({"load_s": load_s, "rss_loaded_mib": mib(loaded).round(),
                   "rss_model_mib": mib(loaded.saturating_sub(before)).round(),
                   "rss_after_batch64_mib": mib(after).round()}),
        );
        if engine == default {
            result.insert("model_load_s".into(), json!(load_s));
            result.insert(
                "peak_rss_model_loaded_mib".into(),
                json!(mib(peak_loaded).round()),
            );
            result.insert(
                "peak_rss_after_batch64_mib".into(),
                json!(mib(peak_after).round()),
            );
        }
    }
    result.insert("engine_memory".into(), Value::Object(memory));

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
        .map(|py| StRunner::new(py, dir, &sorted))
        .transpose()?;
    if st.is_none() {
        println!("encoder: sentence-transformers skipped (set LOGSIEVE_ST_PYTHON to a Python that has it)");
    }

    // Throughput: for each batch size, every engine in turn (interleaved, so
    // a noisy neighbour hits them alike).
    let mut per_engine: Vec<serde_json::Map<String, Value>> = vec![serde_json::Map::new(); engines.len()];
    let mut best = vec![(0f64, 0usize); engines.len()];
    let mut st_figures = serde_json::Map::new();
    let mut st_best = 0f64;
    for &b in &a.batches {
        let opts = BatchOptions {
            max_batch: b,
            batch_tokens: b * config.model.max_tokens,
            ..config.batch_options()
        };
        let mut line = format!("encoder: batch {b:3}:");
        for (e, &engine) in engines.iter().enumerate() {
            let m = MiniLm::load_default_with(dir, opts, engine)?;
            let t0 = Instant::now();
            for chunk in sorted.chunks(b) {
                m.embed(chunk)?;
            }
            let secs = t0.elapsed().as_secs_f64();
            let sps = sorted.len() as f64 / secs;
            let tps = total_tokens as f64 / secs;
            line += &format!(
                "  {} {sps:6.1} sentences/s {tps:7.0} tokens/s ({secs:.1}s)",
                engine.name()
            );
            per_engine[e].insert(
                b.to_string(),
                json!({"sentences_per_s": round1(sps), "tokens_per_s": tps.round()}),
            );
            if sps > best[e].0 {
                best[e] = (sps, b);
            }
        }
        if let Some(st) = &st {
            let sps = st.run(b)?;
            line += &format!("  sentence-transformers {sps:6.1} sentences/s");
            st_figures.insert(b.to_string(), json!(round1(sps)));
            st_best = st_best.max(sps);
        }
        println!("{line}");
    }
    if engines.len() > 1 {
        for &b in &a.batches {
            let key = b.to_string();
            let d = per_engine[0][&key]["sentences_per_s"].as_f64().unwrap_or(0.0);
            let ratios: Vec<String> = engines[1..]
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let o = per_engine[i + 1][&key]["sentences_per_s"]
                        .as_f64()
                        .unwrap_or(f64::NAN);
                    format!("{:.2}x {}", d / o, e.name())
                })
                .collect();
            println!("encoder: batch {b:3}: {} = {}", default.name(), ratios.join(", "));
        }
    }

    // Batch-1 latency on typical log lines (messages of 15–25 tokens).
    let typical: Vec<&str> = texts
        .iter()
        .zip(&counts)
        .filter(|(_, &c)| (15..=25).contains(&c))
        .map(|(t, _)| *t)
        .take(a.latency_samples)
        .collect();
    let mut latency = serde_json::Map::new();
    if !typical.is_empty() {
        for &engine in &engines {
            let m = MiniLm::load_default_with(dir, config.batch_options(), engine)?;
            m.embed(&typical[..1])?; // warm-up
            let mut lat: Vec<f64> = Vec::with_capacity(typical.len());
            for t in &typical {
                let t0 = Instant::now();
                m.embed(&[t])?;
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            lat.sort_by(f64::total_cmp);
            let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            println!(
                "encoder[{}]: batch-1 latency on {} lines of 15-25 tokens: p50 {p50:.2} ms, p99 {p99:.2} ms",
                engine.name(),
                lat.len()
            );
            latency.insert(engine.name().into(), json!({"p50_ms": p50, "p99_ms": p99}));
            if engine == default {
                result.insert("latency_ms_p50".into(), json!(p50));
                result.insert("latency_ms_p99".into(), json!(p99));
            }
        }
    }

    let (sps, b) = best[0];
    println!(
        "encoder: {} (default) best {sps:.1} sentences/s at batch {b}",
        default.name()
    );
    result.insert("engine".into(), json!(default.name()));
    result.insert("best_batch".into(), json!(b));
    result.insert("sentences_per_s".into(), json!(round1(sps)));
    result.insert("batches".into(), Value::Object(per_engine[0].clone()));
    let mut all = serde_json::Map::new();
    for (e, engine) in engines.iter().enumerate() {
        all.insert(
            engine.name().into(),
            json!({"batches": per_engine[e], "sentences_per_s": round1(best[e].0), "best_batch": best[e].1,
                   "latency": latency.get(engine.name())}),
        );
    }
    result.insert("engines".into(), Value::Object(all));
    if st.is_some() {
        println!(
            "encoder: sentence-transformers best {st_best:.1} sentences/s; {} / sentence-transformers = {:.2}x",
            default.name(),
            sps / st_best
        );
        result.insert(
            "sentence_transformers".into(),
            json!({"batches": st_figures, "sentences_per_s": round1(st_best), "ratio": sps / st_best}),
        );
    }
    Ok(())
}

/// sentence-transformers in a child Python on the same sorted messages and
/// thread count; the model loads outside the timing.
struct StRunner {
    python: PathBuf,
    model: PathBuf,
    texts: tempfile::NamedTempFile,
}

const ST_SCRIPT: &str = r#"
import json, sys, time
import torch
from sentence_transformers import SentenceTransformer
texts_path, model, threads, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(threads)
texts = json.load(open(texts_path))
m = SentenceTransformer(model, device="cpu")
m.encode(texts[:8], batch_size=8)
t0 = time.perf_counter()
m.encode(texts, batch_size=batch)
print(json.dumps({"sentences_per_s": len(texts) / (time.perf_counter() - t0)}))
"#;

impl StRunner {
    fn new(python: &std::path::Path, dir: Option<&std::path::Path>, sorted: &[&str]) -> Result<Self> {
        let model = match dir {
            Some(d) => d.to_path_buf(),
            None => logsieve_embed::fetch::ensure_model(&Default::default())?.dir,
        };
        let mut texts = tempfile::NamedTempFile::new()?;
        serde_json::to_writer(&mut texts, sorted)?;
        Ok(Self {
            python: python.to_path_buf(),
            model,
            texts,
        })
    }

    fn run(&self, batch: usize) -> Result<f64> {
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let out = std::process::Command::new(&self.python)
            .arg("-c")
            .arg(ST_SCRIPT)
            .arg(self.texts.path())
            .arg(&self.model)
            .arg(threads.to_string())
            .arg(batch.to_string())
            .output()
            .with_context(|| format!("{}: cannot run", self.python.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "sentence-transformers ({}) failed: {}",
                self.python.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(text.lines().last().unwrap_or(""))
            .with_context(|| format!("sentence-transformers printed {text:?}"))?;
        v["sentences_per_s"]
            .as_f64()
            .context("no sentences_per_s from sentence-transformers")
    }
}
