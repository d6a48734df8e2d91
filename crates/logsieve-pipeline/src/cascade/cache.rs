//! The template cache: (source, masked text) → what the cascade concluded
//! for that key, so a repeated template costs one lookup. Bounded (LRU);
//! foldhash, because keys are whole log lines and SipHash costs about a
//! nanosecond a byte.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::decision::Decision;

/// The note a decision served from the template cache carries.
pub(crate) const CACHE_HIT_NOTE: &str = "template cache hit";
/// The note a decision read back from the decision store carries.
pub(crate) const STORED_NOTE: &str = "template cache hit (stored decision)";

/// What the cache holds for a key.
#[derive(Debug, Clone)]
pub(crate) enum Entry {
    /// A decision the model, the LLM or a person reached, with the
    /// cache-hit note, and the lines that hit it since their count was
    /// last sent to the store.
    Decided { d: Decision, pending: u32 },
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

type Hasher = foldhash::fast::RandomState;
type Lru = LruCache<String, Entry, Hasher>;

struct State {
    lru: Option<Lru>,
    /// People's corrections: kept whatever the LRU evicts, consulted on a miss.
    pinned: HashMap<String, Decision, Hasher>,
    /// Whether a correction covers a line a rule decides (then rule-decided
    /// rows are looked up too; else they never pay for masking).
    pinned_over_rules: bool,
    /// Count hits for the decision store (only when there is one).
    track: bool,
    /// Keys hit since their counts were last taken.
    dirty: Vec<String>,
    /// Counts of entries evicted before they were taken.
    evicted: Vec<(String, u64)>,
}

impl State {
    /// Put `entry` in the LRU, keeping the count of an entry it evicts.
    fn insert(&mut self, key: String, entry: Entry) {
        let Some(c) = self.lru.as_mut() else { return };
        if let Some((k, Entry::Decided { pending, .. })) = c.push(key, entry) {
            if pending > 0 && self.track {
                self.evicted.push((k, pending as u64));
            }
        }
    }
}

pub(crate) struct TemplateCache(Mutex<State>);

/// The cache, locked for a batch.
pub(crate) struct Locked<'a>(MutexGuard<'a, State>);

impl TemplateCache {
    /// A cache of `capacity` keys; 0 turns it off (corrections still apply).
    /// `track`: count the lines that hit each decision, for the store.
    pub(crate) fn new(capacity: usize, track: bool) -> Self {
        Self(Mutex::new(State {
            lru: NonZeroUsize::new(capacity).map(|n| LruCache::with_hasher(n, Hasher::default())),
            pinned: HashMap::default(),
            pinned_over_rules: false,
            track,
            dirty: Vec::new(),
            evicted: Vec::new(),
        }))
    }

    /// Lock once per batch, not per row.
    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Locked<'_> {
    pub(crate) fn lookup(&mut self, key: &str) -> Lookup {
        let st = &mut *self.0;
        let Some(c) = st.lru.as_mut() else {
            return match st.pinned.get(key) {
                Some(d) => Lookup::Decided(d.clone()),
                None => Lookup::Off,
            };
        };
        match c.get_mut(key) {
            Some(Entry::Unsure(note)) => Lookup::Unsure(note.clone()),
            Some(Entry::Decided { d, pending }) => {
                if st.track {
                    *pending += 1;
                    if *pending == 1 {
                        st.dirty.push(key.to_string());
                    }
                }
                Lookup::Decided(d.clone())
            }
            None => match st.pinned.get(key) {
                None => Lookup::Miss,
                Some(d) => {
                    let d = d.clone();
                    if st.track {
                        st.dirty.push(key.to_string());
                    }
                    let pending = u32::from(st.track);
                    st.insert(
                        key.to_string(),
                        Entry::Decided {
                            d: d.clone(),
                            pending,
                        },
                    );
                    Lookup::Decided(d)
                }
            },
        }
    }

    /// A correction for `key`, when one covers a rule-decided line (cheap
    /// to ask: false at once unless such a correction exists).
    pub(crate) fn pinned_over_rules(&self) -> bool {
        self.0.pinned_over_rules
    }

    pub(crate) fn pinned(&mut self, key: &str) -> Option<Decision> {
        let st = &mut *self.0;
        let d = st.pinned.get(key)?.clone();
        if st.track {
            if let Some(Entry::Decided { pending, .. }) = st.lru.as_mut().and_then(|c| c.get_mut(key)) {
                *pending += 1;
                if *pending == 1 {
                    st.dirty.push(key.to_string());
                }
            }
        }
        Some(d)
    }

    /// Remember a decision for `key`; every later hit carries the cache-hit note.
    pub(crate) fn decided(&mut self, key: String, d: &Decision) {
        self.put_decided(key, d.clone().with_note(CACHE_HIT_NOTE));
    }

    /// Remember a decision read from the store.
    pub(crate) fn stored(&mut self, key: String, d: Decision) {
        self.put_decided(key, d.with_note(STORED_NOTE));
    }

    /// Every decision the cache holds carries its key's masked text, so
    /// its hits do too (an `Arc`: a hit copies a pointer, not the text).
    fn put_decided(&mut self, key: String, mut d: Decision) {
        if d.template.is_none() {
            d.template = Some(Arc::from(split_key(&key).1));
        }
        self.0.insert(key, Entry::Decided { d, pending: 0 });
    }

    /// Pin a person's correction for `key` (`over_rule`: a rule decides its
    /// lines, so rule-decided rows must be looked up from now on).
    pub(crate) fn pin(&mut self, key: String, d: Decision, over_rule: bool) {
        let hit = d.clone().with_note(CACHE_HIT_NOTE);
        self.0.pinned_over_rules |= over_rule;
        self.0.pinned.insert(key.clone(), hit.clone());
        self.put_decided(key, hit);
    }

    /// Remember that the model was unsure of `key`, and what it said.
    pub(crate) fn unsure(&mut self, key: String, note: &str) {
        self.0.insert(key, Entry::Unsure(note.to_string()));
    }

    /// The lines that hit each decision since the last call, by key.
    pub(crate) fn take_hits(&mut self) -> Vec<(String, u64)> {
        let st = &mut *self.0;
        let dirty = std::mem::take(&mut st.dirty);
        let mut out = std::mem::take(&mut st.evicted);
        let Some(c) = st.lru.as_mut() else {
            return out;
        };
        out.extend(dirty.into_iter().filter_map(|k| match c.peek_mut(&k) {
            Some(Entry::Decided { pending, .. }) if *pending > 0 => {
                let n = std::mem::take(pending);
                Some((k, n as u64))
            }
            _ => None,
        }));
        out
    }
}

/// The cache key of a row: its source and its masked text, into `key`
/// (reused across rows, so a hit allocates nothing but its decision).
pub(crate) fn key_into(key: &mut String, source: &str, masked: &str) {
    key.clear();
    key.push_str(source);
    key.push(KEY_SEP);
    key.push_str(masked);
}

const KEY_SEP: char = '\u{1f}';

/// A key's source and masked text.
pub(crate) fn split_key(key: &str) -> (&str, &str) {
    key.split_once(KEY_SEP).unwrap_or(("", key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_as_what_they_are() {
        let c = TemplateCache::new(2, false);
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
        let c = TemplateCache::new(0, false);
        let mut l = c.lock();
        l.decided("a".into(), &Decision::none("x"));
        assert!(matches!(l.lookup("a"), Lookup::Off));
        // A correction applies with the cache off too.
        l.pin("a".into(), Decision::none("fixed"), false);
        assert!(matches!(l.lookup("a"), Lookup::Decided(d) if d.detail == "template cache hit; fixed"));
    }

    #[test]
    fn corrections_outlive_eviction_and_hits_are_counted_once_taken() {
        let c = TemplateCache::new(1, true);
        let mut l = c.lock();
        l.pin("p".into(), Decision::none("person"), false);
        l.decided("q".into(), &Decision::none("model")); // evicts p from the LRU
        for _ in 0..3 {
            assert!(matches!(l.lookup("q"), Lookup::Decided(_)));
        }
        assert!(matches!(l.lookup("p"), Lookup::Decided(d) if d.detail.ends_with("person")));
        let mut hits = l.take_hits();
        hits.sort();
        assert_eq!(
            hits,
            [("p".to_string(), 1), ("q".to_string(), 3)]
                .map(|(k, n)| (k, n))
                .to_vec()
        );
        assert!(l.take_hits().is_empty());
    }
}
