//! The template cache: (source, masked text) → what the cascade concluded
//! for that key, so a repeated template costs one lookup. Bounded (LRU);
//! foldhash, because keys are whole log lines and SipHash costs about a
//! nanosecond a byte.

use std::num::NonZeroUsize;
use std::sync::{Mutex, MutexGuard};

use lru::LruCache;

use crate::decision::Decision;

/// The note a decision served from the template cache carries.
pub(crate) const CACHE_HIT_NOTE: &str = "template cache hit";

/// What the cache holds for a key.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A decision the model or the LLM reached, with the cache-hit note.
    Decided(Decision),
    /// The model was unsure of this key: the note it left. Later rows with
    /// the key skip the encoder and go straight to the LLM.
    Unsure(String),
}

/// The answer to a lookup.
pub(crate) enum Lookup {
    Decided(Decision),
    Unsure(String),
    Miss,
    /// The cache is switched off.
    Off,
}

type Lru = LruCache<String, Entry, foldhash::fast::RandomState>;

pub(crate) struct TemplateCache(Mutex<Option<Lru>>);

/// The cache, locked for a batch.
pub(crate) struct Locked<'a>(MutexGuard<'a, Option<Lru>>);

impl TemplateCache {
    /// A cache of `capacity` keys; 0 turns it off.
    pub(crate) fn new(capacity: usize) -> Self {
        Self(Mutex::new(NonZeroUsize::new(capacity).map(|n| {
            LruCache::with_hasher(n, foldhash::fast::RandomState::default())
        })))
    }

    /// Lock once per batch, not per row.
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Locked<'_> {
    pub(crate) fn lookup(&mut self, key: &str) -> Lookup {
        match self.0.as_mut() {
            None => Lookup::Off,
            Some(c) => match c.get(key) {
                None => Lookup::Miss,
                Some(Entry::Unsure(note)) => Lookup::Unsure(note.clone()),
                Some(Entry::Decided(d)) => Lookup::Decided(d.clone()),
            },
        }
    }

    /// Remember a decision for `key`; every later hit carries the cache-hit note.
    pub(crate) fn decided(&mut self, key: String, d: &Decision) {
        if let Some(c) = self.0.as_mut() {
            c.put(key, Entry::Decided(d.clone().with_note(CACHE_HIT_NOTE)));
        }
    }

    /// Remember that the model was unsure of `key`, and what it said.
    pub(crate) fn unsure(&mut self, key: String, note: &str) {
        if let Some(c) = self.0.as_mut() {
            c.put(key, Entry::Unsure(note.to_string()));
        }
    }
}

/// The cache key of a row: its source and its masked text, into `key`
/// (reused across rows, so a hit allocates nothing but its decision).
pub(crate) fn key_into(key: &mut String, source: &str, masked: &str) {
    key.clear();
    key.push_str(source);
    key.push('\u{1f}');
    key.push_str(masked);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_what_they_are() {
        let c = TemplateCache::new(2);
        let mut l = c.lock();
        assert!(matches!(l.lookup("a"), Lookup::Miss));
        l.decided("a".into(), &Decision::none("x"));
        l.unsure("b".into(), "model unsure: …");
        match l.lookup("a") {
            Lookup::Decided(d) => assert_eq!(d.detail, "template cache hit; x"),
            _ => panic!("a decided key"),
        }
        assert!(matches!(l.lookup("b"), Lookup::Unsure(n) if n == "model unsure: …"));
        // Capacity 2: a third key evicts the least recently used.
        l.decided("c".into(), &Decision::none("y"));
        assert!(matches!(l.lookup("a"), Lookup::Miss));
    }

    #[test]
    fn capacity_zero_is_off() {
        let c = TemplateCache::new(0);
        let mut l = c.lock();
        l.decided("a".into(), &Decision::none("x"));
        assert!(matches!(l.lookup("a"), Lookup::Off));
    }
}
