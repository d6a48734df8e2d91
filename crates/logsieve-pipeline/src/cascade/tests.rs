//! The cascade with stand-ins at every seam: an encoder that counts its
//! calls, classifiers behind `Arc<dyn Classifier>` (one that can say a line
//! is unfamiliar), and an LLM client that counts its calls. Each route, the
//! template cache, and the model-unsure memory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use logsieve_embed::{EmbedError, Embedder};
use logsieve_linear::{Classifier, EncoderInput, Input, Prediction, Unsure};
use logsieve_llm::{ChatRequest, CompletionFuture, LlmClient, LlmStage};

use super::*;

/// `disk` → [1, 0], `replica` → [0, 1], anything else halfway.
#[derive(Default)]
struct Encoder {
    texts: AtomicUsize,
}

impl Embedder for Encoder {
    fn model_id(&self) -> &str {
        "test"
    }
    fn weights_sha256(&self) -> &str {
        "00"
    }
    fn dim(&self) -> usize {
        2
    }
    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(texts.iter().map(|t| t.split(' ').count()).collect())
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.texts.fetch_add(texts.len(), Ordering::Relaxed);
        Ok(texts
            .iter()
            .map(|t| {
                if t.contains("disk") {
                    vec![1.0, 0.0]
                } else if t.contains("replica") {
                    vec![0.0, 1.0]
                } else {
                    vec![0.5, 0.5]
                }
            })
            .collect())
    }
}

/// Probabilities proportional to the vector's components.
struct Proportional {
    labels: Vec<String>,
    /// Say "unfamiliar" when no component reaches this.
    familiar_above: Option<f32>,
}

impl Proportional {
    fn new() -> Self {
        Self {
            labels: vec!["Resource Usage".into(), "Error".into()],
            familiar_above: None,
        }
    }
}

impl Classifier for Proportional {
    fn labels(&self) -> &[String] {
        &self.labels
    }
    fn predict_proba(&self, x: Input<'_>) -> Vec<f32> {
        let x = x.vector;
        let sum: f32 = x.iter().sum();
        x.iter().map(|v| v / sum).collect()
    }
    fn predict(&self, input: Input<'_>) -> Prediction {
        let x = input.vector;
        let mut p = Prediction::rank(&self.predict_proba(input));
        if let Some(floor) = self.familiar_above {
            let best = x.iter().copied().fold(0.0, f32::max);
            if best < floor {
                p.unsure = Some(Unsure::Unfamiliar {
                    similarity: best,
                    min_similarity: floor,
                });
            }
        }
        p
    }
}

/// Answers every call with `Error`, counting calls.
#[derive(Default)]
struct Llm {
    calls: AtomicUsize,
}

impl LlmClient for Llm {
    fn complete<'a>(&'a self, _request: &'a ChatRequest) -> CompletionFuture<'a> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Box::pin(async {
            Ok(r#"{"label": "Error", "reason": "the test says so", "confidence": 0.9}"#.into())
        })
    }
}

struct Rig {
    pipeline: Pipeline,
    encoder: Arc<Encoder>,
    llm: Option<Arc<Llm>>,
}

fn parts(classifier: Proportional) -> ModelParts {
    ModelParts {
        classifier: Arc::new(classifier),
        threshold: 0.6,
        input: EncoderInput::Masked,
        weights_sha256: None,
        examples: Vec::new(),
    }
}

fn rig_with(config: Config, classifier: Proportional, with_llm: bool) -> Rig {
    let encoder = Arc::new(Encoder::default());
    let mut b = Pipeline::builder(config.clone())
        .model(parts(classifier))
        .embedder(encoder.clone());
    let llm = with_llm.then(|| Arc::new(Llm::default()));
    if let Some(client) = &llm {
        b = b.llm(LlmStage::with_client(config.llm.clone(), &["Error"], client.clone()).unwrap());
    }
    Rig {
        pipeline: b.build().unwrap(),
        encoder,
        llm,
    }
}

fn rig(with_llm: bool) -> Rig {
    rig_with(Config::builtin(), Proportional::new(), with_llm)
}

fn one(p: &Pipeline, source: &str, message: &str) -> Decision {
    p.classify(&[Item { source, message }]).pop().unwrap()
}

impl Rig {
    fn encoded(&self) -> usize {
        self.encoder.texts.load(Ordering::Relaxed)
    }
    fn llm_calls(&self) -> usize {
        self.llm.as_ref().map_or(0, |l| l.calls.load(Ordering::Relaxed))
    }
}

#[test]
fn a_repeated_template_is_decided_from_the_cache() {
    let r = rig(false);
    let d = one(&r.pipeline, "Db", "disk 3 is 91% full");
    assert_eq!(
        (d.target_label.as_str(), d.method),
        ("Resource Usage", Method::Model)
    );
    assert_eq!(d.detail, "model p=1.000; runner-up Error 0.000");
    // Same template (the numbers are masked), later batch: no encoder call.
    let again = one(&r.pipeline, "Db", "disk 7 is 12% full");
    assert_eq!(again.target_label, "Resource Usage");
    assert_eq!(
        again.detail,
        "template cache hit; model p=1.000; runner-up Error 0.000"
    );
    assert_eq!(r.encoded(), 1);
    let s = r.pipeline.stats();
    assert_eq!((s.template_cache.hits, s.template_cache.misses), (1, 1));
    assert_eq!((s.rows, s.by_method.model, s.encoded_texts), (2, 2, 1));
    // Another source is another key.
    one(&r.pipeline, "Other", "disk 7 is 12% full");
    assert_eq!(r.encoded(), 2);
}

/// Whoever groups lines by template (the dashboard) reads the masked text
/// off the decision instead of masking the line again.
#[test]
fn decisions_past_the_rules_carry_their_masked_text() {
    let r = rig(true);
    let t = |d: &Decision| d.template.as_deref().map(str::to_string);
    let first = one(&r.pipeline, "Db", "disk 3 is 91% full");
    let want = r.pipeline.masker().mask("disk 3 is 91% full").into_owned();
    assert_ne!(want, "disk 3 is 91% full", "the masker changed the line");
    assert_eq!(t(&first).as_deref(), Some(want.as_str()));
    // A cache hit carries the same text (shared, not copied).
    let hit = one(&r.pipeline, "Db", "disk 7 is 12% full");
    assert_eq!(t(&hit), t(&first));
    assert!(std::sync::Arc::ptr_eq(
        hit.template.as_ref().unwrap(),
        one(&r.pipeline, "Db", "disk 8 is 13% full")
            .template
            .as_ref()
            .unwrap()
    ));
    // The LLM's answer too.
    let llm = one(&r.pipeline, "Db", "something odd happened 3 times");
    assert_eq!(llm.method, Method::Llm);
    assert_eq!(
        t(&llm).as_deref(),
        Some(
            r.pipeline
                .masker()
                .mask("something odd happened 3 times")
                .as_ref()
        )
    );
    // A rule's decision was never masked, and an empty line has no template.
    let rule = one(&r.pipeline, "Db", "User 42 logged in");
    assert_eq!((rule.method, rule.template.is_none()), (Method::Rule, true));
    assert!(one(&r.pipeline, "Db", "  ").template.is_none());
}

#[test]
fn rows_sharing_a_key_in_a_batch_are_embedded_once() {
    let r = rig(false);
    let items: Vec<Item> = (0..5)
        .map(|_| Item {
            source: "Db",
            message: "replica lagging by 4 s",
        })
        .collect();
    let out = r.pipeline.classify(&items);
    assert!(out
        .iter()
        .all(|d| d.target_label == "Error" && d.method == Method::Model));
    assert_eq!(r.encoded(), 1);
}

#[test]
fn a_key_the_model_was_unsure_of_skips_the_encoder_next_time() {
    // No LLM: the unsure row comes out Unclassified with both reasons.
    let r = rig(false);
    let d = one(&r.pipeline, "Db", "something odd happened 3 times");
    assert_eq!(
        (d.target_label.as_str(), d.method),
        ("Unclassified", Method::None)
    );
    assert!(
        d.detail
            .starts_with("model unsure: Resource Usage p=0.500 < threshold 0.60; runner-up Error 0.500; llm: llm stage off"),
        "{}",
        d.detail
    );
    let again = one(&r.pipeline, "Db", "something odd happened 9 times");
    assert_eq!(again, d);
    assert_eq!(r.encoded(), 1, "the unsure key was remembered");
    assert_eq!(r.pipeline.stats().template_cache.hits, 1);
}

#[test]
fn unsure_rows_go_to_the_llm_whose_answer_is_then_cached() {
    let r = rig(true);
    let d = one(&r.pipeline, "Db", "something odd happened 3 times");
    assert_eq!((d.target_label.as_str(), d.method), ("Error", Method::Llm));
    assert!(
        d.detail.starts_with("model unsure: Resource Usage p=0.500")
            && d.detail.contains("; llm: the test says so"),
        "{}",
        d.detail
    );
    let again = one(&r.pipeline, "Db", "something odd happened 4 times");
    assert_eq!(again.method, Method::Llm);
    assert!(
        again.detail.starts_with("template cache hit; model unsure"),
        "{}",
        again.detail
    );
    assert_eq!((r.encoded(), r.llm_calls()), (1, 1));
}

#[test]
fn a_classifier_that_finds_a_line_unfamiliar_sends_it_on_with_that_reason() {
    let classifier = Proportional {
        familiar_above: Some(0.9),
        ..Proportional::new()
    };
    let r = rig_with(Config::builtin(), classifier, true);
    // Sure by probability (1.0), but the classifier's own doubt wins.
    let d = one(&r.pipeline, "Db", "disk 3 is 91% full");
    assert_eq!(d.method, Method::Model, "[1, 0] is familiar");
    let d = one(&r.pipeline, "Db", "something odd happened");
    assert_eq!(d.method, Method::Llm);
    assert!(
        d.detail
            .starts_with("model unsure: unfamiliar line (similarity 0.500 < 0.90); Resource Usage p=0.500"),
        "{}",
        d.detail
    );
    assert_eq!(r.llm_calls(), 1);
}

#[test]
fn each_route_sends_rows_where_it_says() {
    let mut cfg = Config::builtin();
    for (source, route) in [
        ("OnlyRules", Route::Rules),
        ("OnlyModel", Route::Model),
        ("OnlyLlm", Route::Llm),
    ] {
        cfg.routes.insert(source.into(), route);
    }
    let r = rig_with(cfg, Proportional::new(), true);
    let login = "User User1 logged in.";
    // Cascade: the rule decides; nothing else runs.
    let d = one(&r.pipeline, "Anything", login);
    assert_eq!(
        (d.method, d.detail.as_str()),
        (Method::Rule, "rule user-login-logout")
    );
    // Rules only: a rule or nothing.
    assert_eq!(one(&r.pipeline, "OnlyRules", login).method, Method::Rule);
    let d = one(&r.pipeline, "OnlyRules", "disk 3 is 91% full");
    assert_eq!(
        (d.method, d.detail.as_str()),
        (Method::None, "no rule matched (source routed to rules only)")
    );
    assert_eq!((r.encoded(), r.llm_calls()), (0, 0));
    // Model: rules skipped, so even a login line goes to the model.
    let d = one(&r.pipeline, "OnlyModel", login);
    assert_ne!(d.method, Method::Rule);
    assert_eq!(r.encoded(), 1);
    // LLM: straight there, no encoder (no examples to choose).
    let d = one(&r.pipeline, "OnlyLlm", "disk 3 is 91% full");
    assert_eq!(
        (d.method, d.detail.as_str()),
        (Method::Llm, "llm: the test says so")
    );
    assert_eq!(r.encoded(), 1);
    // Empty messages never reach a stage.
    let d = one(&r.pipeline, "Anything", "  ");
    assert_eq!((d.method, d.detail.as_str()), (Method::None, "empty log_message"));
}

#[test]
fn without_an_encoder_model_rows_say_why_and_are_not_cached() {
    let p = Pipeline::builder(Config::builtin()).build().unwrap();
    for _ in 0..2 {
        let d = one(&p, "Db", "disk 3 is 91% full");
        assert_eq!(d.method, Method::None);
        assert_eq!(d.detail, "model stage unavailable: no encoder configured");
    }
    assert_eq!(p.stats().template_cache.hits, 0);
    assert!(matches!(p.embedder(), Err(EncoderUnavailable::NotConfigured)));
}

#[test]
fn a_configured_file_must_be_given_to_the_builder() {
    let mut cfg = Config::builtin();
    cfg.rules.path = Some("my-rules.toml".into());
    let e = Pipeline::builder(cfg.clone()).build().err().unwrap().to_string();
    assert!(e.starts_with("rules.path = my-rules.toml:"), "{e}");
    let p = Pipeline::builder(cfg).rules(Rules::builtin()).build();
    assert!(p.is_ok());
}

#[test]
fn the_cache_can_be_switched_off() {
    let encoder = Arc::new(Encoder::default());
    let p = Pipeline::builder(Config::builtin())
        .model(parts(Proportional::new()))
        .embedder(encoder.clone())
        .cache_capacity(0)
        .build()
        .unwrap();
    one(&p, "Db", "disk 3 is 91% full");
    let d = one(&p, "Db", "disk 3 is 91% full");
    assert!(!d.detail.contains("template cache hit"));
    assert_eq!(encoder.texts.load(Ordering::Relaxed), 2);
    assert_eq!(p.stats().template_cache, CacheCounts::default());
}

/// A rig whose pipeline keeps its decisions in `store` under `version`.
fn rig_on_store(store: &Arc<Store>, version: &str) -> Rig {
    let cfg = Config::builtin();
    let encoder = Arc::new(Encoder::default());
    let client = Arc::new(Llm::default());
    let pipeline = Pipeline::builder(cfg.clone())
        .model(parts(Proportional::new()))
        .embedder(encoder.clone())
        .llm(LlmStage::with_client(cfg.llm.clone(), &["Error"], client.clone()).unwrap())
        .store(store.clone())
        .model_version(version)
        .build()
        .unwrap();
    Rig {
        pipeline,
        encoder,
        llm: Some(client),
    }
}

fn open_store(dir: &tempfile::TempDir) -> Arc<Store> {
    Arc::new(Store::open(dir.path().join("store.db")).unwrap())
}

#[test]
fn a_new_pipeline_on_the_store_starts_from_its_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        ("Db", "disk 3 is 91% full"),             // the model decides
        ("Db", "something odd happened 3 times"), // the model is unsure: the LLM decides
    ];
    let items: Vec<Item> = lines
        .iter()
        .map(|&(source, message)| Item { source, message })
        .collect();
    let first = {
        let r = rig_on_store(&open_store(&dir), "m1");
        let out = r.pipeline.classify(&items);
        r.pipeline.classify(&items); // hits, counted into the store
        assert_eq!((r.encoded(), r.llm_calls()), (2, 1));
        r.pipeline.flush_store().unwrap();
        out
    };
    assert_eq!(
        first.iter().map(|d| d.method).collect::<Vec<_>>(),
        [Method::Model, Method::Llm]
    );
    // Same model: nothing is asked again, in a new pipeline on a reopened store.
    let store = open_store(&dir);
    let counts = store
        .decisions_by(logsieve_store::StoredMethod::Llm, 0.0)
        .unwrap();
    assert_eq!(
        (counts.len(), counts[0].count),
        (1, 2),
        "two lines of the LLM's template"
    );
    assert_eq!(counts[0].example, "something odd happened 3 times");
    assert_eq!(counts[0].template, "something odd happened <NUM> times");
    let r = rig_on_store(&store, "m1");
    assert_eq!(r.pipeline.store().unwrap().1.loaded, 2);
    let again = r.pipeline.classify(&items);
    assert_eq!((r.encoded(), r.llm_calls()), (0, 0));
    for (a, b) in first.iter().zip(&again) {
        assert_eq!((&a.target_label, a.method), (&b.target_label, b.method));
        assert!(
            b.detail.starts_with("template cache hit (stored decision); "),
            "{}",
            b.detail
        );
    }
    drop(r);
    // Another model: its own decisions are made again, the LLM's are kept.
    let r = rig_on_store(&store, "m2");
    let status = r.pipeline.store().unwrap().1.clone();
    assert_eq!((status.loaded, status.stale_model), (1, 1));
    r.pipeline.classify(&items);
    assert_eq!((r.encoded(), r.llm_calls()), (1, 0));
}

#[test]
fn a_correction_applies_at_once_to_its_template_and_outlives_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let r = rig_on_store(&open_store(&dir), "m1");
    assert_eq!(
        one(&r.pipeline, "Db", "disk 3 is 91% full").target_label,
        "Resource Usage"
    );
    let login = one(&r.pipeline, "Db", "User User1 logged in.");
    assert_eq!(login.method, Method::Rule);
    let applied = r
        .pipeline
        .feedback(&[
            Correction {
                source: "Db".into(),
                message: "disk 5 is 80% full".into(),
                label: "error".into(), // any case; the canonical spelling is kept
            },
            Correction {
                source: "Db".into(),
                message: "User User7 logged in.".into(),
                label: "Security Alert".into(),
            },
        ])
        .unwrap();
    assert_eq!(applied[0].template, "disk <NUM> is <NUM>% full");
    let check = |p: &Pipeline| {
        let d = one(p, "Db", "disk 9 is 10% full");
        assert_eq!(
            (d.target_label.as_str(), d.method, d.confidence),
            ("Error", Method::Feedback, 1.0)
        );
        // Over a rule too.
        let d = one(p, "Db", "User User7 logged in.");
        assert_eq!(
            (d.target_label.as_str(), d.method),
            ("Security Alert", Method::Feedback)
        );
        // Other sources are other templates.
        assert_eq!(one(p, "Other", "User User7 logged in.").method, Method::Rule);
        assert_eq!(one(p, "Db", "User User8 logged in.").method, Method::Rule);
    };
    check(&r.pipeline);
    assert_eq!(r.pipeline.stats().by_method.feedback, 2);
    drop(r);
    // A new pipeline on the same store, even with another model.
    let r = rig_on_store(&open_store(&dir), "m2");
    assert_eq!(r.pipeline.store().unwrap().1.corrections, 2);
    check(&r.pipeline);
    assert_eq!(r.encoded(), 0);
}

#[test]
fn an_unknown_label_refuses_the_whole_batch_of_corrections() {
    let r = rig(false);
    let e = r
        .pipeline
        .feedback(&[
            Correction {
                source: "Db".into(),
                message: "disk 5 is 80% full".into(),
                label: "Error".into(),
            },
            Correction {
                source: "Db".into(),
                message: "x".into(),
                label: "Disk Trouble".into(),
            },
        ])
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("correction 1: unknown label `Disk Trouble` (known labels: ")
            && msg.contains("Security Alert"),
        "{msg}"
    );
    assert_eq!(one(&r.pipeline, "Db", "disk 5 is 80% full").method, Method::Model);
}
