//! The embedding engine of the model stage.
//!
//! [`Embedder`] is the boundary the pipeline sees (as `Arc<dyn Embedder>`):
//! texts in, L2-normalised sentence vectors out, and [`Embedder::health`]
//! for the server's readiness. [`MiniLm`] implements it for all-MiniLM-L6-v2 the way
//! sentence-transformers does (WordPiece, truncation at 256 tokens, BERT,
//! mean pooling over the attention mask, L2 normalisation), batching by a
//! token budget over length-sorted inputs so little compute goes to padding.
//! The forward pass runs on an [`Engine`]: [`lean`] (our own, the default) or,
//! with the `candle` feature, [`bert`] on candle.
//! [`fetch`] puts the model files in a local cache and verifies them.
//! [`finetune`] (with `candle`) trains the encoder on labelled texts and
//! writes it in the same layout.

#[cfg(feature = "candle")]
pub mod bert;
pub mod config;
pub mod fetch;
#[cfg(feature = "candle")]
pub mod finetune;
pub mod lean;

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

pub use fetch::{ModelFiles, MODEL_ID, MODEL_SHA256};

/// Why embedding failed.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("model files: {0}")]
    Fetch(#[from] fetch::FetchError),
    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: String, message: String },
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    #[error("{path}: cannot load model weights: {message}")]
    Weights { path: String, message: String },
    #[cfg(feature = "candle")]
    #[error("encoder failed: {0}")]
    Forward(#[from] candle_core::Error),
    #[error("encoder: {0}")]
    Lean(#[from] lean::LeanError),
    #[error("encoder unhealthy: {0}")]
    Unhealthy(String),
    #[error("{path}: the weights' sha256 is {actual}, but the classifier was trained on {expected}")]
    WrongWeights {
        path: String,
        expected: String,
        actual: String,
    },
    #[cfg(feature = "candle")]
    #[error("fine-tuning: {0}")]
    FineTune(String),
}

/// Which implementation runs the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// [`lean::LeanModel`]: unpadded batches on `gemm` and fused kernels.
    #[default]
    Lean,
    /// [`bert::BertModel`] on candle (padded batches).
    #[cfg(feature = "candle")]
    Candle,
}

impl Engine {
    /// Every engine in this build, the default first.
    pub fn all() -> &'static [Engine] {
        &[
            Engine::Lean,
            #[cfg(feature = "candle")]
            Engine::Candle,
        ]
    }

    pub fn name(self) -> &'static str {
        match self {
            Engine::Lean => "lean",
            #[cfg(feature = "candle")]
            Engine::Candle => "candle",
        }
    }
}

enum Model {
    Lean(lean::LeanModel),
    #[cfg(feature = "candle")]
    Candle(bert::BertModel),
}

/// Texts in, unit-length sentence vectors out. Implementations must be safe
/// to call from several threads.
pub trait Embedder: Send + Sync {
    /// A stable identifier for the model, recorded in trained artifacts.
    fn model_id(&self) -> &str;
    /// The sha256 of the weights file, recorded in trained artifacts.
    fn weights_sha256(&self) -> &str;
    /// Vector length.
    fn dim(&self) -> usize;
    /// Tokens per text after truncation, special tokens included.
    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError>;
    /// One unit-length vector per text, in input order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
    /// [`Embedder::embed`] and [`Embedder::token_counts`] together; engines
    /// that tokenize once for both override it.
    fn embed_counted(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>), EmbedError> {
        Ok((self.embed(texts)?, self.token_counts(texts)?))
    }
    /// Whether the encoder can serve (as TEI's backends answer `health`):
    /// engines check themselves with a tiny forward pass; the default says
    /// yes.
    fn health(&self) -> Result<(), EmbedError> {
        Ok(())
    }
}

/// How the encoder groups texts into forward passes.
#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Inputs longer than this (in tokens, specials included) are truncated.
    pub max_tokens: usize,
    /// A batch holds at most this many padded tokens (rows × longest row).
    pub batch_tokens: usize,
    /// A batch holds at most this many rows.
    pub max_batch: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            batch_tokens: 4096,
            max_batch: 64,
        }
    }
}

/// all-MiniLM-L6-v2 (or a BERT-family encoder of the same layout).
pub struct MiniLm {
    tokenizer: Tokenizer,
    model: Model,
    engine: Engine,
    options: BatchOptions,
    sha256: String,
}

impl MiniLm {
    /// Load from a directory holding `config.json`, `tokenizer.json` and
    /// `model.safetensors` (as [`fetch::ensure_model`] leaves it), on the
    /// default engine.
    pub fn load(dir: &Path, options: BatchOptions) -> Result<Self, EmbedError> {
        Self::load_with(dir, options, Engine::default())
    }

    /// As [`MiniLm::load`], on the given engine.
    pub fn load_with(dir: &Path, mut options: BatchOptions, engine: Engine) -> Result<Self, EmbedError> {
        let cfg = config::BertConfig::load(dir)?;
        // Truncate to what the model has positions for (256 for
        // all-MiniLM-L6-v2; fewer for a small model).
        options.max_tokens = options.max_tokens.min(cfg.max_position_embeddings);
        let tokenizer = load_tokenizer(dir, options.max_tokens)?;
        let model = match engine {
            Engine::Lean => Model::Lean(lean::LeanModel::load(dir, cfg)?),
            #[cfg(feature = "candle")]
            Engine::Candle => Model::Candle(bert::BertModel::load(dir)?),
        };
        let sha256 = fetch::read_sha256_marker(dir).unwrap_or_else(|| MODEL_SHA256.to_string());
        Ok(Self {
            tokenizer,
            model,
            engine,
            options,
            sha256,
        })
    }

    /// As [`MiniLm::load_with`], after hashing `dir/model.safetensors` and
    /// checking it is `expected_sha256` (the weights a classifier was
    /// trained on, such as a fine-tuned encoder it carries).
    pub fn load_verified(
        dir: &Path,
        options: BatchOptions,
        engine: Engine,
        expected_sha256: &str,
    ) -> Result<Self, EmbedError> {
        let files = ModelFiles::local(dir)?;
        let weights = files.dir.join(fetch::WEIGHTS);
        let actual = fetch::sha256_file(&weights)?;
        if actual != expected_sha256 {
            return Err(EmbedError::WrongWeights {
                path: weights.display().to_string(),
                expected: expected_sha256.to_string(),
                actual,
            });
        }
        let mut m = Self::load_with(&files.dir, options, engine)?;
        m.sha256 = actual;
        Ok(m)
    }

    /// Fetch (if needed) and load the default model.
    pub fn load_default(model_dir: Option<&Path>, options: BatchOptions) -> Result<Self, EmbedError> {
        Self::load_default_with(model_dir, options, Engine::default())
    }

    /// As [`MiniLm::load_default`], on the given engine.
    pub fn load_default_with(
        model_dir: Option<&Path>,
        options: BatchOptions,
        engine: Engine,
    ) -> Result<Self, EmbedError> {
        let files = match model_dir {
            Some(dir) => ModelFiles::local(dir)?,
            None => fetch::ensure_model(&fetch::FetchOptions::default())?,
        };
        Self::load_with(&files.dir, options, engine)
    }

    pub fn options(&self) -> BatchOptions {
        self.options
    }

    /// On the lean engine, run the matrix products on `backend` (instead of
    /// the one `LOGSIEVE_LEAN_GEMM` chose); other engines are unchanged.
    pub fn with_lean_backend(mut self, backend: lean::kernels::Backend) -> Self {
        self.model = match self.model {
            Model::Lean(m) => Model::Lean(m.with_backend(backend)),
            #[cfg(feature = "candle")]
            other => other,
        };
        self
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    fn forward(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        match &self.model {
            Model::Lean(m) => Ok(m.embed(rows)?),
            #[cfg(feature = "candle")]
            Model::Candle(m) => m.embed(rows),
        }
    }

    fn encode_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(encodings.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }
}

/// `dir/tokenizer.json`, truncating at `max_tokens` and padding nothing.
pub(crate) fn load_tokenizer(dir: &Path, max_tokens: usize) -> Result<Tokenizer, EmbedError> {
    let tok_path = dir.join("tokenizer.json");
    let err = |e: tokenizers::Error| EmbedError::Tokenizer {
        path: tok_path.display().to_string(),
        message: e.to_string(),
    };
    let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(err)?;
    // The snapshot's tokenizer.json truncates and pads to a fixed 128; the
    // model (and sentence-transformers) use 256 and no fixed padding.
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(err)?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}

/// Group length-sorted rows into batches under a padded-token budget.
/// `order` holds row indices sorted by ascending length; returns ranges of it.
pub fn plan_batches(lengths: &[usize], order: &[usize], opts: &BatchOptions) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() {
            let rows = end + 1 - start;
            let longest = lengths[order[end]];
            if rows > opts.max_batch || rows * longest > opts.batch_tokens {
                break;
            }
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

impl Embedder for MiniLm {
    fn model_id(&self) -> &str {
        MODEL_ID
    }

    fn weights_sha256(&self) -> &str {
        &self.sha256
    }

    fn dim(&self) -> usize {
        match &self.model {
            Model::Lean(m) => m.hidden_size(),
            #[cfg(feature = "candle")]
            Model::Candle(m) => m.hidden_size(),
        }
    }

    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(self.encode_ids(texts)?.iter().map(Vec::len).collect())
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_counted(texts)?.0)
    }

    /// One short text through the tokenizer and the forward pass: a vector
    /// of the right length and unit norm.
    fn health(&self) -> Result<(), EmbedError> {
        let v = self.embed(&["health"])?;
        let ok = v.len() == 1
            && v[0].len() == self.dim()
            && (v[0].iter().map(|x| x * x).sum::<f32>().sqrt() - 1.0).abs() < 1e-3;
        if ok {
            Ok(())
        } else {
            Err(EmbedError::Unhealthy(
                "the forward pass gave no unit vector".into(),
            ))
        }
    }

    fn embed_counted(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, Vec<usize>), EmbedError> {
        let ids = self.encode_ids(texts)?;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut out = vec![Vec::new(); ids.len()];
        for range in plan_batches(&lengths, &order, &self.options) {
            let rows: Vec<&[u32]> = order[range.clone()].iter().map(|&i| ids[i].as_slice()).collect();
            let vectors = self.forward(&rows)?;
            for (&i, v) in order[range].iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok((out, lengths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_token_budget_and_row_cap() {
        let lengths = vec![10, 10, 20, 30, 100, 200];
        let order: Vec<usize> = (0..lengths.len()).collect();
        let opts = BatchOptions {
            max_tokens: 256,
            batch_tokens: 60,
            max_batch: 2,
        };
        let batches = plan_batches(&lengths, &order, &opts);
        assert_eq!(batches, vec![0..2, 2..4, 4..5, 5..6]);
        for b in &batches {
            let rows = b.len();
            let longest = order[b.clone()].iter().map(|&i| lengths[i]).max().unwrap();
            assert!(rows <= 2);
            assert!(rows == 1 || rows * longest <= 60);
        }
    }

    #[test]
    fn every_row_lands_in_exactly_one_batch() {
        let lengths: Vec<usize> = (0..500).map(|i| 2 + (i * 37) % 250).collect();
        let mut order: Vec<usize> = (0..lengths.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let batches = plan_batches(&lengths, &order, &BatchOptions::default());
        let covered: usize = batches.iter().map(|b| b.len()).sum();
        assert_eq!(covered, 500);
        assert!(batches.windows(2).all(|w| w[0].end == w[1].start));
    }
}
