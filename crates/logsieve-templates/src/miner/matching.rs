//! Matching: how a line scores against a template, and finding the template
//! a line fits (exactly, by similarity among templates of its length, or
//! through a variadic variable). Read-only: runs under the read lock.

use super::*;

/// How a line relates to a template.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Score {
    /// Tokens equal to the template's literal token.
    pub(super) same: usize,
    /// Tokens under a template variable, or placeholder against placeholder.
    pub(super) var: usize,
    /// Literal tokens that differ.
    pub(super) diff: usize,
    /// Of `diff`, how many replace a plain word.
    pub(super) diff_words: usize,
    /// Of `var`, how many are a masked value of the line (`<NUM>`) under a
    /// variable or placeholder: places that say nothing about the event.
    pub(super) masked: usize,
}

impl Inner {
    /// Compares line tokens with template tokens of the same length.
    pub(super) fn score(&self, tpl: &[u32], line: &[u32], texts: &[&str]) -> Score {
        let mut s = Score {
            same: 0,
            var: 0,
            diff: 0,
            diff_words: 0,
            masked: 0,
        };
        for i in 0..tpl.len() {
            let (t, l) = (tpl[i], line[i]);
            if t == l && t != WILD && !self.placeholder[t as usize] {
                s.same += 1;
            } else if t == WILD
                || t == l
                || (self.is_placeholder(t) && self.is_placeholder(l))
                || self.affix_fits(t, texts[i])
            {
                s.var += 1;
                if self.is_placeholder(l) && (t == WILD || self.placeholder[t as usize]) {
                    s.masked += 1;
                }
            } else {
                s.diff += 1;
                if self.word_diff(t, l, texts[i]) {
                    s.diff_words += 1;
                }
            }
        }
        s
    }

    /// Whether a line with this score may join (and widen) the template.
    pub(super) fn accepts(&self, s: Score, n: usize, similarity: f64) -> bool {
        if s.diff == 0 {
            return true;
        }
        // Agreeing literal tokens must outnumber differing words (at least
        // match differing values), and together with existing variables
        // cover `similarity` of the line.
        if s.same < s.diff || (s.diff_words > 0 && s.same <= s.diff) {
            return false;
        }
        let sim = (s.same + s.var) as f64 / n as f64;
        if sim < similarity {
            return false;
        }
        // Drain's similarity: literal agreement, over the places that could
        // agree (not the line's masked values under variables). Without it a
        // template drifts: each line widens it a little until it holds
        // only variables and a stop word (`<*> <*> to <*>`).
        if (s.same as f64) < similarity * (n - s.masked) as f64 {
            return false;
        }
        // Turning a plain word into a variable is what merges events with
        // different meaning; ask for more evidence.
        if s.diff_words > 0 && (s.same as f64) < similarity * n as f64 {
            return false;
        }
        true
    }

    /// The warm path: the most specific same-length template the line fits
    /// as it stands (no literal token differs), found with integer
    /// comparisons only.
    pub(super) fn exact_fit(&self, texts: &[&str]) -> Option<(u32, Score)> {
        let n = texts.len();
        let key = self.key(self.lookup(texts[0]), texts[0]);
        let mut best: Option<(u32, usize)> = None;
        for k in [key, WILD] {
            for &c in self.buckets.get(&(n as u32, k)).into_iter().flatten() {
                if let Some(same) = self.fits(&self.clusters[c as usize].tokens, texts) {
                    if best.is_none_or(|(_, b)| same > b) {
                        best = Some((c, same));
                    }
                }
            }
            if best.is_some() || key == WILD {
                break;
            }
        }
        if best.is_none() {
            for k in [key, WILD] {
                for &c in self.variadic_buckets.get(&k).into_iter().flatten() {
                    let cl = &self.clusters[c as usize];
                    let v = cl.variadic.expect("variadic bucket holds variadic clusters");
                    let tail = cl.tokens.len() - v - 1;
                    if n < v + tail {
                        continue;
                    }
                    let head = self.fits(&cl.tokens[..v], &texts[..v]);
                    let back = self.fits(&cl.tokens[v + 1..], &texts[n - tail..]);
                    if let (Some(h), Some(b)) = (head, back) {
                        if best.is_none_or(|(_, x)| h + b > x) {
                            best = Some((c, h + b));
                        }
                    }
                }
                if key == WILD {
                    break;
                }
            }
        }
        best.map(|(c, same)| {
            (
                c,
                Score {
                    same,
                    var: n - same,
                    diff: 0,
                    diff_words: 0,
                    masked: 0,
                },
            )
        })
    }

    /// The number of equal literal tokens when `line` fits `tpl` (same
    /// length) without changing it.
    /// Works on the line's text, so the warm path need not look up (hash)
    /// every token: most candidates fail on their first tokens.
    pub(super) fn fits(&self, tpl: &[u32], texts: &[&str]) -> Option<usize> {
        let mut same = 0;
        for (&t, &text) in tpl.iter().zip(texts) {
            if t == WILD {
                continue;
            }
            if *self.strings[t as usize] == *text {
                same += 1;
            } else if !((self.placeholder[t as usize] && crate::is_placeholder_token(text))
                || self.affix_fits(t, text))
            {
                return None;
            }
        }
        Some(same)
    }

    /// [`Inner::fits`] for a line given as interned tokens only.
    pub(super) fn fits_tokens(&self, tpl: &[u32], line: &[u32]) -> Option<usize> {
        let texts: Vec<&str> = line.iter().map(|&t| &*self.strings[t as usize]).collect();
        self.fits(tpl, &texts)
    }

    /// Best same-length cluster for the line, with its score.
    pub(super) fn best_same_length(
        &self,
        line: &[u32],
        texts: &[&str],
        similarity: f64,
    ) -> Option<(u32, Score)> {
        let n = line.len();
        let key = self.key(line[0], texts[0]);
        let mut best: Option<(u32, Score)> = None;
        let consider = |list: Option<&Vec<u32>>, best: &mut Option<(u32, Score)>| {
            for &c in list.into_iter().flatten() {
                let cl = &self.clusters[c as usize];
                let s = self.score(&cl.tokens, line, texts);
                if !self.accepts(s, n, similarity) {
                    continue;
                }
                let better = match best {
                    None => true,
                    Some((_, b)) => (s.same, s.var) > (b.same, b.var),
                };
                if better {
                    *best = Some((c, s));
                }
            }
        };
        consider(self.buckets.get(&(n as u32, key)), &mut best);
        if (best.is_none() || best.is_some_and(|(_, s)| s.diff > 0)) && key != WILD {
            consider(self.buckets.get(&(n as u32, WILD)), &mut best);
        }
        best
    }

    /// Matches the line against variadic clusters: template prefix before
    /// the variadic token and suffix after it must agree with the line.
    pub(super) fn best_variadic(
        &self,
        line: &[u32],
        texts: &[&str],
        similarity: f64,
    ) -> Option<(u32, Score)> {
        let key = self.key(line[0], texts[0]);
        let mut best: Option<(u32, Score)> = None;
        for k in [key, WILD] {
            for &c in self.variadic_buckets.get(&k).into_iter().flatten() {
                let cl = &self.clusters[c as usize];
                let v = cl.variadic.expect("variadic bucket holds variadic clusters");
                let tail = cl.tokens.len() - v - 1;
                if line.len() < v + tail {
                    continue;
                }
                let head = self.score(&cl.tokens[..v], &line[..v], &texts[..v]);
                let lt = line.len() - tail;
                let back = self.score(&cl.tokens[v + 1..], &line[lt..], &texts[lt..]);
                let s = Score {
                    same: head.same + back.same,
                    var: head.var + back.var + 1,
                    diff: head.diff + back.diff,
                    diff_words: head.diff_words + back.diff_words,
                    masked: head.masked + back.masked,
                };
                if !self.accepts(s, v + tail + 1, similarity) {
                    continue;
                }
                if best.is_none_or(|(_, b)| (s.same, s.var) > (b.same, b.var)) {
                    best = Some((c, s));
                }
            }
            if k == WILD {
                break;
            }
        }
        best
    }

    pub(super) fn bucket_key(&self, tokens: &[u32]) -> u32 {
        let t = tokens[0];
        if self.keyable[t as usize] {
            t
        } else {
            WILD
        }
    }
}
