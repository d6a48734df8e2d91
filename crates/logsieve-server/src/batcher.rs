//! The queue between the HTTP handlers and the classifier threads.
//!
//! Admission is a semaphore of `queue_capacity` permits: a request (or an
//! upload chunk) holds one from the moment it is queued until its reply is
//! sent, so a full queue answers 429 at once instead of growing. Classifier
//! threads (plain OS threads, never async workers) take the oldest job,
//! merge whatever else is waiting up to `max_batch_rows` rows and
//! `max_batch_bytes` message bytes, run the rules and the model on them once
//! (`Pipeline::prepare`), and answer each job through its own one-shot
//! channel. Rows that need the LLM are finished on a thread of their own, so
//! a slow LLM holds up only the requests that wait for it, never the queue.
//! Jobs whose caller has gone away (timed out, disconnected) are skipped
//! before the forward pass.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logsieve_pipeline::{Decision, Item, Pipeline};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore, TryAcquireError};

use crate::aggregates::Recorder;
use crate::metrics::Metrics;
use crate::ServerConfig;

/// One (source, message) pair to classify.
pub type Row = (String, String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the queue is full")]
    Overloaded,
    #[error("the classifier threads have stopped")]
    Closed,
    #[error("no result in time")]
    Timeout,
}

struct Job {
    rows: Vec<Row>,
    /// `rows.len()` as queued (the rows are moved out when answered).
    n_rows: usize,
    bytes: usize,
    reply: oneshot::Sender<Vec<Decision>>,
    /// Returned to the semaphore when the job is answered or dropped.
    permit: OwnedSemaphorePermit,
}

/// Handle to the queue; cheap to share.
pub struct Batcher {
    tx: mpsc::Sender<Job>,
    permits: Arc<Semaphore>,
    capacity: usize,
}

impl Batcher {
    /// Start `config.workers` classifier threads reading one queue.
    /// Each answered batch is handed to `recorder` (the dashboard's
    /// aggregates), one send per batch.
    pub fn start(
        pipeline: Arc<Pipeline>,
        config: &ServerConfig,
        metrics: Arc<Metrics>,
        recorder: Arc<Recorder>,
    ) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let limits = Limits {
            rows: config.max_batch_rows.max(1),
            bytes: config.max_batch_bytes.max(1),
        };
        for i in 0..config.workers.max(1) {
            let (rx, pipeline) = (rx.clone(), pipeline.clone());
            let sink = Sink {
                metrics: metrics.clone(),
                recorder: recorder.clone(),
            };
            std::thread::Builder::new()
                .name(format!("logsieve-classify-{i}"))
                .spawn(move || worker(&rx, &pipeline, limits, &sink))
                .expect("spawn a classifier thread");
        }
        let capacity = config.queue_capacity.max(1);
        Self {
            tx,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
        }
    }

    /// Queue `rows`, or fail at once with `Overloaded` when the queue is full.
    pub fn try_submit(&self, rows: Vec<Row>) -> Result<oneshot::Receiver<Vec<Decision>>, BatchError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|e| match e {
            TryAcquireError::NoPermits => BatchError::Overloaded,
            TryAcquireError::Closed => BatchError::Closed,
        })?;
        self.send(rows, permit)
    }

    /// Queue `rows`, waiting for room (back-pressure for an upload already
    /// streaming), and wait for the answer; `Timeout` after `timeout`.
    /// Call from a blocking thread only.
    pub fn submit_blocking(&self, rows: Vec<Row>, timeout: Duration) -> Result<Vec<Decision>, BatchError> {
        tokio::runtime::Handle::current().block_on(async {
            tokio::time::timeout(timeout, async {
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| BatchError::Closed)?;
                self.send(rows, permit)?.await.map_err(|_| BatchError::Closed)
            })
            .await
            .map_err(|_| BatchError::Timeout)?
        })
    }

    fn send(
        &self,
        rows: Vec<Row>,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Vec<Decision>>, BatchError> {
        let (reply, rx) = oneshot::channel();
        let bytes = rows.iter().map(|(_, m)| m.len()).sum();
        self.tx
            .send(Job {
                n_rows: rows.len(),
                rows,
                bytes,
                reply,
                permit,
            })
            .map_err(|_| BatchError::Closed)?;
        Ok(rx)
    }

    /// Jobs queued or being classified now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[derive(Clone, Copy)]
struct Limits {
    rows: usize,
    bytes: usize,
}

/// Where answered rows are counted: Prometheus and the dashboard's aggregates.
#[derive(Clone)]
struct Sink {
    metrics: Arc<Metrics>,
    recorder: Arc<Recorder>,
}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>, pipeline: &Arc<Pipeline>, limits: Limits, sink: &Sink) {
    let metrics = &sink.metrics;
    // A job taken off the queue that did not fit the previous batch.
    let mut carry: Option<Job> = None;
    loop {
        let mut batch: Vec<Job> = Vec::new();
        let (mut rows, mut bytes) = (0usize, 0usize);
        {
            let rx = match rx.lock() {
                Ok(g) => g,
                Err(_) => return,
            };
            let first = match carry.take() {
                Some(j) => j,
                None => match rx.recv() {
                    Ok(j) => j,
                    Err(_) => return, // every sender dropped: the server is gone
                },
            };
            let mut next = Some(first);
            while let Some(job) = next.take() {
                if job.reply.is_closed() {
                    metrics.skipped_jobs.inc();
                } else if batch.is_empty()
                    || (rows + job.rows.len() <= limits.rows && bytes + job.bytes <= limits.bytes)
                {
                    rows += job.rows.len();
                    bytes += job.bytes;
                    batch.push(job);
                } else {
                    carry = Some(job);
                    break;
                }
                if rows >= limits.rows || bytes >= limits.bytes {
                    break;
                }
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let items: Vec<Item> = batch
            .iter()
            .flat_map(|j| j.rows.iter())
            .map(|(s, m)| Item {
                source: s,
                message: m,
            })
            .collect();
        metrics.batch_rows.observe(items.len() as f64);
        metrics.batch_requests.observe(batch.len() as f64);
        let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.prepare(&items)));
        let Ok((partial, requests)) = prepared else {
            // Dropping the jobs answers their callers with an error (500).
            tracing::error!(rows = items.len(), "the classifier panicked; failing the batch");
            continue;
        };
        drop(items);
        if requests.is_empty() {
            let decided = pipeline.complete(partial, Vec::new());
            answer(batch, decided, sink);
            continue;
        }
        // Rows wait for the LLM. Jobs with none of them are answered now;
        // the rest are finished on a thread of their own, so a slow LLM never
        // holds up the next batch (waiting jobs keep their queue permits,
        // which bounds these threads by `queue_capacity`).
        let mut waiting: Vec<(std::ops::Range<usize>, Job)> = Vec::new();
        let mut offset = 0;
        for job in batch {
            let rows = offset..offset + job.rows.len();
            offset = rows.end;
            match partial.decided(rows.clone()) {
                Some(decided) => answer(vec![job], decided, sink),
                None => waiting.push((rows, job)),
            }
        }
        let spawned = std::thread::Builder::new()
            .name("logsieve-llm-wait".into())
            .spawn({
                let (pipeline, sink) = (pipeline.clone(), sink.clone());
                move || {
                    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let outcomes = pipeline.llm().classify_many(requests);
                        pipeline.complete(partial, outcomes)
                    }));
                    match done {
                        Ok(all) => {
                            for (rows, job) in waiting {
                                answer(vec![job], all[rows].to_vec(), &sink);
                            }
                        }
                        // Dropping the jobs answers their callers with an error (500).
                        Err(_) => tracing::error!("the LLM stage panicked; failing its rows"),
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a thread for the LLM stage; failing its rows");
        }
    }
}

/// Answer each job with its share of `decided` (in job order).
fn answer(mut batch: Vec<Job>, decided: Vec<Decision>, sink: &Sink) {
    for d in &decided {
        sink.metrics.count_row(d);
    }
    // The rows are not needed once classified: moved to the aggregates,
    // one send for the whole batch.
    let rows: Vec<Row> = batch
        .iter_mut()
        .flat_map(|j| std::mem::take(&mut j.rows))
        .collect();
    sink.recorder.record(rows, &decided);
    let mut decided = decided.into_iter();
    for job in batch {
        let mine: Vec<Decision> = decided.by_ref().take(job.n_rows).collect();
        // Room in the queue before the answer, so a caller that has its
        // answer can always be admitted again.
        drop(job.permit);
        // The caller may have gone meanwhile; nothing to do then.
        let _ = job.reply.send(mine);
    }
}
