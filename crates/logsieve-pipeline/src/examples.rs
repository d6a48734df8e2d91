//! Few-shot examples for the LLM stage: the training rows nearest a line.
//!
//! `logsieve train` keeps a few distinct templates per label in the
//! artifact (LLM-only labels such as `Workflow Error` included). The bank is
//! embedded once, on the first LLM request that needs it, in the same
//! representation the encoder sees for the line (masked or raw); a line's
//! examples are the bank rows with the highest cosine similarity.

use std::sync::OnceLock;

use logsieve_linear::artifact::Example;

pub struct ExampleBank {
    examples: Vec<Example>,
    /// Unit vectors, one per example; `Err` when the encoder failed.
    vectors: OnceLock<Result<Vec<Vec<f32>>, String>>,
}

impl ExampleBank {
    pub fn new(examples: Vec<Example>) -> Self {
        Self {
            examples,
            vectors: OnceLock::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.examples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    pub fn examples(&self) -> &[Example] {
        &self.examples
    }

    /// The bank's vectors, made by `embed` on first use.
    pub fn vectors(
        &self,
        embed: impl FnOnce(&[Example]) -> Result<Vec<Vec<f32>>, String>,
    ) -> Result<&[Vec<f32>], String> {
        self.vectors
            .get_or_init(|| embed(&self.examples))
            .as_ref()
            .map(|v| v.as_slice())
            .map_err(Clone::clone)
    }

    /// Up to `k` examples near `query` as `(message, label)`, one label at
    /// most once until every label is shown (each part nearest first): the nearest row of
    /// each of the `k` labels whose nearest row is closest, then the next
    /// nearest rows. With a bank of real systems' templates, the plain `k`
    /// nearest rows were often one label's near-duplicates, and the prompt
    /// showed the LLM no row of the line's own label (a deprecation line got
    /// Critical Error, two Workflow Error, Resource Usage, System
    /// Notification); `vectors` are the bank's (unit length). Rows less
    /// similar to `query` than `min_similarity` (cosine) are never shown.
    pub fn nearest(
        &self,
        vectors: &[Vec<f32>],
        query: &[f32],
        k: usize,
        min_similarity: f32,
    ) -> Vec<(String, String)> {
        let mut scored: Vec<(f32, usize)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        let best = scored.iter().map(|s| s.0).fold(f32::NEG_INFINITY, f32::max);
        tracing::debug!(target: "logsieve_examples", best, min_similarity, "nearest example");
        scored.retain(|&(score, _)| score >= min_similarity);
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut seen = std::collections::HashSet::new();
        let (mut first, mut rest): (Vec<_>, Vec<_>) = scored
            .into_iter()
            .partition(|&(_, i)| seen.insert(self.examples[i].label.as_str()));
        first.truncate(k);
        let fill = k.saturating_sub(first.len());
        rest.truncate(fill);
        // Label-first rows, nearest first, then the others: a caller that
        // keeps a prefix keeps the diversity.
        first.extend(rest);
        first
            .into_iter()
            .map(|(_, i)| (self.examples[i].message.clone(), self.examples[i].label.clone()))
            .collect()
    }
}

impl ExampleBank {
    /// The `k` rows most similar to `query` as `(message, label,
    /// similarity)`, most similar first (plain order, for explanations).
    pub fn nearest_scored(
        &self,
        vectors: &[Vec<f32>],
        query: &[f32],
        k: usize,
    ) -> Vec<(String, String, f32)> {
        let mut scored: Vec<(f32, usize)> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        scored
            .into_iter()
            .take(k)
            .map(|(s, i)| {
                (
                    self.examples[i].message.clone(),
                    self.examples[i].label.clone(),
                    s,
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(message: &str, label: &str) -> Example {
        Example {
            source: "s".into(),
            message: message.into(),
            label: label.into(),
        }
    }

    #[test]
    fn nearest_examples_come_first_and_k_bounds_them() {
        let bank = ExampleBank::new(vec![ex("a", "A"), ex("b", "B"), ex("c", "C")]);
        let v = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let got = bank.nearest(&v, &[0.0, 1.0], 2, -1.0);
        assert_eq!(got, vec![("b".into(), "B".into()), ("c".into(), "C".into())]);
        assert_eq!(bank.nearest(&v, &[1.0, 0.0], 9, -1.0).len(), 3);
        assert!(bank.nearest(&v, &[1.0, 0.0], 0, -1.0).is_empty());
        assert!(
            bank.nearest(&v, &[1.0, 0.0], 9, 2.0).is_empty(),
            "none similar enough"
        );
    }

    #[test]
    fn scored_neighbours_come_most_similar_first_with_their_similarity() {
        let bank = ExampleBank::new(vec![ex("a", "A"), ex("b", "B"), ex("c", "C")]);
        let v = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.6, 0.8]];
        let got = bank.nearest_scored(&v, &[0.0, 1.0], 2);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("b", "B"));
        assert!((got[0].2 - 1.0).abs() < 1e-6);
        assert_eq!(got[1].1, "C");
        assert!((got[1].2 - 0.8).abs() < 1e-6);
    }

    #[test]
    fn each_label_is_shown_once_before_any_label_twice() {
        let bank = ExampleBank::new(vec![ex("a1", "A"), ex("a2", "A"), ex("b", "B"), ex("a3", "A")]);
        let v = vec![vec![1.0, 0.0], vec![0.99, 0.14], vec![0.0, 1.0], vec![0.98, 0.2]];
        let labels = |k| {
            bank.nearest(&v, &[1.0, 0.0], k, -1.0)
                .into_iter()
                .map(|e| e.1)
                .collect::<Vec<_>>()
        };
        // B is far, but it comes before A's second row.
        assert_eq!(labels(2), ["A", "B"]);
        assert_eq!(labels(3), ["A", "B", "A"]);
        assert_eq!(labels(9).len(), 4);
    }

    #[test]
    fn the_bank_is_embedded_once_and_a_failure_is_reported() {
        let bank = ExampleBank::new(vec![ex("a", "A")]);
        let mut calls = 0;
        bank.vectors(|e| {
            calls += 1;
            Ok(vec![vec![1.0]; e.len()])
        })
        .unwrap();
        bank.vectors(|_| {
            calls += 1;
            Ok(vec![])
        })
        .unwrap();
        assert_eq!(calls, 1);
        let failing = ExampleBank::new(vec![ex("a", "A")]);
        assert_eq!(
            failing.vectors(|_| Err("no encoder".into())).unwrap_err(),
            "no encoder"
        );
    }
}
