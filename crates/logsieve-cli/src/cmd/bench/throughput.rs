//! Encoder throughput: sentences/s and tokens/s for each batch size, every
//! engine in turn (interleaved, so a noisy neighbour hits them alike), with
//! sentence-transformers on the same messages when it is there.

use std::time::Instant;

use anyhow::Result;
use logsieve_embed::{BatchOptions, Embedder};
use serde_json::{json, Value};

use super::st::StRunner;
use super::{round1, EncoderRun};

/// The figures, per engine (in `run.engines` order).
pub(super) struct Throughput {
    /// Batch size → `{sentences_per_s, tokens_per_s}`.
    pub per_engine: Vec<serde_json::Map<String, Value>>,
    /// Best sentences/s and the batch size it came at.
    pub best: Vec<(f64, usize)>,
    pub st_figures: serde_json::Map<String, Value>,
    pub st_best: f64,
}

/// Time `sorted` (length-sorted texts with `total_tokens` tokens) at each
/// batch size of `--batches`; prints a line per batch size, and the engines'
/// ratios when there are several.
pub(super) fn measure(
    run: &EncoderRun<'_>,
    sorted: &[&str],
    total_tokens: usize,
    st: Option<&StRunner>,
) -> Result<Throughput> {
    let (config, a, dir, engines, default) = (
        run.config,
        run.args,
        &run.encoder,
        &run.engines,
        run.default_engine(),
    );
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
            let m = dir.load(opts, engine)?;
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
        if let Some(st) = st {
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
    Ok(Throughput {
        per_engine,
        best,
        st_figures,
        st_best,
    })
}
