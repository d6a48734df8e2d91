//! The sentence-transformers runner: the reference encoder in a child
//! Python (`LOGSIEVE_ST_PYTHON`), timed on the same sorted messages and
//! thread count as ours.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

/// sentence-transformers in a child Python on the same sorted messages and
/// thread count; the model loads outside the timing.
pub(super) struct StRunner {
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
    pub(super) fn new(python: &Path, dir: Option<&Path>, sorted: &[&str]) -> Result<Self> {
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

    pub(super) fn run(&self, batch: usize) -> Result<f64> {
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
