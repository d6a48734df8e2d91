//! Evaluation of the whole cascade on labelled rows: accuracy, macro F1,
//! per-label scores, and for each method how many rows it decided and how
//! many of those it got right.

use std::fmt::Write as _;

use logsieve_linear::report::Report;
use logsieve_linear::split::stratified_split;
use serde::Serialize;

use crate::cascade::{Item, Pipeline};
use crate::decision::{Decision, Method};
use crate::labelled::LabelledRow;

/// Which rows to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    All,
    /// The held-out part of the stratified split training uses.
    Test,
    Train,
}

#[derive(Debug, Clone, Serialize)]
pub struct MethodScore {
    pub method: &'static str,
    pub rows: usize,
    pub correct: usize,
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub rows: usize,
    pub report: Report,
    /// Labels the cascade can give without an LLM (classifier and rules) to
    /// rows that no route sends to the LLM.
    pub learnable_labels: Vec<String>,
    /// Macro F1 over the learnable labels present in the data.
    pub macro_f1_learnable: f64,
    pub by_method: Vec<MethodScore>,
}

pub fn select(rows: &[LabelledRow], split: Split, test_fraction: f64, seed: u64) -> Vec<LabelledRow> {
    if split == Split::All {
        return rows.to_vec();
    }
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let is_test = stratified_split(&labels, test_fraction, seed);
    rows.iter()
        .zip(is_test)
        .filter(|(_, t)| *t == (split == Split::Test))
        .map(|(r, _)| r.clone())
        .collect()
}

pub fn evaluate(p: &Pipeline, rows: &[LabelledRow]) -> (EvalReport, Vec<Decision>) {
    let items: Vec<Item> = rows
        .iter()
        .map(|r| Item {
            source: &r.source,
            message: &r.message,
        })
        .collect();
    let decisions = p.classify(&items);
    let truth: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let pred: Vec<&str> = decisions.iter().map(|d| d.target_label.as_str()).collect();
    let report = Report::new(&truth, &pred);
    // Labels the cascade knows, among rows it may decide without an LLM (a
    // route that sends a source to the LLM leaves its rows to it).
    let reachable: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter(|r| p.config().route(&r.source) != crate::config::Route::Llm)
        .map(|r| r.label.as_str())
        .collect();
    let learnable: Vec<String> = p
        .known_labels()
        .into_iter()
        .filter(|l| reachable.contains(l.as_str()))
        .collect();
    let learnable_refs: Vec<&str> = learnable.iter().map(String::as_str).collect();
    let by_method = Method::ALL
        .iter()
        .map(|&m| {
            let idx: Vec<usize> = (0..rows.len()).filter(|&i| decisions[i].method == m).collect();
            let correct = idx
                .iter()
                .filter(|&&i| decisions[i].target_label == rows[i].label)
                .count();
            MethodScore {
                method: m.as_str(),
                rows: idx.len(),
                correct,
                accuracy: (!idx.is_empty()).then(|| correct as f64 / idx.len() as f64),
            }
        })
        .collect();
    (
        EvalReport {
            rows: rows.len(),
            macro_f1_learnable: report.macro_f1_over(&learnable_refs),
            report,
            learnable_labels: learnable,
            by_method,
        },
        decisions,
    )
}

impl EvalReport {
    pub fn to_text(&self) -> String {
        let mut s = self.report.to_text();
        let _ = writeln!(
            s,
            "\nmacro F1 over the {} labels the cascade can give without an LLM: {:.4}",
            self.learnable_labels.len(),
            self.macro_f1_learnable
        );
        let _ = writeln!(s, "\nmethod   rows  share   correct  accuracy");
        for m in &self.by_method {
            let _ = writeln!(
                s,
                "{:6} {:6}  {:5.1}%  {:7}  {}",
                m.method,
                m.rows,
                100.0 * m.rows as f64 / self.rows.max(1) as f64,
                m.correct,
                m.accuracy
                    .map(|a| format!("{a:.4}"))
                    .unwrap_or_else(|| "-".into())
            );
        }
        s
    }
}
