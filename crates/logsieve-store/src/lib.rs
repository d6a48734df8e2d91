//! The decision store: every template decision the model, the LLM or a
//! person made, kept in an embedded SQLite database (bundled SQLite, WAL
//! mode) so that a restart, or the next run over the same logs, starts from
//! what was already decided.
//!
//! [`Store::open`] opens (or creates) the file, checks that it is a database
//! this process can write, and runs the schema's migrations
//! ([`schema::MIGRATIONS`], numbered by `PRAGMA user_version`). Writes go
//! through a bounded channel to one background thread, which commits
//! whatever has queued up in one transaction: the classifier never waits on
//! the disk per row. [`Store::flush`] waits until everything submitted has
//! been committed. Other modules write their own tables with
//! [`Store::execute`] (a closure run inside the writer's transaction) and
//! read with [`Store::read`].
//!
//! A write that fails after the store was opened (a full disk, a file
//! damaged under us) is logged and counted, never passed to the caller's
//! hot path: the store is a memory, not a place rows can get lost in.

mod positions;
pub mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use positions::FollowPosition;
pub use rusqlite;
pub use writer::Job;

use writer::{Msg, Writer};

/// Why the store could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {}: not a SQLite database (the file has other content); name another file or move this one aside", path.display())]
    NotADatabase { path: PathBuf },
    #[error("store {}: the database is damaged ({detail}); move it aside to start a new one", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("store {}: cannot write here; the store needs a writable file and directory", path.display())]
    NotWritable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {}: the database is read-only ({detail}); the store needs to write its decisions", path.display())]
    ReadOnly { path: PathBuf, detail: String },
    #[error("store {}: schema version {found} is newer than this build knows ({known}); use a newer logsieve", path.display())]
    TooNew { path: PathBuf, found: u32, known: u32 },
    #[error("store {}: migration {version} ({name}): {source}", path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("store {}: writes failed: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error("store {}: the writer thread has stopped", path.display())]
    Closed { path: PathBuf },
}

impl StoreError {
    /// The error for `e` on the database at `path`, with damage and
    /// not-a-database told apart from the rest.
    fn sqlite(path: &Path, e: rusqlite::Error) -> Self {
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => StoreError::NotADatabase { path },
            Some(ErrorCode::DatabaseCorrupt) => StoreError::Corrupt {
                path,
                detail: e.to_string(),
            },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly {
                path,
                detail: e.to_string(),
            },
            _ => StoreError::Sqlite { path, source: e },
        }
    }

    /// Whether the file is damaged (some rows may still be readable).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

/// Which stage (or who) made a stored decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredMethod {
    Model,
    Llm,
    /// A person's correction: never overwritten by the model or the LLM.
    Feedback,
}

impl StoredMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            StoredMethod::Model => "model",
            StoredMethod::Llm => "llm",
            StoredMethod::Feedback => "feedback",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "model" => Some(StoredMethod::Model),
            "llm" => Some(StoredMethod::Llm),
            "feedback" => Some(StoredMethod::Feedback),
            _ => None,
        }
    }
}

/// A decision to store (or read back).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDecision {
    pub source: String,
    /// The masked text (with `source`, the key).
    pub template: String,
    pub label: String,
    pub method: StoredMethod,
    pub confidence: f32,
    pub reason: String,
    /// The classifier version, the LLM's model name, or '' for feedback.
    pub model_version: String,
    /// One line with this template, as logged.
    pub example: String,
    /// Lines with this template this decision covers (a new decision: the
    /// lines of the batch that asked for it).
    pub count: u64,
}

/// Lines seen again with an already stored template.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub source: String,
    pub template: String,
    pub lines: u64,
}

/// What [`Store::load_decisions`] read: the decisions, and the error that
/// stopped it early (a damaged file), if any.
#[derive(Debug)]
pub struct Loaded {
    pub decisions: Vec<StoredDecision>,
    /// Stored model decisions left out because another model made them.
    pub stale_model: u64,
    pub error: Option<StoreError>,
}

/// Decisions per method, as stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    pub model: u64,
    pub llm: u64,
    pub feedback: u64,
}

/// An open store. Cheap to share behind an `Arc`; dropping the last one
/// commits what is queued and stops the writer.
pub struct Store {
    path: PathBuf,
    writer: Writer,
    /// For reads (the writer thread has its own connection).
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Open the store at `path`, creating it (and running the migrations)
    /// if needed. Fails with a clear error when the file is not a database,
    /// is damaged beyond opening, or cannot be written.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        // Ask the file system first: its error says what is wrong (a
        // read-only file system, a missing directory) where SQLite's would
        // only say "unable to open database file".
        if let Err(source) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            return Err(StoreError::NotWritable { path, source });
        }
        let conn = connect(&path)?;
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(StoreError::ReadOnly {
                path,
                detail: "opened read-only".into(),
            });
        }
        // WAL: readers (another process, the dashboard) never block the writer.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| StoreError::sqlite(&path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(store = %path.display(), mode, "the store could not switch to WAL mode");
        }
        migrate(&path, &conn)?;
        let writer = Writer::start(&path, connect(&path)?);
        Ok(Store {
            path,
            writer,
            reader: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
    }

    /// Run `f` on the reading connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|e| StoreError::sqlite(&self.path, e))
    }

    /// Queue decisions for the writer (blocks only when its queue is full).
    pub fn record_decisions(&self, decisions: Vec<StoredDecision>) {
        if !decisions.is_empty() {
            self.writer.send(Msg::Decisions(decisions, now_unix()));
        }
    }

    /// Queue line counts for stored templates.
    pub fn record_hits(&self, hits: Vec<Hit>) {
        if !hits.is_empty() {
            self.writer.send(Msg::Hits(hits, now_unix()));
        }
    }

    /// Queue a write of another module's own: `job` runs inside the
    /// writer's next transaction (an error rolls back that job's statements
    /// only if it returns before making them; keep jobs to one statement or
    /// use a savepoint).
    pub fn execute(&self, job: Job) {
        self.writer.send(Msg::Job(job));
    }

    /// Wait until everything queued before this call is committed. Returns
    /// the write errors since the last flush, if any.
    pub fn flush(&self) -> Result<(), StoreError> {
        match self.writer.flush() {
            None => Err(StoreError::Closed {
                path: self.path.clone(),
            }),
            Some(None) => Ok(()),
            Some(Some(message)) => Err(StoreError::Write {
                path: self.path.clone(),
                message,
            }),
        }
    }

    /// Writes that failed since the store was opened.
    pub fn write_errors(&self) -> u64 {
        self.writer.errors()
    }

    /// The decisions to warm a template cache with: people's and the LLM's
    /// whatever made them, the model's only when `model_version` made them;
    /// at most `limit`, the most important last (feedback, then the LLM,
    /// then the model; the most recently seen last within each), so an LRU
    /// filled in this order keeps the best.
    pub fn load_decisions(&self, model_version: &str, limit: usize) -> Loaded {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        let mut decisions = Vec::new();
        let mut error = None;
        let stale_model = conn
            .query_row(
                "SELECT count(*) FROM decisions WHERE method = 'model' AND model_version != ?1",
                [model_version],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64);
        let stale_model = match stale_model {
            Ok(n) => n,
            Err(e) => {
                error = Some(StoreError::sqlite(&self.path, e));
                0
            }
        };
        let r = (|| -> rusqlite::Result<()> {
            let mut st = conn.prepare(
                "SELECT source, template, label, method, confidence, reason, model_version, example, count
                 FROM decisions
                 WHERE method != 'model' OR model_version = ?1
                 ORDER BY CASE method WHEN 'feedback' THEN 2 WHEN 'llm' THEN 1 ELSE 0 END DESC, last_seen DESC
                 LIMIT ?2",
            )?;
            let mut rows = st.query(rusqlite::params![
                model_version,
                limit.min(i64::MAX as usize) as i64
            ])?;
            while let Some(r) = rows.next()? {
                let method: String = r.get(3)?;
                let Some(method) = StoredMethod::parse(&method) else {
                    continue;
                };
                decisions.push(StoredDecision {
                    source: r.get(0)?,
                    template: r.get(1)?,
                    label: r.get(2)?,
                    method,
                    confidence: r.get::<_, f64>(4)? as f32,
                    reason: r.get(5)?,
                    model_version: r.get(6)?,
                    example: r.get(7)?,
                    count: r.get::<_, i64>(8)?.max(0) as u64,
                });
            }
            Ok(())
        })();
        if let Err(e) = r {
            error.get_or_insert(StoreError::sqlite(&self.path, e));
        }
        decisions.reverse();
        Loaded {
            decisions,
            stale_model,
            error,
        }
    }

    /// Stored decisions by `method`, at or above `min_confidence`, in key
    /// order (for training on what the LLM and people decided).
    pub fn decisions_by(
        &self,
        method: StoredMethod,
        min_confidence: f32,
    ) -> Result<Vec<StoredDecision>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare(
                "SELECT source, template, label, confidence, reason, model_version, example, count
                 FROM decisions WHERE method = ?1 AND confidence >= ?2 ORDER BY source, template",
            )?;
            let rows = st.query_map(rusqlite::params![method.as_str(), min_confidence as f64], |r| {
                Ok(StoredDecision {
                    source: r.get(0)?,
                    template: r.get(1)?,
                    label: r.get(2)?,
                    method,
                    confidence: r.get::<_, f64>(3)? as f32,
                    reason: r.get(4)?,
                    model_version: r.get(5)?,
                    example: r.get(6)?,
                    count: r.get::<_, i64>(7)?.max(0) as u64,
                })
            })?;
            rows.collect()
        })
    }

    /// Stored decisions per method.
    pub fn counts(&self) -> Result<Counts, StoreError> {
        self.read(|c| {
            let mut st = c.prepare("SELECT method, count(*) FROM decisions GROUP BY method")?;
            let mut out = Counts::default();
            let mut rows = st.query([])?;
            while let Some(r) = rows.next()? {
                let n = r.get::<_, i64>(1)? as u64;
                match StoredMethod::parse(&r.get::<_, String>(0)?) {
                    Some(StoredMethod::Model) => out.model = n,
                    Some(StoredMethod::Llm) => out.llm = n,
                    Some(StoredMethod::Feedback) => out.feedback = n,
                    None => {}
                }
            }
            Ok(out)
        })
    }
}

/// A connection with the settings every connection of ours has.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::sqlite(path, e))?;
    // Two processes on one store wait for each other rather than fail.
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| StoreError::sqlite(path, e))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| StoreError::sqlite(path, e))?;
    Ok(conn)
}

/// Bring the schema to the latest version, one migration per transaction.
fn migrate(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    let found: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| StoreError::sqlite(path, e))?;
    let known = schema::latest_version();
    if found > known {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for m in schema::MIGRATIONS.iter().filter(|m| m.version > found) {
        let run = || -> rusqlite::Result<()> {
            conn.execute_batch("BEGIN IMMEDIATE")?;
            // Another process may have migrated while we waited for the lock.
            let now: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
            if now >= m.version {
                return conn.execute_batch("COMMIT");
            }
            let r = conn
                .execute_batch(m.sql)
                .and_then(|_| conn.pragma_update(None, "user_version", m.version));
            match r {
                Ok(()) => conn.execute_batch("COMMIT"),
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        };
        run().map_err(|e| match StoreError::sqlite(path, e) {
            StoreError::Sqlite { source, .. } => StoreError::Migration {
                path: path.to_path_buf(),
                version: m.version,
                name: m.name,
                source,
            },
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
