//! Training: labelled rows → the model artifact, with a held-out report.
//!
//! Rows that a rule or a source route claims never reach the model, so they
//! are left out of its training data, as in the reference design. The split
//! is over all rows of the file, stratified by label with a fixed seed, so
//! `eval --split test` scores exactly the rows training held out.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use logsieve_linear::artifact::{EmbeddingInfo, TrainingInfo, FORMAT, FORMAT_VERSION};
use logsieve_linear::report::Report;
use logsieve_linear::split::stratified_split;
use logsieve_linear::{Artifact, Classifier, LinearModel, TrainOptions};
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
    /// Embed masked text (variables replaced by typed placeholders) instead of the raw message.
    pub masked_input: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainFailure {
    #[error("no rows reach the model stage (rules and routes claim them all)")]
    NoModelRows,
    #[error("encoder: {0}")]
    Encoder(String),
    #[error(transparent)]
    Train(#[from] logsieve_linear::TrainError),
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
    let embedder = p.embedder().map_err(TrainFailure::Encoder)?;
    let texts: Vec<&str> = model_rows.iter().map(|&i| rows[i].message.as_str()).collect();
    let vectors = embedder
        .embed(&texts)
        .map_err(|e| TrainFailure::Encoder(e.to_string()))?;
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
            .map(|v| model.labels[model.predict(v).0].clone())
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
    let artifact = Artifact {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        embedding: EmbeddingInfo {
            model_id: embedder.model_id().into(),
            weights_sha256: embedder.weights_sha256().into(),
            dim: embedder.dim(),
            max_tokens: p.config().model.max_tokens,
            input: if s.masked_input { "masked" } else { "raw" }.into(),
        },
        model_threshold: s.threshold,
        model,
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
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        },
        heldout,
    };
    Ok(Trained {
        artifact,
        claimed: rows.len() - model_rows.len(),
    })
}

/// Write the artifact into `dir`.
pub fn save(t: &Trained, dir: &Path) -> Result<(), logsieve_linear::ArtifactError> {
    t.artifact.save(dir)
}
