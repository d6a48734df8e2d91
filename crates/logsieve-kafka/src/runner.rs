//! The consume → classify → produce loop, at least once.
//!
//! One thread owns a consumer (in the group) and a producer. It polls a
//! batch of records (up to `max_batch`, waiting at most `batch_linger_ms`
//! once the first is in), classifies the batch's readable records in one
//! cascade call, and produces one output record per input record, in
//! order, to the input record's partition (or by key). Records that are
//! not valid input go to the dead-letter topic. Nothing is committed by
//! the consumer itself: `enable.auto.offset.store=false`, and an input
//! offset is stored only when the broker has acknowledged its output
//! record and every earlier one of its partition ([`Tracker`]);
//! librdkafka commits the stored offsets every `commit_interval_ms`, and
//! logsieve commits on shutdown and before it gives up a revoked partition
//! (after waiting for what is in flight). A crash therefore replays at
//! most the records produced since the last commit: duplicates, never loss.
//!
//! Backpressure: when the producer's queue is full, consuming waits (the
//! producer is polled until it has room); librdkafka's prefetch is bounded
//! (`queued.max.messages.kbytes`), so memory stays flat however far behind
//! the group is.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use logsieve_pipeline::io::{row_decision, InputRow};
use logsieve_pipeline::run::clip;
use logsieve_pipeline::{Item, Pipeline};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList};

use crate::config::{KafkaConfig, Partitioning};
use crate::metrics::Metrics;
use crate::offsets::{Ack, PartitionKey, Tracker};
use crate::record::{output_value, row_from_value, SOURCE_HEADER};

/// Header on dead-letter records: why the record could not be classified.
pub const ERROR_HEADER: &str = "logsieve.error";
/// Headers on dead-letter records: where the record came from.
pub const ORIGIN_HEADERS: [&str; 3] = ["logsieve.topic", "logsieve.partition", "logsieve.offset"];

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("kafka.{section}: librdkafka setting `{key}`: {reason}")]
    Setting {
        section: &'static str,
        key: String,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    /// The broker did not take an output record (after librdkafka's own
    /// retries): the run stops so that its input offset is never committed.
    #[error("the broker did not acknowledge output records: {0} (their input offsets were not committed; they are consumed again on restart)")]
    Delivery(String),
}

fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> StreamError {
    let what = what.into();
    move |source| StreamError::Kafka { what, source }
}

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct StreamSummary {
    pub records_in: u64,
    pub records_out: u64,
    pub dlq: u64,
    pub rebalances: u64,
    pub backpressure_waits: u64,
    pub seconds: f64,
    /// Resident memory (MiB) after every 100,000 records consumed.
    pub rss_mib_per_100k: Vec<f64>,
}

pub struct RunOptions {
    /// Set to stop: in-flight records are flushed and offsets committed.
    pub stop: Arc<AtomicBool>,
    /// Stop once every assigned partition has been read to its end and
    /// everything is acknowledged and committed (for replays and benchmarks).
    pub stop_at_end: bool,
    pub metrics: Arc<Metrics>,
}

/// A delivery report, as the producer's callback leaves it for the loop.
struct Delivered {
    ack: Ack,
    dlq: bool,
    error: Option<String>,
}

struct DeliveryContext {
    reports: Arc<Mutex<Vec<Delivered>>>,
    /// Delivery reports received, ever (to tell when a poll served none).
    received: AtomicU64,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<(Ack, bool)>;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: Self::DeliveryOpaque) {
        let (ack, dlq) = *opaque;
        let error = result.as_ref().err().map(|(e, _)| e.to_string());
        lock(&self.reports).push(Delivered { ack, dlq, error });
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the loop and the consumer's rebalance callbacks share.
struct Shared {
    producer: BaseProducer<DeliveryContext>,
    reports: Arc<Mutex<Vec<Delivered>>>,
    tracker: Mutex<Tracker>,
    metrics: Arc<Metrics>,
    topics: Vec<String>,
    flush_timeout: Duration,
    /// The first delivery failure.
    failed: Mutex<Option<String>>,
}

impl Shared {
    fn topic_index(&self, topic: &str) -> Option<u32> {
        self.topics.iter().position(|t| t == topic).map(|i| i as u32)
    }

    /// Serve every delivery report that is ready (`BaseProducer::poll`
    /// serves one event, a batch of reports, per call), then settle them.
    fn serve_reports(&self, consumer: &BaseConsumer<StreamContext>) {
        let received = &self.producer.context().received;
        for _ in 0..10_000 {
            let before = received.load(Ordering::Relaxed);
            self.producer.poll(Duration::ZERO);
            if received.load(Ordering::Relaxed) == before {
                break;
            }
        }
        self.settle(consumer);
    }

    /// Apply the delivery reports received so far: release acknowledged
    /// prefixes and store their offsets.
    fn settle(&self, consumer: &BaseConsumer<StreamContext>) {
        let reports = std::mem::take(&mut *lock(&self.reports));
        if reports.is_empty() {
            return;
        }
        let mut store: HashMap<PartitionKey, i64> = HashMap::new();
        {
            let mut tracker = lock(&self.tracker);
            for r in reports {
                match r.error {
                    None => {
                        if r.dlq {
                            self.metrics.dlq.inc();
                        } else {
                            self.metrics.records_out.inc();
                        }
                        if let Some(next) = tracker.acked(r.ack) {
                            store.insert((r.ack.topic, r.ack.partition), next);
                        }
                    }
                    Some(e) => {
                        self.metrics.delivery_errors.inc();
                        tracing::error!(partition = r.ack.partition, offset = r.ack.offset, error = %e, "output record not acknowledged");
                        lock(&self.failed).get_or_insert(e);
                    }
                }
            }
            self.metrics.in_flight.set(tracker.in_flight() as i64);
        }
        if store.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), next) in store {
            if let Err(e) = tpl.add_partition_offset(&self.topics[t as usize], p, Offset::Offset(next)) {
                tracing::warn!(error = %e, "offset list");
            }
        }
        if let Err(e) = consumer.store_offsets(&tpl) {
            // A partition revoked meanwhile: its next owner starts from the
            // last commit, so these records come out again (never lost).
            tracing::debug!(error = %e, "storing offsets");
        }
    }

    /// Wait for everything in flight to be acknowledged (up to the flush
    /// timeout), store, and commit synchronously.
    fn flush_and_commit(&self, consumer: &BaseConsumer<StreamContext>) {
        if let Err(e) = self.producer.flush(self.flush_timeout) {
            tracing::warn!(error = %e, in_flight = lock(&self.tracker).in_flight(), "flush timed out");
        }
        self.settle(consumer);
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => self.metrics.commits.inc(),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "commit");
            }
        }
    }
}

/// The consumer's context: rebalances, commits and statistics.
struct StreamContext {
    shared: Arc<Shared>,
    /// Partitions assigned now (topic, partition).
    assigned: Mutex<HashSet<(String, i32)>>,
}

impl ClientContext for StreamContext {
    fn stats(&self, statistics: Statistics) {
        self.shared.metrics.set_lag(&statistics);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // The end of a partition is news, not an error (`--stop-at-end` asks for it).
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            return;
        }
        tracing::warn!(error = %error, reason, "kafka client");
    }
}

impl ConsumerContext for StreamContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        // Drain before the partitions go: what is in flight is acknowledged
        // and committed, so the next owner starts after it.
        if !consumer.assignment_lost() {
            self.shared.flush_and_commit(consumer);
        }
        let mut tracker = lock(&self.shared.tracker);
        let mut assigned = lock(&self.assigned);
        for e in tpl.elements() {
            assigned.remove(&(e.topic().to_string(), e.partition()));
            if let Some(t) = self.shared.topic_index(e.topic()) {
                let dropped = tracker.revoke((t, e.partition()));
                if dropped > 0 {
                    tracing::warn!(
                        topic = e.topic(),
                        partition = e.partition(),
                        dropped,
                        "revoked with records unacknowledged; the next owner consumes them again"
                    );
                }
            }
        }
        self.shared.metrics.in_flight.set(tracker.in_flight() as i64);
        self.shared.metrics.assigned_partitions.set(assigned.len() as i64);
        tracing::info!(revoked = tpl.count(), "partitions revoked");
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.shared.metrics.rebalances.inc();
                let mut assigned = lock(&self.assigned);
                for e in tpl.elements() {
                    assigned.insert((e.topic().to_string(), e.partition()));
                }
                self.shared.metrics.assigned_partitions.set(assigned.len() as i64);
                self.shared.metrics.joined.store(true, Ordering::Relaxed);
                tracing::info!(partitions = ?tpl.elements().iter().map(|e| e.partition()).collect::<Vec<_>>(), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance"),
        }
    }

    fn commit_callback(&self, result: rdkafka::error::KafkaResult<()>, _: &TopicPartitionList) {
        match result {
            Ok(()) => self.shared.metrics.commits.inc(),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.shared.metrics.commit_errors.inc();
                tracing::warn!(error = %e, "commit");
            }
        }
    }
}

/// Apply settings in order; an invalid one is named, its value never shown
/// (it may be a password).
fn client_config(layers: &[(&'static str, &[(String, String)])]) -> Result<ClientConfig, StreamError> {
    let mut c = ClientConfig::new();
    for (section, settings) in layers {
        for (k, v) in settings.iter() {
            c.set(k, v);
            // librdkafka checks settings when the client is made; check
            // each here so the error names the one at fault.
            if let Err(KafkaError::ClientConfig(_, desc, key, _)) =
                ClientConfig::new().set(k, v).create_native_config()
            {
                return Err(StreamError::Setting {
                    section,
                    key,
                    reason: desc,
                });
            }
        }
    }
    Ok(c)
}

fn pairs(m: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn own(settings: &[(&str, String)]) -> Vec<(String, String)> {
    settings.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// A polled record: the message and its partition's generation then.
struct Polled {
    msg: OwnedMessage,
    topic: u32,
    generation: u64,
}

/// Run until `stop` is set (or, with `stop_at_end`, the input is drained).
pub fn run(pipeline: &Pipeline, cfg: &KafkaConfig, opts: RunOptions) -> Result<StreamSummary, StreamError> {
    cfg.validate().map_err(StreamError::Config)?;
    let metrics = opts.metrics.clone();
    let consumer_base = own(&[
        ("bootstrap.servers", cfg.brokers.clone()),
        ("group.id", cfg.group.clone()),
        ("enable.auto.commit", "true".into()),
        ("auto.commit.interval.ms", cfg.commit_interval_ms.to_string()),
        ("enable.auto.offset.store", "false".into()),
        ("auto.offset.reset", "earliest".into()),
        ("statistics.interval.ms", "1000".into()),
        ("enable.partition.eof", opts.stop_at_end.to_string()),
        // Bounded prefetch: memory stays flat however large the backlog.
        ("queued.max.messages.kbytes", "16384".into()),
    ]);
    let producer_base = own(&[
        ("bootstrap.servers", cfg.brokers.clone()),
        // Retries keep per-partition order and add no duplicates.
        ("enable.idempotence", "true".into()),
        ("linger.ms", "5".into()),
    ]);
    let (options, consumer_opts, producer_opts) = (
        pairs(&cfg.options),
        pairs(&cfg.consumer_options),
        pairs(&cfg.producer_options),
    );
    let consumer_config = client_config(&[
        ("consumer", &consumer_base),
        ("options", &options),
        ("consumer_options", &consumer_opts),
    ])?;
    let producer_config = client_config(&[
        ("producer", &producer_base),
        ("options", &options),
        ("producer_options", &producer_opts),
    ])?;

    let reports = Arc::new(Mutex::new(Vec::new()));
    let producer: BaseProducer<DeliveryContext> = producer_config
        .create_with_context(DeliveryContext {
            reports: reports.clone(),
            received: AtomicU64::new(0),
        })
        .map_err(kafka("creating the producer"))?;
    let meta_timeout = Duration::from_secs(15);
    let partitions_of = |topic: &str| -> Result<i32, StreamError> {
        let md = producer
            .client()
            .fetch_metadata(Some(topic), meta_timeout)
            .map_err(kafka(format!(
                "reading metadata of topic `{topic}` from {}",
                cfg.brokers
            )))?;
        let n = md.topics().iter().find(|t| t.name() == topic).map_or(0, |t| {
            if t.error().is_some() {
                0
            } else {
                t.partitions().len() as i32
            }
        });
        if n == 0 {
            return Err(StreamError::Config(format!(
                "topic `{topic}` does not exist on {} (create it first)",
                cfg.brokers
            )));
        }
        Ok(n)
    };
    let out_partitions = partitions_of(&cfg.output_topic)?;
    if let Some(d) = &cfg.dlq_topic {
        partitions_of(d)?;
    }
    let shared = Arc::new(Shared {
        producer,
        reports,
        tracker: Mutex::new(Tracker::default()),
        metrics: metrics.clone(),
        topics: cfg.topics.clone(),
        flush_timeout: Duration::from_millis(cfg.flush_timeout_ms),
        failed: Mutex::new(None),
    });
    let consumer: BaseConsumer<StreamContext> = consumer_config
        .create_with_context(StreamContext {
            shared: shared.clone(),
            assigned: Mutex::new(HashSet::new()),
        })
        .map_err(kafka("creating the consumer"))?;
    let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
    consumer
        .subscribe(&topics)
        .map_err(kafka(format!("subscribing to {topics:?}")))?;
    tracing::info!(group = %cfg.group, topics = ?topics, output = %cfg.output_topic, "stream started");

    let mut lp = Loop {
        pipeline,
        cfg,
        shared: &shared,
        consumer: &consumer,
        out_partitions,
        buf: Vec::new(),
        summary: StreamSummary::default(),
        next_rss_mark: 100_000,
    };
    let t0 = Instant::now();
    let mut eof: HashSet<i32> = HashSet::new();
    let result = loop {
        metrics.beat();
        if opts.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Some(e) = lock(&shared.failed).clone() {
            break Err(StreamError::Delivery(e));
        }
        let batch = lp.poll_batch(&mut eof);
        if !batch.is_empty() {
            if let Err(e) = lp.process(batch) {
                break Err(e);
            }
        }
        shared.serve_reports(&consumer);
        if opts.stop_at_end {
            let assigned = lock(&consumer.context().assigned).len();
            if assigned > 0 && eof.len() >= assigned && lock(&shared.tracker).in_flight() == 0 {
                tracing::info!("every assigned partition read to its end");
                break Ok(());
            }
        }
    };
    // Shutdown: what is in flight is acknowledged and committed before the
    // group hears that this member leaves.
    shared.flush_and_commit(&consumer);
    let failed = lock(&shared.failed).clone();
    if let Some(e) = &failed {
        metrics.fail(e.clone());
    }
    let mut summary = std::mem::take(&mut lp.summary);
    drop(lp);
    drop(consumer);
    let m = &metrics;
    summary.records_in = m.records_in.get();
    summary.records_out = m.records_out.get();
    summary.dlq = m.dlq.get();
    summary.rebalances = m.rebalances.get();
    summary.backpressure_waits = m.backpressure_waits.get();
    summary.seconds = t0.elapsed().as_secs_f64();
    match (result, failed) {
        (Err(e), _) => {
            metrics.fail(e.to_string());
            Err(e)
        }
        (Ok(()), Some(e)) => Err(StreamError::Delivery(e)),
        (Ok(()), None) => Ok(summary),
    }
}

struct Loop<'a> {
    pipeline: &'a Pipeline,
    cfg: &'a KafkaConfig,
    shared: &'a Arc<Shared>,
    consumer: &'a BaseConsumer<StreamContext>,
    out_partitions: i32,
    buf: Vec<u8>,
    summary: StreamSummary,
    next_rss_mark: u64,
}

impl Loop<'_> {
    /// Up to `max_batch` records: waits up to 100 ms for the first, then
    /// `batch_linger_ms` for the rest.
    fn poll_batch(&mut self, eof: &mut HashSet<i32>) -> Vec<Polled> {
        let mut batch = Vec::new();
        let first_wait = Duration::from_millis(100);
        let linger = Duration::from_millis(self.cfg.batch_linger_ms);
        let mut deadline: Option<Instant> = None;
        while batch.len() < self.cfg.max_batch {
            let wait = match deadline {
                None => first_wait,
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    let Some(topic) = self.shared.topic_index(m.topic()) else {
                        continue;
                    };
                    eof.remove(&m.partition());
                    let generation = lock(&self.shared.tracker).generation((topic, m.partition()));
                    batch.push(Polled {
                        msg: m.detach(),
                        topic,
                        generation,
                    });
                    self.shared.metrics.records_in.inc();
                    deadline.get_or_insert_with(|| Instant::now() + linger);
                }
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    eof.insert(p);
                    if deadline.is_none() {
                        continue;
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consume");
                    break;
                }
            }
        }
        let n = self.shared.metrics.records_in.get();
        if n >= self.next_rss_mark {
            self.next_rss_mark += 100_000;
            if let Some(rss) = crate::metrics::resident_bytes() {
                self.summary
                    .rss_mib_per_100k
                    .push((rss as f64 / 1048576.0 * 10.0).round() / 10.0);
            }
        }
        batch
    }

    /// Classify a batch and produce its outputs, in order.
    fn process(&mut self, batch: Vec<Polled>) -> Result<(), StreamError> {
        let cfg = self.cfg;
        let max_bytes = self.pipeline.config().input.max_message_bytes.max(1);
        // Records of a partition revoked since they were polled belong to
        // its next owner (it consumes them from the last commit).
        let batch: Vec<Polled> = {
            let tracker = lock(&self.shared.tracker);
            batch
                .into_iter()
                .filter(|p| tracker.generation((p.topic, p.msg.partition())) == p.generation)
                .collect()
        };
        let rows: Vec<InputRow> = batch
            .iter()
            .map(|p| {
                let source = p
                    .msg
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == SOURCE_HEADER).and_then(|h| h.value));
                let mut row = row_from_value(
                    cfg.format,
                    p.msg.payload(),
                    source,
                    cfg.source.as_deref(),
                    p.msg.offset(),
                );
                if row.message.len() > max_bytes {
                    let note = format!(
                        "log_message is {} bytes; the first {max_bytes} were classified",
                        row.message.len()
                    );
                    row.note = if row.note.is_empty() {
                        note
                    } else {
                        format!("{}; {note}", row.note)
                    };
                }
                row
            })
            .collect();
        let items: Vec<Item<'_>> = rows
            .iter()
            .filter(|r| !r.unreadable)
            .map(|r| Item {
                source: &r.source,
                message: clip(&r.message, max_bytes),
            })
            .collect();
        let mut decided = self.pipeline.classify(&items).into_iter();
        for (p, row) in batch.iter().zip(&rows) {
            let msg = &p.msg;
            let key = (p.topic, msg.partition());
            if row.unreadable {
                if let Some(dlq) = &cfg.dlq_topic {
                    let mut headers = msg.headers().cloned().unwrap_or_else(OwnedHeaders::new);
                    let origin = [
                        msg.topic().to_string(),
                        msg.partition().to_string(),
                        msg.offset().to_string(),
                    ];
                    headers = headers.insert(Header {
                        key: ERROR_HEADER,
                        value: Some(row.note.as_str()),
                    });
                    for (k, v) in ORIGIN_HEADERS.iter().zip(&origin) {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(v.as_str()),
                        });
                    }
                    let ack = lock(&self.shared.tracker).sent(key, msg.offset());
                    let mut rec: BaseRecord<'_, [u8], [u8], Box<(Ack, bool)>> =
                        BaseRecord::with_opaque_to(dlq, Box::new((ack, true))).headers(headers);
                    if let Some(k) = msg.key() {
                        rec = rec.key(k);
                    }
                    if let Some(v) = msg.payload() {
                        rec = rec.payload(v);
                    }
                    self.send(rec)?;
                    continue;
                }
            }
            let d = row_decision(row, &mut decided);
            let mut buf = std::mem::take(&mut self.buf);
            output_value(row, &d, &mut buf)
                .map_err(|e| StreamError::Config(format!("writing an output record: {e}")))?;
            let ack = lock(&self.shared.tracker).sent(key, msg.offset());
            let mut rec: BaseRecord<'_, [u8], [u8], Box<(Ack, bool)>> =
                BaseRecord::with_opaque_to(&cfg.output_topic, Box::new((ack, false))).payload(&buf[..]);
            if let Some(h) = msg.headers() {
                rec = rec.headers(h.clone());
            }
            if let Some(k) = msg.key() {
                rec = rec.key(k);
            }
            if cfg.partitioning == Partitioning::Same {
                rec = rec.partition(msg.partition() % self.out_partitions);
            }
            let sent = self.send(rec);
            self.buf = buf;
            sent?;
        }
        self.shared
            .metrics
            .in_flight
            .set(lock(&self.shared.tracker).in_flight() as i64);
        Ok(())
    }

    /// Produce one record; while the producer's queue is full, serve its
    /// delivery reports (and nothing is consumed meanwhile).
    fn send<'r>(&self, mut rec: BaseRecord<'r, [u8], [u8], Box<(Ack, bool)>>) -> Result<(), StreamError> {
        loop {
            match self.shared.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.shared.metrics.backpressure_waits.inc();
                    self.shared.producer.poll(Duration::from_millis(50));
                    self.shared.serve_reports(self.consumer);
                    self.shared.metrics.beat();
                    rec = back;
                }
                Err((e, _)) => return Err(kafka(format!("producing to `{}`", rec_topic(self.cfg)))(e)),
            }
        }
    }
}

fn rec_topic(cfg: &KafkaConfig) -> &str {
    &cfg.output_topic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejected_setting_is_named_without_its_value() {
        let good = vec![("sasl.password".to_string(), "hunter2".to_string())];
        let bad = vec![("no.such.setting".to_string(), "s3cret-value".to_string())];
        assert!(client_config(&[("options", &good)]).is_ok());
        let e = client_config(&[("options", &good), ("consumer_options", &bad)])
            .expect_err("an unknown setting is refused")
            .to_string();
        assert!(
            e.contains("kafka.consumer_options") && e.contains("`no.such.setting`"),
            "{e}"
        );
        assert!(!e.contains("s3cret") && !e.contains("hunter2"), "{e}");
    }
}
