//! The cascade's counters: atomics bumped on the hot path ([`Stats`]) and
//! the typed snapshot everything else reads ([`StatsSnapshot`]: `classify
//! --stats`, `bench`, the server's `/metrics`), serialised as one named
//! event rather than assembled from string keys.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::decision::Method;

/// Live counters; cheap to bump from any thread.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    rows: AtomicU64,
    by_rule: AtomicU64,
    by_model: AtomicU64,
    by_llm: AtomicU64,
    by_feedback: AtomicU64,
    by_none: AtomicU64,
    encoded: AtomicU64,
    encoded_tokens: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
}

fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

impl Stats {
    /// One row finished, decided by `m`.
    pub(crate) fn count(&self, m: Method) {
        add(&self.rows, 1);
        add(
            match m {
                Method::Rule => &self.by_rule,
                Method::Model => &self.by_model,
                Method::Llm => &self.by_llm,
                Method::Feedback => &self.by_feedback,
                Method::None => &self.by_none,
            },
            1,
        );
    }

    /// `texts` distinct texts with `tokens` tokens went through the encoder.
    pub(crate) fn encoded(&self, texts: u64, tokens: u64) {
        add(&self.encoded, texts);
        add(&self.encoded_tokens, tokens);
    }

    pub(crate) fn cache_hit(&self) {
        add(&self.cache_hits, 1);
    }

    pub(crate) fn cache_miss(&self) {
        add(&self.cache_misses, 1);
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            rows: g(&self.rows),
            by_method: MethodCounts {
                rule: g(&self.by_rule),
                model: g(&self.by_model),
                llm: g(&self.by_llm),
                feedback: g(&self.by_feedback),
                none: g(&self.by_none),
            },
            encoded_texts: g(&self.encoded),
            encoded_tokens: g(&self.encoded_tokens),
            template_cache: CacheCounts {
                hits: g(&self.cache_hits),
                misses: g(&self.cache_misses),
            },
        }
    }
}

/// What a pipeline has done since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Rows finished.
    pub rows: u64,
    /// Those rows by the method that decided them.
    pub by_method: MethodCounts,
    /// Distinct texts that went through the encoder.
    pub encoded_texts: u64,
    /// Tokens those texts had.
    pub encoded_tokens: u64,
    /// Rows decided from the template cache, and rows that missed it.
    pub template_cache: CacheCounts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MethodCounts {
    pub rule: u64,
    pub model: u64,
    pub llm: u64,
    /// Decided by a person's correction of the template.
    pub feedback: u64,
    pub none: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheCounts {
    pub hits: u64,
    pub misses: u64,
}

impl StatsSnapshot {
    /// What happened between `earlier` and this snapshot (one pass of a replay).
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        StatsSnapshot {
            rows: d(self.rows, earlier.rows),
            by_method: MethodCounts {
                rule: d(self.by_method.rule, earlier.by_method.rule),
                model: d(self.by_method.model, earlier.by_method.model),
                llm: d(self.by_method.llm, earlier.by_method.llm),
                feedback: d(self.by_method.feedback, earlier.by_method.feedback),
                none: d(self.by_method.none, earlier.by_method.none),
            },
            encoded_texts: d(self.encoded_texts, earlier.encoded_texts),
            encoded_tokens: d(self.encoded_tokens, earlier.encoded_tokens),
            template_cache: CacheCounts {
                hits: d(self.template_cache.hits, earlier.template_cache.hits),
                misses: d(self.template_cache.misses, earlier.template_cache.misses),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_serialises_in_the_documented_shape() {
        let s = Stats::default();
        s.count(Method::Rule);
        s.count(Method::None);
        s.encoded(2, 30);
        s.cache_hit();
        let j = serde_json::to_value(s.snapshot()).unwrap();
        assert_eq!(
            j,
            serde_json::json!({
                "rows": 2,
                "by_method": {"rule": 1, "model": 0, "llm": 0, "feedback": 0, "none": 1},
                "encoded_texts": 2,
                "encoded_tokens": 30,
                "template_cache": {"hits": 1, "misses": 0},
            })
        );
        let later = {
            s.cache_hit();
            s.snapshot()
        };
        assert_eq!(later.since(&j_back(&j)).template_cache.hits, 1);
    }

    fn j_back(j: &serde_json::Value) -> StatsSnapshot {
        StatsSnapshot {
            rows: j["rows"].as_u64().unwrap(),
            template_cache: CacheCounts {
                hits: j["template_cache"]["hits"].as_u64().unwrap(),
                misses: 0,
            },
            ..Default::default()
        }
    }
}
