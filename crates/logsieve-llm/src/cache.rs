//! Owns the answer cache: a bounded LRU keyed by (source, trimmed message)
//! whose entries are once-cells, so concurrent identical requests share one
//! call (single-flight) and later ones reuse the answer.
//!
//! Only model answers are stored. A failed call leaves its cell empty; the
//! next caller waiting on it (or arriving later) makes its own attempt, so a
//! transient outage is never remembered as an answer.

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;
use tokio::sync::OnceCell;

/// The cache key: which source logged which (trimmed) line.
pub type CacheKey = (String, String);

pub struct AnswerCache<V> {
    /// `None` when the capacity is 0 (cache off).
    cells: Option<Mutex<LruCache<CacheKey, Arc<OnceCell<V>>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl<V: Clone> AnswerCache<V> {
    pub fn new(capacity: usize) -> Self {
        AnswerCache {
            cells: NonZeroUsize::new(capacity).map(|c| Mutex::new(LruCache::new(c))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached answer for `key`, or the one `compute` gives, stored when
    /// it is `Ok`. A request that finds the answer there, or joins a call
    /// already in flight for the same key, counts as a hit.
    pub async fn get_or_compute<E, F, Fut>(&self, key: CacheKey, compute: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let Some(cells) = &self.cells else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return compute().await;
        };
        let cell = {
            let mut lru = cells.lock().unwrap_or_else(|e| e.into_inner());
            lru.get_or_insert(key, || Arc::new(OnceCell::new())).clone()
        };
        let mut computed = false;
        let result = cell
            .get_or_try_init(|| {
                computed = true;
                compute()
            })
            .await
            .cloned();
        let counter = if computed { &self.misses } else { &self.hits };
        counter.fetch_add(1, Ordering::Relaxed);
        result
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn key(s: &str) -> CacheKey {
        ("src".into(), s.into())
    }

    #[tokio::test]
    async fn stores_answers_not_failures_and_evicts_least_recent() {
        let cache = AnswerCache::<u32>::new(2);
        let calls = AtomicUsize::new(0);
        let ask = |k: &'static str, ok: bool| {
            let calls = &calls;
            let cache = &cache;
            async move {
                cache
                    .get_or_compute(key(k), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if ok {
                            Ok(7)
                        } else {
                            Err("down")
                        }
                    })
                    .await
            }
        };
        assert_eq!(ask("a", false).await, Err("down"));
        assert_eq!(ask("a", true).await, Ok(7), "a failure is not cached");
        assert_eq!(ask("a", true).await, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        ask("b", true).await.unwrap();
        ask("c", true).await.unwrap(); // evicts "a"
        ask("a", true).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!((cache.hits(), cache.misses()), (1, 5));
    }

    #[tokio::test]
    async fn concurrent_identical_requests_share_one_call() {
        let cache = Arc::new(AnswerCache::<u32>::new(10));
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, calls, gate) = (cache.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_compute(key("same"), || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        gate.notified().await;
                        Ok::<_, ()>(1)
                    })
                    .await
            }));
        }
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        gate.notify_one();
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!((cache.hits(), cache.misses()), (7, 1));
    }

    #[tokio::test]
    async fn capacity_zero_is_off() {
        let cache = AnswerCache::<u32>::new(0);
        cache
            .get_or_compute(key("a"), || async { Ok::<_, ()>(1) })
            .await
            .unwrap();
        cache
            .get_or_compute(key("a"), || async { Ok::<_, ()>(1) })
            .await
            .unwrap();
        assert_eq!((cache.hits(), cache.misses()), (0, 2));
    }
}
