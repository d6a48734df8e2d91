//! Encoder latency: batch-1 percentiles on typical log lines (messages of
//! 15–25 tokens), per engine.

use std::time::Instant;

use anyhow::Result;
use logsieve_embed::Embedder;
use serde_json::{json, Value};

use super::EncoderRun;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Measure and print; the default engine's p50/p99 go into `result`, and
/// every engine's come back by name.
pub(super) fn measure(
    run: &EncoderRun<'_>,
    counts: &[usize],
    result: &mut serde_json::Map<String, Value>,
) -> Result<serde_json::Map<String, Value>> {
    let (config, a, dir, texts, engines, default) = (
        run.config,
        run.args,
        &run.encoder,
        &run.texts,
        &run.engines,
        run.default_engine(),
    );
    let typical: Vec<&str> = texts
        .iter()
        .zip(counts)
        .filter(|(_, &c)| (15..=25).contains(&c))
        .map(|(t, _)| *t)
        .take(a.latency_samples)
        .collect();
    let mut latency = serde_json::Map::new();
    if !typical.is_empty() {
        for &engine in engines {
            let m = dir.load(config.batch_options(), engine)?;
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
    Ok(latency)
}
