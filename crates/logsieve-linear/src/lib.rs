//! The classifier of the model stage.
//!
//! [`Classifier`] is the boundary the pipeline sees (as `Arc<dyn
//! Classifier>`): a sentence vector in, one probability per label out, and a
//! [`Prediction`] (top two labels, and why the classifier is unsure, if it
//! is). [`decide`] is the model stage's rule on top: unsure below the
//! threshold. Another classifier plugs in by implementing the trait; the
//! cascade does not change. [`LinearModel`] is multinomial logistic
//! regression, trained with linfa-logistic (L-BFGS, L2 penalty) and stored
//! in an open JSON artifact ([`artifact`]). [`report`] holds the metrics
//! (per-class precision/recall/F1, macro F1, confusion matrix) that training
//! and evaluation print, and [`split`] the stratified, seeded split.

pub mod artifact;
pub mod calibrate;
pub mod hybrid;
pub mod lexical;
pub mod predict;
pub mod report;
pub mod selective;
pub mod softmax;
pub mod split;

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

pub use artifact::{Artifact, ArtifactError, EncoderInput};
pub use predict::{decide, Prediction, Unsure};

/// What the model stage knows of one line: the text the encoder saw
/// (masked or raw, as the classifier was trained) and its sentence vector.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub text: &'a str,
    pub vector: &'a [f32],
}

impl<'a> Input<'a> {
    /// A vector with no text (classifiers that read only the vector).
    pub fn vector(vector: &'a [f32]) -> Self {
        Self { text: "", vector }
    }
}

/// A vector in, one probability per label out (same order as `labels()`).
/// Object safe: the pipeline holds an `Arc<dyn Classifier>`.
pub trait Classifier: Send + Sync {
    fn labels(&self) -> &[String];
    fn predict_proba(&self, x: Input<'_>) -> Vec<f32>;

    /// The top two labels. A classifier that can tell it is out of its depth
    /// (e.g. the line is unlike its training data) sets
    /// [`Prediction::unsure`]; the default ranks [`Classifier::predict_proba`]
    /// and is never unsure by itself ([`decide`] adds the threshold).
    fn predict(&self, x: Input<'_>) -> Prediction {
        Prediction::rank(&self.predict_proba(x))
    }

    /// The `k` training texts nearest the line's vector, most similar
    /// first: (text, label, cosine similarity). Empty for a classifier that
    /// keeps no training texts (the plain linear model).
    fn neighbours(&self, _vector: &[f32], _k: usize) -> Vec<(String, String, f32)> {
        Vec::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no training rows")]
    Empty,
    #[error("need at least two labels to train, got {0:?}")]
    OneLabel(Vec<String>),
    #[error("row {row}: vector has {got} dimensions, expected {expected}")]
    Dim { row: usize, got: usize, expected: usize },
    #[error("optimiser failed: {0}")]
    Fit(String),
}

/// How to handle labels with few rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Train on the rows as they are.
    None,
    /// Repeat each label's rows until every label has about as many rows as
    /// the largest one (linfa-logistic takes no sample weights; repetition
    /// gives each label the same total weight in the loss).
    Oversample,
}

/// Training settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// L2 penalty weight (sklearn's `1/C`).
    pub alpha: f64,
    pub max_iterations: u64,
    pub balance: Balance,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            alpha: 1.0,
            max_iterations: 300,
            balance: Balance::Oversample,
        }
    }
}

/// Multinomial logistic regression: `softmax(W·x + b)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinearModel {
    pub labels: Vec<String>,
    /// One row of `dim` weights per label.
    pub weights: Vec<Vec<f32>>,
    pub bias: Vec<f32>,
}

impl LinearModel {
    /// Check the shapes against the embedding's dimension.
    pub fn validate(&self, dim: usize) -> Result<(), String> {
        let k = self.labels.len();
        if k < 2 || self.weights.len() != k || self.bias.len() != k {
            return Err(format!(
                "{k} labels but {} weight rows and {} biases",
                self.weights.len(),
                self.bias.len()
            ));
        }
        if let Some((i, w)) = self.weights.iter().enumerate().find(|(_, w)| w.len() != dim) {
            return Err(format!(
                "weight row {i} has {} values, embedding dim is {dim}",
                w.len()
            ));
        }
        Ok(())
    }

    pub fn dim(&self) -> usize {
        self.weights.first().map(Vec::len).unwrap_or(0)
    }

    /// Fit on vectors `x` with labels `y`.
    pub fn train(x: &[Vec<f32>], y: &[String], opts: &TrainOptions) -> Result<Self, TrainError> {
        if x.is_empty() {
            return Err(TrainError::Empty);
        }
        let dim = x[0].len();
        if let Some((row, v)) = x.iter().enumerate().find(|(_, v)| v.len() != dim) {
            return Err(TrainError::Dim {
                row,
                got: v.len(),
                expected: dim,
            });
        }
        let mut labels: Vec<String> = y.to_vec();
        labels.sort();
        labels.dedup();
        if labels.len() < 2 {
            return Err(TrainError::OneLabel(labels));
        }
        let class_of = |l: &String| labels.binary_search(l).expect("label from the set");
        let mut rows: Vec<usize> = (0..x.len()).collect();
        if opts.balance == Balance::Oversample {
            rows = oversample(y, &labels);
        }
        let mut xa = Array2::<f64>::zeros((rows.len(), dim));
        let mut ya = Array1::<usize>::zeros(rows.len());
        for (r, &i) in rows.iter().enumerate() {
            for (c, v) in x[i].iter().enumerate() {
                xa[[r, c]] = *v as f64;
            }
            ya[r] = class_of(&y[i]);
        }
        let ds = Dataset::new(xa, ya);
        let fit = MultiLogisticRegression::default()
            .alpha(opts.alpha)
            .max_iterations(opts.max_iterations)
            .fit(&ds)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let params = fit.params(); // dim × classes
        let classes = fit.classes();
        let mut weights = vec![vec![0f32; dim]; labels.len()];
        let mut bias = vec![0f32; labels.len()];
        for (k, &class) in classes.iter().enumerate() {
            for d in 0..dim {
                weights[class][d] = params[[d, k]] as f32;
            }
            bias[class] = fit.intercept()[k] as f32;
        }
        Ok(Self {
            labels,
            weights,
            bias,
        })
    }
}

/// Row indices with every label's rows repeated (cycling) up to the count of
/// the most frequent label.
fn oversample(y: &[String], labels: &[String]) -> Vec<usize> {
    let groups: Vec<Vec<usize>> = labels
        .iter()
        .map(|l| (0..y.len()).filter(|&i| &y[i] == l).collect())
        .collect();
    let target = groups.iter().map(Vec::len).max().unwrap_or(0);
    groups
        .iter()
        .flat_map(|g| g.iter().copied().cycle().take(target))
        .collect()
}

impl Classifier for LinearModel {
    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn predict_proba(&self, x: Input<'_>) -> Vec<f32> {
        let x = x.vector;
        let logits: Vec<f32> = self
            .weights
            .iter()
            .zip(&self.bias)
            .map(|(w, b)| w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + b)
            .collect();
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three well-separated clusters in 4-d, one of them small.
    fn data() -> (Vec<Vec<f32>>, Vec<String>) {
        let mut x = Vec::new();
        let mut y = Vec::new();
        let centres = [
            ([1.0, 0.0, 0.0, 0.0], "a", 40),
            ([0.0, 1.0, 0.0, 0.0], "b", 40),
            ([0.0, 0.0, 1.0, 0.0], "c", 4),
        ];
        let mut s = 1u64;
        for (c, l, n) in centres {
            for _ in 0..n {
                let v: Vec<f32> = c
                    .iter()
                    .map(|m| {
                        s = s
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        m + ((s >> 33) as f32 / u32::MAX as f32 - 0.25) * 0.3
                    })
                    .collect();
                x.push(v);
                y.push(l.to_string());
            }
        }
        (x, y)
    }

    #[test]
    fn learns_separable_classes_including_a_rare_one() {
        let (x, y) = data();
        let m = LinearModel::train(
            &x,
            &y,
            &TrainOptions {
                alpha: 0.01,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(m.labels, vec!["a", "b", "c"]);
        for (v, l) in x.iter().zip(&y) {
            let p = m.predict(Input::vector(v));
            assert_eq!(&m.labels[p.label], l);
            assert!(p.probability > 0.5);
        }
        let p = m.predict_proba(Input::vector(&x[0]));
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn oversampling_balances_label_counts() {
        let y: Vec<String> = ["a", "a", "a", "a", "b"].iter().map(|s| s.to_string()).collect();
        let rows = oversample(&y, &["a".to_string(), "b".to_string()]);
        assert_eq!(rows.iter().filter(|&&i| y[i] == "a").count(), 4);
        assert_eq!(rows.iter().filter(|&&i| y[i] == "b").count(), 4);
    }

    #[test]
    fn one_label_is_an_error() {
        let err = LinearModel::train(
            &[vec![1.0], vec![2.0]],
            &["x".into(), "x".into()],
            &Default::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("at least two labels"));
    }

    #[test]
    fn ragged_vectors_name_the_row() {
        let err = LinearModel::train(
            &[vec![1.0, 2.0], vec![2.0]],
            &["x".into(), "y".into()],
            &Default::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "row 1: vector has 1 dimensions, expected 2");
    }
}
