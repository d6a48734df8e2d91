//! Leave-one-source-out evaluation: for each source (a real system) of the
//! evaluated data, train the hybrid model on everything else and score that
//! source's lines, model stage only, no LLM. What a user pointing logsieve
//! at a system it was never trained on gets.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use logsieve_embed::Embedder;
use logsieve_linear::hybrid::{HybridModel, HybridOptions};
use logsieve_linear::report::Report;
use logsieve_linear::selective::Selective;
use logsieve_linear::{Classifier, Input};
use rayon::prelude::*;
use serde::Serialize;

use crate::cascade::Pipeline;
use crate::labelled::LabelledRow;
use crate::labels::LabelSpec;
use crate::train::{encoder_input, TrainFailure, TrainSettings};
use crate::train_hybrid::prototype_texts;
use crate::units::{prototype_units, units_of, VectorCache};

#[derive(Debug, Clone, Serialize)]
pub struct SourceScore {
    pub source: String,
    /// Distinct encoder texts among its lines.
    pub templates: usize,
    #[serde(flatten)]
    pub score: Selective,
    /// Lines the model called unfamiliar.
    pub unfamiliar: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct LosoReport {
    pub sources: Vec<SourceScore>,
    /// All held-out lines pooled.
    pub overall: Selective,
    /// Mean over sources (each source weighs the same).
    pub macro_accuracy: f64,
    /// Labels and their scores, pooled over every held-out line.
    pub report: Report,
    /// Labels the model predicted right at least once on their own held-out lines.
    pub labels_predicted: Vec<String>,
    /// Pooled figures at thresholds 0.5 to 0.9 (confidence alone, unfamiliar
    /// lines not set apart): the risk-coverage curve in steps.
    pub curve: Vec<Selective>,
    /// What the model said of each held-out template (for `--predictions`).
    #[serde(skip)]
    pub templates: Vec<TemplatePrediction>,
    /// What each fold's calibrator was fitted on and what it then met (for
    /// `--calibration-dump`: calibration studied offline).
    #[serde(skip)]
    pub evidence: Vec<EvidenceRow>,
}

/// One calibration datum: the evidence the calibrator reads, whether the
/// top label was right, and the lines it stands for.
#[derive(Debug, Clone, Serialize)]
pub struct EvidenceRow {
    /// The held-out source of the outer fold.
    pub fold: String,
    /// `inner`: an out-of-fold prediction the fold's calibrator was fitted
    /// on; `held-out`: a template of the held-out source.
    pub kind: &'static str,
    pub p1: f32,
    pub p2: f32,
    pub nearest: f32,
    pub agree: f32,
    pub words: usize,
    pub label: String,
    pub right: bool,
    pub lines: f64,
    /// The calibrated confidence the fold's model gives.
    pub confidence: f32,
}

fn evidence_row(
    fold: &str,
    kind: &'static str,
    m: &HybridModel,
    e: &logsieve_linear::calibrate::Evidence,
    right: bool,
    lines: f64,
) -> EvidenceRow {
    EvidenceRow {
        fold: fold.to_string(),
        kind,
        p1: e.p1,
        p2: e.p2,
        nearest: e.nearest,
        agree: e.agree,
        words: e.words,
        label: m.labels.get(e.label).cloned().unwrap_or_default(),
        right,
        lines,
        confidence: m.calibrator.confidence(e),
    }
}

/// One held-out distinct text: what the model trained without its source said.
#[derive(Debug, Clone, Serialize)]
pub struct TemplatePrediction {
    pub source: String,
    pub text: String,
    pub lines: usize,
    pub truth: String,
    pub predicted: String,
    pub confidence: f32,
    pub unfamiliar: bool,
}

#[derive(Debug, Clone)]
struct Line {
    truth: String,
    predicted: String,
    confidence: f32,
    covered: bool,
}

fn score(lines: &[Line], threshold: f32) -> Selective {
    let conf: Vec<f32> = lines.iter().map(|l| l.confidence).collect();
    let right: Vec<bool> = lines.iter().map(|l| l.truth == l.predicted).collect();
    let covered: Vec<bool> = lines.iter().map(|l| l.covered).collect();
    Selective::with_coverage(&conf, &right, threshold, &covered)
}

/// Each fold's encoder, made from the fold's training rows as (encoder
/// text, label) pairs (the held-out source's rows never among them); the
/// first argument is the held-out source. `train --fine-tune` fine-tunes one.
pub type FoldEncoder<'a> =
    &'a (dyn Fn(&str, &[(&str, &str)]) -> Result<Arc<dyn Embedder>, TrainFailure> + Sync);

/// What [`leave_one_source_out_with`] varies.
#[derive(Default, Clone, Copy)]
pub struct LosoOptions<'a> {
    /// Hold out only these sources (every source when empty).
    pub only: &'a [String],
    /// A fresh encoder per fold (folds then run one after another);
    /// `None`: the pipeline's encoder for every fold.
    pub fold_encoder: Option<FoldEncoder<'a>>,
}

type Held = (SourceScore, Vec<Line>, Vec<TemplatePrediction>, Vec<EvidenceRow>);

/// `data`'s sources are held out one at a time; `always` rows (the seed set)
/// are always in training.
pub fn leave_one_source_out(
    p: &Pipeline,
    always: &[LabelledRow],
    data: &[LabelledRow],
    labels: &[LabelSpec],
    s: &TrainSettings,
    opts: &HybridOptions,
) -> Result<LosoReport, TrainFailure> {
    leave_one_source_out_with(p, always, data, labels, s, opts, LosoOptions::default())
}

/// [`leave_one_source_out`], on some sources only or with an encoder made
/// per fold.
pub fn leave_one_source_out_with(
    p: &Pipeline,
    always: &[LabelledRow],
    data: &[LabelledRow],
    labels: &[LabelSpec],
    s: &TrainSettings,
    opts: &HybridOptions,
    lo: LosoOptions<'_>,
) -> Result<LosoReport, TrainFailure> {
    let text = |r: &LabelledRow| encoder_input(p, &r.message, s.input).into_owned();
    let always_t: Vec<String> = always.iter().map(text).collect();
    let data_t: Vec<String> = data.iter().map(text).collect();
    let proto_t = prototype_texts(p, labels, s);
    let all_sources: BTreeSet<&str> = data.iter().map(|r| r.source.as_str()).collect();
    for o in lo.only {
        if !all_sources.contains(o.as_str()) {
            return Err(TrainFailure::Input(format!(
                "source `{o}` is not in the data (its sources: {})",
                all_sources.iter().copied().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let sources: Vec<&str> = all_sources
        .into_iter()
        .filter(|src| lo.only.is_empty() || lo.only.iter().any(|o| o == src))
        .collect();
    let fill = |e: &dyn Embedder| -> Result<VectorCache, TrainFailure> {
        let mut cache = VectorCache::default();
        cache.fill(
            e,
            always_t.iter().chain(&data_t).chain(&proto_t).map(String::as_str),
        )?;
        Ok(cache)
    };
    let fold = |src: &str, cache: &VectorCache| -> Result<Held, TrainFailure> {
        let protos = prototype_units(labels, &proto_t, cache);
        hold_out(src, always, &always_t, data, &data_t, cache, &protos, s, opts)
    };
    let per: Vec<Result<Held, TrainFailure>> = match lo.fold_encoder {
        None => {
            let cache = fill(p.embedder()?.as_ref())?;
            sources.par_iter().map(|&src| fold(src, &cache)).collect()
        }
        Some(make) => sources
            .iter()
            .map(|&src| {
                let pairs: Vec<(&str, &str)> = always
                    .iter()
                    .zip(&always_t)
                    .chain(data.iter().zip(&data_t).filter(|(r, _)| r.source != src))
                    .map(|(r, t)| (t.as_str(), r.label.as_str()))
                    .collect();
                let encoder = make(src, &pairs)?;
                let cache = fill(encoder.as_ref())?;
                fold(src, &cache)
            })
            .collect(),
    };
    let mut scores = Vec::new();
    let mut pooled = Vec::new();
    let mut templates = Vec::new();
    let mut evidence = Vec::new();
    for r in per {
        let (score, lines, t, e) = r?;
        scores.push(score);
        pooled.extend(lines);
        templates.extend(t);
        evidence.extend(e);
    }
    let truth: Vec<String> = pooled.iter().map(|l| l.truth.clone()).collect();
    let pred: Vec<String> = pooled.iter().map(|l| l.predicted.clone()).collect();
    let curve = [0.5f32, 0.6, 0.7, 0.8, 0.9]
        .iter()
        .map(|&t| {
            let conf: Vec<f32> = pooled.iter().map(|l| l.confidence).collect();
            let right: Vec<bool> = pooled.iter().map(|l| l.truth == l.predicted).collect();
            Selective::new(&conf, &right, t)
        })
        .collect();
    let labels_predicted = pooled
        .iter()
        .filter(|l| l.truth == l.predicted)
        .map(|l| l.truth.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    Ok(LosoReport {
        macro_accuracy: scores.iter().map(|s| s.score.accuracy).sum::<f64>() / scores.len().max(1) as f64,
        sources: scores,
        overall: score(&pooled, s.threshold),
        curve,
        report: Report::new(&truth, &pred),
        labels_predicted,
        templates,
        evidence,
    })
}

/// One fold: train on everything but `src`, score `src`'s lines.
#[allow(clippy::too_many_arguments)]
fn hold_out(
    src: &str,
    always: &[LabelledRow],
    always_t: &[String],
    data: &[LabelledRow],
    data_t: &[String],
    cache: &VectorCache,
    protos: &[logsieve_linear::hybrid::Unit],
    s: &TrainSettings,
    opts: &HybridOptions,
) -> Result<Held, TrainFailure> {
    let train = always
        .iter()
        .zip(always_t)
        .chain(data.iter().zip(data_t).filter(|(r, _)| r.source != src));
    let units = units_of(train.map(|(r, t)| (r, t.as_str())), cache);
    let (model, oof) = HybridModel::train(&units, protos, opts)?;
    let mut evidence: Vec<EvidenceRow> = oof
        .iter()
        .flat_map(|o| o.evidence.iter().zip(&o.right).zip(&o.weight))
        .map(|((e, &right), &w)| evidence_row(src, "inner", &model, e, right, w))
        .collect();
    let mut memo: HashMap<&str, (usize, f32, bool)> = HashMap::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut templates: Vec<TemplatePrediction> = Vec::new();
    let mut lines = Vec::new();
    let mut unfamiliar = 0;
    for (r, t) in data.iter().zip(data_t).filter(|(r, _)| r.source == src) {
        let &mut (label, conf, unsure) = memo.entry(t.as_str()).or_insert_with(|| {
            let pr = model.predict(Input {
                text: t,
                vector: cache.get(t),
            });
            (pr.label, pr.probability, pr.unsure.is_some())
        });
        unfamiliar += unsure as usize;
        let at = *seen.entry(t.as_str()).or_insert_with(|| {
            templates.push(TemplatePrediction {
                source: src.to_string(),
                text: t.clone(),
                lines: 0,
                truth: r.label.clone(),
                predicted: model.labels[label].clone(),
                confidence: conf,
                unfamiliar: unsure,
            });
            templates.len() - 1
        });
        templates[at].lines += 1;
        if templates[at].lines == 1 {
            let (_, e, _) = model.explain(t, cache.get(t));
            evidence.push(evidence_row(
                src,
                "held-out",
                &model,
                &e,
                model.labels[label] == r.label,
                0.0,
            ));
        }
        // An unfamiliar line is never covered; its label still counts
        // at full coverage and its confidence in ECE and AURC.
        lines.push(Line {
            truth: r.label.clone(),
            predicted: model.labels[label].clone(),
            confidence: conf,
            covered: !unsure && conf >= s.threshold,
        });
    }
    // Held-out rows were pushed one per template, in template order.
    for (e, t) in evidence
        .iter_mut()
        .filter(|e| e.kind == "held-out")
        .zip(&templates)
    {
        e.lines = t.lines as f64;
    }
    Ok((
        SourceScore {
            source: src.to_string(),
            templates: memo.len(),
            score: score(&lines, s.threshold),
            unfamiliar,
        },
        lines,
        templates,
        evidence,
    ))
}

impl LosoReport {
    /// The table the README shows.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let t = self.overall.threshold;
        let _ = writeln!(
            out,
            "| source | lines | templates | accuracy | coverage @{t:.2} | selective accuracy | AURC | ECE | unfamiliar |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
        let row = |out: &mut String, name: &str, templates: String, s: &Selective, unf: String| {
            let _ = writeln!(
                out,
                "| {name} | {} | {templates} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {unf} |",
                s.rows, s.accuracy, s.coverage, s.selective_accuracy, s.aurc, s.ece
            );
        };
        for s in &self.sources {
            row(
                &mut out,
                &s.source,
                s.templates.to_string(),
                &s.score,
                s.unfamiliar.to_string(),
            );
        }
        let unf: usize = self.sources.iter().map(|s| s.unfamiliar).sum();
        let tm: usize = self.sources.iter().map(|s| s.templates).sum();
        row(
            &mut out,
            "**all**",
            tm.to_string(),
            &self.overall,
            unf.to_string(),
        );
        let _ = writeln!(out, "\nmean accuracy over sources: {:.3}", self.macro_accuracy);
        let _ = writeln!(out, "risk-coverage (pooled, confidence alone):");
        for c in &self.curve {
            let _ = writeln!(
                out,
                "  threshold {:.2}: coverage {:.3}, selective accuracy {:.3}",
                c.threshold, c.coverage, c.selective_accuracy
            );
        }
        let _ = writeln!(
            out,
            "labels predicted right on their own held-out lines: {}",
            self.labels_predicted.join(", ")
        );
        let _ = writeln!(out, "\npooled per-label scores:\n{}", self.report.to_text());
        out
    }
}
