//! Weighted multinomial logistic regression over a dense vector and sparse
//! word features, fitted with L-BFGS (argmin).
//!
//! linfa-logistic (the seed model's trainer) takes neither sample weights
//! nor sparse rows. Weights are what lets training count each distinct
//! template once instead of once per line, and the word features are
//! thousands of mostly-zero columns. The objective is scikit-learn's
//! `LogisticRegression(C)`: `C · Σ wᵢ · CE(xᵢ, yᵢ) + ½‖W‖²`, intercepts
//! unpenalised.

use std::sync::Mutex;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use ndarray::Array1;
use serde::{Deserialize, Serialize};

use crate::lexical::Sparse;
use crate::TrainError;

/// One training or prediction row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    pub dense: Vec<f32>,
    pub sparse: Sparse,
    /// Fixed per-class scores added to the logits (a prior the fit does not
    /// learn, only adjusts to); empty: none.
    pub offset: Vec<f32>,
}

/// Fitted weights: per class, `dense` then `sparse` weights and a bias.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Softmax {
    pub classes: usize,
    pub dense_dim: usize,
    pub sparse_dim: usize,
    /// `classes × dense_dim`, row-major.
    pub dense_weights: Vec<f32>,
    /// `classes × sparse_dim`, row-major.
    pub sparse_weights: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone, Copy)]
pub struct FitOptions {
    /// Inverse regularisation strength (scikit-learn's `C`).
    pub c: f64,
    pub max_iterations: u64,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self {
            c: 10.0,
            max_iterations: 500,
        }
    }
}

impl Softmax {
    fn width(&self) -> usize {
        self.dense_dim + self.sparse_dim + 1
    }

    /// Class scores before the softmax, of a row given as its parts (no copy
    /// of the vector on the prediction path).
    pub fn logits(&self, dense: &[f32], sparse: &[(u32, f32)]) -> Vec<f32> {
        (0..self.classes)
            .map(|k| {
                let dw = &self.dense_weights[k * self.dense_dim..(k + 1) * self.dense_dim];
                let sw = &self.sparse_weights[k * self.sparse_dim..(k + 1) * self.sparse_dim];
                let d: f32 = dw.iter().zip(dense).map(|(a, b)| a * b).sum();
                let s: f32 = sparse
                    .iter()
                    .filter(|e| (e.0 as usize) < self.sparse_dim)
                    .map(|e| sw[e.0 as usize] * e.1)
                    .sum();
                d + s + self.bias[k]
            })
            .collect()
    }

    pub fn predict_proba(&self, row: &Row) -> Vec<f32> {
        self.proba_with(&row.dense, &row.sparse, &row.offset)
    }

    pub fn proba(&self, dense: &[f32], sparse: &[(u32, f32)]) -> Vec<f32> {
        self.proba_with(dense, sparse, &[])
    }

    /// [`Softmax::proba`] with fixed per-class scores added to the logits
    /// (`offset` empty: none).
    pub fn proba_with(&self, dense: &[f32], sparse: &[(u32, f32)], offset: &[f32]) -> Vec<f32> {
        let mut z = self.logits(dense, sparse);
        for (z, o) in z.iter_mut().zip(offset) {
            *z += o;
        }
        softmax(&z)
    }

    /// Fit on rows with class indices `y` (< `classes`) and weights `w`.
    pub fn fit(
        rows: &[Row],
        y: &[usize],
        w: &[f64],
        classes: usize,
        sparse_dim: usize,
        opts: FitOptions,
    ) -> Result<Self, TrainError> {
        if rows.is_empty() {
            return Err(TrainError::Empty);
        }
        let dense_dim = rows[0].dense.len();
        if let Some((row, r)) = rows.iter().enumerate().find(|(_, r)| r.dense.len() != dense_dim) {
            return Err(TrainError::Dim {
                row,
                got: r.dense.len(),
                expected: dense_dim,
            });
        }
        let mut model = Self {
            classes,
            dense_dim,
            sparse_dim,
            dense_weights: vec![0.0; classes * dense_dim],
            sparse_weights: vec![0.0; classes * sparse_dim],
            bias: vec![0.0; classes],
        };
        let problem = Problem {
            rows,
            y,
            w,
            classes,
            dense_dim,
            sparse_dim,
            c: opts.c,
            last: Mutex::new(None),
        };
        let init = Array1::<f64>::zeros(classes * model.width());
        let solver = LBFGS::new(MoreThuenteLineSearch::new(), 10)
            .with_tolerance_grad(1e-5)
            .map_err(|e| TrainError::Fit(e.to_string()))?
            .with_tolerance_cost(1e-9)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let res = Executor::new(problem, solver)
            .configure(|s| s.param(init).max_iters(opts.max_iterations))
            .run()
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        let p = res
            .state()
            .get_best_param()
            .ok_or_else(|| TrainError::Fit("no parameters".into()))?;
        let width = model.width();
        for k in 0..classes {
            let base = k * width;
            for d in 0..dense_dim {
                model.dense_weights[k * dense_dim + d] = p[base + d] as f32;
            }
            for s in 0..sparse_dim {
                model.sparse_weights[k * sparse_dim + s] = p[base + dense_dim + s] as f32;
            }
            model.bias[k] = p[base + width - 1] as f32;
        }
        Ok(model)
    }
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

struct Problem<'a> {
    rows: &'a [Row],
    y: &'a [usize],
    w: &'a [f64],
    classes: usize,
    dense_dim: usize,
    sparse_dim: usize,
    c: f64,
    /// argmin asks for the cost and the gradient at one point separately;
    /// both come from one pass, so the last pass is kept.
    last: Mutex<Option<Evaluated>>,
}

/// A point, the cost there and the gradient there.
type Evaluated = (Array1<f64>, f64, Array1<f64>);

impl Problem<'_> {
    fn width(&self) -> usize {
        self.dense_dim + self.sparse_dim + 1
    }

    fn eval(&self, p: &Array1<f64>) -> (f64, Array1<f64>) {
        if let Some((q, f, g)) = self.last.lock().expect("not poisoned").as_ref() {
            if q == p {
                return (*f, g.clone());
            }
        }
        let (k, width, dd) = (self.classes, self.width(), self.dense_dim);
        let p = p.as_slice().expect("contiguous");
        let mut grad = vec![0f64; p.len()];
        let mut loss = 0f64;
        let mut z = vec![0f64; k];
        for (i, row) in self.rows.iter().enumerate() {
            for (c, zc) in z.iter_mut().enumerate() {
                let base = c * width;
                let mut s = p[base + width - 1];
                for (d, x) in row.dense.iter().enumerate() {
                    s += p[base + d] * *x as f64;
                }
                for &(j, x) in &row.sparse {
                    s += p[base + dd + j as usize] * x as f64;
                }
                if let Some(o) = row.offset.get(c) {
                    s += *o as f64;
                }
                *zc = s;
            }
            let max = z.iter().copied().fold(f64::MIN, f64::max);
            let sum: f64 = z.iter().map(|v| (v - max).exp()).sum();
            let lse = max + sum.ln();
            let wi = self.w[i] * self.c;
            loss += wi * (lse - z[self.y[i]]);
            for (c, &zc) in z.iter().enumerate() {
                let g = wi * ((zc - lse).exp() - if c == self.y[i] { 1.0 } else { 0.0 });
                if g == 0.0 {
                    continue;
                }
                let base = c * width;
                for (d, x) in row.dense.iter().enumerate() {
                    grad[base + d] += g * *x as f64;
                }
                for &(j, x) in &row.sparse {
                    grad[base + dd + j as usize] += g * x as f64;
                }
                grad[base + width - 1] += g;
            }
        }
        // ½‖W‖², intercepts excluded.
        for c in 0..k {
            let base = c * width;
            for j in 0..width - 1 {
                loss += 0.5 * p[base + j] * p[base + j];
                grad[base + j] += p[base + j];
            }
        }
        let g = Array1::from(grad);
        *self.last.lock().expect("not poisoned") = Some((Array1::from(p.to_vec()), loss, g.clone()));
        (loss, g)
    }
}

impl CostFunction for Problem<'_> {
    type Param = Array1<f64>;
    type Output = f64;
    fn cost(&self, p: &Self::Param) -> Result<f64, argmin::core::Error> {
        Ok(self.eval(p).0)
    }
}

impl Gradient for Problem<'_> {
    type Param = Array1<f64>;
    type Gradient = Array1<f64>;
    fn gradient(&self, p: &Self::Param) -> Result<Array1<f64>, argmin::core::Error> {
        Ok(self.eval(p).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(dense: &[f32], sparse: &[(u32, f32)]) -> Row {
        Row {
            dense: dense.to_vec(),
            sparse: sparse.to_vec(),
            offset: Vec::new(),
        }
    }

    #[test]
    fn separates_classes_from_dense_and_sparse_features() {
        // Class 0 and 1 differ in the dense part; class 2 only by a word.
        let rows = vec![
            row(&[1.0, 0.0], &[]),
            row(&[0.9, 0.1], &[]),
            row(&[0.0, 1.0], &[]),
            row(&[0.1, 0.9], &[]),
            row(&[0.5, 0.5], &[(3, 1.0)]),
            row(&[0.4, 0.6], &[(3, 1.0)]),
        ];
        let y = [0, 0, 1, 1, 2, 2];
        let m = Softmax::fit(
            &rows,
            &y,
            &[1.0; 6],
            3,
            5,
            FitOptions {
                c: 100.0,
                max_iterations: 300,
            },
        )
        .unwrap();
        for (r, &c) in rows.iter().zip(&y) {
            let p = m.predict_proba(r);
            let best = (0..3).max_by(|&a, &b| p[a].total_cmp(&p[b])).unwrap();
            assert_eq!(best, c, "{p:?}");
        }
        // A word beyond the fitted vocabulary is ignored, not a panic.
        m.predict_proba(&row(&[1.0, 0.0], &[(99, 1.0)]));
    }

    #[test]
    fn weights_count_like_repeated_rows() {
        let rows = vec![row(&[1.0], &[]), row(&[1.0], &[])];
        let opts = FitOptions {
            c: 1.0,
            max_iterations: 200,
        };
        // Class 0 weighted 3:1 against class 1 on the same point → p0 ≈ 0.75.
        let m = Softmax::fit(&rows, &[0, 1], &[3.0, 1.0], 2, 0, opts).unwrap();
        let rep = vec![row(&[1.0], &[]); 4];
        let m2 = Softmax::fit(&rep, &[0, 0, 0, 1], &[1.0; 4], 2, 0, opts).unwrap();
        let (p, p2) = (m.predict_proba(&rows[0]), m2.predict_proba(&rows[0]));
        assert!((p[0] - p2[0]).abs() < 1e-3, "{p:?} vs {p2:?}");
        assert!(p[0] > 0.6 && p[0] < 0.76, "{p:?}");
    }
}
