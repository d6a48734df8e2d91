//! The sieve itself: rules, then the model stage, then the LLM stage.
//!
//! [`Pipeline::classify`] takes a batch of (source, message) pairs and
//! returns one [`Decision`] per pair, in order, whatever happens: a failing
//! encoder or a missing LLM makes rows `method=none` with the reason, never
//! drops them. The encoder loads lazily, so inputs that rules settle never
//! pay for it; identical messages in a batch are embedded once.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use logsieve_templates::Masker;
use lru::LruCache;

use logsieve_embed::{Embedder, MiniLm};
use logsieve_linear::{Artifact, Classifier};
use logsieve_llm::{ApiKey, LlmOutcome, LlmRequest, LlmStage};
use logsieve_rules::Rules;

use crate::config::{Config, Route};
use crate::decision::{Decision, Method, UNCLASSIFIED};
use crate::examples::ExampleBank;

/// The model trained from the seed dataset, built into the binary.
pub const DEFAULT_CLASSIFIER_JSON: &str = include_str!("../../../models/default/classifier.json");

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Rules(#[from] logsieve_rules::RulesError),
    #[error(transparent)]
    Artifact(#[from] logsieve_linear::ArtifactError),
    #[error(transparent)]
    Embed(#[from] logsieve_embed::EmbedError),
    #[error(transparent)]
    Llm(#[from] logsieve_llm::ConfigError),
    #[error(transparent)]
    Mask(#[from] logsieve_templates::MaskError),
}

/// One line to classify.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub source: &'a str,
    pub message: &'a str,
}

/// Counters a run reports (`classify --stats`, the server's metrics).
#[derive(Debug, Default)]
pub struct Stats {
    pub rows: AtomicU64,
    pub by_rule: AtomicU64,
    pub by_model: AtomicU64,
    pub by_llm: AtomicU64,
    pub by_none: AtomicU64,
    /// Distinct texts that went through the encoder.
    pub encoded: AtomicU64,
    /// Tokens those texts had.
    pub encoded_tokens: AtomicU64,
    /// Rows decided from the template cache, and rows that missed it.
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
}

impl Stats {
    fn count(&self, m: Method) {
        self.rows.fetch_add(1, Ordering::Relaxed);
        match m {
            Method::Rule => &self.by_rule,
            Method::Model => &self.by_model,
            Method::Llm => &self.by_llm,
            Method::None => &self.by_none,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "rows": g(&self.rows),
            "by_method": {"rule": g(&self.by_rule), "model": g(&self.by_model), "llm": g(&self.by_llm), "none": g(&self.by_none)},
            "encoded_texts": g(&self.encoded),
            "encoded_tokens": g(&self.encoded_tokens),
            "template_cache": {"hits": g(&self.cache_hits), "misses": g(&self.cache_misses)},
        })
    }
}

/// A batch after the rules and model stages, waiting for the LLM.
#[derive(Debug)]
pub struct Partial {
    decided: Vec<Option<Decision>>,
    /// Per LLM request: the rows it decides, their cache key, the model's note.
    to_llm: Vec<(Vec<usize>, String, String)>,
}

impl Partial {
    /// The decisions of `rows` (indices into the prepared batch) when every
    /// one of them is already decided, i.e. none waits for the LLM.
    pub fn decided(&self, rows: std::ops::Range<usize>) -> Option<Vec<Decision>> {
        self.decided.get(rows)?.iter().cloned().collect()
    }
}

/// Rows of a batch that share a cache key.
#[derive(Debug, Default)]
struct Group {
    key: String,
    /// What the encoder sees.
    text: String,
    rows: Vec<usize>,
    to_llm: bool,
    /// What the model said, for rows it was unsure of.
    model_note: String,
}

/// The model fell below its threshold: the row is the LLM's to decide.
fn is_model_unsure(d: &Decision) -> bool {
    d.method == Method::None && d.detail.starts_with(MODEL_UNSURE)
}

/// The note a decision served from the template cache carries.
const CACHE_HIT_NOTE: &str = "template cache hit";

/// The template cache: (source, masked text) → decision. foldhash, because
/// keys are whole log lines and SipHash costs about a nanosecond a byte.
type TemplateCache = LruCache<String, Decision, foldhash::fast::RandomState>;

/// What the template cache holds for a key.
enum Cached {
    /// A decision to reuse (already carrying the cache-hit note).
    Decided(Decision),
    /// The model was unsure of this key: its note, and on to the LLM.
    Unsure(String),
    Miss,
    /// The cache is switched off.
    Off,
}

/// Remember a decision for a key: model-unsure markers as they are, others
/// with the note every later hit will carry.
fn remember(cache: &mut Option<TemplateCache>, key: String, d: &Decision) {
    if let Some(c) = cache.as_mut() {
        let stored = if is_model_unsure(d) {
            d.clone()
        } else {
            d.clone().with_note(CACHE_HIT_NOTE)
        };
        c.put(key, stored);
    }
}

type EmbedderSlot = OnceLock<Result<Arc<dyn Embedder>, String>>;

pub struct Pipeline {
    config: Config,
    rules: Rules,
    artifact: Artifact,
    threshold: f32,
    embedder: EmbedderSlot,
    llm: LlmStage,
    masker: Masker,
    /// The encoder sees masked text (the classifier was trained so).
    input_masked: bool,
    /// Template cache: (source, masked text) → the decision the model or LLM reached.
    cache: Mutex<Option<TemplateCache>>,
    /// Few-shot examples for the LLM's prompt (from the artifact).
    examples: ExampleBank,
    pub stats: Stats,
}

impl Pipeline {
    /// Build from a configuration; the encoder itself loads on first use.
    pub fn new(config: Config) -> Result<Self, PipelineError> {
        let rules = match &config.rules.path {
            Some(p) => Rules::from_path(p)?,
            None => Rules::builtin(),
        };
        let artifact = match &config.model.classifier {
            Some(p) => Artifact::load(p)?,
            None => Artifact::from_json(
                DEFAULT_CLASSIFIER_JSON,
                "<built-in models/default/classifier.json>",
            )?,
        };
        let threshold = config.model.threshold.unwrap_or(artifact.model_threshold);
        let mut labels: Vec<String> = artifact.model.labels.clone();
        labels.extend(rules.specs().iter().map(|r| r.label.clone()));
        // Labels the training data had only for LLM-routed sources (too rare
        // to train on) are the LLM's to give.
        labels.extend(artifact.examples.iter().map(|e| e.label.clone()));
        labels.sort();
        labels.dedup();
        let llm = LlmStage::new(config.llm.clone(), &labels, ApiKey::from_env().map(|(k, _)| k))?;
        let masker = match &config.templates.masking {
            Some(p) => Masker::from_path(p)?,
            None => Masker::builtin(),
        };
        let input_masked = artifact.embedding.input == "masked";
        let cache = Mutex::new(
            NonZeroUsize::new(config.templates.cache_capacity)
                .map(|n| LruCache::with_hasher(n, foldhash::fast::RandomState::default())),
        );
        let examples = ExampleBank::new(artifact.examples.clone());
        Ok(Self {
            config,
            rules,
            artifact,
            threshold,
            embedder: OnceLock::new(),
            llm,
            masker,
            input_masked,
            cache,
            examples,
            stats: Stats::default(),
        })
    }

    /// Use this LLM stage instead of the configured one (tests, other providers).
    pub fn with_llm(mut self, llm: LlmStage) -> Self {
        self.llm = llm;
        self
    }

    /// The LLM stage (its `status()` says whether it is on and why).
    pub fn llm(&self) -> &LlmStage {
        &self.llm
    }

    /// Use this encoder instead of loading the default one (tests, other engines).
    pub fn with_embedder(self, e: Arc<dyn Embedder>) -> Self {
        let _ = self.embedder.set(Ok(e));
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Labels this pipeline can give without an LLM: the classifier's and the rules'.
    pub fn known_labels(&self) -> Vec<String> {
        let mut l: Vec<String> = self.artifact.model.labels.clone();
        l.extend(self.rules.specs().iter().map(|r| r.label.clone()));
        l.sort();
        l.dedup();
        l
    }

    /// The encoder, loaded (and fetched) on first call.
    pub fn embedder(&self) -> Result<Arc<dyn Embedder>, String> {
        self.embedder
            .get_or_init(|| {
                let dir = self.config.model.embedding_dir.as_deref();
                let m = load_embedder(dir, &self.config).map_err(|e| e.to_string())?;
                if m.weights_sha256() != self.artifact.embedding.weights_sha256 {
                    tracing::warn!(
                        classifier = %self.artifact.embedding.weights_sha256,
                        encoder = %m.weights_sha256(),
                        "the classifier was trained on other encoder weights"
                    );
                }
                Ok(m)
            })
            .clone()
    }

    /// The rules stage alone, honouring the source's route.
    pub fn rule_decision(&self, item: Item<'_>) -> Option<Decision> {
        self.rule_decision_on(item, self.config.route(item.source))
    }

    /// [`Pipeline::rule_decision`] for a source whose route is known.
    fn rule_decision_on(&self, item: Item<'_>, route: Route) -> Option<Decision> {
        match route {
            Route::Model | Route::Llm => None,
            Route::Cascade | Route::Rules => {
                self.rules.classify(item.source, item.message).map(|m| Decision {
                    target_label: m.label.to_string(),
                    method: Method::Rule,
                    confidence: 1.0,
                    detail: format!("rule {}", m.id),
                })
            }
        }
    }

    /// Classify a batch; one decision per item, in order.
    pub fn classify(&self, items: &[Item<'_>]) -> Vec<Decision> {
        let (partial, requests) = self.prepare(items);
        let outcomes = self.llm.classify_many(requests);
        self.complete(partial, outcomes)
    }

    /// The rules and model stages for a batch. Rows that need the LLM are
    /// returned as requests; answer them with [`LlmStage::classify_many`]
    /// (possibly on another thread, while the next batch is prepared) and
    /// pass the outcomes, in order, to [`Pipeline::complete`].
    ///
    /// After the rules, each row's cache key is its source and its masked
    /// text: a decision the model or the LLM reached for a key is reused for
    /// every later row with that key, and rows sharing a key within the batch
    /// are embedded (or asked) once.
    pub fn prepare(&self, items: &[Item<'_>]) -> (Partial, Vec<LlmRequest>) {
        let mut out: Vec<Option<Decision>> = Vec::with_capacity(items.len());
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of: HashMap<String, usize, foldhash::fast::RandomState> = HashMap::default();
        // Reused for every row: a cache hit allocates nothing but its decision.
        let (mut masked, mut key) = (String::new(), String::new());
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (i, item) in items.iter().enumerate() {
                let route = self.config.route(item.source);
                let d = if item.message.trim().is_empty() {
                    Some(Decision::none("empty log_message"))
                } else if let Some(d) = self.rule_decision_on(*item, route) {
                    Some(d)
                } else if route == Route::Rules {
                    Some(Decision::none("no rule matched (source routed to rules only)"))
                } else {
                    let masked_text = if self.masker.mask_into(item.message, &mut masked) {
                        masked.as_str()
                    } else {
                        item.message
                    };
                    key.clear();
                    key.push_str(item.source);
                    key.push('\u{1f}');
                    key.push_str(masked_text);
                    let cached = match cache.as_mut() {
                        None => Cached::Off,
                        Some(c) => match c.get(key.as_str()) {
                            None => Cached::Miss,
                            Some(d) if is_model_unsure(d) => Cached::Unsure(d.detail.clone()),
                            Some(d) => Cached::Decided(d.clone()),
                        },
                    };
                    match &cached {
                        Cached::Decided(_) | Cached::Unsure(_) => {
                            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                        }
                        Cached::Miss => {
                            self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
                        }
                        Cached::Off => {}
                    }
                    if let Cached::Decided(d) = cached {
                        Some(d)
                    } else {
                        // A key the model was unsure of goes straight to the LLM.
                        let unsure = match cached {
                            Cached::Unsure(note) => Some(note),
                            _ => None,
                        };
                        let g = match group_of.get(key.as_str()) {
                            Some(&g) => g,
                            None => {
                                let text = if self.input_masked {
                                    masked_text
                                } else {
                                    item.message
                                };
                                groups.push(Group {
                                    key: key.clone(),
                                    text: text.to_string(),
                                    rows: Vec::new(),
                                    to_llm: route == Route::Llm || unsure.is_some(),
                                    model_note: unsure.unwrap_or_default(),
                                });
                                group_of.insert(key.clone(), groups.len() - 1);
                                groups.len() - 1
                            }
                        };
                        groups[g].rows.push(i);
                        None
                    }
                };
                out.push(d);
            }
        }
        // The model stage, once per group.
        let for_model: Vec<usize> = (0..groups.len()).filter(|&g| !groups[g].to_llm).collect();
        let mut llm_groups: Vec<(usize, String)> = groups
            .iter_mut()
            .enumerate()
            .filter(|(_, g)| g.to_llm)
            .map(|(i, g)| (i, std::mem::take(&mut g.model_note)))
            .collect();
        // Vectors of the groups bound for the LLM, for choosing its examples.
        let mut llm_vectors: HashMap<usize, Vec<f32>> = HashMap::new();
        if !for_model.is_empty() {
            let texts: Vec<&str> = for_model.iter().map(|&g| groups[g].text.as_str()).collect();
            let (decisions, mut vectors) = self.model_stage(&texts);
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for (k, (g, d)) in for_model.into_iter().zip(decisions).enumerate() {
                if is_model_unsure(&d) {
                    // Remembered, so the next row with this key skips the encoder.
                    remember(&mut cache, groups[g].key.clone(), &d);
                    if let Some(v) = vectors.get_mut(k) {
                        llm_vectors.insert(g, std::mem::take(v));
                    }
                    llm_groups.push((g, d.detail));
                    continue;
                }
                if d.method == Method::Model {
                    remember(&mut cache, groups[g].key.clone(), &d);
                }
                for &i in &groups[g].rows {
                    out[i] = Some(d.clone());
                }
            }
        }
        let mut examples = self.examples_for(&groups, &llm_groups, llm_vectors);
        let requests = llm_groups
            .iter()
            .map(|&(g, _)| {
                let first = items[groups[g].rows[0]];
                LlmRequest {
                    source: first.source.to_string(),
                    message: first.message.to_string(),
                    examples: examples.remove(&g).unwrap_or_default(),
                }
            })
            .collect();
        let to_llm = llm_groups
            .into_iter()
            .map(|(g, note)| {
                let grp = std::mem::take(&mut groups[g]);
                (grp.rows, grp.key, note)
            })
            .collect();
        (Partial { decided: out, to_llm }, requests)
    }

    /// Merge the LLM's outcomes (in request order) into a prepared batch.
    pub fn complete(&self, partial: Partial, outcomes: Vec<LlmOutcome>) -> Vec<Decision> {
        let Partial {
            decided: mut out,
            to_llm,
        } = partial;
        debug_assert_eq!(to_llm.len(), outcomes.len());
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            for ((rows, key, model_note), o) in to_llm.into_iter().zip(outcomes) {
                let d = llm_decision(o, &model_note);
                if d.method == Method::Llm {
                    remember(&mut cache, key, &d);
                }
                for i in rows {
                    out[i] = Some(d.clone());
                }
            }
        }
        out.into_iter()
            .map(|d| {
                let d = d.unwrap_or_else(|| {
                    Decision::none("internal error: the LLM stage returned too few answers")
                });
                self.stats.count(d.method);
                d
            })
            .collect()
    }

    /// The text the encoder sees for a message: masked or raw, as the
    /// classifier was trained.
    pub fn encoder_text<'a>(&self, message: &'a str) -> std::borrow::Cow<'a, str> {
        if self.input_masked {
            self.masker.mask(message)
        } else {
            std::borrow::Cow::Borrowed(message)
        }
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// Embed `texts` (already in the encoder's representation), counting
    /// them in the stats.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String> {
        let embedder = self
            .embedder()
            .map_err(|e| format!("model stage unavailable: {e}"))?;
        let (vectors, counts) = embedder
            .embed_counted(texts)
            .map_err(|e| format!("encoder failed: {e}"))?;
        self.stats
            .encoded
            .fetch_add(texts.len() as u64, Ordering::Relaxed);
        self.stats
            .encoded_tokens
            .fetch_add(counts.iter().sum::<usize>() as u64, Ordering::Relaxed);
        Ok(vectors)
    }

    /// Embed `texts` and decide each; the vectors are returned too (empty
    /// when the encoder failed, and every decision says why).
    fn model_stage(&self, texts: &[&str]) -> (Vec<Decision>, Vec<Vec<f32>>) {
        match self.embed(texts) {
            Ok(vectors) => (vectors.iter().map(|v| self.decide(v)).collect(), vectors),
            Err(e) => (
                texts.iter().map(|_| Decision::none(e.clone())).collect(),
                Vec::new(),
            ),
        }
    }

    /// The few-shot examples for each group bound for the LLM: the bank
    /// rows nearest the group's text. Groups the model did not embed (routed
    /// straight to the LLM) are embedded here, in one batch. Without a bank,
    /// an LLM, or an encoder, no examples (the prompt works without them).
    fn examples_for(
        &self,
        groups: &[Group],
        llm_groups: &[(usize, String)],
        mut vectors: HashMap<usize, Vec<f32>>,
    ) -> HashMap<usize, Vec<(String, String)>> {
        let k = self.config.llm.max_examples;
        if llm_groups.is_empty() || self.examples.is_empty() || k == 0 || !self.llm.is_enabled() {
            return HashMap::new();
        }
        let bank = match self.examples.vectors(|ex| {
            let texts: Vec<_> = ex.iter().map(|e| self.encoder_text(&e.message)).collect();
            let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
            self.embed(&texts)
        }) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("llm examples unavailable: {e}");
                return HashMap::new();
            }
        };
        let missing: Vec<usize> = llm_groups
            .iter()
            .map(|&(g, _)| g)
            .filter(|g| vectors.get(g).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            let texts: Vec<&str> = missing.iter().map(|&g| groups[g].text.as_str()).collect();
            if let Ok(v) = self.embed(&texts) {
                vectors.extend(missing.into_iter().zip(v));
            }
        }
        vectors
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(g, v)| (g, self.examples.nearest(bank, &v, k)))
            .collect()
    }

    /// The classifier's verdict on one vector.
    pub fn decide(&self, v: &[f32]) -> Decision {
        let model = &self.artifact.model;
        let p = model.predict_proba(v);
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let (top, second) = (order[0], order.get(1).copied());
        let runner_up = second
            .map(|s| format!("; runner-up {} {:.3}", model.labels[s], p[s]))
            .unwrap_or_default();
        if p[top] >= self.threshold {
            Decision {
                target_label: model.labels[top].clone(),
                method: Method::Model,
                confidence: p[top],
                detail: format!("model p={:.3}{runner_up}", p[top]),
            }
        } else {
            Decision {
                target_label: UNCLASSIFIED.into(),
                method: Method::None,
                confidence: p[top],
                detail: format!(
                    "{MODEL_UNSURE} {} p={:.3} < threshold {:.2}{runner_up}",
                    model.labels[top], p[top], self.threshold
                ),
            }
        }
    }
}

/// How a model-stage fall-through's detail begins.
const MODEL_UNSURE: &str = "model unsure:";

fn llm_decision(o: LlmOutcome, model_note: &str) -> Decision {
    let method = match o.method {
        logsieve_llm::Method::Llm => Method::Llm,
        logsieve_llm::Method::None => Method::None,
    };
    let detail = if model_note.is_empty() {
        format!("llm: {}", o.detail)
    } else {
        format!("{model_note}; llm: {}", o.detail)
    };
    Decision {
        target_label: o.label,
        method,
        confidence: o.confidence,
        detail,
    }
}

fn load_embedder(dir: Option<&Path>, cfg: &Config) -> Result<Arc<dyn Embedder>, logsieve_embed::EmbedError> {
    Ok(Arc::new(MiniLm::load_default(dir, cfg.batch_options())?))
}
