//! The consistency check of the miner's indexes against each other, run
//! by tests (`Miner::check_consistency`).

use super::*;

/// Two of the miner's indexes disagree: what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("miner inconsistent: {0}")]
pub struct Inconsistency(pub String);

impl Inner {
    pub(super) fn check(&self) -> Result<(), Inconsistency> {
        self.find_inconsistency().map_err(Inconsistency)
    }

    fn find_inconsistency(&self) -> Result<(), String> {
        let alive = self.clusters.iter().filter(|c| c.alive).count();
        if alive != self.live {
            return Err(format!("live {} but {alive} alive", self.live));
        }
        if self.cap > 0 && self.live > self.cap {
            return Err(format!("{} templates above the cap {}", self.live, self.cap));
        }
        for (s, &t) in &self.ids {
            if *self.strings[t as usize] != **s {
                return Err(format!("token {s:?} maps to {t}"));
            }
        }
        if self.ids.len() != self.strings.len() {
            return Err("token table and map differ in size".into());
        }
        for (id, &ix) in &self.by_id {
            let cl = &self.clusters[ix as usize];
            if !cl.alive || (cl.id != *id && !cl.aliases.contains(id)) {
                return Err(format!("id {id} resolves to a dead or foreign slot {ix}"));
            }
        }
        for (ix, cl) in self.clusters.iter().enumerate().filter(|(_, c)| c.alive) {
            let ix = ix as u32;
            for id in std::iter::once(&cl.id).chain(&cl.aliases) {
                if self.by_id.get(id) != Some(&ix) {
                    return Err(format!("id {id} of slot {ix} does not resolve to it"));
                }
            }
            let key = self.bucket_key(&cl.tokens);
            let list = match cl.variadic {
                Some(_) => self.variadic_buckets.get(&key),
                None => self.buckets.get(&(cl.tokens.len() as u32, key)),
            };
            if list.map_or(0, |l| l.iter().filter(|&&c| c == ix).count()) != 1 {
                return Err(format!("template {} is not once in its bucket", cl.id));
            }
            if *cl.rendered != self.render(&cl.tokens) {
                return Err(format!("template {} renders {:?}", cl.id, cl.rendered));
            }
            if self.cap > 0 {
                let entries: Vec<_> = self
                    .lru
                    .iter()
                    .filter(|Reverse((t, id, i))| {
                        *i == ix && *id == cl.id && *t <= cl.last_used.load(Ordering::Relaxed)
                    })
                    .collect();
                if entries.len() != 1 {
                    return Err(format!("template {} has {} LRU entries", cl.id, entries.len()));
                }
            }
        }
        for list in self.buckets.values().chain(self.variadic_buckets.values()) {
            if list.is_empty() || list.iter().any(|&c| !self.clusters[c as usize].alive) {
                return Err("a bucket is empty or holds a dead template".into());
            }
        }
        for (key, sib) in &self.siblings {
            for &c in &sib.clusters {
                if c == TOMB {
                    continue;
                }
                let cl = &self.clusters[c as usize];
                if self.cap > 0 && (!cl.alive || !cl.groups.contains(key)) {
                    return Err(format!("sibling group names slot {c} that does not know it"));
                }
            }
            if self.cap > 0 && sib.clusters.iter().all(|&c| c == TOMB) {
                return Err("a sibling group has no live member".into());
            }
        }
        Ok(())
    }
}
