//! Merging: creating templates, widening them when a line adds a variable,
//! sibling templates for one-word differences, variadic merges, and
//! absorbing templates a widened one now covers. Runs under the write lock.

use super::*;

impl Inner {
    pub(super) fn insert_cluster(&mut self, id: u64, tokens: Vec<u32>, count: u64) -> u32 {
        let reuse = self.free.pop();
        let ix = reuse.unwrap_or(self.clusters.len() as u32);
        let variadic = tokens.iter().position(|&t| t == VARIADIC);
        let key = self.bucket_key(&tokens);
        match variadic {
            Some(_) => self.variadic_buckets.entry(key).or_default().push(ix),
            None => self
                .buckets
                .entry((tokens.len() as u32, key))
                .or_default()
                .push(ix),
        }
        self.by_id.insert(id, ix);
        let rendered = self.render(&tokens).into();
        let tick = self.next_tick();
        let cluster = Cluster {
            id,
            tokens,
            rendered,
            variadic,
            count: AtomicU64::new(count),
            alive: true,
            last_used: AtomicU64::new(tick),
            aliases: Vec::new(),
            groups: Vec::new(),
        };
        match reuse {
            Some(ix) => self.clusters[ix as usize] = cluster,
            None => self.clusters.push(cluster),
        }
        if self.cap > 0 {
            self.lru.push(Reverse((tick, id, ix)));
        }
        self.live += 1;
        self.next_id = self.next_id.max(id + 1);
        ix
    }

    pub(super) fn unbucket(&mut self, ix: u32) {
        let cl = &self.clusters[ix as usize];
        let key = self.bucket_key(&cl.tokens);
        let list = match cl.variadic {
            Some(_) => self.variadic_buckets.get_mut(&key),
            None => self.buckets.get_mut(&(cl.tokens.len() as u32, key)),
        };
        if let Some(list) = list {
            list.retain(|&c| c != ix);
            if list.is_empty() {
                match cl.variadic {
                    Some(_) => self.variadic_buckets.remove(&key),
                    None => self.buckets.remove(&(cl.tokens.len() as u32, key)),
                };
            }
        }
    }

    pub(super) fn rebucket(&mut self, ix: u32) {
        let cl = &self.clusters[ix as usize];
        let key = self.bucket_key(&cl.tokens);
        match cl.variadic {
            Some(_) => self.variadic_buckets.entry(key).or_default().push(ix),
            None => self
                .buckets
                .entry((cl.tokens.len() as u32, key))
                .or_default()
                .push(ix),
        }
    }

    /// Widens cluster `ix` so that `line` (same length) fits it.
    pub(super) fn widen_same_length(&mut self, ix: u32, line: &[u32]) {
        let first_before = self.clusters[ix as usize].tokens[0];
        for (i, &l) in line.iter().enumerate() {
            let t = self.clusters[ix as usize].tokens[i];
            if t != l && t != WILD && !self.affix_fits(t, &self.strings[l as usize].clone()) {
                let g = self.generalize(t, l);
                self.clusters[ix as usize].tokens[i] = g;
            }
        }
        if self.clusters[ix as usize].tokens[0] != first_before {
            // Restore the old key to find it, then move it to the new one.
            let new_tokens = std::mem::take(&mut self.clusters[ix as usize].tokens);
            let mut old = new_tokens.clone();
            old[0] = first_before;
            self.clusters[ix as usize].tokens = old;
            self.unbucket(ix);
            self.clusters[ix as usize].tokens = new_tokens;
            self.rebucket(ix);
        }
    }

    pub(super) fn widen_variadic(&mut self, ix: u32, line: &[u32]) {
        let cl = &self.clusters[ix as usize];
        let v = cl.variadic.expect("variadic");
        let tail = cl.tokens.len() - v - 1;
        let lt = line.len() - tail;
        let mut tokens = cl.tokens.clone();
        for i in 0..v {
            if tokens[i] != line[i] {
                tokens[i] = WILD;
            }
        }
        for j in 0..tail {
            if tokens[v + 1 + j] != line[lt + j] {
                tokens[v + 1 + j] = WILD;
            }
        }
        if tokens != self.clusters[ix as usize].tokens {
            self.unbucket(ix);
            self.clusters[ix as usize].tokens = tokens;
            self.rebucket(ix);
        }
    }

    /// The line differs from cluster `c` in one plain word (and maybe in
    /// variable-looking tokens): it gets a template of its own, a sibling of
    /// `c`, unless enough distinct words have now been seen at that
    /// position, in which case all siblings merge into the oldest.
    /// Returns the cluster of the line and whether it is new.
    pub(super) fn add_sibling(&mut self, c: u32, line: &[u32], config: &MinerConfig) -> (u32, bool) {
        let merge_after = config.word_variable_after;
        let tpl = self.clusters[c as usize].tokens.clone();
        let mut tokens = Vec::with_capacity(line.len());
        let mut pos = 0;
        for (i, (&t, &l)) in tpl.iter().zip(line).enumerate() {
            if t == l || t == WILD || self.affix_fits(t, &self.strings[l as usize].clone()) {
                tokens.push(t);
            } else if self.placeholder[t as usize] && self.placeholder[l as usize] {
                tokens.push(WILD);
            } else if self.word_diff(t, l, "") {
                pos = i;
                tokens.push(l);
            } else {
                let g = self.generalize(t, l);
                tokens.push(g);
            }
        }
        // Count keys where keys differ (`num=..` against `topActivity=..`),
        // else the words themselves (`user=root` against `user=git`).
        let (old_value, new_value) = {
            let (a, b) = (self.sibling_value(tpl[pos]), self.sibling_value(line[pos]));
            if a != b && a != tpl[pos] && b != line[pos] {
                (a, b)
            } else {
                (tpl[pos], line[pos])
            }
        };
        let mut skeleton = tokens.clone();
        skeleton[pos] = WILD;
        let key = (pos as u32, skeleton);
        let id = self.next_id;
        let new = self.insert_cluster(id, tokens, 0);
        let entry = self.siblings.entry(key.clone()).or_default();
        let joined_c = entry.clusters.is_empty();
        if joined_c {
            entry.clusters.push(c);
            entry.values.push(old_value);
        }
        entry.clusters.push(new);
        if joined_c {
            self.clusters[c as usize].groups.push(key.clone());
        }
        self.clusters[new as usize].groups.push(key.clone());
        if !entry.values.contains(&new_value) {
            entry.values.push(new_value);
        }
        // Capitalised words (LOOKING, FOLLOWING, LEADING) are usually the
        // states of a small enumeration: ask for one more distinct value.
        let caps = entry.values.iter().all(|&v| {
            let t = &self.strings[v as usize];
            t.bytes().any(|c| c.is_ascii_uppercase())
                && !t.bytes().any(|c| c.is_ascii_lowercase() || c == b'_')
        });
        if entry.values.len() < merge_after.max(2) + usize::from(caps) {
            return (new, true);
        }
        // A variable's values are mostly rare; an enumeration's (`alt0`,
        // `ee0`, ...) each come back. Merge once two of them were seen once,
        // or once there are more values than an enumeration has.
        let diverse =
            config.word_variable_distinct > 0 && entry.values.len() >= config.word_variable_distinct;
        let clusters = &entry.clusters;
        let rare = clusters
            .iter()
            .filter(|&&g| g == TOMB || self.clusters[g as usize].count.load(Ordering::Relaxed) <= 1)
            .count();
        if rare < 2 && !diverse {
            return (new, true);
        }
        let group = self.siblings.remove(&key).expect("entry exists").clusters;
        // Members may have merged or turned variadic since they joined.
        let group: Vec<u32> = group
            .into_iter()
            .filter(|&g| {
                g != TOMB && {
                    let cl = &self.clusters[g as usize];
                    cl.alive && cl.variadic.is_none() && cl.tokens.len() == line.len()
                }
            })
            .collect();
        if group.len() < 2 {
            return (new, true);
        }
        let survivor = *group
            .iter()
            .min_by_key(|&&g| self.clusters[g as usize].id)
            .expect("group is not empty");
        let mut merged = self.clusters[survivor as usize].tokens.clone();
        for &g in &group {
            let tokens = self.clusters[g as usize].tokens.clone();
            for (m, t) in merged.iter_mut().zip(tokens) {
                if *m != t && *m != WILD {
                    *m = self.generalize(*m, t);
                }
            }
        }
        self.retire_into(&group, survivor);
        self.unbucket(survivor);
        self.clusters[survivor as usize].tokens = merged;
        self.rebucket(survivor);
        (survivor, false)
    }

    /// Looks for a template of another length that agrees with the line on
    /// a long enough prefix and suffix; the tokens between become one
    /// variadic variable. Returns the merged cluster.
    pub(super) fn try_variadic_merge(&mut self, line: &[u32], config: &MinerConfig) -> Option<u32> {
        let n = line.len();
        let key = self.bucket_key(line);
        let mut best: Option<(u32, usize, usize)> = None; // (cluster, prefix, suffix)
        let lo = n.saturating_sub(config.variadic_max_span).max(1);
        let hi = n + config.variadic_max_span;
        for len in lo..=hi {
            if len == n {
                continue;
            }
            for k in [key, WILD] {
                for &c in self.buckets.get(&(len as u32, k)).into_iter().flatten() {
                    let tpl = &self.clusters[c as usize].tokens;
                    if let Some((p, s)) = self.variadic_alignment(tpl, line, config) {
                        if best.is_none_or(|b| p + s > b.1 + b.2) {
                            best = Some((c, p, s));
                        }
                    }
                }
                if k == WILD {
                    break;
                }
            }
        }
        let (c, p, s) = best?;
        self.make_variadic(c, line, p, s);
        Some(c)
    }

    /// Whether `line` (tokens of a line or of another template) fits
    /// template `tpl` of another length with the tokens between a common
    /// prefix and suffix as one variadic variable; returns the prefix and
    /// suffix lengths.
    pub(super) fn variadic_alignment(
        &self,
        tpl: &[u32],
        line: &[u32],
        config: &MinerConfig,
    ) -> Option<(usize, usize)> {
        let n = line.len();
        if tpl.len() == n || tpl.len().abs_diff(n) > config.variadic_max_span {
            return None;
        }
        // Template variables are not skipped over: the gap is to hold them.
        let eq = |a: u32, b: u32| {
            a != WILD && (a == b || (self.placeholder[a as usize] && self.placeholder[b as usize]))
        };
        let max_fix = tpl.len().min(n);
        let mut p = 0;
        while p < max_fix && eq(tpl[p], line[p]) {
            p += 1;
        }
        let mut s = 0;
        while s < max_fix - p && eq(tpl[tpl.len() - 1 - s], line[n - 1 - s]) {
            s += 1;
        }
        // Both sides must be anchored.
        if p == 0 || s == 0 {
            return None;
        }
        // Only an established variable may stretch, and only over tokens
        // that look variable themselves: a gap of plain words (`invalid
        // user x` against `x`) is more often a different event. Nor may the
        // gap bring more `key=value` fields than the variable had tokens:
        // extra fields mean another structure.
        let tgap = &tpl[p..tpl.len() - s];
        let lgap = &line[p..n - s];
        let keys: BTreeSet<&str> = lgap
            .iter()
            .filter_map(|&t| split_key_value(&self.strings[t as usize]).map(|kv| kv.0))
            .collect();
        if tgap.is_empty()
            || lgap.is_empty()
            || !tgap.iter().all(|&t| self.strings[t as usize].contains('<'))
            || lgap.iter().all(|&t| self.word[t as usize])
            || keys.len() > tgap.len()
        {
            return None;
        }
        let literal = (0..p)
            .chain(n - s..n)
            .filter(|&i| !self.placeholder[line[i] as usize])
            .count();
        if literal < config.variadic_min_anchor {
            return None;
        }
        // The anchors must cover `similarity` of the shorter side.
        if ((p + s) as f64) < config.similarity * tpl.len().min(n) as f64 {
            return None;
        }
        Some((p, s))
    }

    /// Turns cluster `c` into a variadic template that also covers `line`
    /// (aligned by `variadic_alignment`).
    pub(super) fn make_variadic(&mut self, c: u32, line: &[u32], p: usize, s: usize) {
        let n = line.len();
        let tpl = self.clusters[c as usize].tokens.clone();
        let mut tokens: Vec<u32> = Vec::with_capacity(p + s + 1);
        for i in 0..p {
            tokens.push(if tpl[i] == line[i] { tpl[i] } else { WILD });
        }
        tokens.push(VARIADIC);
        for j in (0..s).rev() {
            let (a, b) = (tpl[tpl.len() - 1 - j], line[n - 1 - j]);
            tokens.push(if a == b { a } else { WILD });
        }
        self.unbucket(c);
        let cl = &mut self.clusters[c as usize];
        cl.variadic = Some(p);
        cl.tokens = tokens;
        self.rebucket(c);
    }

    /// After cluster `c` gained variables: absorbs the templates that now
    /// fit it, as they stand or (other lengths) through a variadic variable
    /// (a template made from an odd first line before the variable was
    /// known).
    pub(super) fn absorb_subsumed(&mut self, c: u32, config: &MinerConfig) {
        let cl = &self.clusters[c as usize];
        if cl.variadic.is_some() {
            return;
        }
        let tpl = cl.tokens.clone();
        let key = self.bucket_key(&tpl);
        let n = tpl.len();
        // Same length first: a template that now fits `c` as it stands
        // (a sibling kept apart for a word that has since turned out to be
        // a variable) is part of it.
        let same_len: Vec<u32> = if key == WILD {
            self.buckets
                .iter()
                .filter(|((len, _), _)| *len as usize == n)
                .flat_map(|(_, list)| list.iter().copied())
                .collect()
        } else {
            self.buckets.get(&(n as u32, key)).cloned().unwrap_or_default()
        };
        let subsumed: Vec<u32> = same_len
            .into_iter()
            .filter(|&o| {
                o != c
                    && self
                        .fits_tokens(&tpl, &self.clusters[o as usize].tokens)
                        .is_some()
            })
            .collect();
        if !subsumed.is_empty() {
            self.retire_into(&subsumed, c);
        }
        if !config.variadic {
            return;
        }
        let lo = n.saturating_sub(config.variadic_max_span).max(1);
        let hi = n + config.variadic_max_span;
        let mut victims = Vec::new();
        for len in lo..=hi {
            if len == n {
                continue;
            }
            for &o in self.buckets.get(&(len as u32, key)).into_iter().flatten() {
                let other = &self.clusters[o as usize].tokens;
                if let Some((p, s)) = self.variadic_alignment(&tpl, other, config) {
                    victims.push((o, p, s));
                }
            }
        }
        // One variadic gap per template: absorb the best-aligned one.
        // Ties go to the oldest template.
        let Some(&(o, p, s)) = victims
            .iter()
            .max_by_key(|v| (v.1 + v.2, Reverse(self.clusters[v.0 as usize].id)))
        else {
            return;
        };
        let other = self.clusters[o as usize].tokens.clone();
        self.make_variadic(c, &other, p, s);
        self.retire_into(&[o], c);
    }

    /// Marks `dead` clusters as merged into `survivor`: their counts move
    /// over and their ids resolve to it from now on.
    /// With a cap, their slots are freed (a merged cluster is never
    /// matched again; its sibling groups keep a `TOMB` in its place).
    pub(super) fn retire_into(&mut self, dead: &[u32], survivor: u32) {
        let mut moved = 0;
        let mut ids = Vec::new();
        for &g in dead {
            if g == survivor || !self.clusters[g as usize].alive {
                continue;
            }
            self.unbucket(g);
            let cl = &mut self.clusters[g as usize];
            cl.alive = false;
            moved += cl.count.swap(0, Ordering::Relaxed);
            ids.push(cl.id);
            ids.append(&mut cl.aliases);
            self.live -= 1;
            if self.cap > 0 {
                self.leave_groups(g, Some(TOMB));
                self.free_slot(g);
            }
        }
        // The ids that resolved to a dead cluster now resolve to the survivor.
        for &id in &ids {
            self.by_id.insert(id, survivor);
        }
        let cl = &mut self.clusters[survivor as usize];
        cl.aliases.extend(ids);
        cl.count.fetch_add(moved, Ordering::Relaxed);
    }
}
