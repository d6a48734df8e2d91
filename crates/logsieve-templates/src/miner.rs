//! The online template miner: a Drain-family grouping of masked log lines
//! into templates, shared behind one `RwLock` so a server can call it from
//! many threads, with stable template ids and a versioned JSON snapshot.
//!
//! Like Drain, lines are bucketed by token count and leading token, and a
//! line joins the most similar template of its bucket (`similarity`, Drain's
//! `st`). Where Drain is known to fail we do more:
//! * **one meaningful word** (`VM Started` vs `VM Paused`, `user=root` vs
//!   `user=git`): a line differing from a template in one plain word gets a
//!   template of its own, a sibling; once `word_variable_after` distinct
//!   words were seen at that place, two of them only once, the siblings
//!   merge into the oldest and the place becomes a variable (user names do;
//!   `Started`/`Paused` and interface names that each come back do not).
//!   Identifiers (`cluster_root`, `com.example.App`, `x86_64`) and the
//!   values of one key (`name=a`, `name=b` -> `name=<*>`) vary at once; a
//!   different key (`num=..` vs `topActivity=..`) counts as a word;
//!   capitalised enumerations (`LOOKING`, `LEADING`) need one more value;
//! * **variables spanning several tokens**: a line that fits no template of
//!   its length is aligned with templates of other lengths that share its
//!   beginning and end around an established variable; the template then
//!   holds a variadic `<*>`. Plain words or extra `key=value` fields in the
//!   gap are another event (`for <*> from` vs `for invalid user <*> from`).
//!   Repeated groups of masked tokens (a list) collapse to one;
//! * **long lines**: typed placeholders from masking (`<NUM>`, `<IP>`) agree
//!   with each other, and keys of `key=value` tokens stay in the template,
//!   so lines of many fields neither drift into `<*> <*> <*>` nor merge
//!   across a differing field;
//! * **order**: when a template gains a variable it absorbs the templates
//!   that now fit it (as they are, or through a variadic variable), so an
//!   odd first line does not leave a stray template behind.
//!
//! Reads (the warm path: a line fitting a known template as it stands) take
//! the read lock and compare integers only; a line that creates or widens a
//! template takes the write lock.
//!
//! **Bounded memory**: with `max_templates` set, a line that would make one
//! template too many evicts the least recently matched template (Drain3's
//! `max_clusters`). Each template carries the tick of its last match (one
//! relaxed atomic store on the warm path, so matching stays a read); a
//! min-heap of `(tick, id)` entries finds the victim, and an entry whose
//! template was matched since it was pushed is pushed again with its new
//! tick (lazy update), so eviction costs O(log n) amortised and nothing is
//! scanned per line. The evicted template leaves every index (buckets, ids,
//! merged ids, sibling groups), its slot is reused, and token texts no
//! template uses any more are dropped when the token table has doubled;
//! ids are never reused, so a line of an evicted template later gets a new
//! template with a new id.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::mask::Masker;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The snapshot format this version writes; it also reads version 1
/// (written before `max_templates`: no last-match ticks, nothing evicted).
pub const SNAPSHOT_FORMAT_VERSION: u32 = 2;
/// The oldest snapshot format this version reads.
const OLDEST_SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// The template text of a variable token.
pub const WILDCARD: &str = "<*>";
/// How a variadic variable (zero or more tokens) is stored in snapshots.
const VARIADIC_STORED: &str = "<**>";

const WILD: u32 = 0;
const VARIADIC: u32 = 1;
const UNKNOWN: u32 = u32::MAX;
/// In a sibling group (with a cap only): a member that merged into another
/// template and whose slot was freed. It still counts as a rare member.
const TOMB: u32 = u32::MAX;

/// Tuning of the miner. One configuration is meant to serve all log types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinerConfig {
    /// Fraction of a line's tokens that must agree with a template for the
    /// line to join it (Drain's `st`). Default 0.5.
    #[serde(default = "default_similarity")]
    pub similarity: f64,
    /// Allow variadic variables: align a line with templates of other
    /// lengths that share its first and last tokens. Default true.
    #[serde(default = "yes")]
    pub variadic: bool,
    /// A variadic merge needs at least this many agreeing tokens around the
    /// gap. Default 3.
    #[serde(default = "default_variadic_anchor")]
    pub variadic_min_anchor: usize,
    /// Largest difference in token count bridged by a variadic merge.
    /// Default 4.
    #[serde(default = "default_variadic_span")]
    pub variadic_max_span: usize,
    /// Lines that differ from a template in one plain word (`VM Started`,
    /// `VM Paused`) start templates of their own; once this many distinct
    /// words have been seen at that position, at least two of them in one
    /// line only (a variable's values are mostly rare, an enumeration's come
    /// back), those templates merge and the position becomes a variable
    /// (user names, host names). Default 3.
    #[serde(default = "default_word_variable_after")]
    pub word_variable_after: usize,
    /// Most templates kept; when a line would create one more, the least
    /// recently matched template is evicted first (its lines later start a
    /// new template with a new id). Bounds the miner's memory on an endless
    /// stream of novel lines. Default 0: unlimited.
    #[serde(default)]
    pub max_templates: usize,
}

fn default_word_variable_after() -> usize {
    3
}

fn default_similarity() -> f64 {
    0.5
}
fn default_variadic_anchor() -> usize {
    3
}
fn default_variadic_span() -> usize {
    4
}
fn yes() -> bool {
    true
}

impl Default for MinerConfig {
    fn default() -> Self {
        MinerConfig {
            similarity: default_similarity(),
            variadic: true,
            variadic_min_anchor: default_variadic_anchor(),
            variadic_max_span: default_variadic_span(),
            word_variable_after: default_word_variable_after(),
            max_templates: 0,
        }
    }
}

/// The result of adding a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// Stable id of the template the line belongs to.
    pub template_id: u64,
    /// The template as it stands after this line (`<*>` marks variables,
    /// typed placeholders such as `<NUM>` come from masking). Shared with
    /// the miner, so returning it costs no copy.
    pub template: Arc<str>,
    /// True when this line created the template.
    pub is_new: bool,
}

/// A template and how many lines it has absorbed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateInfo {
    pub id: u64,
    pub template: String,
    pub count: u64,
}

/// Why a snapshot could not be written or read. Each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{file}: cannot read or write snapshot: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not a valid template snapshot (corrupted or truncated?): {message}")]
    Corrupt { file: String, message: String },
    #[error(
        "{file}: snapshot format_version {found} is not supported (this build reads versions {oldest} to {supported})"
    )]
    Version {
        file: String,
        found: u64,
        oldest: u32,
        supported: u32,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    format_version: u32,
    config: MinerConfig,
    next_id: u64,
    templates: Vec<SnapshotTemplate>,
    /// Ids of templates merged into others: `[old, current]`.
    #[serde(default)]
    merged: Vec<(u64, u64)>,
    /// Sibling templates still waiting for enough distinct words.
    #[serde(default)]
    siblings: Vec<SnapshotSiblings>,
    /// The last tick handed out (version 2; 0 in version 1).
    #[serde(default)]
    tick: u64,
    /// Templates evicted so far (version 2; 0 in version 1).
    #[serde(default)]
    evicted: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotTemplate {
    id: u64,
    count: u64,
    tokens: Vec<String>,
    /// Tick of the last match, the LRU order (version 2; 0 in version 1,
    /// where ties go to the older id).
    #[serde(default)]
    last_used: u64,
}

/// Templates kept apart for one word at `position`, and the distinct words
/// seen there so far.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotSiblings {
    position: u32,
    skeleton: Vec<String>,
    templates: Vec<u64>,
    values: Vec<String>,
}

#[derive(Debug)]
struct Cluster {
    id: u64,
    tokens: Vec<u32>,
    /// Index of the variadic token, if any.
    variadic: Option<usize>,
    /// `tokens` as text, kept up to date by the write path.
    rendered: Arc<str>,
    count: AtomicU64,
    /// False once merged into another cluster, or evicted.
    alive: bool,
    /// Tick of the last match; kept up to date only with a cap.
    last_used: AtomicU64,
    /// Ids of templates merged into this one (they resolve to it).
    aliases: Vec<u64>,
    /// Keys of the sibling groups that list this cluster (some may be of
    /// groups since merged), so eviction can take it out of them.
    groups: Vec<SiblingKey>,
}

type SiblingKey = (u32, Vec<u32>);

/// Clusters that differ from each other in one plain word at one position.
#[derive(Debug, Default)]
struct Siblings {
    clusters: Vec<u32>,
    values: Vec<u32>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Token text -> token id; `strings[id]` is the text back.
    ids: FastMap<Box<str>, u32>,
    strings: Vec<Box<str>>,
    /// Per token id: is it a typed placeholder (`<NUM>`)? is it a "word"
    /// (letters only, so changing it changes meaning)? does it look constant
    /// enough to be a bucket key?
    placeholder: Vec<bool>,
    word: Vec<bool>,
    keyable: Vec<bool>,
    /// For `key=<*>` tokens, the length of `key=`; else 0.
    kv_wild: Vec<u32>,
    clusters: Vec<Cluster>,
    /// (token count, key of first token) -> clusters.
    buckets: FastMap<(u32, u32), Vec<u32>>,
    /// Variadic clusters by key of first token.
    variadic_buckets: FastMap<u32, Vec<u32>>,
    /// Template id -> cluster; merged ids point at the surviving cluster.
    by_id: FastMap<u64, u32>,
    /// (position, template with that position as `<*>`) -> siblings.
    siblings: FastMap<SiblingKey, Siblings>,
    next_id: u64,
    /// `MinerConfig::max_templates`; 0: no cap, none of the fields below
    /// is used.
    cap: usize,
    /// Templates alive.
    live: usize,
    /// Free cluster slots (with a cap).
    free: Vec<u32>,
    /// Min-heap of (tick, id, slot): each live cluster has one entry, with
    /// its last-match tick or an older one (then it is pushed again with
    /// the current tick when it reaches the top). Entries of dead clusters
    /// are dropped when they surface.
    lru: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// The last tick handed out.
    tick: AtomicU64,
    /// Templates evicted so far.
    evicted: u64,
    /// Compact the token table when it reaches this many entries.
    gc_at: usize,
}

/// The token table is compacted once it has this many entries, and then
/// when it has doubled since.
const GC_MIN_TOKENS: usize = 1 << 16;

/// Buffers that [`Miner::add_with`] reuses from line to line, so a hot
/// loop does not allocate them again. One per thread.
#[derive(Debug, Default)]
pub struct Scratch {
    buf: String,
    ids: Vec<u32>,
    /// Always empty between calls: only its allocation is reused for the
    /// tokens of the next line (see [`recycle`]).
    texts: Vec<&'static str>,
}

/// An empty vector that keeps `v`'s allocation but borrows for another
/// lifetime. (`collect` from a vector's own `into_iter` reuses its buffer
/// when the element layout is the same, as here; were it not to, this
/// would merely allocate.)
fn recycle<'b>(mut v: Vec<&str>) -> Vec<&'b str> {
    v.clear();
    v.into_iter()
        .map(|_| -> &'b str { unreachable!("the vector is empty") })
        .collect()
}

/// The online template miner. Share it with `Arc<Miner>`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct Miner {
    config: MinerConfig,
    masker: Masker,
    inner: RwLock<Inner>,
}

/// How a line relates to a template.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Score {
    /// Tokens equal to the template's literal token.
    same: usize,
    /// Tokens under a template variable, or placeholder against placeholder.
    var: usize,
    /// Literal tokens that differ.
    diff: usize,
    /// Of `diff`, how many replace a plain word.
    diff_words: usize,
}

impl Inner {
    fn new(cap: usize) -> Self {
        let mut inner = Inner {
            next_id: 1,
            cap,
            gc_at: GC_MIN_TOKENS,
            ..Default::default()
        };
        inner.intern(WILDCARD);
        inner.intern(VARIADIC_STORED);
        inner
    }

    fn intern(&mut self, tok: &str) -> u32 {
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
        let kv_wild = match split_key_value(tok) {
            Some((_, "<*>")) => (tok.len() - 3) as u32,
            _ => 0,
        };
        self.kv_wild.push(kv_wild);
        id
    }

    /// Whether template token `t` is `key=<*>` and the line token `text`
    /// has that key.
    fn kv_fits(&self, t: u32, text: &str) -> bool {
        let k = self.kv_wild[t as usize] as usize;
        k > 0 && text.len() > k && text.as_bytes()[..k] == self.strings[t as usize].as_bytes()[..k]
    }

    /// The token that covers two differing tokens: `key=<*>` when both are
    /// values of one key, else `<*>`.
    fn generalize(&mut self, a: u32, b: u32) -> u32 {
        let (sa, sb) = (&self.strings[a as usize], &self.strings[b as usize]);
        let prefix = |s: &str| split_key_value(s).map(|(_, v)| s.len() - v.len());
        match (prefix(sa), prefix(sb)) {
            (Some(pa), Some(pb)) if sa[..pa] == sb[..pb] => {
                let tok = format!("{}<*>", &sa[..pa]);
                self.intern(&tok)
            }
            _ => WILD,
        }
    }

    /// What a sibling position "value" is for counting distinct words: the
    /// key of a `key=value` token, else the token.
    fn sibling_value(&mut self, t: u32) -> u32 {
        let st = &self.strings[t as usize];
        match split_key_value(st) {
            Some((_, v)) => {
                let key = st[..st.len() - v.len()].to_string();
                self.intern(&key)
            }
            None => t,
        }
    }

    fn lookup(&self, tok: &str) -> u32 {
        self.ids.get(tok).copied().unwrap_or(UNKNOWN)
    }

    fn is_placeholder(&self, id: u32) -> bool {
        id != UNKNOWN && self.placeholder[id as usize]
    }

    /// Whether template token `t` and a differing line token `l` differ
    /// in meaning (two plain words, or two `key=value` with other keys)
    /// rather than in a value.
    fn word_diff(&self, t: u32, l: u32, text: &str) -> bool {
        let ts = &self.strings[t as usize];
        let ls = if l == UNKNOWN {
            text
        } else {
            &self.strings[l as usize]
        };
        match (split_key_value(ts), split_key_value(ls)) {
            (Some((ka, va)), Some((kb, vb))) => ka != kb || (is_word(va) && is_word(vb)),
            _ => is_word(ts) && is_word(ls),
        }
    }

    fn key(&self, id: u32, text: &str) -> u32 {
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

    fn render(&self, tokens: &[u32]) -> String {
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

    /// Compares line tokens with template tokens of the same length.
    fn score(&self, tpl: &[u32], line: &[u32], texts: &[&str]) -> Score {
        let mut s = Score {
            same: 0,
            var: 0,
            diff: 0,
            diff_words: 0,
        };
        for i in 0..tpl.len() {
            let (t, l) = (tpl[i], line[i]);
            if t == l && t != WILD {
                s.same += 1;
            } else if t == WILD
                || (self.is_placeholder(t) && self.is_placeholder(l))
                || self.kv_fits(t, texts[i])
            {
                s.var += 1;
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
    fn accepts(&self, s: Score, n: usize, similarity: f64) -> bool {
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
    fn exact_fit(&self, texts: &[&str]) -> Option<(u32, Score)> {
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
                },
            )
        })
    }

    /// The number of equal literal tokens when `line` fits `tpl` (same
    /// length) without changing it.
    /// Works on the line's text, so the warm path need not look up (hash)
    /// every token: most candidates fail on their first tokens.
    fn fits(&self, tpl: &[u32], texts: &[&str]) -> Option<usize> {
        let mut same = 0;
        for (&t, &text) in tpl.iter().zip(texts) {
            if t == WILD {
                continue;
            }
            if *self.strings[t as usize] == *text {
                same += 1;
            } else if !((self.placeholder[t as usize] && crate::is_placeholder_token(text))
                || self.kv_fits(t, text))
            {
                return None;
            }
        }
        Some(same)
    }

    /// [`Inner::fits`] for a line given as interned tokens only.
    fn fits_tokens(&self, tpl: &[u32], line: &[u32]) -> Option<usize> {
        let texts: Vec<&str> = line.iter().map(|&t| &*self.strings[t as usize]).collect();
        self.fits(tpl, &texts)
    }

    /// Best same-length cluster for the line, with its score.
    fn best_same_length(&self, line: &[u32], texts: &[&str], similarity: f64) -> Option<(u32, Score)> {
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
    fn best_variadic(&self, line: &[u32], texts: &[&str], similarity: f64) -> Option<(u32, Score)> {
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

    fn bucket_key(&self, tokens: &[u32]) -> u32 {
        let t = tokens[0];
        if self.keyable[t as usize] {
            t
        } else {
            WILD
        }
    }

    fn insert_cluster(&mut self, id: u64, tokens: Vec<u32>, count: u64) -> u32 {
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

    /// A new tick (0 without a cap: the warm path then touches nothing).
    fn next_tick(&self) -> u64 {
        if self.cap > 0 {
            self.tick.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        }
    }

    /// Records a match of cluster `ix` (with a cap; a read lock suffices).
    fn touch(&self, ix: u32) {
        if self.cap > 0 {
            let t = self.next_tick();
            self.clusters[ix as usize].last_used.store(t, Ordering::Relaxed);
        }
    }

    /// Evicts least recently matched clusters, never `keep`, until at most
    /// `cap` are alive; then compacts the LRU heap and the token table when
    /// they have grown enough.
    fn enforce_cap(&mut self, keep: u32) {
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

    fn check(&self) -> Result<(), String> {
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

    /// The LRU heap from scratch: one entry per live cluster.
    fn rebuild_lru(&mut self) {
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
    fn evict(&mut self, ix: u32) {
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
    fn leave_groups(&mut self, ix: u32, tomb: Option<u32>) {
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

    fn free_slot(&mut self, ix: u32) {
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
    fn compact_tokens(&mut self) {
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
        keep(&mut self.kv_wild, &used);
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

    fn unbucket(&mut self, ix: u32) {
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

    fn rebucket(&mut self, ix: u32) {
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
    fn widen_same_length(&mut self, ix: u32, line: &[u32]) {
        let first_before = self.clusters[ix as usize].tokens[0];
        for (i, &l) in line.iter().enumerate() {
            let t = self.clusters[ix as usize].tokens[i];
            if t != l && t != WILD && !self.kv_fits(t, &self.strings[l as usize].clone()) {
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

    fn widen_variadic(&mut self, ix: u32, line: &[u32]) {
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
    fn add_sibling(&mut self, c: u32, line: &[u32], merge_after: usize) -> (u32, bool) {
        let tpl = self.clusters[c as usize].tokens.clone();
        let mut tokens = Vec::with_capacity(line.len());
        let mut pos = 0;
        for (i, (&t, &l)) in tpl.iter().zip(line).enumerate() {
            if t == l || t == WILD || self.kv_fits(t, &self.strings[l as usize].clone()) {
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
        // `ee0`, ...) each come back. Merge once two of them were seen once.
        let clusters = &entry.clusters;
        let rare = clusters
            .iter()
            .filter(|&&g| g == TOMB || self.clusters[g as usize].count.load(Ordering::Relaxed) <= 1)
            .count();
        if rare < 2 {
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
    fn try_variadic_merge(&mut self, line: &[u32], config: &MinerConfig) -> Option<u32> {
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
    fn variadic_alignment(&self, tpl: &[u32], line: &[u32], config: &MinerConfig) -> Option<(usize, usize)> {
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
    fn make_variadic(&mut self, c: u32, line: &[u32], p: usize, s: usize) {
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
    fn absorb_subsumed(&mut self, c: u32, config: &MinerConfig) {
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
    fn retire_into(&mut self, dead: &[u32], survivor: u32) {
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

/// A plain word: letters (inner `-` or `'` allowed, one digit at the end),
/// maybe wrapped in brackets, quotes or trailing punctuation: `Started`,
/// `finalization.`, `(root)`, `eth0`. Lines differing in such a token are
/// kept apart until the position has shown `word_variable_after` distinct
/// words. Identifiers (`cluster_root`, `com.example.App`, `x86_64`) are not
/// words: they vary.
fn is_word(tok: &str) -> bool {
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

/// `key=value`, `key:value` or `key......value` (a dot leader), both parts
/// non-empty and the key a name (letters, no digits: `R24-M1-N8-C:J09-U11`
/// is a location, not a pair).
fn split_key_value(tok: &str) -> Option<(&str, &str)> {
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
fn tokens_of(line: &str) -> Vec<&str> {
    let mut v = Vec::new();
    tokens_into(line, &mut v);
    v
}

/// [`tokens_of`] into a caller-owned vector (cleared first).
fn tokens_into<'a>(line: &'a str, v: &mut Vec<&'a str>) {
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
fn collapse_repeats(v: &mut Vec<&str>) {
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

impl Miner {
    /// A miner with the given configuration and masker.
    pub fn new(config: MinerConfig, masker: Masker) -> Self {
        let inner = Inner::new(config.max_templates);
        Miner {
            config,
            masker,
            inner: RwLock::new(inner),
        }
    }

    /// This miner with `max_templates` set to `cap` (0: unlimited), for a
    /// miner restored from a snapshot; evicts down to the cap at once.
    pub fn with_max_templates(mut self, cap: usize) -> Self {
        self.config.max_templates = cap;
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        inner.cap = cap;
        if cap > 0 {
            inner.rebuild_lru();
            inner.enforce_cap(UNKNOWN);
        }
        self
    }

    /// Templates evicted so far to stay within `max_templates`.
    pub fn evicted(&self) -> u64 {
        self.read().evicted
    }

    /// A miner with the default configuration and built-in masking.
    pub fn with_defaults() -> Self {
        Self::new(MinerConfig::default(), Masker::builtin())
    }

    /// The masker applied to every line.
    pub fn masker(&self) -> &Masker {
        &self.masker
    }

    /// The configuration.
    pub fn config(&self) -> &MinerConfig {
        &self.config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a line: masks it, finds or creates its template, counts it.
    pub fn add(&self, line: &str) -> Match {
        self.add_with(line, &mut Scratch::default())
    }

    /// [`Miner::add`] reusing caller-owned buffers (for hot loops).
    pub fn add_with(&self, line: &str, scratch: &mut Scratch) -> Match {
        let mut texts = recycle(std::mem::take(&mut scratch.texts));
        let m = self.add_masked(line, &mut scratch.buf, &mut scratch.ids, &mut texts);
        scratch.texts = recycle(texts);
        m
    }

    /// [`Miner::add_with`], with the scratch buffers taken apart so that
    /// `texts` may borrow from `buf`.
    fn add_masked<'a>(
        &self,
        line: &'a str,
        buf: &'a mut String,
        ids: &mut Vec<u32>,
        texts: &mut Vec<&'a str>,
    ) -> Match {
        let masked: &'a str = if self.masker.mask_into(line, buf) {
            buf
        } else {
            line
        };
        tokens_into(masked, texts);
        let texts: &[&str] = texts;
        // Warm path: read lock, the line fits a template as it is.
        {
            let inner = self.read();
            let hit = inner.exact_fit(texts).or_else(|| {
                ids.clear();
                ids.extend(texts.iter().map(|t| inner.lookup(t)));
                self.find(&inner, ids, texts)
            });
            if let Some((c, s)) = hit {
                if s.diff == 0 {
                    inner.touch(c);
                    let cl = &inner.clusters[c as usize];
                    cl.count.fetch_add(1, Ordering::Relaxed);
                    return Match {
                        template_id: cl.id,
                        template: cl.rendered.clone(),
                        is_new: false,
                    };
                }
            }
        }
        let mut inner = self.write();
        ids.clear();
        for t in texts {
            let id = inner.intern(t);
            ids.push(id);
        }
        let found = self.find(&inner, ids, texts);
        let (c, is_new) = match found {
            Some((c, s)) if s.diff_words == 1 && inner.clusters[c as usize].variadic.is_none() => {
                inner.add_sibling(c, ids, self.config.word_variable_after)
            }
            Some((c, s)) if s.diff_words == 0 => {
                if inner.clusters[c as usize].variadic.is_some() {
                    inner.widen_variadic(c, ids);
                } else {
                    inner.widen_same_length(c, ids);
                    inner.absorb_subsumed(c, &self.config);
                }
                (c, false)
            }
            Some(_) => {
                let id = inner.next_id;
                (inner.insert_cluster(id, ids.clone(), 0), true)
            }
            None => {
                let merged = if self.config.variadic && ids.len() > 1 {
                    inner.try_variadic_merge(ids, &self.config)
                } else {
                    None
                };
                match merged {
                    Some(c) => (c, false),
                    None => {
                        let id = inner.next_id;
                        (inner.insert_cluster(id, ids.clone(), 0), true)
                    }
                }
            }
        };
        let rendered: Arc<str> = inner.render(&inner.clusters[c as usize].tokens).into();
        inner.touch(c);
        let cl = &mut inner.clusters[c as usize];
        cl.rendered = rendered;
        cl.count.fetch_add(1, Ordering::Relaxed);
        let m = Match {
            template_id: cl.id,
            template: cl.rendered.clone(),
            is_new,
        };
        inner.enforce_cap(c);
        m
    }

    fn find(&self, inner: &Inner, ids: &[u32], texts: &[&str]) -> Option<(u32, Score)> {
        if let Some(hit) = inner.exact_fit(texts) {
            return Some(hit);
        }
        let sim = self.config.similarity;
        let same = inner.best_same_length(ids, texts, sim);
        if let Some((_, s)) = same {
            if s.diff == 0 {
                return same;
            }
        }
        let var = if self.config.variadic {
            inner.best_variadic(ids, texts, sim)
        } else {
            None
        };
        match (same, var) {
            (Some(a), Some(b)) => Some(if (b.1.diff, b.1.same) < (a.1.diff, a.1.same) {
                b
            } else {
                a
            }),
            (a, b) => a.or(b),
        }
    }

    /// The template a line would join, without changing anything. Only
    /// lines that fit a template as it stands match.
    pub fn match_only(&self, line: &str) -> Option<TemplateInfo> {
        let masked = self.masker.mask(line);
        let texts = tokens_of(&masked);
        let inner = self.read();
        let ids: Vec<u32> = texts.iter().map(|t| inner.lookup(t)).collect();
        let (c, s) = self.find(&inner, &ids, &texts)?;
        if s.diff != 0 {
            return None;
        }
        let cl = &inner.clusters[c as usize];
        Some(TemplateInfo {
            id: cl.id,
            template: cl.rendered.to_string(),
            count: cl.count.load(Ordering::Relaxed),
        })
    }

    /// All templates, in order of creation.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        let inner = self.read();
        let mut out: Vec<TemplateInfo> = inner
            .clusters
            .iter()
            .filter(|cl| cl.alive)
            .map(|cl| TemplateInfo {
                id: cl.id,
                template: cl.rendered.to_string(),
                count: cl.count.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|t| t.id);
        out
    }

    /// The template with this id.
    pub fn template(&self, id: u64) -> Option<TemplateInfo> {
        let inner = self.read();
        let &ix = inner.by_id.get(&id)?;
        let cl = &inner.clusters[ix as usize];
        Some(TemplateInfo {
            id: cl.id,
            template: cl.rendered.to_string(),
            count: cl.count.load(Ordering::Relaxed),
        })
    }

    /// Number of templates.
    pub fn len(&self) -> usize {
        self.read().live
    }

    /// The current id of a template: the id itself, or, when that template
    /// has since merged into another, the id of the one it merged into.
    pub fn resolve(&self, id: u64) -> Option<u64> {
        let inner = self.read();
        inner.by_id.get(&id).map(|&ix| inner.clusters[ix as usize].id)
    }

    /// True when no line has been added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The snapshot as JSON text: `format_version`, the configuration, the
    /// templates with their counts, the ids of merged templates, and the
    /// sibling templates still waiting for enough distinct words, so a
    /// restored miner goes on exactly where this one is.
    pub fn to_json(&self) -> String {
        let inner = self.read();
        let mut templates: Vec<SnapshotTemplate> = inner
            .clusters
            .iter()
            .filter(|cl| cl.alive)
            .map(|cl| SnapshotTemplate {
                id: cl.id,
                count: cl.count.load(Ordering::Relaxed),
                last_used: cl.last_used.load(Ordering::Relaxed),
                tokens: cl
                    .tokens
                    .iter()
                    .map(|&t| inner.strings[t as usize].to_string())
                    .collect(),
            })
            .collect();
        templates.sort_by_key(|t| t.id);
        let mut merged: Vec<(u64, u64)> = inner
            .by_id
            .iter()
            .map(|(&id, &ix)| (id, inner.clusters[ix as usize].id))
            .filter(|(id, cur)| id != cur)
            .collect();
        merged.sort();
        let text = |ids: &[u32]| -> Vec<String> {
            ids.iter()
                .map(|&t| inner.strings[t as usize].to_string())
                .collect()
        };
        let mut siblings: Vec<SnapshotSiblings> = inner
            .siblings
            .iter()
            .map(|((position, skeleton), sib)| SnapshotSiblings {
                position: *position,
                skeleton: text(skeleton),
                templates: sib
                    .clusters
                    .iter()
                    .filter(|&&c| c != TOMB && inner.clusters[c as usize].alive)
                    .map(|&c| inner.clusters[c as usize].id)
                    .collect(),
                values: text(&sib.values),
            })
            .filter(|s| !s.templates.is_empty())
            .collect();
        siblings.sort_by(|a, b| (a.position, &a.skeleton).cmp(&(b.position, &b.skeleton)));
        let snap = Snapshot {
            format_version: SNAPSHOT_FORMAT_VERSION,
            config: self.config.clone(),
            next_id: inner.next_id,
            templates,
            merged,
            siblings,
            tick: inner.tick.load(Ordering::Relaxed),
            evicted: inner.evicted,
        };
        serde_json::to_string_pretty(&snap).expect("snapshot serialises")
    }

    /// Writes a snapshot to `path` (through a temporary file and a rename,
    /// so a crash never leaves half a snapshot).
    pub fn save(&self, path: &Path) -> Result<(), SnapshotError> {
        let file = path.display().to_string();
        let io = |source| SnapshotError::Io {
            file: file.clone(),
            source,
        };
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json()).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Reads a snapshot written by [`Miner::save`]; the masker is not part
    /// of the snapshot and must be the one used when it was written.
    pub fn load(path: &Path, masker: Masker) -> Result<Self, SnapshotError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SnapshotError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_json(&text, &file, masker)
    }

    /// Parses snapshot JSON; `file` names it in errors.
    pub fn from_json(text: &str, file: &str, masker: Masker) -> Result<Self, SnapshotError> {
        let corrupt = |message: String| SnapshotError::Corrupt {
            file: file.to_string(),
            message,
        };
        // Check the version before the shape, so a future format gets the
        // right message rather than "unknown field".
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
        let version = value
            .get("format_version")
            .ok_or_else(|| corrupt("missing `format_version`".into()))?
            .as_u64()
            .ok_or_else(|| corrupt("`format_version` is not a whole number".into()))?;
        if !(OLDEST_SNAPSHOT_FORMAT_VERSION as u64..=SNAPSHOT_FORMAT_VERSION as u64).contains(&version) {
            return Err(SnapshotError::Version {
                file: file.to_string(),
                found: version,
                oldest: OLDEST_SNAPSHOT_FORMAT_VERSION,
                supported: SNAPSHOT_FORMAT_VERSION,
            });
        }
        let snap: Snapshot = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        let invalid = |message: String| SnapshotError::Invalid {
            file: file.to_string(),
            message,
        };
        if !(snap.config.similarity > 0.0 && snap.config.similarity <= 1.0) {
            return Err(invalid(format!(
                "config.similarity {} is not in (0, 1]",
                snap.config.similarity
            )));
        }
        let mut inner = Inner::new(snap.config.max_templates);
        for t in &snap.templates {
            if t.tokens.is_empty() {
                return Err(invalid(format!("template {} has no tokens", t.id)));
            }
            if inner.by_id.contains_key(&t.id) {
                return Err(invalid(format!("template id {} appears twice", t.id)));
            }
            if t.tokens.iter().filter(|s| *s == VARIADIC_STORED).count() > 1 {
                return Err(invalid(format!(
                    "template {} has more than one variadic `<**>`",
                    t.id
                )));
            }
            if t.id >= snap.next_id {
                return Err(invalid(format!(
                    "template id {} is not below next_id {}",
                    t.id, snap.next_id
                )));
            }
            let tokens: Vec<u32> = t.tokens.iter().map(|s| inner.intern(s)).collect();
            let ix = inner.insert_cluster(t.id, tokens, t.count);
            inner.clusters[ix as usize].last_used = AtomicU64::new(t.last_used);
        }
        for &(old, cur) in &snap.merged {
            let Some(&ix) = inner.by_id.get(&cur) else {
                return Err(invalid(format!(
                    "merged template {old} points at unknown template {cur}"
                )));
            };
            if old >= snap.next_id || inner.clusters[ix as usize].id == old {
                return Err(invalid(format!("merged template id {old} is invalid")));
            }
            inner.by_id.insert(old, ix);
            inner.clusters[ix as usize].aliases.push(old);
        }
        for sib in &snap.siblings {
            let mut clusters = Vec::with_capacity(sib.templates.len());
            for id in &sib.templates {
                let Some(&ix) = inner.by_id.get(id) else {
                    return Err(invalid(format!("siblings name unknown template {id}")));
                };
                clusters.push(ix);
            }
            if sib.position as usize >= sib.skeleton.len() {
                return Err(invalid(format!(
                    "sibling position {} is past the end of its template",
                    sib.position
                )));
            }
            let skeleton: Vec<u32> = sib.skeleton.iter().map(|t| inner.intern(t)).collect();
            let values: Vec<u32> = sib.values.iter().map(|t| inner.intern(t)).collect();
            let key = (sib.position, skeleton);
            for &c in &clusters {
                inner.clusters[c as usize].groups.push(key.clone());
            }
            inner.siblings.insert(key, Siblings { clusters, values });
        }
        inner.next_id = snap.next_id;
        let last = snap.templates.iter().map(|t| t.last_used).max().unwrap_or(0);
        inner.tick = AtomicU64::new(snap.tick.max(last));
        inner.evicted = snap.evicted;
        if inner.cap > 0 {
            inner.rebuild_lru();
            inner.enforce_cap(UNKNOWN);
        }
        Ok(Miner {
            config: snap.config,
            masker,
            inner: RwLock::new(inner),
        })
    }

    /// Checks the miner's internal indexes against each other (for tests):
    /// every live template is in its bucket and resolves by id, merged ids
    /// resolve to live templates, sibling groups name live templates, the
    /// cap holds and each live template has an LRU entry.
    #[doc(hidden)]
    pub fn check_consistency(&self) -> Result<(), String> {
        self.read().check()
    }

    /// The parameters of `line` under the template with id `template_id`:
    /// the raw text under each variable of the template, in order.
    pub fn parameters(&self, template_id: u64, line: &str) -> Option<Vec<String>> {
        let t = self.template(template_id)?;
        extract_parameters(&t.template, line)
    }
}

/// The raw text of `line` under each variable (`<*>`, `<NUM>`, ...) of
/// `template`, in order; `None` when the line does not fit the template.
/// Runs of whitespace in the line match the single spaces of the template.
pub fn extract_parameters(template: &str, line: &str) -> Option<Vec<String>> {
    let re = template_regex(template, "(.*?)", true);
    let re = regex::Regex::new(&re).ok()?;
    let caps = re.captures(line.trim())?;
    Some(
        caps.iter()
            .skip(1)
            .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
            .collect(),
    )
}

/// Splits a template into literal text and variables.
pub(crate) fn template_pieces(template: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut lit_start = 0;
    let mut i = 0;
    let bytes = template.as_bytes();
    while i < bytes.len() {
        if bytes[i] == b'<' {
            if let Some(end) = template[i + 1..].find('>') {
                let name = &template[i + 1..i + 1 + end];
                if name == "*" || crate::is_placeholder_name(name) {
                    if lit_start < i {
                        pieces.push(Piece::Literal(&template[lit_start..i]));
                    }
                    pieces.push(Piece::Var(&template[i..i + end + 2]));
                    i += end + 2;
                    lit_start = i;
                    continue;
                }
            }
        }
        i += 1;
    }
    if lit_start < template.len() {
        pieces.push(Piece::Literal(&template[lit_start..]));
    }
    pieces
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Literal(&'a str),
    Var(&'a str),
}

/// A regex for `template`: literal text escaped, spaces as `\s+`, each
/// variable as `var` (a group). Anchored when `anchored`.
pub(crate) fn template_regex(template: &str, var: &str, anchored: bool) -> String {
    template_regex_with(template, anchored, |_| Cow::Borrowed(var))
}

pub(crate) fn template_regex_with<'a>(
    template: &str,
    anchored: bool,
    mut var: impl FnMut(usize) -> Cow<'a, str>,
) -> String {
    let mut re = String::new();
    if anchored {
        re.push('^');
    }
    let mut k = 0;
    for piece in template_pieces(template) {
        match piece {
            Piece::Literal(text) => {
                let mut first = true;
                for part in text.split(' ') {
                    if !first {
                        re.push_str(r"\s+");
                    }
                    first = false;
                    re.push_str(&regex::escape(part));
                }
            }
            Piece::Var(_) => {
                re.push_str(&var(k));
                k += 1;
            }
        }
    }
    if anchored {
        re.push('$');
    }
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    fn miner() -> Miner {
        Miner::with_defaults()
    }

    #[test]
    fn keeps_lines_differing_in_one_meaningful_word_apart() {
        let m = miner();
        let a = m.add("VM Started");
        let b = m.add("VM Paused");
        assert_ne!(a.template_id, b.template_id);
        assert_eq!(m.add("VM Started").template_id, a.template_id);
        assert_eq!(m.templates().len(), 2);
    }

    #[test]
    fn merges_lines_differing_only_in_variables() {
        let m = miner();
        let a = m.add("Connection from 10.0.0.1 closed");
        let b = m.add("Connection from 10.0.0.2 closed");
        assert!(a.is_new && !b.is_new);
        assert_eq!(a.template_id, b.template_id);
        assert_eq!(&*b.template, "Connection from <IP> closed");
        // A plain word becomes a variable once three distinct words were
        // seen at its place; earlier ids then resolve to the merged one.
        let c = m.add("Invalid user admin from 1.2.3.4 port 22");
        let d = m.add("Invalid user oracle from 1.2.3.5 port 23");
        assert_ne!(c.template_id, d.template_id);
        let e = m.add("Invalid user test from 1.2.3.6 port 24");
        assert_eq!(&*e.template, "Invalid user <*> from <IP> port <NUM>");
        assert_eq!(m.resolve(c.template_id), Some(e.template_id));
        assert_eq!(m.resolve(d.template_id), Some(e.template_id));
        assert_eq!(m.template(d.template_id).unwrap().count, 3);
        assert_eq!(
            m.add("Invalid user guest from 1.2.3.7 port 25").template_id,
            e.template_id
        );
    }

    #[test]
    fn a_variable_spanning_several_tokens_gives_one_template() {
        let m = miner();
        let a = m.add("acquire lock tag=\"alpha_1\" for uid 5");
        let b = m.add("acquire lock tag=\"beta_2\" for uid 6");
        // Values of one key generalise to `key=<*>`.
        assert_eq!(&*b.template, "acquire lock tag=<*> for uid <NUM>");
        let c = m.add("acquire lock tag=\"View Lock\" for uid 7");
        assert_eq!(&*c.template, "acquire lock <*> for uid <NUM>");
        assert_eq!((a.template_id, a.template_id), (b.template_id, c.template_id));
        let p = m
            .parameters(a.template_id, "acquire lock tag=\"View Lock\" for uid 7")
            .unwrap();
        assert_eq!(p, ["tag=\"View Lock\"", "7"]);
        // Lists of masked values of any length give one template.
        let d = m.add("ask 10.0.0.1:50010 to delete blk_-1");
        let e = m.add("ask 10.0.0.2:50010 to delete blk_-1 blk_2 blk_-3");
        assert_eq!(d.template_id, e.template_id);
        assert_eq!(&*e.template, "ask <IP> to delete blk_<NUM>");
    }

    #[test]
    fn a_word_place_turns_variable_only_when_its_values_are_rare() {
        let m = miner();
        // Interface names that each come back are an enumeration.
        for _ in 0..3 {
            m.add("link up via interface alt0");
            m.add("link up via interface ee0");
        }
        let s = m.add("link up via interface scip0");
        assert_eq!(&*s.template, "link up via interface scip0");
        assert_eq!(m.templates().len(), 3);
        // User names mostly show up once: a variable.
        m.add("Invalid user admin from 1.2.3.4");
        m.add("Invalid user test from 1.2.3.5");
        let v = m.add("Invalid user oracle from 1.2.3.6");
        assert_eq!(&*v.template, "Invalid user <*> from <IP>");
        assert_eq!(m.templates().len(), 4);
    }

    #[test]
    fn long_key_value_lines_keep_keys_and_meaningful_values() {
        let m = miner();
        let line = |job: &str, state: &str| {
            format!("scheduler tick job=batch_{job} queue=q_{job} owner=svc_{job} host=node-{job}.example state={state} retries=0")
        };
        let a = m.add(&line("a1", "RUNNING"));
        let b = m.add(&line("b2", "RUNNING"));
        assert_eq!(a.template_id, b.template_id);
        assert_eq!(
            &*b.template,
            "scheduler tick job=<*> queue=<*> owner=<*> host=<*> state=RUNNING retries=<NUM>"
        );
        // One meaningful word differs in a long line: another event.
        let c = m.add(&line("c3", "FAILED"));
        assert_ne!(c.template_id, a.template_id);
        assert_eq!(m.add(&line("d4", "FAILED")).template_id, c.template_id);
        assert_eq!(m.add(&line("e5", "RUNNING")).template_id, a.template_id);
        // Another key in that place is another structure.
        let d = m.add("getRecentTasks: num=20,flags=62,totalTasks=46");
        let e = m.add("getRecentTasks: topActivity=ComponentInfo{com.a/com.a.Main}");
        let f = m.add("getRecentTasks: topActivity=ComponentInfo{com.b/com.b.Splash}");
        assert_ne!(d.template_id, e.template_id);
        assert_eq!(e.template_id, f.template_id);
        assert_eq!(&*f.template, "getRecentTasks: topActivity=<*>");
    }

    #[test]
    fn ids_are_stable_and_match_only_changes_nothing() {
        let m = miner();
        let a = m.add("disk sda1 full");
        assert!(m.match_only("disk sdb2 almost full").is_none());
        assert_eq!(m.match_only("disk sda1 full").unwrap().id, a.template_id);
        let b = m.add("user 7 logged out");
        let c = m.add("user 8 logged out");
        assert_eq!(b.template_id, c.template_id);
        assert_eq!(m.match_only("user 9 logged out").unwrap().count, 2);
        assert_eq!(
            m.templates().iter().map(|t| t.id).collect::<Vec<_>>(),
            [a.template_id, b.template_id]
        );
    }

    #[test]
    fn extracts_parameters_from_raw_lines() {
        let p = extract_parameters(
            "Received block blk_<NUM> of size <NUM> from /<IP>",
            "Received block blk_-1608999687919862906 of size 91178 from /10.250.10.6",
        )
        .unwrap();
        assert_eq!(p, ["-1608999687919862906", "91178", "10.250.10.6"]);
        let p = extract_parameters(
            "Fan speeds ( <NUM> **** <NUM> )",
            "Fan speeds ( 3552 3534  3391 **** 3515 3479 )",
        )
        .unwrap();
        assert_eq!(p, ["3552 3534  3391", "3515 3479"]);
        assert!(extract_parameters("user <*> logged in", "user bob logged out").is_none());
    }

    #[test]
    fn snapshot_round_trips() {
        let m = miner();
        for l in [
            "a b 1",
            "a b 2",
            "x y z",
            "VM Started",
            "VM Paused",
            "VM Stopped",
            "user tag=x_1 logged in",
            "user tag=x_2 logged in",
            "user tag=\"a b\" logged in",
        ] {
            m.add(l);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("templates.json");
        m.save(&path).unwrap();
        let r = Miner::load(&path, Masker::builtin()).unwrap();
        assert_eq!(r.templates(), m.templates());
        let next = r.add("new line entirely here");
        assert!(next.is_new);
        assert!(m.templates().iter().all(|t| t.id < next.template_id));
        assert_eq!(r.add("a b 3").template_id, m.add("a b 3").template_id);
        assert_eq!(r.add("VM Paused").template_id, m.add("VM Paused").template_id);
        assert_eq!(
            r.add("user tag=\"c d\" logged in").template_id,
            m.add("user tag=\"c d\" logged in").template_id
        );
        // Sibling bookkeeping survives: the third user name merges in both.
        for who in ["root", "admin"] {
            m.add(&format!("session opened for user {who} by sshd"));
        }
        let r = Miner::from_json(&m.to_json(), "snap", Masker::builtin()).unwrap();
        let third = "session opened for user git by sshd";
        let (x, y) = (r.add(third), m.add(third));
        assert_eq!(
            (x.template_id, &*x.template),
            (y.template_id, "session opened for user <*> by sshd")
        );
        assert_eq!(r.templates(), m.templates());
    }

    #[test]
    fn bad_snapshots_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.json");
        let m = miner();
        m.add("hello world");
        let good = m.to_json();

        std::fs::write(
            &path,
            good.replace("\"format_version\": 2", "\"format_version\": 99"),
        )
        .unwrap();
        let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
        assert!(
            err.contains("snap.json") && err.contains("format_version 99") && err.contains("versions 1 to 2"),
            "{err}"
        );

        std::fs::write(&path, &good[..good.len() / 2]).unwrap();
        let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
        assert!(
            err.contains("snap.json") && err.contains("corrupted or truncated"),
            "{err}"
        );

        std::fs::write(&path, "{\"templates\": []}").unwrap();
        let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
        assert!(err.contains("missing `format_version`"), "{err}");

        std::fs::write(&path, good.replace("\"next_id\": 2", "\"next_id\": 1")).unwrap();
        let err = Miner::load(&path, Masker::builtin()).unwrap_err().to_string();
        assert!(err.contains("not below next_id"), "{err}");

        let err = Miner::load(&dir.path().join("missing.json"), Masker::builtin())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("missing.json") && err.contains("cannot read"),
            "{err}"
        );
    }

    #[test]
    fn shared_between_threads() {
        let m = std::sync::Arc::new(miner());
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        m.add(&format!("worker {t} finished job {i} in {} ms", i * 3));
                        m.add(&format!("queue depth {i}"));
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let t = m.templates();
        assert_eq!(t.iter().map(|t| t.count).sum::<u64>(), 1600);
        assert_eq!(t.len(), 2, "{t:?}");
    }

    /// A plain word (letters only) unique to `i`.
    fn word(i: usize) -> String {
        let mut w = String::from("w");
        let mut i = i;
        loop {
            w.push((b'a' + (i % 26) as u8) as char);
            i /= 26;
            if i == 0 {
                break w;
            }
        }
    }

    /// A line whose template no other `distinct(j)` joins: its own first
    /// word (its own bucket) and plain words only.
    fn distinct(i: usize) -> String {
        format!("{} started {} now", word(i), word(i + 100_000))
    }

    fn capped(cap: usize) -> Miner {
        Miner::new(
            MinerConfig {
                max_templates: cap,
                ..MinerConfig::default()
            },
            Masker::builtin(),
        )
    }

    #[test]
    fn a_cap_bounds_the_templates_and_counts_evictions() {
        let (cap, n) = (10, 250);
        let m = capped(cap);
        let mut ids = Vec::new();
        for i in 0..n {
            let r = m.add(&distinct(i));
            assert!(r.is_new);
            ids.push(r.template_id);
            assert!(m.len() <= cap, "{} templates", m.len());
        }
        m.check_consistency().unwrap();
        assert_eq!(m.len(), cap);
        assert_eq!(m.evicted(), (n - cap) as u64);
        // The last `cap` lines' templates are the ones kept.
        let kept: Vec<u64> = m.templates().iter().map(|t| t.id).collect();
        assert_eq!(kept, ids[n - cap..]);
        assert!(ids[..n - cap].iter().all(|&id| m.resolve(id).is_none()));
        // Without a cap nothing goes.
        let u = miner();
        for i in 0..n {
            u.add(&distinct(i));
        }
        assert_eq!((u.len(), u.evicted()), (n, 0));
    }

    #[test]
    fn the_least_recently_matched_template_is_evicted_first() {
        let m = capped(3);
        let [a, b, c] = [0, 1, 2].map(|i| m.add(&distinct(i)).template_id);
        assert_eq!(m.add(&distinct(0)).template_id, a); // a is now newer than b and c
        let d = m.add(&distinct(3)).template_id;
        assert_eq!(m.evicted(), 1);
        assert_eq!(m.resolve(b), None);
        assert_eq!(m.templates().iter().map(|t| t.id).collect::<Vec<_>>(), [a, c, d]);
        // Matching through the write path (a line that widens the template)
        // counts as use too.
        assert_eq!(m.add("user 7 logged out").template_id, d + 1); // evicts a? no: c
        assert_eq!(m.resolve(c), None);
        assert_eq!(m.add(&distinct(0)).template_id, a);
        assert_eq!(m.add("user 8 logged out").template_id, d + 1);
        let e = m.add(&distinct(4)).template_id; // evicts d, the oldest match
        assert_eq!(m.resolve(d), None);
        assert_eq!(
            m.templates().iter().map(|t| t.id).collect::<Vec<_>>(),
            [a, d + 1, e]
        );
        m.check_consistency().unwrap();
    }

    #[test]
    fn an_evicted_templates_lines_start_a_new_template() {
        let m = capped(2);
        let a = m.add("Connection from 10.0.0.1 closed");
        m.add("Connection from 10.0.0.2 closed");
        m.add(&distinct(0));
        m.add(&distinct(1));
        assert_eq!(m.resolve(a.template_id), None);
        assert!(m.match_only("Connection from 10.0.0.3 closed").is_none());
        let again = m.add("Connection from 10.0.0.3 closed");
        assert!(again.is_new);
        assert!(again.template_id > a.template_id + 2, "ids are never reused");
        assert_eq!(&*again.template, "Connection from <IP> closed");
        assert_eq!(m.template(again.template_id).unwrap().count, 1);
        m.check_consistency().unwrap();
    }

    #[test]
    fn eviction_of_a_merged_template_drops_the_ids_merged_into_it() {
        let m = capped(3);
        let ids: Vec<u64> = ["admin", "oracle", "test"]
            .iter()
            .map(|u| m.add(&format!("Invalid user {u} from 1.2.3.4")).template_id)
            .collect();
        let merged = m.resolve(ids[1]).unwrap();
        assert_eq!(merged, ids[0]);
        assert_eq!(m.template(merged).unwrap().template, "Invalid user <*> from <IP>");
        assert_eq!(m.len(), 1);
        m.check_consistency().unwrap();
        for i in 0..3 {
            m.add(&distinct(i));
            m.check_consistency().unwrap();
        }
        assert!(
            ids.iter().all(|&id| m.resolve(id).is_none()),
            "merged ids go with it"
        );
        assert_eq!(m.evicted(), 1);
    }

    /// Siblings, merges, variadic merges and evictions mixed, with the token
    /// table compacted often: the indexes stay consistent and the grouping
    /// of what is kept matches an uncapped miner where the cap does not
    /// bite.
    #[test]
    fn eviction_keeps_merges_siblings_and_tokens_consistent() {
        let lines = |i: usize| -> Vec<String> {
            vec![
                format!("Invalid user {} from 10.0.{}.{}", word(i % 7), i % 5, i % 250),
                format!(
                    "VM {} on host{}",
                    ["Started", "Paused", "Stopped", "Resumed"][i % 4],
                    i % 3
                ),
                format!(
                    "acquire lock tag=\"{}\" for uid {i}",
                    if i % 3 == 0 { "a b".into() } else { word(i) }
                ),
                format!("link up via interface {}", ["alt0", "ee0", "scip0"][i % 3]),
                distinct(i),
                format!("session opened for user {} by sshd", word(i)),
                format!("job {} finished in {} ms", word(i % 13), i),
            ]
        };
        for cap in [2, 3, 5, 8, 40] {
            let m = capped(cap);
            for i in 0..300 {
                for l in lines(i) {
                    // Compact the token table at every change, half the time.
                    m.write().gc_at = if i % 2 == 0 { 0 } else { usize::MAX };
                    let r = m.add(&l);
                    assert_eq!(m.resolve(r.template_id), Some(r.template_id));
                    if let Err(e) = m.check_consistency() {
                        panic!("cap {cap}, line {i} {l:?}: {e}");
                    }
                }
            }
            assert!(m.len() <= cap);
            let back = Miner::from_json(&m.to_json(), "snap", Masker::builtin()).unwrap();
            back.check_consistency().unwrap();
            assert_eq!(back.templates(), m.templates());
        }
    }

    #[test]
    fn a_snapshot_keeps_the_cap_the_lru_order_and_the_evictions() {
        let m = capped(4);
        for i in 0..6 {
            m.add(&distinct(i));
        }
        m.add(&distinct(3)); // 3 becomes the most recent
        m.add("user 1 logged in");
        let json = m.to_json();
        let evicted_then = m.evicted();
        assert_eq!(evicted_then, 3);
        assert!(json.contains("\"format_version\": 2") && json.contains("\"max_templates\": 4"));
        let r = Miner::from_json(&json, "snap", Masker::builtin()).unwrap();
        assert_eq!(r.templates(), m.templates());
        assert_eq!((r.evicted(), r.config().max_templates), (m.evicted(), 4));
        r.check_consistency().unwrap();
        // Both go on evicting the same templates, in the same order.
        for i in [2, 7, 8, 3, 9, 10, 11] {
            let (x, y) = (m.add(&distinct(i)), r.add(&distinct(i)));
            assert_eq!(x, y);
            assert_eq!(r.templates(), m.templates());
        }
        assert_eq!(r.evicted(), m.evicted());
        assert_eq!(r.to_json(), m.to_json());
        // A lower cap on restore evicts the least recently used at once.
        let r = Miner::from_json(&json, "snap", Masker::builtin())
            .unwrap()
            .with_max_templates(2);
        let kept: Vec<String> = r.templates().into_iter().map(|t| t.template).collect();
        assert_eq!(kept, [distinct(3), "user <NUM> logged in".to_string()]);
        assert_eq!(r.evicted(), evicted_then + 2);
    }

    #[test]
    fn a_version_1_snapshot_still_loads() {
        let m = miner();
        for l in ["a b 1", "a b 2", "VM Started", "VM Paused", "x y z"] {
            m.add(l);
        }
        // Version 1 had no ticks, no eviction count and no max_templates.
        let mut v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
        v["format_version"] = 1.into();
        v.as_object_mut().unwrap().remove("tick");
        v.as_object_mut().unwrap().remove("evicted");
        v["config"].as_object_mut().unwrap().remove("max_templates");
        for t in v["templates"].as_array_mut().unwrap() {
            t.as_object_mut().unwrap().remove("last_used");
        }
        let text = serde_json::to_string(&v).unwrap();
        assert!(!text.contains("last_used") && !text.contains("max_templates"));
        let r = Miner::from_json(&text, "v1", Masker::builtin()).unwrap();
        assert_eq!(r.templates(), m.templates());
        assert_eq!((r.evicted(), r.config().max_templates), (0, 0));
        assert_eq!(r.add("a b 3").template_id, m.add("a b 3").template_id);
        // With a cap given later, ties (no ticks) go to the oldest id.
        let r = Miner::from_json(&text, "v1", Masker::builtin())
            .unwrap()
            .with_max_templates(2);
        let ids: Vec<u64> = r.templates().iter().map(|t| t.id).collect();
        let all: Vec<u64> = m.templates().iter().map(|t| t.id).collect();
        assert_eq!(ids, all[all.len() - 2..]);
        assert_eq!(r.evicted(), all.len() as u64 - 2);
        r.check_consistency().unwrap();
    }

    #[test]
    fn a_capped_miner_is_shared_between_threads() {
        let m = std::sync::Arc::new(capped(50));
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        m.add(&format!("worker {t} finished job {i} in {} ms", i * 3));
                        m.add(&distinct(t * 1000 + i));
                        assert!(m.len() <= 50);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        m.check_consistency().unwrap();
        assert_eq!(m.len(), 50);
        // The hot template is matched all the time: it is never evicted.
        assert!(m.match_only("worker 1 finished job 1 in 3 ms").is_some());
        let created = m.to_json().matches("\"id\"").count() as u64; // live templates
        assert_eq!(created, 50);
        assert!(m.evicted() >= 1200 - 50);
    }
}
