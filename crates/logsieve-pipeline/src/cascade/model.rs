//! The model stage: the encoder (loaded on first use), the classifier
//! behind `Arc<dyn Classifier>`, the threshold, and the few-shot example
//! bank the LLM's prompt draws on. It turns texts into [`Verdict`]s; what
//! happens to rows after that is the cascade's business.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};

use logsieve_embed::{EmbedError, Embedder};
use logsieve_linear::{decide, Classifier, EncoderInput, Input};
use logsieve_templates::Masker;

use super::stats::Stats;
use crate::decision::{Decision, Method};
use crate::examples::ExampleBank;

/// How the encoder is obtained on first use.
pub(crate) type EmbedderLoader = Box<dyn Fn() -> Result<Arc<dyn Embedder>, EmbedError> + Send + Sync>;

/// Why the encoder cannot be used: its load failed, none was configured,
/// or its health check failed. Cheap to clone (every row that needed it
/// carries the reason).
#[derive(Debug, Clone, thiserror::Error)]
pub enum EncoderUnavailable {
    #[error("{0}")]
    Load(Arc<EmbedError>),
    #[error("no encoder configured")]
    NotConfigured,
    #[error("{0}")]
    Unhealthy(Arc<EmbedError>),
}

/// The model stage's parts, owned by the pipeline.
pub(crate) struct ModelStage {
    pub(crate) classifier: Arc<dyn Classifier>,
    pub(crate) threshold: f32,
    pub(crate) input: EncoderInput,
    /// The encoder weights the classifier was trained on, if known.
    pub(crate) weights_sha256: Option<String>,
    pub(crate) examples: ExampleBank,
    pub(crate) loader: Option<EmbedderLoader>,
    pub(crate) embedder: OnceLock<Result<Arc<dyn Embedder>, EncoderUnavailable>>,
}

/// What the model stage concluded about one text.
pub(crate) enum Verdict {
    /// Sure enough: the decision, `method=model`.
    Decided(Decision),
    /// Unsure: the row is the LLM's, with the model's note.
    Unsure(String),
    /// The encoder could not be used: `method=none`, the reason in `detail`.
    Failed(Decision),
}

/// Why embedding failed, as a row's `detail` says it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EmbedFailure {
    #[error("model stage unavailable: {0}")]
    Unavailable(#[from] EncoderUnavailable),
    #[error("encoder failed: {0}")]
    Encoder(#[from] EmbedError),
}

impl ModelStage {
    /// The encoder, loaded on first call.
    pub(crate) fn embedder(&self) -> Result<Arc<dyn Embedder>, EncoderUnavailable> {
        self.embedder
            .get_or_init(|| {
                let load = self.loader.as_ref().ok_or(EncoderUnavailable::NotConfigured)?;
                let m = load().map_err(|e| EncoderUnavailable::Load(Arc::new(e)))?;
                if let Some(trained) = &self.weights_sha256 {
                    if m.weights_sha256() != trained {
                        tracing::warn!(
                            classifier = %trained,
                            encoder = %m.weights_sha256(),
                            "the classifier was trained on other encoder weights"
                        );
                    }
                }
                Ok(m)
            })
            .clone()
    }

    /// Embed `texts` (already in the encoder's representation), counting
    /// them in `stats`.
    pub(crate) fn embed(&self, texts: &[&str], stats: &Stats) -> Result<Vec<Vec<f32>>, EmbedFailure> {
        let (vectors, counts) = self.embedder()?.embed_counted(texts)?;
        stats.encoded(texts.len() as u64, counts.iter().sum::<usize>() as u64);
        Ok(vectors)
    }

    /// Embed `texts` and judge each; the vectors come back too (empty when
    /// the encoder failed, and every verdict says why).
    pub(crate) fn judge(&self, texts: &[&str], stats: &Stats) -> (Vec<Verdict>, Vec<Vec<f32>>) {
        match self.embed(texts, stats) {
            Ok(vectors) => (
                texts
                    .iter()
                    .zip(&vectors)
                    .map(|(t, v)| self.verdict(Input { text: t, vector: v }))
                    .collect(),
                vectors,
            ),
            Err(e) => {
                let reason = e.to_string();
                (
                    texts
                        .iter()
                        .map(|_| Verdict::Failed(Decision::none(reason.clone())))
                        .collect(),
                    Vec::new(),
                )
            }
        }
    }

    /// The classifier's verdict on one line.
    pub(crate) fn verdict(&self, v: Input<'_>) -> Verdict {
        let labels = self.classifier.labels();
        let p = decide(self.classifier.as_ref(), v, self.threshold);
        let detail = p.describe(labels).to_string();
        if p.unsure.is_some() {
            Verdict::Unsure(detail)
        } else {
            Verdict::Decided(Decision {
                target_label: labels[p.label].clone(),
                method: Method::Model,
                confidence: p.probability,
                detail,
                template: None,
            })
        }
    }
}

impl ModelStage {
    /// The text the encoder sees for a message: masked or raw, as the
    /// classifier was trained.
    pub(crate) fn encoder_text<'a>(&self, masker: &Masker, message: &'a str) -> Cow<'a, str> {
        match self.input {
            EncoderInput::Masked => masker.mask(message),
            EncoderInput::Raw => Cow::Borrowed(message),
        }
    }

    /// Up to `k` few-shot examples for each of `texts` (bound for the LLM):
    /// the bank rows nearest it. `vectors[i]` is `texts[i]`'s vector when
    /// the model already embedded it; the others are embedded here, in one
    /// batch. Without a bank or an encoder, no examples (the prompt works
    /// without them).
    pub(crate) fn examples_for(
        &self,
        texts: &[&str],
        mut vectors: Vec<Option<Vec<f32>>>,
        k: usize,
        min_similarity: f32,
        masker: &Masker,
        stats: &Stats,
    ) -> Vec<Vec<(String, String)>> {
        if texts.is_empty() || self.examples.is_empty() || k == 0 {
            return vec![Vec::new(); texts.len()];
        }
        let bank = match self.examples.vectors(|ex| {
            let texts: Vec<_> = ex.iter().map(|e| self.encoder_text(masker, &e.message)).collect();
            let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
            self.embed(&texts, stats).map_err(|e| e.to_string())
        }) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("llm examples unavailable: {e}");
                return vec![Vec::new(); texts.len()];
            }
        };
        let missing: Vec<usize> = (0..texts.len())
            .filter(|&i| vectors[i].as_ref().is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            let missing_texts: Vec<&str> = missing.iter().map(|&i| texts[i]).collect();
            if let Ok(v) = self.embed(&missing_texts, stats) {
                for (i, v) in missing.into_iter().zip(v) {
                    vectors[i] = Some(v);
                }
            }
        }
        vectors
            .into_iter()
            .map(|v| match v {
                Some(v) if !v.is_empty() => {
                    prompt_examples(masker, self.examples.nearest(bank, &v, 2 * k, min_similarity), k)
                }
                _ => Vec::new(),
            })
            .collect()
    }
}

impl ModelStage {
    /// The `k` training texts nearest `vector` as `(text, label,
    /// similarity)`: from the classifier's own bank (the hybrid model keeps
    /// every distinct training template), else from the few-shot example
    /// bank; empty without either or when it cannot be embedded.
    pub(crate) fn nearest_examples(
        &self,
        vector: &[f32],
        k: usize,
        masker: &Masker,
        stats: &Stats,
    ) -> Vec<(String, String, f32)> {
        if k == 0 || vector.is_empty() {
            return Vec::new();
        }
        let own = self.classifier.neighbours(vector, k);
        if !own.is_empty() {
            return own;
        }
        if self.examples.is_empty() {
            return Vec::new();
        }
        match self.examples.vectors(|ex| {
            let texts: Vec<_> = ex.iter().map(|e| self.encoder_text(masker, &e.message)).collect();
            let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
            self.embed(&texts, stats).map_err(|e| e.to_string())
        }) {
            Ok(bank) => self.examples.nearest_scored(bank, vector, k),
            Err(e) => {
                tracing::warn!("nearest examples unavailable: {e}");
                Vec::new()
            }
        }
    }
}

/// Examples as the LLM is shown them: masked (placeholders instead of ids,
/// numbers and addresses: a third of the tokens, the same pattern), each
/// masked text once, the `k` nearest.
fn prompt_examples(masker: &Masker, nearest: Vec<(String, String)>, k: usize) -> Vec<(String, String)> {
    let mut seen = std::collections::HashSet::new();
    nearest
        .into_iter()
        .map(|(m, l)| (masker.mask(&m).into_owned(), l))
        .filter(|(m, _)| seen.insert(m.clone()))
        .take(k)
        .collect()
}
