//! Tokens: how a masked line is split, and the token table (token text to
//! integer id, with what each token is: placeholder, plain word, key of a
//! `key=value`). Everything else compares integers.

use super::*;

/// Buffers that [`Miner::add_with`] reuses from line to line, so a hot
/// loop does not allocate them again. One per thread.
#[derive(Debug, Default)]
pub struct Scratch {
    pub(super) buf: String,
    pub(super) ids: Vec<u32>,
    /// Always empty between calls: only its allocation is reused for the
    /// tokens of the next line (see [`recycle`]).
    pub(super) texts: Vec<&'static str>,
}

/// An empty vector that keeps `v`'s allocation but borrows for another
/// lifetime. (`collect` from a vector's own `into_iter` reuses its buffer
/// when the element layout is the same, as here; were it not to, this
/// would merely allocate.)
pub(super) fn recycle<'b>(mut v: Vec<&str>) -> Vec<&'b str> {
    v.clear();
    v.into_iter()
        .map(|_| -> &'b str { unreachable!("the vector is empty") })
        .collect()
}

impl Inner {
    pub(super) fn intern(&mut self, tok: &str) -> u32 {
        if let Some(&id) = self.ids.get(tok) {
            return id;
        }
        let id = self.strings.len() as u32;
        self.strings.push(tok.into());
        self.ids.insert(tok.into(), id);
        let placeholder = id == WILD || id == VARIADIC || crate::is_placeholder_token(tok);
        self.placeholder.push(placeholder);
        self.word.push(is_word(tok));
        self.keyable
            .push(!placeholder && !tok.contains('<') && !tok.bytes().any(|b| b.is_ascii_digit()));
        let affix = match tok.find(WILDCARD) {
            Some(i) if tok.len() > WILDCARD.len() && !tok[i + WILDCARD.len()..].contains(WILDCARD) => {
                let after = tok.len() - i - WILDCARD.len();
                if i <= 0xFFFF && after <= 0xFFFF {
                    ((i as u32) << 16) | after as u32
                } else {
                    0
                }
            }
            _ => 0,
        };
        self.affix.push(affix);
        id
    }

    /// Whether template token `t` is a variable with literal text around
    /// it (`key=<*>`, `<*>,`) and the line token `text` has that text
    /// around a value.
    pub(super) fn affix_fits(&self, t: u32, text: &str) -> bool {
        let packed = self.affix[t as usize];
        if packed == 0 {
            return false;
        }
        let (p, s) = ((packed >> 16) as usize, (packed & 0xFFFF) as usize);
        let b = text.as_bytes();
        if b.len() <= p + s {
            return false;
        }
        let tok = self.strings[t as usize].as_bytes();
        b[..p] == tok[..p] && b[b.len() - s..] == tok[tok.len() - s..]
    }

    /// The token that covers two differing tokens: `key=<*>` when both are
    /// values of one key; else `<*>` with the brackets, quotes and
    /// punctuation both have around their values kept (`<*>,`, `'<*>'`,
    /// `(<*>)`), as a template states them; else `<*>`.
    pub(super) fn generalize(&mut self, a: u32, b: u32) -> u32 {
        let (sa, sb) = (&self.strings[a as usize], &self.strings[b as usize]);
        let prefix = |s: &str| split_key_value(s).map(|(_, v)| s.len() - v.len());
        if let (Some(pa), Some(pb)) = (prefix(sa), prefix(sb)) {
            if sa[..pa] == sb[..pb] {
                let tok = format!("{}<*>", &sa[..pa]);
                return self.intern(&tok);
            }
        }
        let (p, s) = common_affix(sa, sb);
        if p + s == 0 {
            return WILD;
        }
        let tok = format!("{}<*>{}", &sa[..p], &sa[sa.len() - s..]);
        self.intern(&tok)
    }

    /// What a sibling position "value" is for counting distinct words: the
    /// key of a `key=value` token, else the token.
    pub(super) fn sibling_value(&mut self, t: u32) -> u32 {
        let st = &self.strings[t as usize];
        match split_key_value(st) {
            Some((_, v)) => {
                let key = st[..st.len() - v.len()].to_string();
                self.intern(&key)
            }
            None => t,
        }
    }

    pub(super) fn lookup(&self, tok: &str) -> u32 {
        self.ids.get(tok).copied().unwrap_or(UNKNOWN)
    }

    pub(super) fn is_placeholder(&self, id: u32) -> bool {
        id != UNKNOWN && self.placeholder[id as usize]
    }

    /// Whether template token `t` and a differing line token `l` differ
    /// in meaning (two plain words, or two `key=value` with other keys)
    /// rather than in a value.
    pub(super) fn word_diff(&self, t: u32, l: u32, text: &str) -> bool {
        let ts = &self.strings[t as usize];
        let ls = if l == UNKNOWN {
            text
        } else {
            &self.strings[l as usize]
        };
        match (split_key_value(ts), split_key_value(ls)) {
            (Some((ka, va)), Some((kb, vb))) => {
                ka != kb || (is_word(va) && is_word(vb) && !same_shape(va, vb))
            }
            _ => is_word(ts) && is_word(ls) && !same_shape(ts, ls),
        }
    }

    pub(super) fn key(&self, id: u32, text: &str) -> u32 {
        let keyable = if id == UNKNOWN {
            !text.contains('<') && !text.bytes().any(|b| b.is_ascii_digit())
        } else {
            self.keyable[id as usize]
        };
        if keyable {
            id
        } else {
            WILD
        }
    }

    pub(super) fn render(&self, tokens: &[u32]) -> String {
        let mut s = String::new();
        for (i, &t) in tokens.iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(if t == VARIADIC {
                WILDCARD
            } else {
                &self.strings[t as usize]
            });
        }
        s
    }
}

/// The lengths of the opening brackets and quotes both tokens start with,
/// and of the closing ones and punctuation both end with, leaving each a
/// value of one character or more between them. A token that is itself a
/// variable with such text (`<*>,`) keeps it only where the other has it.
pub(super) fn common_affix(a: &str, b: &str) -> (usize, usize) {
    const OPEN: &[u8] = b"([{'\"";
    const CLOSE: &[u8] = b")]}'\",;:.";
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let room = x.len().min(y.len()).saturating_sub(1);
    let mut p = 0;
    while p < room && x[p] == y[p] && OPEN.contains(&x[p]) {
        p += 1;
    }
    let mut s = 0;
    while p + s < room && x[x.len() - 1 - s] == y[y.len() - 1 - s] && CLOSE.contains(&x[x.len() - 1 - s]) {
        s += 1;
    }
    (p, s)
}

/// A plain word: letters (inner `-` or `'` allowed, one digit at the end),
/// maybe wrapped in brackets, quotes or trailing punctuation: `Started`,
/// `finalization.`, `(root)`, `eth0`. Lines differing in such a token are
/// kept apart until the position has shown `word_variable_after` distinct
/// words. Identifiers (`cluster_root`, `com.example.App`, `x86_64`) are not
/// words: they vary.
pub(super) fn is_word(tok: &str) -> bool {
    let core = tok
        .trim_start_matches(['(', '[', '{', '\'', '"'])
        .trim_end_matches(['.', ',', ':', ';', '!', '?', ')', ']', '}', '\'', '"', '*']);
    // A name with one trailing digit (`eth0`, `ssh2`) is a word too.
    let b = core.as_bytes();
    let b = match b {
        [rest @ .., d] if d.is_ascii_digit() && rest.len() >= 2 => rest,
        _ => b,
    };
    // UPPER_SNAKE names are constants (enums), lower_snake ones identifiers.
    let upper_snake = b.iter().all(|c| c.is_ascii_uppercase() || *c == b'_');
    !b.is_empty()
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphabetic() || *c == b'-' || *c == b'\'' || (upper_snake && *c == b'_'))
}

/// Whether two different tokens are the same name with other numbers in
/// it (`gige1` and `gige7`, `node-D0` and `node-D7`): then they are values
/// of one variable (hosts, devices, ports), not two words; names that differ
/// in letters (`alt0`, `ee0`) stay words.
pub(super) fn same_shape(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let mut digits = false;
    loop {
        match (a.get(i), b.get(j)) {
            (None, None) => return digits,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                while a.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
                while b.get(j).is_some_and(u8::is_ascii_digit) {
                    j += 1;
                }
                digits = true;
            }
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
            }
            _ => return false,
        }
    }
}

/// `key=value`, `key:value` or `key......value` (a dot leader), both parts
/// non-empty and the key a name (letters, no digits: `R24-M1-N8-C:J09-U11`
/// is a location, not a pair).
pub(super) fn split_key_value(tok: &str) -> Option<(&str, &str)> {
    let (i, sep) = match (tok.find(['=', ':']), tok.find("...")) {
        (Some(i), Some(j)) if j < i => (j, tok[j..].bytes().take_while(|&b| b == b'.').count()),
        (None, Some(j)) => (j, tok[j..].bytes().take_while(|&b| b == b'.').count()),
        (Some(i), _) => (i, 1),
        (None, None) => return None,
    };
    let (k, v) = (&tok[..i], &tok[i + sep..]);
    let name = k.bytes().any(|c| c.is_ascii_alphabetic()) && !k.bytes().any(|c| c.is_ascii_digit());
    (name && !v.is_empty()).then_some((k, v))
}

/// Splits a masked line into tokens (on ASCII whitespace); a blank line is
/// one empty token, so it has a template too. Repeats of a masked token
/// (`blk_<NUM> blk_<NUM> blk_<NUM>`, a list of values) count once, so lists
/// of any length give one template.
pub(super) fn tokens_of(line: &str) -> Vec<&str> {
    let mut v = Vec::new();
    tokens_into(line, &mut v);
    v
}

/// [`tokens_of`] into a caller-owned vector (cleared first).
pub(super) fn tokens_into<'a>(line: &'a str, v: &mut Vec<&'a str>) {
    v.clear();
    v.extend(line.split_ascii_whitespace());
    if v.is_empty() {
        v.push("");
    }
    if line.contains('<') {
        collapse_repeats(v);
    }
}

/// Collapses back-to-back repeats of a group of one to three tokens that
/// holds a placeholder (`node-<NUM> <HEX> ok node-<NUM> <HEX> ok`), in place.
pub(super) fn collapse_repeats(v: &mut Vec<&str>) {
    for p in 1..=3 {
        if v.len() < 2 * p {
            break;
        }
        let mut w = 0;
        for r in 0..v.len() {
            v[w] = v[r];
            w += 1;
            if w >= 2 * p && v[w - p..w] == v[w - 2 * p..w - p] && v[w - p..w].iter().any(|t| t.contains('<'))
            {
                w -= p;
            }
        }
        v.truncate(w);
    }
}
