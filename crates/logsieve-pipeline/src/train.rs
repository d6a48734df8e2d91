//! Training: labelled rows → the model artifact, with a held-out report.
//!
//! Rows that a rule or a source route claims never reach the model, so they
//! are left out of its training data, as in the reference design. The split
//! is over all rows of the file, stratified by label with a fixed seed, so
//! `eval --split test` scores exactly the rows training held out.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use logsieve_linear::artifact::{EmbeddingInfo, Example, TrainingInfo, FORMAT, FORMAT_VERSION};
use logsieve_linear::report::Report;
use logsieve_linear::split::stratified_split;
use logsieve_linear::{Artifact, Classifier, EncoderInput, LinearModel, TrainOptions};
use sha2::{Digest, Sha256};

use crate::cascade::{Item, Pipeline};
use crate::config::Route;
use crate::labelled::LabelledRow;

#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub test_fraction: f64,
    pub seed: u64,
    pub options: TrainOptions,
    /// Refit on every model-stage row after reporting on the held-out part.
    pub refit_all: bool,
    pub threshold: f32,
    /// What the encoder is trained on: masked text (variables replaced by
    /// typed placeholders) or the raw message.
    pub input: EncoderInput,
    /// Distinct templates kept per label as the LLM's few-shot examples.
    pub examples_per_label: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainFailure {
    #[error("no rows reach the model stage (rules and routes claim them all)")]
    NoModelRows,
    #[error("encoder: {0}")]
    Unavailable(#[from] crate::EncoderUnavailable),
    #[error("encoder: {0}")]
    Encoder(#[from] logsieve_embed::EmbedError),
    #[error(transparent)]
    Train(#[from] logsieve_linear::TrainError),
    #[error("{0}")]
    Input(String),
    #[error("fine-tuning the encoder: {0}")]
    FineTune(String),
}

pub struct Trained {
    pub artifact: Artifact,
    /// Rows claimed by rules or routes (left out of training).
    pub claimed: usize,
}

/// Whether the model stage would see this row.
pub fn reaches_model(p: &Pipeline, source: &str, message: &str) -> bool {
    match p.config().route(source) {
        Route::Llm | Route::Rules => false,
        Route::Model => true,
        Route::Cascade => p.rule_decision(Item { source, message }).is_none(),
    }
}

/// Whether the LLM stage would see this row (a route sends its source there).
fn reaches_llm(p: &Pipeline, source: &str) -> bool {
    p.config().route(source) == Route::Llm
}

/// The few-shot example bank: for each label, up to `per_label` rows with
/// distinct masked text, most frequent templates first, from the rows the
/// model or the LLM would see (`usable`).
pub(crate) fn example_bank_of(
    p: &Pipeline,
    rows: &[LabelledRow],
    usable: &[usize],
    per_label: usize,
) -> Vec<Example> {
    // (label, masked text) -> (first row, rows with it)
    let mut templates: HashMap<(&str, String), (usize, usize)> = HashMap::new();
    for &i in usable {
        let key = (
            rows[i].label.as_str(),
            p.masker().mask(&rows[i].message).into_owned(),
        );
        templates.entry(key).or_insert((i, 0)).1 += 1;
    }
    let mut ranked: Vec<(&str, usize, usize)> = templates
        .into_iter()
        .map(|((label, _), (first, n))| (label, first, n))
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(b.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
    let mut out = Vec::new();
    let mut taken: HashMap<&str, usize> = HashMap::new();
    for (label, first, _) in ranked {
        let n = taken.entry(label).or_default();
        if *n < per_label {
            *n += 1;
            out.push(Example {
                source: rows[first].source.clone(),
                message: rows[first].message.clone(),
                label: label.to_string(),
            });
        }
    }
    out
}

/// The text the encoder is trained on for a message.
pub(crate) fn encoder_input<'a>(
    p: &Pipeline,
    message: &'a str,
    input: EncoderInput,
) -> std::borrow::Cow<'a, str> {
    match input {
        EncoderInput::Masked => p.masker().mask(message),
        EncoderInput::Raw => std::borrow::Cow::Borrowed(message),
    }
}

pub fn train(
    p: &Pipeline,
    rows: &[LabelledRow],
    data_name: &str,
    data_bytes: &[u8],
    s: &TrainSettings,
) -> Result<Trained, TrainFailure> {
    let is_test = stratified_split(
        &rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
        s.test_fraction,
        s.seed,
    );
    let model_rows: Vec<usize> = (0..rows.len())
        .filter(|&i| reaches_model(p, &rows[i].source, &rows[i].message))
        .collect();
    if model_rows.is_empty() {
        return Err(TrainFailure::NoModelRows);
    }
    let embedder = p.embedder()?;
    // The encoder sees what the cascade will show it: masked or raw text.
    let texts: Vec<std::borrow::Cow<'_, str>> = model_rows
        .iter()
        .map(|&i| encoder_input(p, &rows[i].message, s.input))
        .collect();
    let texts: Vec<&str> = texts.iter().map(|t| t.as_ref()).collect();
    let vectors = embedder.embed(&texts)?;
    let (mut xtr, mut ytr, mut xte, mut yte) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, &i) in model_rows.iter().enumerate() {
        if is_test[i] {
            xte.push(vectors[k].clone());
            yte.push(rows[i].label.clone());
        } else {
            xtr.push(vectors[k].clone());
            ytr.push(rows[i].label.clone());
        }
    }
    let model = LinearModel::train(&xtr, &ytr, &s.options)?;
    let heldout = (!xte.is_empty()).then(|| {
        let pred: Vec<String> = xte
            .iter()
            .map(|v| model.labels[model.predict(logsieve_linear::Input::vector(v)).label].clone())
            .collect();
        Report::new(&yte, &pred)
    });
    let (model, fitted_on, fitted) = if s.refit_all {
        let y: Vec<String> = model_rows.iter().map(|&i| rows[i].label.clone()).collect();
        (
            LinearModel::train(&vectors, &y, &s.options)?,
            "all",
            vectors.len(),
        )
    } else {
        (model, "train-split", xtr.len())
    };
    let mut per_label: Vec<(String, usize)> = Vec::new();
    for l in &model.labels {
        let n = model_rows
            .iter()
            .filter(|&&i| &rows[i].label == l && (s.refit_all || !is_test[i]))
            .count();
        per_label.push((l.clone(), n));
    }
    let usable: Vec<usize> = (0..rows.len())
        .filter(|&i| s.refit_all || !is_test[i])
        .filter(|&i| reaches_llm(p, &rows[i].source) || reaches_model(p, &rows[i].source, &rows[i].message))
        .collect();
    let examples = example_bank_of(p, rows, &usable, s.examples_per_label);
    let artifact = Artifact {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        embedding: embedding_info(p, embedder.as_ref(), s.input),
        model_threshold: s.threshold,
        model: logsieve_linear::artifact::ModelKind::Linear(model),
        training: TrainingInfo {
            data: data_name.into(),
            data_sha256: hex::encode(Sha256::digest(data_bytes)),
            rows_total: rows.len(),
            rows_fitted: fitted,
            rows_per_label: per_label,
            fitted_on: fitted_on.into(),
            test_fraction: s.test_fraction,
            seed: s.seed,
            alpha: s.options.alpha,
            balance: s.options.balance,
            max_iterations: s.options.max_iterations,
            logsieve_version: env!("CARGO_PKG_VERSION").into(),
            created_unix: now_unix(),
            data_files: Vec::new(),
            rows_per_source: Vec::new(),
            units: None,
            out_of_fold: None,
            distilled: None,
        },
        heldout,
        examples,
    };
    Ok(Trained {
        artifact,
        claimed: rows.len() - model_rows.len(),
    })
}

/// What the artifact records of the encoder it was trained with.
pub(crate) fn embedding_info(
    p: &Pipeline,
    e: &dyn logsieve_embed::Embedder,
    input: EncoderInput,
) -> EmbeddingInfo {
    EmbeddingInfo {
        model_id: e.model_id().into(),
        weights_sha256: e.weights_sha256().into(),
        dim: e.dim(),
        max_tokens: p.config().model.max_tokens,
        input,
        fine_tuned: None,
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write the artifact into `dir`.
pub fn save(t: &Trained, dir: &Path) -> Result<(), logsieve_linear::ArtifactError> {
    t.artifact.save(dir)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use logsieve_embed::{EmbedError, Embedder};

    use super::*;
    use crate::Config;

    /// Records what it is asked to embed; the vector says whether the text
    /// mentions a disk (so two labels are separable).
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Embedder for Recorder {
        fn model_id(&self) -> &str {
            "recorder"
        }
        fn weights_sha256(&self) -> &str {
            "00"
        }
        fn dim(&self) -> usize {
            2
        }
        fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
            Ok(texts.iter().map(|t| t.len()).collect())
        }
        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.0.lock().unwrap().extend(texts.iter().map(|t| t.to_string()));
            Ok(texts
                .iter()
                .map(|t| {
                    if t.contains("disk") {
                        vec![1.0, 0.0]
                    } else {
                        vec![0.0, 1.0]
                    }
                })
                .collect())
        }
    }

    fn rows() -> Vec<LabelledRow> {
        let mut rows = Vec::new();
        for i in 0..20 {
            for (source, message, label) in [
                (
                    "Db",
                    format!("disk {i} is 9{i}% full on 10.0.0.{i}"),
                    "Resource Usage",
                ),
                (
                    "Db",
                    format!("replica {i} lagging behind primary by {i} seconds"),
                    "Error",
                ),
                (
                    "LegacyCRM",
                    format!("Lead conversion failed for prospect ID 7{i}"),
                    "Lead Failure",
                ),
            ] {
                rows.push(LabelledRow {
                    line: rows.len() as u64 + 2,
                    source: source.into(),
                    message,
                    label: label.into(),
                });
            }
        }
        rows
    }

    fn settings(masked: bool) -> TrainSettings {
        TrainSettings {
            test_fraction: 0.25,
            seed: 42,
            options: TrainOptions::default(),
            refit_all: false,
            threshold: 0.5,
            input: if masked {
                EncoderInput::Masked
            } else {
                EncoderInput::Raw
            },
            examples_per_label: 4,
        }
    }

    #[test]
    fn the_encoder_is_trained_on_the_text_the_cascade_will_show_it() {
        for masked in [true, false] {
            let rec = Arc::new(Recorder::default());
            let p = Pipeline::builder(Config::builtin())
                .embedder(rec.clone())
                .build()
                .unwrap();
            let t = train(&p, &rows(), "d.csv", b"", &settings(masked)).unwrap();
            assert_eq!(
                t.artifact.embedding.input,
                if masked {
                    EncoderInput::Masked
                } else {
                    EncoderInput::Raw
                }
            );
            let seen = rec.0.lock().unwrap();
            // LegacyCRM is routed to the LLM: never embedded for training.
            assert_eq!(seen.len(), 40);
            let disk = seen.iter().find(|t| t.starts_with("disk")).unwrap();
            if masked {
                assert!(disk.contains("<IP>") && !disk.contains("10.0.0."), "{disk}");
            } else {
                assert!(disk.contains("10.0.0."), "{disk}");
            }
        }
    }

    #[test]
    fn the_example_bank_keeps_distinct_templates_per_label_from_training_rows_only() {
        let p = Pipeline::builder(Config::builtin())
            .embedder(Arc::new(Recorder::default()))
            .build()
            .unwrap();
        let t = train(&p, &rows(), "d.csv", b"", &settings(true)).unwrap();
        let ex = &t.artifact.examples;
        // One template per label here (the rows differ only in numbers),
        // LLM-only labels from routed sources included.
        let labels: Vec<&str> = ex.iter().map(|e| e.label.as_str()).collect();
        assert_eq!(labels, ["Error", "Lead Failure", "Resource Usage"]);
        let is_test = stratified_split(
            &rows().iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
            0.25,
            42,
        );
        for e in ex {
            let i = rows().iter().position(|r| r.message == e.message).unwrap();
            assert!(!is_test[i], "held-out row {} used as an example", e.message);
        }
    }

    #[test]
    fn labels_seen_only_on_llm_routed_sources_become_llm_labels() {
        let p = Pipeline::builder(Config::builtin())
            .embedder(Arc::new(Recorder::default()))
            .build()
            .unwrap();
        let t = train(&p, &rows(), "d.csv", b"", &settings(true)).unwrap();
        assert!(!t.artifact.model.labels().contains(&"Lead Failure".to_string()));
        let dir = tempfile::tempdir().unwrap();
        save(&t, dir.path()).unwrap();
        let mut cfg = Config::builtin();
        cfg.model.classifier = Some(dir.path().to_path_buf());
        // A configuration naming a classifier needs it loaded: no silent built-in.
        assert!(matches!(
            Pipeline::builder(cfg.clone()).build(),
            Err(crate::PipelineError::NotLoaded { .. })
        ));
        let artifact = Artifact::load(dir.path()).unwrap();
        let p = Pipeline::builder(cfg).artifact(&artifact).build().unwrap();
        let llm_labels: Vec<&str> = p.llm().labels().iter().map(|l| l.name.as_str()).collect();
        assert!(llm_labels.contains(&"Lead Failure"), "{llm_labels:?}");
    }
}
