//! Confidence that means how often the model is right.
//!
//! A softmax probability says how the classes compare, not how often the
//! top one is right on a system the model has never seen: trained on the
//! synthetic seed, it gave 0.87 to lines it got wrong. The calibrator is a
//! small logistic regression fitted on out-of-fold predictions (each fold
//! holds out whole sources, so the folds look like a new user's logs):
//! P(right | the top probability's logit, the margin to the runner-up, the
//! similarity to the nearest training template). Platt scaling with a
//! familiarity term: lines far from everything seen get low confidence.

use serde::{Deserialize, Serialize};

use crate::softmax::{FitOptions, Row, Softmax};
use crate::TrainError;

/// What the calibrator sees of one prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// The top class's probability.
    pub p1: f32,
    /// The runner-up's probability.
    pub p2: f32,
    /// Cosine similarity to the nearest training template (or label prototype).
    pub nearest: f32,
}

impl Evidence {
    fn features(&self) -> Vec<f32> {
        let p = self.p1.clamp(1e-6, 1.0 - 1e-6);
        vec![(p / (1.0 - p)).ln(), self.p1 - self.p2, self.nearest]
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibrator {
    /// Weights of `[logit(p1), p1 - p2, nearest]`.
    pub weights: [f32; 3],
    pub bias: f32,
    /// Out-of-fold predictions it was fitted on.
    pub fitted_on: usize,
}

impl Calibrator {
    /// The identity-like calibrator: confidence = p1 (used when no folds exist).
    pub fn identity() -> Self {
        Self {
            weights: [1.0, 0.0, 0.0],
            bias: 0.0,
            fitted_on: 0,
        }
    }

    /// Fit on out-of-fold evidence and whether each prediction was right,
    /// each weighted (so every fold's lines can count equally).
    pub fn fit(evidence: &[Evidence], right: &[bool], weight: &[f64]) -> Result<Self, TrainError> {
        let rows: Vec<Row> = evidence
            .iter()
            .map(|e| Row {
                dense: e.features(),
                sparse: Vec::new(),
            })
            .collect();
        let y: Vec<usize> = right.iter().map(|&r| r as usize).collect();
        if !y.contains(&0) || !y.contains(&1) {
            // All right (or all wrong): nothing to scale; keep p1 as it is.
            return Ok(Self {
                fitted_on: evidence.len(),
                ..Self::identity()
            });
        }
        // Weak regularisation: three features, thousands of rows.
        let m = Softmax::fit(
            &rows,
            &y,
            weight,
            2,
            0,
            FitOptions {
                c: 100.0,
                max_iterations: 200,
            },
        )?;
        // Two-class softmax → one logistic: w = w1 - w0.
        let w = |d: usize| m.dense_weights[3 + d] - m.dense_weights[d];
        Ok(Self {
            weights: [w(0), w(1), w(2)],
            bias: m.bias[1] - m.bias[0],
            fitted_on: evidence.len(),
        })
    }

    /// P(the top label is right).
    pub fn confidence(&self, e: &Evidence) -> f32 {
        let f = e.features();
        let z: f32 = self.weights.iter().zip(&f).map(|(w, x)| w * x).sum::<f32>() + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Predictions whose true chance of being right is known: it rises with
    /// `nearest` and ignores the (over-confident) probability entirely.
    #[test]
    fn calibration_recovers_a_known_chance_of_being_right() {
        let mut s = 7u64;
        let mut rand = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        let truth = |near: f32| 1.0 / (1.0 + (-(8.0 * near - 4.0)).exp());
        let (mut ev, mut ok) = (Vec::new(), Vec::new());
        for _ in 0..6000 {
            let near = rand() as f32;
            ev.push(Evidence {
                p1: 0.97,
                p2: 0.02,
                nearest: near,
            });
            ok.push(rand() < truth(near) as f64);
        }
        let c = Calibrator::fit(&ev, &ok, &vec![1.0; ev.len()]).unwrap();
        for near in [0.1f32, 0.3, 0.5, 0.7, 0.9] {
            let got = c.confidence(&Evidence {
                p1: 0.97,
                p2: 0.02,
                nearest: near,
            });
            assert!(
                (got - truth(near)).abs() < 0.05,
                "near {near}: {got} vs {}",
                truth(near)
            );
        }
        // Expected calibration error on the fitted data is small; raw p1 is not.
        let conf: Vec<f32> = ev.iter().map(|e| c.confidence(e)).collect();
        let raw: Vec<f32> = ev.iter().map(|e| e.p1).collect();
        assert!(crate::selective::ece(&conf, &ok, 10) < 0.02);
        assert!(crate::selective::ece(&raw, &ok, 10) > 0.3);
    }

    #[test]
    fn all_right_keeps_the_probability() {
        let ev = [Evidence {
            p1: 0.8,
            p2: 0.1,
            nearest: 0.9,
        }];
        let c = Calibrator::fit(&ev, &[true], &[1.0]).unwrap();
        assert!((c.confidence(&ev[0]) - 0.8).abs() < 1e-5);
    }
}
