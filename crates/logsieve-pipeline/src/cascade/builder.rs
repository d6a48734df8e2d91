//! The one way to build a [`Pipeline`]: a [`PipelineBuilder`] takes the
//! configuration and the stages' parts (rules, classifier, encoder, LLM
//! stage, masker, cache size), fills what is not given with the built-ins,
//! and checks them in `build()`.
//!
//! Nothing here reads a file or the environment: the caller (the CLI)
//! loads the rules, the classifier artifact and the masking rules the
//! configuration names, finds the API key, and says how to load the
//! encoder. A configuration that names a file the builder was not given is
//! an error, so a path can never be silently replaced by a built-in.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use logsieve_embed::{EmbedError, Embedder};
use logsieve_linear::artifact::Example;
use logsieve_linear::{Artifact, Classifier, EncoderInput};
use logsieve_llm::{ApiKey, LlmStage};
use logsieve_rules::Rules;
use logsieve_store::{Store, StoredMethod};
use logsieve_templates::Masker;
use sha2::{Digest, Sha256};

use super::cache::{key_into, TemplateCache};
use super::model::{EmbedderLoader, ModelStage};
use super::stats::Stats;
use super::{Pipeline, StoreLink, StoreStatus};
use crate::config::Config;
use crate::decision::{Decision, Method};
use crate::examples::ExampleBank;

/// The model trained from the seed dataset, built into the binary.
pub const DEFAULT_CLASSIFIER_JSON: &str = include_str!("../../../../models/default/classifier.json");
/// The built-in model's familiarity bank (see `logsieve_linear::hybrid`).
pub const DEFAULT_BANK: &[u8] = include_bytes!("../../../../models/default/bank.safetensors");

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Artifact(#[from] logsieve_linear::ArtifactError),
    #[error(transparent)]
    Llm(#[from] logsieve_llm::ConfigError),
    /// The configuration names a file whose contents the builder was not given.
    #[error("{field} = {}: the configuration names this file but it was not loaded (give it to the PipelineBuilder)", path.display())]
    NotLoaded { field: &'static str, path: PathBuf },
    #[error("the classifier has no labels")]
    NoLabels,
    #[error("model threshold {0} is outside 0..1")]
    Threshold(f32),
}

/// The classifier and what it was trained with: the parts of an artifact
/// the cascade uses.
#[derive(Clone)]
pub struct ModelParts {
    pub classifier: Arc<dyn Classifier>,
    /// Below this top probability a row falls through, unless the
    /// configuration sets another.
    pub threshold: f32,
    /// What text the encoder must see (the classifier was trained so).
    pub input: EncoderInput,
    /// The encoder weights the classifier was trained on, when known (a
    /// different encoder gets a warning).
    pub weights_sha256: Option<String>,
    /// Few-shot examples for the LLM's prompt.
    pub examples: Vec<Example>,
}

impl ModelParts {
    pub fn from_artifact(a: &Artifact) -> Self {
        Self {
            classifier: a.classifier(),
            threshold: a.model_threshold,
            input: a.embedding.input,
            weights_sha256: Some(a.embedding.weights_sha256.clone()),
            examples: a.examples.clone(),
        }
    }

    /// The built-in model (compiled in; reads no file).
    pub fn builtin() -> Result<Self, logsieve_linear::ArtifactError> {
        let mut a = Artifact::from_json(
            DEFAULT_CLASSIFIER_JSON,
            "<built-in models/default/classifier.json>",
        )?;
        a.attach_bank(DEFAULT_BANK, "<built-in models/default/bank.safetensors>")?;
        Ok(Self::from_artifact(&a))
    }
}

/// Builds a [`Pipeline`]; see the module comment.
pub struct PipelineBuilder {
    config: Config,
    rules: Option<Rules>,
    model: Option<ModelParts>,
    classifier: Option<Arc<dyn Classifier>>,
    embedder: Option<EmbedderLoader>,
    llm: Option<LlmStage>,
    api_key: Option<ApiKey>,
    masker: Option<Masker>,
    cache_capacity: Option<usize>,
    store: Option<Arc<Store>>,
    model_version: Option<String>,
}

impl PipelineBuilder {
    pub fn new(config: Config) -> Self {
        Self {
            config,
            rules: None,
            model: None,
            classifier: None,
            embedder: None,
            llm: None,
            api_key: None,
            masker: None,
            cache_capacity: None,
            store: None,
            model_version: None,
        }
    }

    /// Keep decisions in `store`: the template cache starts with what it
    /// holds (people's and the LLM's decisions, and the model's when this
    /// model made them), and every new decision is written to it in batches.
    pub fn store(mut self, store: Arc<Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// What identifies the classifier in the store (model decisions of
    /// another version are not reused). Default: from the artifact (its
    /// training data and time) or the built-in model's text; the threshold
    /// is added to it.
    pub fn model_version(mut self, v: impl Into<String>) -> Self {
        self.model_version = Some(v.into());
        self
    }

    /// The rules stage (default: the built-in rules).
    pub fn rules(mut self, rules: Rules) -> Self {
        self.rules = Some(rules);
        self
    }

    /// A trained artifact: its classifier, threshold, encoder input and
    /// examples (default: the built-in model).
    pub fn artifact(mut self, a: &Artifact) -> Self {
        if self.model_version.is_none() {
            self.model_version = Some(artifact_version(a));
        }
        self.model(ModelParts::from_artifact(a))
    }

    /// The model stage's parts, for a classifier that is not a [`LinearModel`]
    /// artifact.
    ///
    /// [`LinearModel`]: logsieve_linear::LinearModel
    pub fn model(mut self, parts: ModelParts) -> Self {
        self.model = Some(parts);
        self
    }

    /// Use this classifier, keeping the rest of the model's parts
    /// (threshold, encoder input, examples) from the artifact or built-in.
    pub fn classifier(mut self, c: Arc<dyn Classifier>) -> Self {
        self.classifier = Some(c);
        self
    }

    /// Use this encoder, already loaded.
    pub fn embedder(mut self, e: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(Box::new(move || Ok(e.clone())));
        self
    }

    /// Load the encoder with `load` on first use (so inputs that rules
    /// settle never pay for it). Without an encoder, rows for the model
    /// come out `none` with the reason.
    pub fn embedder_loader(
        mut self,
        load: impl Fn() -> Result<Arc<dyn Embedder>, EmbedError> + Send + Sync + 'static,
    ) -> Self {
        self.embedder = Some(Box::new(load));
        self
    }

    /// Use this LLM stage (another provider, a test double) instead of
    /// building one from `config.llm`.
    pub fn llm(mut self, llm: LlmStage) -> Self {
        self.llm = Some(llm);
        self
    }

    /// The API key for the LLM stage built from `config.llm`.
    pub fn llm_api_key(mut self, key: Option<ApiKey>) -> Self {
        self.api_key = key;
        self
    }

    /// The masking rules (default: the built-in set).
    pub fn masker(mut self, m: Masker) -> Self {
        self.masker = Some(m);
        self
    }

    /// Template cache entries (default: `templates.cache_capacity`); 0 turns it off.
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = Some(n);
        self
    }

    pub fn build(self) -> Result<Pipeline, PipelineError> {
        let config = self.config;
        let not_loaded = |field: &'static str, path: &Option<PathBuf>, given: bool| match path {
            Some(p) if !given => Err(PipelineError::NotLoaded {
                field,
                path: p.clone(),
            }),
            _ => Ok(()),
        };
        not_loaded("rules.path", &config.rules.path, self.rules.is_some())?;
        not_loaded("model.classifier", &config.model.classifier, self.model.is_some())?;
        not_loaded(
            "model.embedding_dir",
            &config.model.embedding_dir,
            self.embedder.is_some(),
        )?;
        not_loaded(
            "templates.masking",
            &config.templates.masking,
            self.masker.is_some(),
        )?;
        let rules = self.rules.unwrap_or_else(Rules::builtin);
        let mut parts = match self.model {
            Some(m) => m,
            None => ModelParts::builtin()?,
        };
        if let Some(c) = self.classifier {
            parts.classifier = c;
        }
        if parts.classifier.labels().is_empty() {
            return Err(PipelineError::NoLabels);
        }
        let threshold = config.model.threshold.unwrap_or(parts.threshold);
        if !(0.0..=1.0).contains(&threshold) {
            return Err(PipelineError::Threshold(threshold));
        }
        let llm = match self.llm {
            Some(l) => l,
            None => {
                let mut labels: Vec<String> = parts.classifier.labels().to_vec();
                labels.extend(rules.specs().iter().map(|r| r.label.clone()));
                // Labels the training data had only for LLM-routed sources
                // (too rare to train on) are the LLM's to give.
                labels.extend(parts.examples.iter().map(|e| e.label.clone()));
                labels.sort();
                labels.dedup();
                let mut llm = config.llm.clone();
                // Unless the configuration describes the labels itself, the
                // LLM knows the taxonomy's (LLM-only labels included).
                if llm.labels.is_empty() {
                    llm.labels = crate::labels::builtin_labels()
                        .into_iter()
                        .map(|l| (l.name, l.description))
                        .collect();
                }
                LlmStage::new(llm, &labels, self.api_key)?
            }
        };
        let masker = self.masker.unwrap_or_else(Masker::builtin);
        let capacity = self.cache_capacity.unwrap_or(config.templates.cache_capacity);
        let cache = TemplateCache::new(capacity, self.store.is_some());
        let model_version = format!(
            "{}@{threshold:.4}",
            self.model_version.unwrap_or_else(|| {
                let builtin = hex::encode(Sha256::digest(DEFAULT_CLASSIFIER_JSON.as_bytes()));
                format!("builtin-{}", &builtin[..16])
            })
        );
        let store = self
            .store
            .map(|store| warm(&cache, store, model_version, capacity, &rules));
        let model = ModelStage {
            classifier: parts.classifier,
            threshold,
            input: parts.input,
            weights_sha256: parts.weights_sha256,
            examples: ExampleBank::new(parts.examples),
            loader: self.embedder,
            embedder: OnceLock::new(),
        };
        Ok(Pipeline {
            config,
            rules,
            model,
            llm,
            masker,
            cache,
            stats: Stats::default(),
            store,
        })
    }
}

/// An artifact's version: its training data and time.
fn artifact_version(a: &Artifact) -> String {
    let t = &a.training;
    let data = hex::encode(Sha256::digest(format!(
        "{} {} {}",
        t.data, t.data_sha256, t.rows_fitted
    )));
    format!("{}-{}", &data[..16], t.created_unix)
}

/// Fill the template cache from the store: people's corrections pinned, the
/// LLM's and this model's decisions in the LRU. A damaged store gives what
/// it can (and says so in the status); classification never waits on it.
fn warm(
    cache: &TemplateCache,
    store: Arc<Store>,
    model_version: String,
    capacity: usize,
    rules: &Rules,
) -> StoreLink {
    let loaded = store.load_decisions(&model_version, capacity.max(1));
    let mut status = StoreStatus {
        path: store.path().display().to_string(),
        stale_model: loaded.stale_model,
        model_version: model_version.clone(),
        error: loaded.error.map(|e| e.to_string()),
        ..StoreStatus::default()
    };
    let mut key = String::new();
    let mut c = cache.lock();
    for s in loaded.decisions {
        key_into(&mut key, &s.source, &s.template);
        let method = match s.method {
            StoredMethod::Model => Method::Model,
            StoredMethod::Llm => Method::Llm,
            StoredMethod::Feedback => Method::Feedback,
        };
        let d = Decision {
            target_label: s.label,
            method,
            confidence: s.confidence,
            detail: s.reason,
            template: None,
        };
        status.loaded += 1;
        if method == Method::Feedback {
            status.corrections += 1;
            let over_rule = rules.classify(&s.source, &s.example).is_some();
            c.pin(key.clone(), d, over_rule);
        } else {
            c.stored(key.clone(), d);
        }
    }
    drop(c);
    StoreLink {
        store,
        model_version,
        hits_sent: Mutex::new(Instant::now()),
        warmed: status,
    }
}
