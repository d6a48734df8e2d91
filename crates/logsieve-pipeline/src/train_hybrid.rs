//! Training the hybrid model (the built-in one) from one or more labelled
//! files and the label prototypes, and the artifact it writes.
//!
//! Every row trains the model, rows that rules or routes claim included:
//! they teach it what a label looks like on systems where no rule fires
//! (and where a route sends a source to the LLM, the model still learns its
//! labels). Each file is split on its own with the stratified, seeded split,
//! so `eval --data FILE --split test` scores exactly the rows of that file
//! training held out.

use std::collections::BTreeMap;

use logsieve_linear::artifact::{DataFile, ModelKind, TrainingInfo, FORMAT, FORMAT_VERSION};
use logsieve_linear::hybrid::{HybridModel, HybridOptions};
use logsieve_linear::report::Report;
use logsieve_linear::selective::Selective;
use logsieve_linear::split::stratified_split;
use logsieve_linear::{Artifact, Balance, Classifier, Input};

use crate::cascade::Pipeline;
use crate::labelled::LabelledRow;
use crate::labels::LabelSpec;
use crate::train::{
    embedding_info, encoder_input, example_bank_of, now_unix, TrainFailure, TrainSettings, Trained,
};
use crate::units::{prototype_units, units_of, VectorCache};

/// One labelled file.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// File name as recorded in the artifact.
    pub name: String,
    pub sha256: String,
    pub rows: Vec<LabelledRow>,
    /// Hold out a stratified share for the report (data files); false fits
    /// every row (rows from a decision store).
    pub split: bool,
}

/// Encoder texts of the label prototypes (masked like any line).
pub fn prototype_texts(p: &Pipeline, labels: &[LabelSpec], s: &TrainSettings) -> Vec<String> {
    labels
        .iter()
        .flat_map(|l| &l.prototypes)
        .map(|t| encoder_input(p, t, s.input).into_owned())
        .collect()
}

/// (row, is_test) over every file, each split on its own.
fn split_rows<'a>(data: &'a [DataSet], s: &TrainSettings) -> Vec<(&'a LabelledRow, bool)> {
    let mut all = Vec::new();
    for d in data {
        let is_test = if d.split {
            stratified_split(
                &d.rows.iter().map(|r| r.label.as_str()).collect::<Vec<_>>(),
                s.test_fraction,
                s.seed,
            )
        } else {
            vec![false; d.rows.len()]
        };
        all.extend(d.rows.iter().zip(is_test));
    }
    all
}

/// The (encoder text, label) of every row [`train_hybrid`] fits the model
/// on (the held-out split left out unless `refit_all`): what `train
/// --fine-tune` fine-tunes the encoder on, so the held-out rows stay unseen.
pub fn fitted_texts(p: &Pipeline, data: &[DataSet], s: &TrainSettings) -> Vec<(String, String)> {
    split_rows(data, s)
        .into_iter()
        .filter(|(_, test)| s.refit_all || !*test)
        .map(|(r, _)| {
            (
                encoder_input(p, &r.message, s.input).into_owned(),
                r.label.clone(),
            )
        })
        .collect()
}

pub fn train_hybrid(
    p: &Pipeline,
    data: &[DataSet],
    labels: &[LabelSpec],
    s: &TrainSettings,
    opts: &HybridOptions,
) -> Result<Trained, TrainFailure> {
    let embedder = p.embedder()?;
    let all = split_rows(data, s);
    if all.is_empty() {
        return Err(TrainFailure::NoModelRows);
    }
    let texts: Vec<String> = all
        .iter()
        .map(|(r, _)| encoder_input(p, &r.message, s.input).into_owned())
        .collect();
    let proto_texts = prototype_texts(p, labels, s);
    let mut cache = VectorCache::default();
    cache.fill(
        embedder.as_ref(),
        texts.iter().chain(&proto_texts).map(String::as_str),
    )?;
    let fit_rows: Vec<(&LabelledRow, &str)> = all
        .iter()
        .zip(&texts)
        .filter(|((_, test), _)| s.refit_all || !*test)
        .map(|((r, _), t)| (*r, t.as_str()))
        .collect();
    let units = units_of(fit_rows.iter().copied(), &cache);
    let protos = prototype_units(labels, &proto_texts, &cache);
    let (model, oof) = HybridModel::train(&units, &protos, opts)?;
    let heldout_rows: Vec<(&LabelledRow, &str)> = all
        .iter()
        .zip(&texts)
        .filter(|((_, test), _)| *test)
        .map(|((r, _), t)| (*r, t.as_str()))
        .collect();
    let heldout = (!heldout_rows.is_empty()).then(|| {
        let (truth, pred): (Vec<String>, Vec<String>) = heldout_rows
            .iter()
            .map(|(r, t)| {
                let pr = model.predict(Input {
                    text: t,
                    vector: cache.get(t),
                });
                (r.label.clone(), model.labels[pr.label].clone())
            })
            .unzip();
        Report::new(&truth, &pred)
    });
    let out_of_fold = oof.as_ref().map(|o| {
        let conf: Vec<f32> = o
            .evidence
            .iter()
            .map(|e| model.calibrator.confidence(e))
            .collect();
        Selective::new(&conf, &o.right, s.threshold)
    });
    let mut per_label: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_source: BTreeMap<String, usize> = BTreeMap::new();
    for (r, _) in &fit_rows {
        *per_label.entry(r.label.clone()).or_default() += 1;
        *per_source.entry(r.source.clone()).or_default() += 1;
    }
    let flat: Vec<LabelledRow> = fit_rows.iter().map(|(r, _)| (*r).clone()).collect();
    let usable: Vec<usize> = (0..flat.len()).collect();
    let examples = example_bank_of(p, &flat, &usable, s.examples_per_label);
    let artifact = Artifact {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        embedding: embedding_info(p, embedder.as_ref(), s.input),
        model_threshold: s.threshold,
        model: ModelKind::Hybrid(Box::new(model)),
        training: TrainingInfo {
            data: data
                .iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
                .join(" + "),
            data_sha256: data.first().map(|d| d.sha256.clone()).unwrap_or_default(),
            rows_total: all.len(),
            rows_fitted: fit_rows.len(),
            rows_per_label: per_label.into_iter().collect(),
            fitted_on: if s.refit_all { "all" } else { "train-split" }.into(),
            test_fraction: s.test_fraction,
            seed: s.seed,
            alpha: 1.0 / opts.c,
            balance: Balance::None,
            max_iterations: opts.max_iterations,
            logsieve_version: env!("CARGO_PKG_VERSION").into(),
            created_unix: now_unix(),
            data_files: data
                .iter()
                .map(|d| DataFile {
                    path: d.name.clone(),
                    sha256: d.sha256.clone(),
                    rows: d.rows.len(),
                })
                .collect(),
            rows_per_source: per_source.into_iter().collect(),
            units: Some(units.len()),
            out_of_fold,
            distilled: None,
        },
        heldout,
        examples,
    };
    Ok(Trained { artifact, claimed: 0 })
}
