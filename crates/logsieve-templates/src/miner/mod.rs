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
//! * **drift**: a line widens a template only when its literal tokens agree
//!   on `similarity` of the places that could agree (Drain's measure);
//!   masked values (`<TS>` against `<TS>`) and existing variables are no
//!   evidence, or a template widens step by step into `<*> <*> to <*>`;
//! * **value diversity**: names that differ only in their digits (`gige1`,
//!   `gige7`) are values, and `word_variable_distinct` distinct words at
//!   one place make it a variable even when each recurs;
//! * **punctuation**: a variable keeps the brackets, quotes and punctuation
//!   its values share (`<*>,`, `'<*>'`; `key=<*>` likewise).
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
//!
//! Files: this one holds the types and the public API (`add`, lookups);
//! `tokens` the token table and tokenization, `matching` scoring and
//! finding a line's template (read lock), `merging` creating and widening
//! templates (write lock), `eviction` the cap, `snapshot` the JSON format,
//! `render` templates as text and regexes, `check` the consistency check,
//! `tests` the behaviour.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::mask::Masker;

mod check;
mod eviction;
mod matching;
mod merging;
mod render;
mod snapshot;
#[cfg(test)]
mod tests;
mod tokens;

pub use check::Inconsistency;
pub use render::extract_parameters;
pub(crate) use render::{template_pieces, template_regex, template_regex_with, Piece};
pub use snapshot::{SnapshotError, SNAPSHOT_FORMAT_VERSION};
pub use tokens::Scratch;

use matching::Score;
use tokens::{recycle, split_key_value, tokens_into, tokens_of};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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
    /// Value diversity: once this many distinct words have been seen at
    /// one position of otherwise equal lines, the position is a variable
    /// even when every word comes back (host, user or service names that
    /// recur); an enumeration of states has fewer. 0: never. Default 6.
    #[serde(default = "default_word_variable_distinct")]
    pub word_variable_distinct: usize,
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

fn default_word_variable_distinct() -> usize {
    6
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
            word_variable_distinct: default_word_variable_distinct(),
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
    /// For a token holding one `<*>` with literal text around it (`key=<*>`,
    /// `<*>,`, `'<*>'`): the lengths of that text before and after it, so a
    /// line token with the same text around any value fits. Packed as
    /// `before << 16 | after` (each under 64 KiB, else not an affix); 0: none.
    affix: Vec<u32>,
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

/// The online template miner. Share it with `Arc<Miner>`; every method
/// takes `&self`.
#[derive(Debug)]
pub struct Miner {
    config: MinerConfig,
    masker: Masker,
    inner: RwLock<Inner>,
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
                inner.add_sibling(c, ids, &self.config)
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

    /// Checks the miner's internal indexes against each other (for tests):
    /// every live template is in its bucket and resolves by id, merged ids
    /// resolve to live templates, sibling groups name live templates, the
    /// cap holds and each live template has an LRU entry.
    #[doc(hidden)]
    pub fn check_consistency(&self) -> Result<(), Inconsistency> {
        self.read().check()
    }

    /// The parameters of `line` under the template with id `template_id`:
    /// the raw text under each variable of the template, in order.
    pub fn parameters(&self, template_id: u64, line: &str) -> Option<Vec<String>> {
        let t = self.template(template_id)?;
        extract_parameters(&t.template, line)
    }
}
