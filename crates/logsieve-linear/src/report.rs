//! Classification metrics: accuracy, per-label precision/recall/F1, macro F1
//! and the confusion matrix, as printed by `train` and `eval` and stored in
//! the model artifact.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabelScore {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows whose true label is this one.
    pub support: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub rows: usize,
    pub accuracy: f64,
    /// Mean F1 over the labels that occur in the truth.
    pub macro_f1: f64,
    pub per_label: Vec<LabelScore>,
    /// Label order of the confusion matrix: the truth's labels, then any
    /// predicted-only labels (such as `Unclassified`).
    pub labels: Vec<String>,
    /// `confusion[t][p]`: rows of true label `labels[t]` predicted `labels[p]`.
    pub confusion: Vec<Vec<usize>>,
}

impl Report {
    pub fn new<A: AsRef<str>, B: AsRef<str>>(truth: &[A], predicted: &[B]) -> Self {
        assert_eq!(truth.len(), predicted.len());
        let mut true_labels: Vec<String> = truth.iter().map(|s| s.as_ref().to_string()).collect();
        true_labels.sort();
        true_labels.dedup();
        let mut labels = true_labels.clone();
        let mut extra: Vec<String> = predicted
            .iter()
            .map(|s| s.as_ref().to_string())
            .filter(|p| !true_labels.contains(p))
            .collect();
        extra.sort();
        extra.dedup();
        labels.extend(extra);
        let idx = |l: &str| labels.iter().position(|x| x == l).expect("label indexed");
        let n = labels.len();
        let mut confusion = vec![vec![0usize; n]; n];
        for (t, p) in truth.iter().zip(predicted) {
            confusion[idx(t.as_ref())][idx(p.as_ref())] += 1;
        }
        let correct: usize = (0..n).map(|i| confusion[i][i]).sum();
        let per_label: Vec<LabelScore> = true_labels
            .iter()
            .map(|l| {
                let i = idx(l);
                let tp = confusion[i][i] as f64;
                let support: usize = confusion[i].iter().sum();
                let predicted: usize = (0..n).map(|t| confusion[t][i]).sum();
                let precision = if predicted == 0 {
                    0.0
                } else {
                    tp / predicted as f64
                };
                let recall = if support == 0 { 0.0 } else { tp / support as f64 };
                let f1 = if precision + recall == 0.0 {
                    0.0
                } else {
                    2.0 * precision * recall / (precision + recall)
                };
                LabelScore {
                    label: l.clone(),
                    precision,
                    recall,
                    f1,
                    support,
                }
            })
            .collect();
        let macro_f1 = if per_label.is_empty() {
            0.0
        } else {
            per_label.iter().map(|s| s.f1).sum::<f64>() / per_label.len() as f64
        };
        Self {
            rows: truth.len(),
            accuracy: if truth.is_empty() {
                0.0
            } else {
                correct as f64 / truth.len() as f64
            },
            macro_f1,
            per_label,
            labels,
            confusion,
        }
    }

    /// Macro F1 over a subset of labels (those present in the truth).
    pub fn macro_f1_over(&self, labels: &[&str]) -> f64 {
        let scores: Vec<f64> = self
            .per_label
            .iter()
            .filter(|s| labels.contains(&s.label.as_str()))
            .map(|s| s.f1)
            .collect();
        if scores.is_empty() {
            0.0
        } else {
            scores.iter().sum::<f64>() / scores.len() as f64
        }
    }

    /// A plain-text table for terminals.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let w = self.labels.iter().map(String::len).max().unwrap_or(5).max(5);
        let _ = writeln!(s, "{:w$}  precision  recall     f1  support", "label");
        for l in &self.per_label {
            let _ = writeln!(
                s,
                "{:w$}  {:9.4}  {:6.4}  {:5.4}  {:7}",
                l.label, l.precision, l.recall, l.f1, l.support
            );
        }
        let _ = writeln!(
            s,
            "\naccuracy {:.4}   macro F1 {:.4}   rows {}",
            self.accuracy, self.macro_f1, self.rows
        );
        let _ = writeln!(s, "\nconfusion matrix (rows: truth, columns: predicted)");
        let abbrev: Vec<String> = self.labels.iter().map(|l| short(l)).collect();
        let _ = write!(s, "{:w$}", "");
        for a in &abbrev {
            let _ = write!(s, " {a:>6}");
        }
        let _ = writeln!(s);
        for (t, row) in self.confusion.iter().enumerate() {
            if row.iter().sum::<usize>() == 0 {
                continue;
            }
            let _ = write!(s, "{:w$}", self.labels[t]);
            for v in row {
                let _ = write!(s, " {v:>6}");
            }
            let _ = writeln!(s);
        }
        let _ = writeln!(
            s,
            "(columns: {})",
            self.labels
                .iter()
                .zip(&abbrev)
                .map(|(l, a)| format!("{a}={l}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s
    }
}

fn short(label: &str) -> String {
    let initials: String = label
        .split_whitespace()
        .filter_map(|w| w.chars().next())
        .collect();
    if initials.len() >= 2 {
        initials
    } else {
        label.chars().take(6).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_a_small_case_by_hand() {
        let truth = ["a", "a", "a", "b", "b", "c"];
        let pred = ["a", "a", "b", "b", "b", "Unclassified"];
        let r = Report::new(&truth, &pred);
        assert_eq!(r.rows, 6);
        assert!((r.accuracy - 4.0 / 6.0).abs() < 1e-12);
        let a = &r.per_label[0];
        assert_eq!((a.label.as_str(), a.support), ("a", 3));
        assert!((a.precision - 1.0).abs() < 1e-12 && (a.recall - 2.0 / 3.0).abs() < 1e-12);
        let b = &r.per_label[1];
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12 && (b.recall - 1.0).abs() < 1e-12);
        assert_eq!(r.per_label[2].f1, 0.0);
        assert_eq!(r.labels, vec!["a", "b", "c", "Unclassified"]);
        assert_eq!(r.confusion[2][3], 1);
        let f1a = 2.0 * (2.0 / 3.0) / (1.0 + 2.0 / 3.0);
        assert!((r.macro_f1 - (f1a + f1a + 0.0) / 3.0).abs() < 1e-12);
        assert!((r.macro_f1_over(&["a", "b"]) - f1a).abs() < 1e-12);
        assert!(r.to_text().contains("macro F1"));
    }
}
