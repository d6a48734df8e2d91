//! What the dashboard shows: counts of classified lines per minute ×
//! source × label × method, a confidence histogram, template counts per
//! label with an example line, the template cache's and the LLM's figures,
//! and the last N Security Alert / Critical Error lines.
//!
//! Fed off the classify path in batches: the batcher hands each answered
//! batch (rows moved, not copied) to [`Recorder::record`], a send on a
//! bounded channel; one background thread masks the lines, folds the batch
//! into a [`Delta`] and merges that into the shared [`Aggregates`] under one
//! lock per batch, never per row. A full channel makes the classifier
//! thread wait (back-pressure, as a log pipeline's buffers do), so no row
//! goes uncounted.
//!
//! Counts are kept per minute for a day, then per hour ([`Aggregates::coarsen`]),
//! until the retention drops them: a week of a busy server keeps about
//! 1,440 + 144 buckets per (source, label, method), not 10,080.
//!
//! Persistence is a seam, [`AggregateStore`]: the thread loads what a store
//! kept at start, appends each second's [`Delta`] and prunes past the
//! retention. Without a store the aggregates live in memory, pruned the same
//! way. `logsieve report` builds an [`Aggregates`] from one file with the
//! same code ([`Delta::add_rows`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logsieve_pipeline::{Decision, Method, Pipeline};
use logsieve_templates::Masker;
use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// The labels whose lines the alert tail keeps and streams.
pub const ALERT_LABELS: [&str; 2] = ["Security Alert", "Critical Error"];
/// Bins of the confidence histogram: [0, 0.1), [0.1, 0.2), … [0.9, 1.0].
pub const CONFIDENCE_BINS: usize = 10;
/// Templates per label a stats answer lists.
pub const TOP_TEMPLATES: usize = 10;
/// Alerts a stats answer lists (the newest).
pub const ALERTS_LISTED: usize = 50;
/// Template counts are kept per hour (per minute would be a row per
/// template per minute); the other counts per minute.
const TEMPLATE_BUCKET_SECS: i64 = 3600;

/// A line labelled Security Alert or Critical Error.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Alert {
    /// When it was classified, Unix milliseconds.
    pub at_ms: i64,
    pub source: String,
    pub log_message: String,
    pub target_label: String,
    pub method: String,
    pub confidence: f32,
    /// The rule id, the model's runner-up or the LLM's reason.
    pub detail: String,
}

/// Cumulative counters of the cascade, sampled; the differences between
/// two samples are what a minute adds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct SieveCounts {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub llm_calls: u64,
    pub llm_failed_calls: u64,
    pub llm_answered_calls: u64,
    pub llm_latency_ms_total: u64,
}

impl SieveCounts {
    /// Read a pipeline's counters.
    pub fn of(p: &Pipeline) -> Self {
        let s = p.stats();
        let l = p.llm().stats();
        Self {
            cache_hits: s.template_cache.hits,
            cache_misses: s.template_cache.misses,
            llm_calls: l.calls,
            llm_failed_calls: l.failed_calls,
            llm_answered_calls: l.answered_calls,
            llm_latency_ms_total: l.latency_ms_total,
        }
    }

    fn since(&self, before: &Self) -> Self {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        Self {
            cache_hits: d(self.cache_hits, before.cache_hits),
            cache_misses: d(self.cache_misses, before.cache_misses),
            llm_calls: d(self.llm_calls, before.llm_calls),
            llm_failed_calls: d(self.llm_failed_calls, before.llm_failed_calls),
            llm_answered_calls: d(self.llm_answered_calls, before.llm_answered_calls),
            llm_latency_ms_total: d(self.llm_latency_ms_total, before.llm_latency_ms_total),
        }
    }

    fn add(&mut self, o: &Self) {
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
        self.llm_calls += o.llm_calls;
        self.llm_failed_calls += o.llm_failed_calls;
        self.llm_answered_calls += o.llm_answered_calls;
        self.llm_latency_ms_total += o.llm_latency_ms_total;
    }

    fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// (minute start, Unix seconds; source; label; method).
pub type CountKey = (i64, String, String, &'static str);
/// (hour start, Unix seconds; source; label; template id).
pub type TemplateKey = (i64, String, String, String);

/// One template's text and the first line seen with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub template: String,
    pub example: String,
}

/// Counts to add: what one batch (or one flush) contributes. The same
/// shape as what is kept, so a store appends deltas and a reload merges
/// them back.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delta {
    pub counts: HashMap<CountKey, u64>,
    /// (minute, source) → confidence histogram.
    pub confidence: HashMap<(i64, String), [u64; CONFIDENCE_BINS]>,
    pub templates: HashMap<TemplateKey, u64>,
    pub template_info: HashMap<String, TemplateInfo>,
    /// minute → what the cascade's counters added.
    pub sieve: BTreeMap<i64, SieveCounts>,
    /// Oldest first.
    pub alerts: Vec<Alert>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What the aggregates read of a decision.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a> {
    pub label: &'a str,
    pub method: Method,
    pub confidence: f32,
    /// Read only for alert lines.
    pub detail: &'a str,
    /// The cascade's masked text, when it carries one.
    pub template: Option<&'a str>,
}

impl<'a> From<&'a Decision> for Counted<'a> {
    fn from(d: &'a Decision) -> Self {
        Self {
            label: &d.target_label,
            method: d.method,
            confidence: d.confidence,
            detail: &d.detail,
            template: d.template.as_deref(),
        }
    }
}

/// A row as the aggregates see it.
pub struct RowRef<'a> {
    pub source: &'a str,
    pub message: &'a str,
    pub decision: Counted<'a>,
}

fn method_name(m: Method) -> &'static str {
    m.as_str()
}

fn bin(confidence: f32) -> usize {
    ((confidence.clamp(0.0, 1.0) * CONFIDENCE_BINS as f32) as usize).min(CONFIDENCE_BINS - 1)
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.sieve.values().all(SieveCounts::is_zero) && self.alerts.is_empty()
    }

    /// Count `rows`, classified at `at_ms` (Unix milliseconds). Lines are
    /// masked with `masker` for their template; borrowed keys are folded
    /// first, so the owned maps grow once per distinct key, not per row.
    pub fn add_rows<'a>(&mut self, at_ms: i64, rows: impl IntoIterator<Item = RowRef<'a>>, masker: &Masker) {
        let minute = at_ms.div_euclid(60_000) * 60;
        let hour = at_ms.div_euclid(1000).div_euclid(TEMPLATE_BUCKET_SECS) * TEMPLATE_BUCKET_SECS;
        // Per-row maps hash with foldhash (keys are whole lines: SipHash
        // costs about a nanosecond a byte).
        let mut counts: FastMap<(&str, &str, &'static str), u64> = FastMap::default();
        let mut conf: FastMap<&str, [u64; CONFIDENCE_BINS]> = FastMap::default();
        let mut templates: FastMap<(&str, &str, usize), u64> = FastMap::default();
        // Masked text → index into `ids`: each distinct template of the
        // batch is hashed (and its text copied) once, not once per line.
        let mut seen: FastMap<String, usize> = FastMap::default();
        let mut ids: Vec<String> = Vec::new();
        let mut masked = String::new();
        for r in rows {
            let d = r.decision;
            *counts
                .entry((r.source, d.label, method_name(d.method)))
                .or_default() += 1;
            conf.entry(r.source).or_insert([0; CONFIDENCE_BINS])[bin(d.confidence)] += 1;
            // The cascade's masked text when it carries one (every row past
            // the rules); rule-decided rows are masked here.
            let text = match d.template {
                Some(t) => t,
                None if masker.mask_into(r.message, &mut masked) => masked.as_str(),
                None => r.message,
            };
            let t = match seen.get(text) {
                Some(&t) => t,
                None => {
                    let id = logsieve_pipeline::template_id(text);
                    if !self.template_info.contains_key(&id) {
                        self.template_info.insert(
                            id.clone(),
                            TemplateInfo {
                                template: clip(text, 500),
                                example: clip(r.message, 500),
                            },
                        );
                    }
                    ids.push(id);
                    seen.insert(text.to_string(), ids.len() - 1);
                    ids.len() - 1
                }
            };
            *templates.entry((r.source, d.label, t)).or_default() += 1;
            if ALERT_LABELS.contains(&d.label) {
                self.alerts.push(Alert {
                    at_ms,
                    source: r.source.to_string(),
                    log_message: clip(r.message, 2000),
                    target_label: d.label.to_string(),
                    method: method_name(d.method).to_string(),
                    confidence: d.confidence,
                    detail: d.detail.to_string(),
                });
            }
        }
        for ((s, l, m), n) in counts {
            *self
                .counts
                .entry((minute, s.to_string(), l.to_string(), m))
                .or_default() += n;
        }
        for (s, h) in conf {
            let e = self
                .confidence
                .entry((minute, s.to_string()))
                .or_insert([0; CONFIDENCE_BINS]);
            for (a, b) in e.iter_mut().zip(h) {
                *a += b;
            }
        }
        for ((s, l, t), n) in templates {
            *self
                .templates
                .entry((hour, s.to_string(), l.to_string(), ids[t].clone()))
                .or_default() += n;
        }
    }

    /// Add what the cascade's counters did during `minute`.
    pub fn add_sieve(&mut self, minute: i64, c: &SieveCounts) {
        if !c.is_zero() {
            self.sieve.entry(minute).or_default().add(c);
        }
    }

    /// Merge `o` into this delta.
    pub fn merge(&mut self, o: Delta) {
        for (k, n) in o.counts {
            *self.counts.entry(k).or_default() += n;
        }
        for (k, h) in o.confidence {
            let e = self.confidence.entry(k).or_insert([0; CONFIDENCE_BINS]);
            for (a, b) in e.iter_mut().zip(h) {
                *a += b;
            }
        }
        for (k, n) in o.templates {
            *self.templates.entry(k).or_default() += n;
        }
        for (k, v) in o.template_info {
            self.template_info.entry(k).or_insert(v);
        }
        for (m, c) in o.sieve {
            self.sieve.entry(m).or_default().add(&c);
        }
        self.alerts.extend(o.alerts);
    }
}

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Where aggregates outlive the process (the SQLite decision store, when
/// present). Called from the aggregator thread only.
pub trait AggregateStore: Send + 'static {
    /// What was kept, counts newer than `since` (Unix seconds), and the
    /// newest `alerts` alerts, to start from after a restart.
    fn load(&mut self, since: i64, alerts: usize) -> Result<Delta, String>;
    /// Add one flush's counts (called about once a second while lines come in).
    fn append(&mut self, delta: &Delta) -> Result<(), String>;
    /// Drop counts older than `before` (Unix seconds) and alerts beyond the newest `keep_alerts`.
    fn prune(&mut self, before: i64, keep_alerts: usize) -> Result<(), String>;
    /// Wait until what was appended is durable (a store that writes in
    /// the background commits its queue). Called by [`Recorder::flush`].
    fn flush(&mut self) -> Result<(), String> {
        Ok(())
    }
}

/// What is kept: every count within the retention, and the alert ring.
#[derive(Debug, Default)]
pub struct Aggregates {
    pub data: Delta,
    /// The newest `alert_capacity` alerts, oldest first.
    pub alerts: VecDeque<Alert>,
    pub alert_capacity: usize,
}

impl Aggregates {
    pub fn new(alert_capacity: usize) -> Self {
        Self {
            alert_capacity,
            ..Default::default()
        }
    }

    /// Merge a delta; the alert ring keeps the newest.
    pub fn merge(&mut self, mut d: Delta) {
        let alerts = std::mem::take(&mut d.alerts);
        self.data.merge(d);
        for a in alerts {
            if self.alerts.len() == self.alert_capacity {
                self.alerts.pop_front();
            }
            if self.alert_capacity > 0 {
                self.alerts.push_back(a);
            }
        }
    }

    /// Drop counts older than `before` (Unix seconds), and template texts
    /// no count names any more.
    pub fn prune(&mut self, before: i64) {
        let d = &mut self.data;
        d.counts.retain(|k, _| k.0 >= before);
        d.confidence.retain(|k, _| k.0 >= before);
        let hour = before.div_euclid(TEMPLATE_BUCKET_SECS) * TEMPLATE_BUCKET_SECS;
        d.templates.retain(|k, _| k.0 >= hour);
        d.sieve.retain(|m, _| *m >= before);
        let live: std::collections::HashSet<&str> = d.templates.keys().map(|k| k.3.as_str()).collect();
        d.template_info.retain(|id, _| live.contains(id.as_str()));
        self.alerts.retain(|a| a.at_ms >= before * 1000);
    }

    /// Fold per-minute counts older than `fine_before` (Unix seconds) into
    /// per-hour ones, so a long retention keeps 60 times fewer rows for its
    /// older part. Totals do not change.
    pub fn coarsen(&mut self, fine_before: i64) {
        let hour = |t: i64| t.div_euclid(COARSE_SECS) * COARSE_SECS;
        let d = &mut self.data;
        let old: Vec<CountKey> = d
            .counts
            .keys()
            .filter(|k| k.0 < fine_before && k.0 != hour(k.0))
            .cloned()
            .collect();
        for k in old {
            if let Some(n) = d.counts.remove(&k) {
                *d.counts.entry((hour(k.0), k.1, k.2, k.3)).or_default() += n;
            }
        }
        let old: Vec<(i64, String)> = d
            .confidence
            .keys()
            .filter(|k| k.0 < fine_before && k.0 != hour(k.0))
            .cloned()
            .collect();
        for k in old {
            if let Some(h) = d.confidence.remove(&k) {
                let e = d
                    .confidence
                    .entry((hour(k.0), k.1))
                    .or_insert([0; CONFIDENCE_BINS]);
                for (a, b) in e.iter_mut().zip(h) {
                    *a += b;
                }
            }
        }
        let old: Vec<i64> = d
            .sieve
            .keys()
            .copied()
            .filter(|m| *m < fine_before && *m != hour(*m))
            .collect();
        for m in old {
            if let Some(c) = d.sieve.remove(&m) {
                d.sieve.entry(hour(m)).or_default().add(&c);
            }
        }
    }
}

/// Counts older than [`FINE_SECS`] are kept per this many seconds.
pub const COARSE_SECS: i64 = 3600;
/// Counts are kept per minute for this long, then per hour.
pub const FINE_SECS: i64 = 24 * 3600;

/// How long the bucket starting at `t` (Unix seconds) is, as kept by a
/// recorder at `now`: a minute, or an hour once coarsened.
pub fn bucket_secs(t: i64, now: i64) -> i64 {
    if t < now - FINE_SECS && t.rem_euclid(COARSE_SECS) == 0 {
        COARSE_SECS
    } else {
        60
    }
}

/// Settings of the aggregator.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// Alerts kept (and listed back on restart).
    pub alert_capacity: usize,
    /// Counts older than this are pruned.
    pub retention: Duration,
    /// Batches waiting for the aggregator thread; a full queue makes the
    /// classifier thread wait.
    pub queue_batches: usize,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            alert_capacity: 1000,
            retention: Duration::from_secs(7 * 24 * 3600),
            queue_batches: 256,
        }
    }
}

/// A decision as a batch carries it to the aggregator: the label an index
/// into the batch's labels (no string copied per row), the detail only for
/// an alert line, the masked text shared with the template cache.
struct Compact {
    label: u32,
    method: Method,
    confidence: f32,
    detail: Option<Box<str>>,
    template: Option<Arc<str>>,
}

/// One batch on its way to the aggregator thread.
struct Batch {
    at_ms: i64,
    rows: Vec<(String, String)>,
    decisions: Vec<Compact>,
    /// The distinct labels of `decisions`.
    labels: Vec<String>,
    /// Answered once the batch is merged (tests and `flush`).
    done: Option<mpsc::Sender<()>>,
}

/// The handle the classify path holds: send batches, read aggregates,
/// subscribe to alerts.
pub struct Recorder {
    tx: SyncSender<Batch>,
    state: Arc<Mutex<Aggregates>>,
    alerts: broadcast::Sender<Arc<Alert>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Recorder {
    /// Start the aggregator thread. `sample` reads the cascade's
    /// cumulative counters (the template cache's and the LLM's);
    /// `store`, when given, is loaded now and written from then on.
    pub fn start(
        config: RecorderConfig,
        masker: Masker,
        sample: Box<dyn Fn() -> SieveCounts + Send>,
        mut store: Option<Box<dyn AggregateStore>>,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel::<Batch>(config.queue_batches.max(1));
        let mut initial = Aggregates::new(config.alert_capacity);
        let retention = config.retention.as_secs() as i64;
        if let Some(s) = store.as_mut() {
            match s.load(now_ms() / 1000 - retention, config.alert_capacity) {
                Ok(d) => initial.merge(d),
                Err(e) => tracing::error!(error = %e, "cannot load the stored aggregates; starting empty"),
            }
        }
        let state = Arc::new(Mutex::new(initial));
        let (alerts, _) = broadcast::channel(1024);
        let worker = Worker {
            state: state.clone(),
            alerts: alerts.clone(),
            masker,
            sample,
            store,
            config,
        };
        std::thread::Builder::new()
            .name("logsieve-aggregates".into())
            .spawn(move || worker.run(rx))
            .expect("spawn the aggregator thread");
        Self { tx, state, alerts }
    }

    /// Count a batch of classified rows. Rows are moved; of the decisions
    /// only what the aggregates read is copied, with no allocation per row
    /// but an alert's detail. Waits only when the aggregator is
    /// `queue_batches` behind.
    pub fn record(&self, rows: Vec<(String, String)>, decisions: &[Decision]) {
        if rows.is_empty() {
            return;
        }
        // A batch holds a handful of labels: a scan beats hashing.
        let mut labels: Vec<&str> = Vec::new();
        let decisions = decisions
            .iter()
            .map(|d| {
                let label = match labels.iter().position(|l| *l == d.target_label) {
                    Some(i) => i,
                    None => {
                        labels.push(&d.target_label);
                        labels.len() - 1
                    }
                };
                Compact {
                    label: label as u32,
                    method: d.method,
                    confidence: d.confidence,
                    detail: ALERT_LABELS
                        .contains(&d.target_label.as_str())
                        .then(|| d.detail.as_str().into()),
                    template: d.template.clone(),
                }
            })
            .collect();
        let _ = self.tx.send(Batch {
            at_ms: now_ms(),
            rows,
            decisions,
            labels: labels.into_iter().map(str::to_string).collect(),
            done: None,
        });
    }

    /// Wait until every batch recorded before this call is merged (and,
    /// with a store, committed to it: the graceful shutdown calls this).
    pub fn flush(&self) {
        let (done, rx) = mpsc::channel();
        if self
            .tx
            .send(Batch {
                at_ms: now_ms(),
                rows: Vec::new(),
                decisions: Vec::new(),
                labels: Vec::new(),
                done: Some(done),
            })
            .is_ok()
        {
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    }

    /// Read the aggregates (briefly locks them).
    pub fn with<T>(&self, f: impl FnOnce(&Aggregates) -> T) -> T {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&g)
    }

    /// New alerts as they are counted.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Alert>> {
        self.alerts.subscribe()
    }
}

struct Worker {
    state: Arc<Mutex<Aggregates>>,
    alerts: broadcast::Sender<Arc<Alert>>,
    masker: Masker,
    sample: Box<dyn Fn() -> SieveCounts + Send>,
    store: Option<Box<dyn AggregateStore>>,
    config: RecorderConfig,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Batch>) {
        let tick = Duration::from_secs(1);
        let mut last_sample = (self.sample)();
        let mut pending = Delta::default();
        let mut last_flush = std::time::Instant::now();
        let mut last_prune = std::time::Instant::now();
        loop {
            let got = rx.recv_timeout(tick);
            let mut done = Vec::new();
            let mut delta = Delta::default();
            let mut take = |b: Batch, delta: &mut Delta| {
                if let Some(d) = b.done {
                    done.push(d);
                }
                delta.add_rows(
                    b.at_ms,
                    b.rows.iter().zip(&b.decisions).map(|((s, m), d)| RowRef {
                        source: s,
                        message: m,
                        decision: Counted {
                            label: &b.labels[d.label as usize],
                            method: d.method,
                            confidence: d.confidence,
                            detail: d.detail.as_deref().unwrap_or(""),
                            template: d.template.as_deref(),
                        },
                    }),
                    &self.masker,
                );
            };
            match got {
                Ok(b) => {
                    take(b, &mut delta);
                    // Whatever else is waiting goes in the same merge.
                    while let Ok(b) = rx.try_recv() {
                        take(b, &mut delta);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&mut pending);
                    return;
                }
            }
            let now = (self.sample)();
            delta.add_sieve(now_ms().div_euclid(60_000) * 60, &now.since(&last_sample));
            last_sample = now;
            if !delta.is_empty() {
                let new_alerts: Vec<Arc<Alert>> = delta.alerts.iter().cloned().map(Arc::new).collect();
                if self.store.is_some() {
                    pending.merge(delta.clone());
                }
                self.state.lock().unwrap_or_else(|e| e.into_inner()).merge(delta);
                for a in new_alerts {
                    // No subscriber is fine.
                    let _ = self.alerts.send(a);
                }
            }
            if last_flush.elapsed() >= tick || !done.is_empty() {
                self.write(&mut pending);
                last_flush = std::time::Instant::now();
            }
            if !done.is_empty() {
                if let Some(s) = self.store.as_mut() {
                    if let Err(e) = s.flush() {
                        tracing::error!(error = %e, "the stored aggregates did not take the last counts");
                    }
                }
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                let before = now_ms() / 1000 - self.config.retention.as_secs() as i64;
                {
                    let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
                    g.prune(before);
                    g.coarsen(now_ms() / 1000 - FINE_SECS);
                }
                if let Some(s) = self.store.as_mut() {
                    if let Err(e) = s.prune(before, self.config.alert_capacity) {
                        tracing::warn!(error = %e, "pruning the stored aggregates failed");
                    }
                }
                last_prune = std::time::Instant::now();
            }
            for d in done {
                let _ = d.send(());
            }
        }
    }

    fn write(&mut self, pending: &mut Delta) {
        if let Some(s) = self.store.as_mut() {
            if !pending.is_empty() {
                if let Err(e) = s.append(pending) {
                    tracing::error!(error = %e, "writing the aggregates failed; they stay in memory");
                }
            }
        }
        *pending = Delta::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(label: &str, method: Method, detail: &str) -> Decision {
        Decision {
            target_label: label.to_string(),
            method,
            confidence: 0.9,
            detail: detail.to_string(),
            template: None,
        }
    }

    #[test]
    fn a_recorded_batch_is_counted_by_label_and_its_alerts_keep_their_detail() {
        let r = Recorder::start(
            RecorderConfig::default(),
            Masker::builtin(),
            Box::new(SieveCounts::default),
            None,
        );
        let rows = vec![
            ("web".to_string(), "User 7 logged in".to_string()),
            ("web".to_string(), "IP 10.0.0.9 blocked".to_string()),
            ("db".to_string(), "User 8 logged in".to_string()),
            ("db".to_string(), "disk 3 failed".to_string()),
        ];
        let decisions = [
            decided("User Action", Method::Rule, "login"),
            decided("Security Alert", Method::Model, "runner-up Error 0.05"),
            decided("User Action", Method::Rule, "login"),
            decided("Critical Error", Method::Model, "runner-up Error 0.08"),
        ];
        r.record(rows, &decisions);
        r.flush();
        r.with(|a| {
            let by_label = |label: &str| -> u64 {
                a.data
                    .counts
                    .iter()
                    .filter(|((_, _, l, _), _)| l == label)
                    .map(|(_, n)| n)
                    .sum()
            };
            assert_eq!(by_label("User Action"), 2);
            assert_eq!(by_label("Security Alert"), 1);
            assert_eq!(by_label("Critical Error"), 1);
            let alerts: Vec<(&str, &str, &str)> = a
                .alerts
                .iter()
                .map(|x| (x.source.as_str(), x.target_label.as_str(), x.detail.as_str()))
                .collect();
            assert_eq!(
                alerts,
                [
                    ("web", "Security Alert", "runner-up Error 0.05"),
                    ("db", "Critical Error", "runner-up Error 0.08"),
                ]
            );
        });
    }
}
