//! The store's one writing thread: messages come through a bounded channel
//! (a full queue makes the sender wait: backpressure, nothing dropped), and
//! whatever has queued up is committed in one transaction.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rusqlite::{params, Connection, Transaction};

use crate::{Hit, StoredDecision};

/// A write of another module's own, run inside the writer's transaction.
pub type Job = Box<dyn FnOnce(&Transaction<'_>) -> rusqlite::Result<()> + Send>;

/// Messages queued at most; each is a batch.
const QUEUE: usize = 1024;
/// Messages committed together at most.
const PER_TRANSACTION: usize = 256;

pub(crate) enum Msg {
    /// Decisions, with the time they were made (Unix seconds).
    Decisions(Vec<StoredDecision>, i64),
    Hits(Vec<Hit>, i64),
    Job(Job),
    /// Answered once everything before it is committed, with the write
    /// errors since the last flush.
    Flush(mpsc::Sender<Option<String>>),
}

pub(crate) struct Writer {
    tx: Option<SyncSender<Msg>>,
    thread: Option<JoinHandle<()>>,
    errors: Arc<AtomicU64>,
}

/// The upsert: a person's correction is kept whatever the model or the LLM
/// decide for its template later (only another correction replaces it).
const UPSERT: &str = "
INSERT INTO decisions (source, template, label, method, confidence, reason, model_version, example,
                       first_seen, last_seen, count)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)
ON CONFLICT (source, template) DO UPDATE SET
    label         = CASE WHEN decisions.method = 'feedback' AND excluded.method != 'feedback'
                         THEN decisions.label ELSE excluded.label END,
    confidence    = CASE WHEN decisions.method = 'feedback' AND excluded.method != 'feedback'
                         THEN decisions.confidence ELSE excluded.confidence END,
    reason        = CASE WHEN decisions.method = 'feedback' AND excluded.method != 'feedback'
                         THEN decisions.reason ELSE excluded.reason END,
    model_version = CASE WHEN decisions.method = 'feedback' AND excluded.method != 'feedback'
                         THEN decisions.model_version ELSE excluded.model_version END,
    method        = CASE WHEN decisions.method = 'feedback' AND excluded.method != 'feedback'
                         THEN decisions.method ELSE excluded.method END,
    last_seen     = excluded.last_seen,
    count         = decisions.count + excluded.count";

const HIT: &str =
    "UPDATE decisions SET count = count + ?3, last_seen = max(last_seen, ?4) WHERE source = ?1 AND template = ?2";

impl Writer {
    pub(crate) fn start(path: &Path, conn: Connection) -> Writer {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let errors = Arc::new(AtomicU64::new(0));
        let (path, counted) = (path.to_path_buf(), errors.clone());
        let thread = std::thread::Builder::new()
            .name("logsieve-store".into())
            .spawn(move || run(path, conn, rx, counted))
            .expect("spawn the store writer");
        Writer {
            tx: Some(tx),
            thread: Some(thread),
            errors,
        }
    }

    pub(crate) fn send(&self, msg: Msg) {
        if let Some(tx) = &self.tx {
            if tx.send(msg).is_err() {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("the store writer has stopped; a write was not stored");
            }
        }
    }

    /// `None` when the writer is gone, else the errors since the last flush.
    pub(crate) fn flush(&self) -> Option<Option<String>> {
        let (tx, rx) = mpsc::channel();
        self.tx.as_ref()?.send(Msg::Flush(tx)).ok()?;
        rx.recv().ok()
    }

    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

impl Drop for Writer {
    /// Commit what is queued, then stop the thread.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(path: PathBuf, mut conn: Connection, rx: Receiver<Msg>, errors: Arc<AtomicU64>) {
    let mut since_flush: Vec<String> = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < PER_TRANSACTION {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        let r = commit(&mut conn, batch, &mut acks);
        if let Err(e) = r {
            errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(store = %path.display(), error = %e, "store: a batch of writes failed; classification goes on");
            since_flush.push(e.to_string());
        }
        for ack in acks {
            let msg = (!since_flush.is_empty()).then(|| since_flush.join("; "));
            let _ = ack.send(msg);
            since_flush.clear();
        }
    }
}

/// One transaction for a batch of messages; flush requests are collected in
/// `acks` to be answered after the commit.
fn commit(
    conn: &mut Connection,
    batch: Vec<Msg>,
    acks: &mut Vec<mpsc::Sender<Option<String>>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate);
    let tx = match tx {
        Ok(t) => t,
        Err(e) => {
            acks.extend(batch.into_iter().filter_map(|m| match m {
                Msg::Flush(a) => Some(a),
                _ => None,
            }));
            return Err(e);
        }
    };
    let mut first_err = None;
    for m in batch {
        let r = match m {
            Msg::Flush(a) => {
                acks.push(a);
                Ok(())
            }
            Msg::Decisions(ds, now) => (|| {
                let mut st = tx.prepare_cached(UPSERT)?;
                for d in &ds {
                    st.execute(params![
                        d.source,
                        d.template,
                        d.label,
                        d.method.as_str(),
                        d.confidence as f64,
                        d.reason,
                        d.model_version,
                        d.example,
                        now,
                        d.count.min(i64::MAX as u64) as i64,
                    ])?;
                }
                Ok(())
            })(),
            Msg::Hits(hits, now) => (|| {
                let mut st = tx.prepare_cached(HIT)?;
                for h in &hits {
                    st.execute(params![
                        h.source,
                        h.template,
                        h.lines.min(i64::MAX as u64) as i64,
                        now
                    ])?;
                }
                Ok(())
            })(),
            Msg::Job(job) => job(&tx),
        };
        if let Err(e) = r {
            first_err.get_or_insert(e);
        }
    }
    // What succeeded is kept even when one message failed.
    tx.commit()?;
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
