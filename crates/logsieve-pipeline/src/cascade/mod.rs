//! The sieve itself: rules, then the model stage, then the LLM stage.
//!
//! [`Pipeline::classify`] takes a batch of (source, message) pairs and
//! returns one [`Decision`] per pair, in order, whatever happens: a failing
//! encoder or a missing LLM makes rows `method=none` with the reason, never
//! drops them. The encoder loads lazily, so inputs that rules settle never
//! pay for it; identical messages in a batch are embedded once.
//!
//! The seams: a pipeline is made by a [`PipelineBuilder`] (`builder`); the
//! classifier is an `Arc<dyn Classifier>` and the encoder an `Arc<dyn
//! Embedder>` (`model`), so other implementations plug in without touching
//! this file; the template cache (`cache`) and the counters (`stats`) have
//! files of their own. A classifier's [`Prediction`] says whether it is
//! unsure and why; unsure rows go to the LLM with that reason in `detail`.
//!
//! [`Prediction`]: logsieve_linear::Prediction

mod builder;
mod cache;
mod explain;
mod model;
mod stats;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logsieve_embed::Embedder;
use logsieve_linear::{Classifier, EncoderInput};
use logsieve_llm::{LlmOutcome, LlmRequest, LlmStage};
use logsieve_rules::Rules;
use logsieve_store::{Hit, StoredDecision, StoredMethod};
use logsieve_templates::Masker;

pub use builder::{ModelParts, PipelineBuilder, PipelineError, DEFAULT_CLASSIFIER_JSON};
pub use explain::{
    template_id, Explanation, LabelProbability, ModelExplanation, NearExample, RuleExplanation,
};
pub use logsieve_store::Store;
pub use model::EncoderUnavailable;
pub use stats::{CacheCounts, MethodCounts, StatsSnapshot};

use cache::{key_into, split_key, Lookup, TemplateCache};
use model::{ModelStage, Verdict};
use stats::Stats;

use crate::config::{Config, Route};
use crate::decision::{Decision, Method};

/// One line to classify.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    pub source: &'a str,
    pub message: &'a str,
}

/// A batch after the rules and model stages, waiting for the LLM.
#[derive(Debug)]
pub struct Partial {
    decided: Vec<Option<Decision>>,
    /// One per LLM request, in request order.
    to_llm: Vec<LlmBound>,
}

/// The rows one LLM request decides.
#[derive(Debug)]
struct LlmBound {
    /// Indices into the prepared batch.
    rows: Vec<usize>,
    /// Their template-cache key.
    key: String,
    /// Their masked text.
    template: Arc<str>,
    /// What the model said, when it was unsure (none for rows routed
    /// straight to the LLM).
    model_note: Option<String>,
    /// One of its lines as logged, for the store (when there is one).
    example: Option<String>,
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
    /// The masked text its decision carries.
    template: Arc<str>,
    rows: Vec<usize>,
    next: Next,
}

/// A group bound for the LLM, after the model stage.
struct ForLlm {
    /// Index into the batch's groups.
    group: usize,
    /// What the model said, when it was unsure.
    note: Option<String>,
    /// The group's vector, when the model made one (to choose examples).
    vector: Option<Vec<f32>>,
}

/// Where a group goes after the sieve.
#[derive(Debug, Clone, Default)]
enum Next {
    #[default]
    Model,
    /// Straight to the LLM: its source is routed there (no note), or the
    /// model was unsure of its key before (the note it left).
    Llm(Option<String>),
}

pub struct Pipeline {
    config: Config,
    rules: Rules,
    model: ModelStage,
    llm: LlmStage,
    masker: Masker,
    /// (source, masked text) → the decision the model or LLM reached.
    cache: TemplateCache,
    stats: Stats,
    /// Where decisions are kept across runs, if anywhere.
    store: Option<StoreLink>,
}

/// The pipeline's tie to its decision store.
pub(crate) struct StoreLink {
    pub(crate) store: Arc<Store>,
    /// The classifier's version (model decisions of another are not reused).
    pub(crate) model_version: String,
    /// When line counts were last sent to the store.
    pub(crate) hits_sent: Mutex<Instant>,
    /// What warming the cache found.
    pub(crate) warmed: StoreStatus,
}

/// How often the lines that hit stored decisions are counted into the store.
const HITS_EVERY: Duration = Duration::from_secs(2);

/// What the pipeline read from its store when it was built.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StoreStatus {
    pub path: String,
    /// Decisions put in the template cache (corrections included).
    pub loaded: u64,
    /// People's corrections among them.
    pub corrections: u64,
    /// Stored model decisions left out because another model made them.
    pub stale_model: u64,
    /// The classifier version model decisions are stored under.
    pub model_version: String,
    /// Why loading stopped early (a damaged file), if it did.
    pub error: Option<String>,
}

/// A person's correction: every line of `message`'s template from `source`
/// gets `label`.
#[derive(Debug, Clone)]
pub struct Correction {
    pub source: String,
    pub message: String,
    pub label: String,
}

/// A correction as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The masked text every line of the template shares.
    pub template: String,
    /// What lines of the template now get.
    pub decision: Decision,
}

/// Why corrections were refused (none of a refused batch is applied).
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error("correction {index}: unknown label `{label}` (known labels: {})", known.join(", "))]
    UnknownLabel {
        /// 0-based, in the order given.
        index: usize,
        label: String,
        known: Vec<String>,
    },
    #[error("correction {index}: empty log_message")]
    EmptyMessage { index: usize },
    #[error("the corrections apply now but were not stored: {0}")]
    Store(#[from] logsieve_store::StoreError),
}

impl Pipeline {
    /// The builder: the only way to make a pipeline.
    pub fn builder(config: Config) -> PipelineBuilder {
        PipelineBuilder::new(config)
    }

    /// The LLM stage (its `status()` says whether it is on and why).
    pub fn llm(&self) -> &LlmStage {
        &self.llm
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The model stage's classifier.
    pub fn classifier(&self) -> &Arc<dyn Classifier> {
        &self.model.classifier
    }

    /// What text the encoder sees (as the classifier was trained).
    pub fn encoder_input(&self) -> EncoderInput {
        self.model.input
    }

    pub fn threshold(&self) -> f32 {
        self.model.threshold
    }

    /// The decision store and what warming from it found, if there is one.
    pub fn store(&self) -> Option<(&Arc<Store>, &StoreStatus)> {
        self.store.as_ref().map(|l| (&l.store, &l.warmed))
    }

    /// Send the line counts the cache holds to the store and wait until
    /// everything queued is written (end of a run, shutdown).
    pub fn flush_store(&self) -> Result<(), logsieve_store::StoreError> {
        let Some(link) = &self.store else { return Ok(()) };
        let hits = self.cache.lock().take_hits();
        link.store.record_hits(to_hits(hits));
        link.store.flush()
    }

    /// Every label a person may give: the classifier's, the rules' and the
    /// LLM's.
    pub fn allowed_labels(&self) -> Vec<String> {
        let mut l = self.known_labels();
        l.extend(self.llm.labels().iter().map(|s| s.name.clone()));
        l.sort();
        l.dedup();
        l
    }

    /// Apply people's corrections: from now on every line with a
    /// correction's template (its source and masked text) comes out with its
    /// label, `method = feedback`, confidence 1, whatever decided it before
    /// (a rule included), and the correction is written to the store before
    /// this returns. Labels must be known ones (any letter case); one bad
    /// correction refuses the batch.
    pub fn feedback(&self, corrections: &[Correction]) -> Result<Vec<Applied>, FeedbackError> {
        let known = self.allowed_labels();
        let mut labels = Vec::with_capacity(corrections.len());
        for (index, c) in corrections.iter().enumerate() {
            if c.message.trim().is_empty() {
                return Err(FeedbackError::EmptyMessage { index });
            }
            let label = c.label.trim();
            match known.iter().find(|k| k.eq_ignore_ascii_case(label)) {
                Some(k) => labels.push(k.clone()),
                None => {
                    return Err(FeedbackError::UnknownLabel {
                        index,
                        label: c.label.clone(),
                        known,
                    })
                }
            }
        }
        let mut applied = Vec::with_capacity(corrections.len());
        let mut stored = Vec::new();
        let (mut masked, mut key) = (String::new(), String::new());
        {
            let mut cache = self.cache.lock();
            for (c, label) in corrections.iter().zip(labels) {
                let m = if self.masker.mask_into(&c.message, &mut masked) {
                    masked.as_str()
                } else {
                    c.message.as_str()
                };
                key_into(&mut key, &c.source, m);
                let d = Decision {
                    target_label: label,
                    method: Method::Feedback,
                    confidence: 1.0,
                    detail: FEEDBACK_NOTE.into(),
                    template: None,
                };
                let over_rule = self
                    .rule_decision(Item {
                        source: &c.source,
                        message: &c.message,
                    })
                    .is_some();
                cache.pin(key.clone(), d.clone(), over_rule);
                if self.store.is_some() {
                    stored.push(StoredDecision {
                        source: c.source.clone(),
                        template: m.to_string(),
                        label: d.target_label.clone(),
                        method: StoredMethod::Feedback,
                        confidence: 1.0,
                        reason: d.detail.clone(),
                        model_version: String::new(),
                        example: c.message.clone(),
                        count: 0,
                    });
                }
                applied.push(Applied {
                    template: m.to_string(),
                    decision: d,
                });
            }
        }
        if let Some(link) = &self.store {
            link.store.record_decisions(stored);
            link.store.flush()?;
        }
        Ok(applied)
    }

    /// Counters since the pipeline was built.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Labels this pipeline can give without an LLM: the classifier's and the rules'.
    pub fn known_labels(&self) -> Vec<String> {
        let mut l: Vec<String> = self.model.classifier.labels().to_vec();
        l.extend(self.rules.specs().iter().map(|r| r.label.clone()));
        l.sort();
        l.dedup();
        l
    }

    /// The encoder, loaded (and fetched) on first call.
    pub fn embedder(&self) -> Result<Arc<dyn Embedder>, EncoderUnavailable> {
        self.model.embedder()
    }

    /// Load the encoder if needed and check that it serves
    /// ([`Embedder::health`]).
    pub fn encoder_health(&self) -> Result<(), EncoderUnavailable> {
        self.embedder()?
            .health()
            .map_err(|e| EncoderUnavailable::Unhealthy(Arc::new(e)))
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
                    template: None,
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
        let (mut out, mut groups) = self.sieve(items);
        let mut for_llm = self.model_pass(items, &groups, &mut out);
        let requests = self.llm_requests(items, &groups, &mut for_llm);
        let to_llm = for_llm
            .into_iter()
            .map(|f| {
                let grp = std::mem::take(&mut groups[f.group]);
                let example = self
                    .store
                    .as_ref()
                    .map(|_| items[grp.rows[0]].message.to_string());
                LlmBound {
                    rows: grp.rows,
                    key: grp.key,
                    template: grp.template,
                    model_note: f.note,
                    example,
                }
            })
            .collect();
        (Partial { decided: out, to_llm }, requests)
    }

    /// Step 1 of [`Pipeline::prepare`]: empty messages, rules and routes,
    /// and the template cache decide what they can; the other rows are
    /// grouped by cache key.
    fn sieve(&self, items: &[Item<'_>]) -> (Vec<Option<Decision>>, Vec<Group>) {
        let mut out: Vec<Option<Decision>> = Vec::with_capacity(items.len());
        let mut groups: Vec<Group> = Vec::new();
        let mut group_of: HashMap<String, usize, foldhash::fast::RandomState> = HashMap::default();
        // Reused for every row: a cache hit allocates nothing but its decision.
        let (mut masked, mut key) = (String::new(), String::new());
        let mut cache = self.cache.lock();
        for (i, item) in items.iter().enumerate() {
            let route = self.config.route(item.source);
            if item.message.trim().is_empty() {
                out.push(Some(Decision::none("empty log_message")));
                continue;
            }
            if let Some(d) = self.rule_decision_on(*item, route) {
                // A person's correction outranks a rule (checked only once
                // such a correction exists: rule rows are never masked else).
                let d = if cache.pinned_over_rules() {
                    let m = if self.masker.mask_into(item.message, &mut masked) {
                        masked.as_str()
                    } else {
                        item.message
                    };
                    key_into(&mut key, item.source, m);
                    cache.pinned(&key).unwrap_or(d)
                } else {
                    d
                };
                out.push(Some(d));
                continue;
            }
            if route == Route::Rules {
                out.push(Some(Decision::none(
                    "no rule matched (source routed to rules only)",
                )));
                continue;
            }
            let masked_text = if self.masker.mask_into(item.message, &mut masked) {
                masked.as_str()
            } else {
                item.message
            };
            key_into(&mut key, item.source, masked_text);
            let unsure = match cache.lookup(&key) {
                Lookup::Decided(d) => {
                    self.stats.cache_hit();
                    out.push(Some(d));
                    continue;
                }
                Lookup::Unsure(note) => {
                    self.stats.cache_hit();
                    Some(note)
                }
                Lookup::Miss => {
                    self.stats.cache_miss();
                    None
                }
                Lookup::Off => None,
            };
            let g = match group_of.get(key.as_str()) {
                Some(&g) => g,
                None => {
                    let text = match self.model.input {
                        EncoderInput::Masked => masked_text,
                        EncoderInput::Raw => item.message,
                    };
                    // A key the model was unsure of goes straight to the LLM.
                    let next = match unsure {
                        Some(note) => Next::Llm(Some(note)),
                        None if route == Route::Llm => Next::Llm(None),
                        None => Next::Model,
                    };
                    groups.push(Group {
                        key: key.clone(),
                        text: text.to_string(),
                        template: Arc::from(masked_text),
                        rows: Vec::new(),
                        next,
                    });
                    group_of.insert(key.clone(), groups.len() - 1);
                    groups.len() - 1
                }
            };
            groups[g].rows.push(i);
            out.push(None);
        }
        if let Some(link) = &self.store {
            self.send_hits(link, &mut cache);
        }
        (out, groups)
    }

    /// Every [`HITS_EVERY`], the lines that hit stored decisions go to the
    /// store (a few keys, not a write per row).
    fn send_hits(&self, link: &StoreLink, cache: &mut cache::Locked<'_>) {
        let mut sent = link.hits_sent.lock().unwrap_or_else(|p| p.into_inner());
        if sent.elapsed() < HITS_EVERY {
            return;
        }
        *sent = Instant::now();
        link.store.record_hits(to_hits(cache.take_hits()));
    }

    /// Step 2: the model stage, once per group not already bound for the
    /// LLM. Returns the groups bound for the LLM.
    fn model_pass(&self, items: &[Item<'_>], groups: &[Group], out: &mut [Option<Decision>]) -> Vec<ForLlm> {
        let mut for_llm: Vec<ForLlm> = groups
            .iter()
            .enumerate()
            .filter_map(|(group, g)| match &g.next {
                Next::Llm(note) => Some(ForLlm {
                    group,
                    note: note.clone(),
                    vector: None,
                }),
                Next::Model => None,
            })
            .collect();
        let for_model: Vec<usize> = (0..groups.len())
            .filter(|&g| matches!(groups[g].next, Next::Model))
            .collect();
        if for_model.is_empty() {
            return for_llm;
        }
        let texts: Vec<&str> = for_model.iter().map(|&g| groups[g].text.as_str()).collect();
        let (verdicts, mut vectors) = self.model.judge(&texts, &self.stats);
        let mut stored = Vec::new();
        let mut cache = self.cache.lock();
        for (k, (g, verdict)) in for_model.into_iter().zip(verdicts).enumerate() {
            let d = match verdict {
                Verdict::Unsure(note) => {
                    // Remembered, so the next row with this key skips the encoder.
                    cache.unsure(groups[g].key.clone(), &note);
                    for_llm.push(ForLlm {
                        group: g,
                        note: Some(note),
                        vector: vectors.get_mut(k).map(std::mem::take),
                    });
                    continue;
                }
                Verdict::Decided(d) => {
                    let d = d.with_template(&groups[g].template);
                    cache.decided(groups[g].key.clone(), &d);
                    if let Some(link) = &self.store {
                        let first = items[groups[g].rows[0]].message;
                        stored.push(stored_decision(
                            &groups[g].key,
                            &d,
                            StoredMethod::Model,
                            &link.model_version,
                            first,
                            groups[g].rows.len(),
                        ));
                    }
                    d
                }
                // Not remembered: the encoder may work next time.
                Verdict::Failed(d) => d.with_template(&groups[g].template),
            };
            for &i in &groups[g].rows {
                out[i] = Some(d.clone());
            }
        }
        drop(cache);
        if let Some(link) = &self.store {
            link.store.record_decisions(stored);
        }
        for_llm
    }

    /// Step 3: one LLM request per group bound for it, with the few-shot
    /// examples nearest its text.
    fn llm_requests(&self, items: &[Item<'_>], groups: &[Group], for_llm: &mut [ForLlm]) -> Vec<LlmRequest> {
        let k = self.config.llm.max_examples;
        let mut examples = if self.llm.is_enabled() {
            let texts: Vec<&str> = for_llm.iter().map(|f| groups[f.group].text.as_str()).collect();
            let known = for_llm.iter_mut().map(|f| f.vector.take()).collect();
            self.model.examples_for(
                &texts,
                known,
                k,
                self.config.llm.min_example_similarity,
                &self.masker,
                &self.stats,
            )
        } else {
            Vec::new()
        };
        for_llm
            .iter()
            .enumerate()
            .map(|(n, f)| {
                let first = items[groups[f.group].rows[0]];
                LlmRequest {
                    source: first.source.to_string(),
                    message: first.message.to_string(),
                    examples: examples.get_mut(n).map(std::mem::take).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Merge the LLM's outcomes (in request order) into a prepared batch.
    pub fn complete(&self, partial: Partial, outcomes: Vec<LlmOutcome>) -> Vec<Decision> {
        let Partial {
            decided: mut out,
            to_llm,
        } = partial;
        debug_assert_eq!(to_llm.len(), outcomes.len());
        let mut stored = Vec::new();
        {
            let mut cache = self.cache.lock();
            for (bound, o) in to_llm.into_iter().zip(outcomes) {
                let d = llm_decision(o, bound.model_note.as_deref()).with_template(&bound.template);
                if d.method == Method::Llm {
                    if let Some(example) = &bound.example {
                        stored.push(stored_decision(
                            &bound.key,
                            &d,
                            StoredMethod::Llm,
                            &self.config.llm.model,
                            example,
                            bound.rows.len(),
                        ));
                    }
                    cache.decided(bound.key, &d);
                }
                for i in bound.rows {
                    out[i] = Some(d.clone());
                }
            }
        }
        if let Some(link) = &self.store {
            link.store.record_decisions(stored);
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
        self.model.encoder_text(&self.masker, message)
    }

    pub fn masker(&self) -> &Masker {
        &self.masker
    }
}

/// The detail of a person's correction.
pub const FEEDBACK_NOTE: &str = "correction by a person";

impl Drop for Pipeline {
    /// The line counts not yet sent go to the store (which commits what is
    /// queued when its last handle goes).
    fn drop(&mut self) {
        if let Some(link) = &self.store {
            let hits = self.cache.lock().take_hits();
            link.store.record_hits(to_hits(hits));
        }
    }
}

fn to_hits(hits: Vec<(String, u64)>) -> Vec<Hit> {
    hits.into_iter()
        .map(|(key, lines)| {
            let (source, template) = split_key(&key);
            Hit {
                source: source.to_string(),
                template: template.to_string(),
                lines,
            }
        })
        .collect()
}

fn stored_decision(
    key: &str,
    d: &Decision,
    method: StoredMethod,
    version: &str,
    example: &str,
    lines: usize,
) -> StoredDecision {
    let (source, template) = split_key(key);
    StoredDecision {
        source: source.to_string(),
        template: template.to_string(),
        label: d.target_label.clone(),
        method,
        confidence: d.confidence,
        reason: d.detail.clone(),
        model_version: version.to_string(),
        example: example.to_string(),
        count: lines as u64,
    }
}

fn llm_decision(o: LlmOutcome, model_note: Option<&str>) -> Decision {
    let method = match o.method {
        logsieve_llm::Method::Llm => Method::Llm,
        logsieve_llm::Method::None => Method::None,
    };
    let detail = match model_note {
        None => format!("llm: {}", o.detail),
        Some(note) => format!("{note}; llm: {}", o.detail),
    };
    Decision {
        target_label: o.label,
        method,
        confidence: o.confidence,
        detail,
        template: None,
    }
}
