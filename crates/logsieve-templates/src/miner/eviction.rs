//! Bounded memory: last-match ticks, the lazy LRU min-heap, evicting the
//! least recently matched template from every index, slot reuse, and
//! compacting the token table.

use super::*;

impl Inner {
    /// A new tick (0 without a cap: the warm path then touches nothing).
    pub(super) fn next_tick(&self) -> u64 {
        if self.cap > 0 {
            self.tick.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        }
    }

    /// Records a match of cluster `ix` (with a cap; a read lock suffices).
    pub(super) fn touch(&self, ix: u32) {
        if self.cap > 0 {
            let t = self.next_tick();
            self.clusters[ix as usize].last_used.store(t, Ordering::Relaxed);
        }
    }

    /// Evicts least recently matched clusters, never `keep`, until at most
    /// `cap` are alive; then compacts the LRU heap and the token table when
    /// they have grown enough.
    pub(super) fn enforce_cap(&mut self, keep: u32) {
        if self.cap == 0 {
            return;
        }
        let mut held = None;
        while self.live > self.cap {
            let Some(Reverse((tick, id, ix))) = self.lru.pop() else {
                break;
            };
            let cl = &self.clusters[ix as usize];
            if !cl.alive || cl.id != id {
                continue; // merged or evicted since it was pushed
            }
            let now = cl.last_used.load(Ordering::Relaxed);
            if ix == keep {
                held = Some(Reverse((now, id, ix)));
            } else if now != tick {
                self.lru.push(Reverse((now, id, ix)));
            } else {
                self.evict(ix);
            }
        }
        self.lru.extend(held);
        if self.lru.len() > 2 * self.live + 1024 {
            self.rebuild_lru();
        }
        if self.strings.len() >= self.gc_at {
            self.compact_tokens();
        }
    }

    /// The LRU heap from scratch: one entry per live cluster.
    pub(super) fn rebuild_lru(&mut self) {
        self.lru = self
            .clusters
            .iter()
            .enumerate()
            .filter(|(_, cl)| cl.alive)
            .map(|(ix, cl)| Reverse((cl.last_used.load(Ordering::Relaxed), cl.id, ix as u32)))
            .collect();
    }

    /// Removes cluster `ix` from every index and frees its slot: its id and
    /// the ids merged into it no longer resolve, its sibling groups forget
    /// it.
    pub(super) fn evict(&mut self, ix: u32) {
        self.unbucket(ix);
        let cl = &mut self.clusters[ix as usize];
        let ids: Vec<u64> = std::iter::once(cl.id).chain(cl.aliases.drain(..)).collect();
        for id in ids {
            self.by_id.remove(&id);
        }
        self.leave_groups(ix, None);
        self.free_slot(ix);
        self.live -= 1;
        self.evicted += 1;
    }

    /// Takes cluster `ix` out of its sibling groups: replaced by `TOMB`
    /// (`tomb`: it merged) or removed (it was evicted). A group left with
    /// no live member goes.
    pub(super) fn leave_groups(&mut self, ix: u32, tomb: Option<u32>) {
        for key in std::mem::take(&mut self.clusters[ix as usize].groups) {
            let Some(entry) = self.siblings.get_mut(&key) else {
                continue;
            };
            match tomb {
                Some(t) => entry
                    .clusters
                    .iter_mut()
                    .filter(|c| **c == ix)
                    .for_each(|c| *c = t),
                None => entry.clusters.retain(|&c| c != ix),
            }
            if entry.clusters.iter().all(|&c| c == TOMB) {
                self.siblings.remove(&key);
            }
        }
    }

    pub(super) fn free_slot(&mut self, ix: u32) {
        let cl = &mut self.clusters[ix as usize];
        cl.alive = false;
        cl.tokens = Vec::new();
        cl.rendered = Arc::from("");
        cl.aliases = Vec::new();
        cl.groups = Vec::new();
        self.free.push(ix);
    }

    /// Drops the token texts that no template and no sibling group uses any
    /// more, renumbering the rest in order (so comparisons between ids keep
    /// their meaning). Runs when the table has doubled: amortised O(1).
    pub(super) fn compact_tokens(&mut self) {
        let n = self.strings.len();
        let mut used = vec![false; n];
        used[WILD as usize] = true;
        used[VARIADIC as usize] = true;
        for cl in self.clusters.iter().filter(|cl| cl.alive) {
            for &t in &cl.tokens {
                used[t as usize] = true;
            }
        }
        for ((_, skeleton), sib) in &self.siblings {
            for &t in skeleton.iter().chain(&sib.values) {
                used[t as usize] = true;
            }
        }
        let mut remap = vec![UNKNOWN; n];
        let mut next = 0u32;
        for (t, &u) in used.iter().enumerate() {
            if u {
                remap[t] = next;
                next += 1;
            }
        }
        fn keep<T>(v: &mut Vec<T>, used: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                used[i - 1]
            });
            v.shrink_to_fit();
        }
        keep(&mut self.strings, &used);
        keep(&mut self.placeholder, &used);
        keep(&mut self.word, &used);
        keep(&mut self.keyable, &used);
        keep(&mut self.affix, &used);
        self.ids = self
            .strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let map = |v: &[u32]| -> Vec<u32> { v.iter().map(|&t| remap[t as usize]).collect() };
        let siblings = std::mem::take(&mut self.siblings);
        for cl in self.clusters.iter_mut().filter(|cl| cl.alive) {
            cl.tokens = map(&cl.tokens);
            cl.groups.retain(|k| siblings.contains_key(k));
            cl.groups = cl.groups.iter().map(|(p, k)| (*p, map(k))).collect();
        }
        self.siblings = siblings
            .into_iter()
            .map(|((p, k), mut sib)| {
                sib.values = map(&sib.values);
                ((p, map(&k)), sib)
            })
            .collect();
        self.buckets = std::mem::take(&mut self.buckets)
            .into_iter()
            .map(|((len, k), list)| ((len, remap[k as usize]), list))
            .collect();
        self.variadic_buckets = std::mem::take(&mut self.variadic_buckets)
            .into_iter()
            .map(|(k, list)| (remap[k as usize], list))
            .collect();
        self.gc_at = (2 * self.strings.len()).max(GC_MIN_TOKENS);
    }
}
