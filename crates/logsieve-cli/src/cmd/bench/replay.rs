//! `logsieve bench replay`: one input classified `--passes` times through
//! one pipeline (so one template cache): pass 1 fills the cache, later
//! passes show the warm path. `--store` adds a pipeline on a decision store
//! (and a restart from it); `--aggregates` counts every row into the
//! dashboard's aggregates too, to measure what they cost.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_pipeline::io::{InputRow, RowWriter};
use logsieve_pipeline::run::classify_stream;
use logsieve_pipeline::{Decision, Pipeline};
use logsieve_server::agg_store::SqliteAggregates;
use logsieve_server::aggregates::{AggregateStore, Recorder, RecorderConfig, SieveCounts};
use serde_json::json;

use super::{round1, Args};
use crate::common::{cpu_seconds, mib, open_store, peak_rss_bytes, thread_cpu_seconds, ConfigArgs};

/// Classify the file `passes` times through one pipeline (so one template
/// cache), into JSON lines thrown away; rows/s by wall clock and per CPU
/// second for each pass. With `--store`, a second pipeline on the store
/// runs each pass right after the first (same machine state for both), and
/// a third, built from the store afterwards, shows a restart. With
/// `--aggregates`, every pass's rows are counted into one aggregator, as
/// `serve` does.
pub(super) fn run(cfg: &ConfigArgs, a: &Args) -> Result<i32> {
    let bytes = std::fs::read(&a.data).with_context(|| format!("{}: cannot read", a.data.display()))?;
    let name = a.data.file_name().map(|n| n.to_string_lossy().into_owned());
    let format = a.format.unwrap_or_else(|| {
        logsieve_pipeline::io::sniff_format(name.as_deref(), &bytes[..bytes.len().min(4096)])
    });
    let plain = Arc::new(cfg.pipeline()?);
    let store = a.store.as_deref().map(open_store).transpose()?;
    // With a store, the aggregates are kept in it, as `serve` keeps them.
    let recorder = a.aggregates.then(|| {
        let counted = plain.clone();
        Recorder::start(
            RecorderConfig::default(),
            plain.masker().clone(),
            Box::new(move || SieveCounts::of(&counted)),
            store
                .clone()
                .map(|s| Box::new(SqliteAggregates::new(s)) as Box<dyn AggregateStore>),
        )
    });
    let stored = store.clone().map(|s| cfg.pipeline_on(Some(s))).transpose()?;
    let mut runs: Vec<(&str, &Pipeline)> = vec![("no store", &plain)];
    if let Some(p) = &stored {
        runs.push(("store", p));
    }
    let mut passes = Vec::new();
    for pass in 1..=a.passes.max(1) {
        for (label, p) in &runs {
            passes.push(one_pass(p, recorder.as_ref(), &bytes, format, a, pass, label)?);
        }
    }
    if let (Some(p), Some(s)) = (&stored, &store) {
        p.flush_store()?;
        let restarted = cfg.pipeline_on(Some(s.clone()))?;
        let loaded = restarted.store().map_or(0, |(_, st)| st.loaded);
        println!(
            "restart: a new pipeline read {loaded} decisions from {}",
            s.path().display()
        );
        passes.push(one_pass(
            &restarted,
            recorder.as_ref(),
            &bytes,
            format,
            a,
            1,
            "store, restarted",
        )?);
    }
    if let Some(s) = &store {
        if let Some(r) = &recorder {
            r.flush();
        }
        s.flush()?;
        // Fold the write-ahead log into the file, so its size is what is kept.
        s.read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))?;
        let size = |suffix: &str| {
            let mut p = s.path().as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(p).map_or(0, |m| m.len())
        };
        let agg: i64 = s.read(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM agg_counts) + (SELECT count(*) FROM agg_confidence)
                      + (SELECT count(*) FROM agg_templates) + (SELECT count(*) FROM agg_template_text)
                      + (SELECT count(*) FROM agg_sieve) + (SELECT count(*) FROM agg_alerts)",
                [],
                |r| r.get(0),
            )
        })?;
        println!(
            "store {}: {:.2} MiB (write-ahead log {:.2} MiB); {agg} aggregate rows",
            s.path().display(),
            mib(size("")),
            mib(size("-wal")),
        );
    }
    let rss = peak_rss_bytes().unwrap_or(0);
    println!("peak RSS {:.0} MiB", mib(rss));
    println!(
        "{}",
        json!({"data": a.data.display().to_string(), "passes": passes, "peak_rss_mib": mib(rss).round()})
    );
    Ok(0)
}

fn one_pass(
    p: &Pipeline,
    recorder: Option<&Recorder>,
    bytes: &[u8],
    format: logsieve_pipeline::io::Format,
    a: &Args,
    pass: usize,
    label: &str,
) -> Result<serde_json::Value> {
    let before = p.stats();
    let (t0, c0) = (Instant::now(), cpu_seconds().unwrap_or(0.0));
    let own0 = thread_cpu_seconds().unwrap_or(0.0);
    let mut reader = logsieve_pipeline::io::reader(bytes, format, a.source.clone())
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.data.display()))?;
    let mut writer = Recording {
        inner: logsieve_pipeline::io::JsonlWriter::new(std::io::sink()),
        recorder,
    };
    let s = classify_stream(p, reader.as_mut(), &mut writer, |_| {})?;
    if let Some(r) = recorder {
        r.flush();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds().unwrap_or(0.0) - c0;
    // This thread reads, classifies and writes; the aggregator (and, on a
    // cold cache, the encoder's pool) run on others.
    let own = thread_cpu_seconds().unwrap_or(0.0) - own0;
    let delta = p.stats().since(&before);
    let hits = delta.template_cache.hits;
    let rps = s.rows as f64 / secs;
    let per_cpu = s.rows as f64 / cpu.max(0.01);
    let per_own = s.rows as f64 / own.max(1e-6);
    println!(
        "replay pass {pass} ({label}): {} rows in {secs:.2}s = {rps:.0} rows/s; {cpu:.2} CPU-s = {per_cpu:.0} rows per CPU-second; \
         classify thread {own:.3} CPU-s = {per_own:.0} rows per its CPU-second; \
         {} texts encoded; template cache hits {hits} ({:.1}% of rows)",
        s.rows,
        delta.encoded_texts,
        100.0 * hits as f64 / s.rows.max(1) as f64,
    );
    Ok(json!({
        "pass": pass, "pipeline": label, "rows": s.rows, "seconds": round1(secs * 10.0) / 10.0,
        "rows_per_s": rps.round(), "cpu_seconds": cpu, "rows_per_cpu_s": per_cpu.round(),
        "classify_thread_cpu_seconds": own, "rows_per_classify_thread_cpu_s": per_own.round(),
        "encoded_texts": delta.encoded_texts, "cache_hits": hits,
    }))
}

/// The replay's output: thrown away, and with `--aggregates` each chunk's
/// rows moved to the aggregator as the server's batcher moves them.
struct Recording<'r, W: RowWriter> {
    inner: W,
    recorder: Option<&'r Recorder>,
}

impl<W: RowWriter> RowWriter for Recording<'_, W> {
    fn write(&mut self, row: &InputRow, d: &Decision) -> std::io::Result<()> {
        self.inner.write(row, d)
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.inner.finish()
    }

    fn written(&mut self, rows: Vec<InputRow>, decisions: Vec<Decision>) {
        if let Some(r) = self.recorder {
            r.record(
                rows.into_iter().map(|r| (r.source, r.message)).collect(),
                &decisions,
            );
        }
    }
}
