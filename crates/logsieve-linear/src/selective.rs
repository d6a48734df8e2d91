//! Metrics of a classifier that may abstain: accuracy at full coverage,
//! selective accuracy and coverage at a threshold, the area under the
//! risk-coverage curve (AURC), and expected calibration error (ECE).

use serde::{Deserialize, Serialize};

/// Expected calibration error over `bins` equal-width confidence bins.
pub fn ece(conf: &[f32], right: &[bool], bins: usize) -> f64 {
    let n = conf.len();
    if n == 0 {
        return 0.0;
    }
    let mut sum_c = vec![0f64; bins];
    let mut sum_r = vec![0f64; bins];
    let mut cnt = vec![0usize; bins];
    for (&c, &r) in conf.iter().zip(right) {
        let b = ((c as f64 * bins as f64) as usize).min(bins - 1);
        sum_c[b] += c as f64;
        sum_r[b] += r as u8 as f64;
        cnt[b] += 1;
    }
    (0..bins)
        .filter(|&b| cnt[b] > 0)
        .map(|b| (sum_r[b] - sum_c[b]).abs() / n as f64)
        .sum()
}

/// Mean risk (error rate) over every coverage level, most confident first.
pub fn aurc(conf: &[f32], right: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..conf.len()).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
    let mut wrong = 0usize;
    let mut sum = 0f64;
    for (k, &i) in order.iter().enumerate() {
        wrong += !right[i] as usize;
        sum += wrong as f64 / (k + 1) as f64;
    }
    if conf.is_empty() {
        0.0
    } else {
        sum / conf.len() as f64
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Selective {
    pub rows: usize,
    /// Accuracy when every row is answered.
    pub accuracy: f64,
    pub threshold: f32,
    /// Share of rows at or above the threshold.
    pub coverage: f64,
    /// Accuracy on those rows.
    pub selective_accuracy: f64,
    pub aurc: f64,
    pub ece: f64,
}

impl Selective {
    pub fn new(conf: &[f32], right: &[bool], threshold: f32) -> Self {
        let covered: Vec<bool> = conf.iter().map(|c| *c >= threshold).collect();
        Self::with_coverage(conf, right, threshold, &covered)
    }

    /// As [`Selective::new`], with the answered rows given (a classifier may
    /// abstain above the threshold, e.g. on an unfamiliar line).
    pub fn with_coverage(conf: &[f32], right: &[bool], threshold: f32, covered: &[bool]) -> Self {
        let n = conf.len().max(1) as f64;
        let kept: Vec<bool> = right
            .iter()
            .zip(covered)
            .filter(|(_, c)| **c)
            .map(|(r, _)| *r)
            .collect();
        Self {
            rows: conf.len(),
            accuracy: right.iter().filter(|r| **r).count() as f64 / n,
            threshold,
            coverage: kept.len() as f64 / n,
            selective_accuracy: if kept.is_empty() {
                0.0
            } else {
                kept.iter().filter(|r| **r).count() as f64 / kept.len() as f64
            },
            aurc: aurc(conf, right),
            ece: ece(conf, right, 10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_on_a_small_known_case() {
        let conf = [0.9, 0.8, 0.6, 0.3];
        let right = [true, true, false, true];
        let s = Selective::new(&conf, &right, 0.5);
        assert_eq!(s.accuracy, 0.75);
        assert_eq!(s.coverage, 0.75);
        assert!((s.selective_accuracy - 2.0 / 3.0).abs() < 1e-12);
        // risks at k=1..4: 0, 0, 1/3, 1/4.
        assert!((s.aurc - (1.0 / 3.0 + 0.25) / 4.0).abs() < 1e-12);
        // bins: 0.9 (right), 0.8 (right), 0.6 (wrong), 0.3 (right).
        let e = (0.1 + 0.2 + 0.6 + 0.7) / 4.0;
        assert!((s.ece - e).abs() < 1e-6, "{} vs {e}", s.ece);
    }
}
