//! What a classifier says about one vector, and the model stage's rule for
//! acting on it: [`Prediction`] (the top two labels and, when the classifier
//! doubts itself, why), and [`decide`], which adds the confidence threshold.
//!
//! A classifier that knows more than its probabilities (a calibrated model
//! that measures how far a line is from its training data) overrides
//! [`crate::Classifier::predict`] and sets [`Prediction::unsure`]; the
//! cascade routes every unsure prediction to the LLM (or out Unclassified)
//! with the reason in `detail`, whichever classifier made it.

use std::fmt;

/// One classifier verdict: the most probable label, the runner-up, and
/// whether the classifier is unsure (and why).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// Index of the most probable label (into `Classifier::labels()`).
    pub label: usize,
    /// Its probability, 0–1.
    pub probability: f32,
    /// The second most probable label and its probability, when there is one.
    pub runner_up: Option<(usize, f32)>,
    /// Set when the label should not be taken; the row goes on to the LLM.
    pub unsure: Option<Unsure>,
}

/// Why a prediction is not to be taken.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Unsure {
    /// The top probability is below the model stage's threshold.
    LowProbability { threshold: f32 },
    /// The line is far from everything the classifier knows: its best
    /// similarity to the training data (or label descriptions) is below the
    /// classifier's own floor.
    Unfamiliar { similarity: f32, min_similarity: f32 },
}

impl Prediction {
    /// The top-2 ranking of a probability vector; never unsure. Ties go to
    /// the lower index. `p` must not be empty.
    pub fn rank(p: &[f32]) -> Self {
        assert!(!p.is_empty(), "a classifier has at least one label");
        let mut top = 0;
        let mut second: Option<usize> = None;
        for i in 1..p.len() {
            if p[i] > p[top] {
                second = Some(top);
                top = i;
            } else if second.is_none_or(|s| p[i] > p[s]) {
                second = Some(i);
            }
        }
        Self {
            label: top,
            probability: p[top],
            runner_up: second.map(|s| (s, p[s])),
            unsure: None,
        }
    }

    /// Unsure below `threshold`, unless already unsure for another reason
    /// (the classifier's own reason is the more telling one).
    pub fn at_threshold(mut self, threshold: f32) -> Self {
        if self.unsure.is_none() && self.probability < threshold {
            self.unsure = Some(Unsure::LowProbability { threshold });
        }
        self
    }

    /// The explanation the output's `detail` column carries, with label
    /// names from `labels`: `model p=0.971; runner-up Error 0.013`, or
    /// `model unsure: Error p=0.412 < threshold 0.50; runner-up …`.
    pub fn describe<'a>(&'a self, labels: &'a [String]) -> Describe<'a> {
        Describe { p: self, labels }
    }
}

/// [`Prediction::describe`]'s text, written without intermediate strings.
pub struct Describe<'a> {
    p: &'a Prediction,
    labels: &'a [String],
}

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, labels) = (self.p, self.labels);
        let name = |i: usize| labels.get(i).map(String::as_str).unwrap_or("?");
        match p.unsure {
            None => write!(f, "model p={:.3}", p.probability)?,
            Some(Unsure::LowProbability { threshold }) => write!(
                f,
                "model unsure: {} p={:.3} < threshold {threshold:.2}",
                name(p.label),
                p.probability
            )?,
            Some(Unsure::Unfamiliar {
                similarity,
                min_similarity,
            }) => write!(
                f,
                "model unsure: unfamiliar line (similarity {similarity:.3} < {min_similarity:.2}); {} p={:.3}",
                name(p.label),
                p.probability
            )?,
        }
        if let Some((s, ps)) = p.runner_up {
            write!(f, "; runner-up {} {ps:.3}", name(s))?;
        }
        Ok(())
    }
}

/// The model stage's decision on one vector: the classifier's prediction,
/// unsure below `threshold`.
pub fn decide(classifier: &dyn crate::Classifier, x: crate::Input<'_>, threshold: f32) -> Prediction {
    classifier.predict(x).at_threshold(threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["Error", "HTTP Status", "Security Alert"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn rank_finds_the_top_two_in_any_order() {
        for (p, top, second) in [
            (vec![0.1, 0.7, 0.2], 1, 2),
            (vec![0.7, 0.1, 0.2], 0, 2),
            (vec![0.2, 0.1, 0.7], 2, 0),
            (vec![0.3, 0.3, 0.4], 2, 0),
        ] {
            let r = Prediction::rank(&p);
            assert_eq!((r.label, r.runner_up.unwrap().0), (top, second), "{p:?}");
            assert_eq!(r.probability, p[top]);
        }
        let one = Prediction::rank(&[1.0]);
        assert_eq!((one.label, one.runner_up), (0, None));
    }

    #[test]
    fn details_read_as_before() {
        let p = Prediction::rank(&[0.013, 0.0, 0.971]);
        assert_eq!(
            p.at_threshold(0.5).describe(&labels()).to_string(),
            "model p=0.971; runner-up Error 0.013"
        );
        let p = Prediction::rank(&[0.412, 0.3, 0.288]).at_threshold(0.5);
        assert_eq!(p.unsure, Some(Unsure::LowProbability { threshold: 0.5 }));
        assert_eq!(
            p.describe(&labels()).to_string(),
            "model unsure: Error p=0.412 < threshold 0.50; runner-up HTTP Status 0.300"
        );
    }

    #[test]
    fn a_classifiers_own_doubt_survives_the_threshold() {
        let mut p = Prediction::rank(&[0.9, 0.1]);
        p.unsure = Some(Unsure::Unfamiliar {
            similarity: 0.31,
            min_similarity: 0.5,
        });
        let p = p.at_threshold(0.5);
        assert!(matches!(p.unsure, Some(Unsure::Unfamiliar { .. })));
        assert_eq!(
            p.describe(&labels()).to_string(),
            "model unsure: unfamiliar line (similarity 0.310 < 0.50); Error p=0.900; runner-up HTTP Status 0.100"
        );
    }
}
