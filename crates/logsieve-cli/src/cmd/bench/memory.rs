//! Encoder memory: RSS after loading each engine and after a 64-sentence
//! batch, one engine at a time, the default first so the process peak still
//! reflects it alone.

use std::time::Instant;

use anyhow::Result;
use logsieve_embed::Embedder;
use serde_json::{json, Value};

use super::EncoderRun;
use crate::common::{mib, peak_rss_bytes, rss_bytes};

/// Measure, print, and put the figures in `result`; returns the texts'
/// token counts (the first engine's).
pub(super) fn measure(
    run: &EncoderRun<'_>,
    result: &mut serde_json::Map<String, Value>,
) -> Result<Vec<usize>> {
    let (config, dir, texts, default) = (run.config, &run.encoder, &run.texts, run.default_engine());
    let mut memory = serde_json::Map::new();
    let mut counts = Vec::new();
    for &engine in &run.engines {
        let before = rss_bytes().unwrap_or(0);
        let t0 = Instant::now();
        let m = dir.load(config.batch_options(), engine)?;
        let load_s = t0.elapsed().as_secs_f64();
        let (loaded, peak_loaded) = (rss_bytes().unwrap_or(0), peak_rss_bytes().unwrap_or(0));
        if counts.is_empty() {
            counts = m.token_counts(texts)?;
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
    Ok(counts)
}
