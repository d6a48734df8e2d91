//! Streamed uploads: `POST /classify` (multipart field `file`, or a raw
//! CSV / JSON-lines body) and `POST /v1/logs` (NDJSON in, NDJSON out).
//!
//! Nothing holds the whole file: the body stream becomes a blocking reader
//! (`StreamReader` → `SyncIoBridge`) on a blocking thread that runs the
//! pipeline's streaming loop; each chunk of rows goes through the batcher
//! like any request, and the writer sends output through a small bounded
//! channel that is the response body. A slow client therefore slows the
//! upload down instead of filling memory.
//!
//! Errors found before the first chunk is admitted (no `log_message`
//! column, queue full, too large) get their status and the JSON error
//! shape. Once admitted the response starts; each chunk then has the
//! request timeout to come back, and a fatal error (timeout, the body
//! passing the size limit, an unterminated quote) aborts the body so the
//! client sees an incomplete transfer rather than a silent truncation.

use std::io::{self, BufReader, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use futures_util::{Stream, StreamExt, TryStreamExt};
use logsieve_pipeline::io::{
    self as pio, CsvWriter, Format, JsonlWriter, ReaderOptions, RowReader, RowWriter,
};
use logsieve_pipeline::run::{classify_stream_with, RunError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::batcher::{BatchError, Row};
use crate::openapi::{ClassifyErrors, UploadForm};
use crate::{AppError, AppState};

type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// Output is sent to the client in pieces of about this size.
const OUT_CHUNK: usize = 64 * 1024;

fn content_type(headers: &HeaderMap) -> (String, String) {
    let ct = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    (ct, mime)
}

fn jsonl_mime(mime: &str) -> bool {
    matches!(
        mime,
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" | "application/x-jsonlines"
    )
}

/// A declared length over the limit is refused before reading anything.
fn check_length(st: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let limit = st.config.max_upload_bytes;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(AppError::PayloadTooLarge { limit }),
        _ => Ok(()),
    }
}

/// What went wrong with the body itself while it was read.
#[derive(Default)]
struct BodyFlags {
    /// It passed `max_upload_bytes`.
    exceeded: AtomicBool,
    /// It stalled: no data within `body_timeout_ms`.
    stalled: AtomicBool,
}

/// Count bytes as they pass; past `limit` the stream fails (and `exceeded`
/// is set). A stalled body (the body-read timeout) sets `stalled`.
fn limited(s: ByteStream, limit: u64, flags: Arc<BodyFlags>) -> ByteStream {
    let mut seen = 0u64;
    Box::pin(s.map(move |r| {
        let b = r.inspect_err(|e| {
            if crate::timeouts::is_body_timeout(e) {
                flags.stalled.store(true, Ordering::Relaxed);
            }
        })?;
        seen += b.len() as u64;
        if seen > limit {
            flags.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the upload exceeds the limit of {limit} bytes"),
            ));
        }
        Ok(b)
    }))
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

/// The format of a multipart `file` part, from its content type or name.
fn part_format(field: &multer::Field<'_>) -> Format {
    let name = field.file_name();
    let part_mime = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
    match (name, part_mime.as_deref()) {
        (_, Some(m)) if jsonl_mime(m) => Format::Jsonl,
        (Some(n), _) => match pio::sniff_format(Some(n), b"") {
            Format::Jsonl => Format::Jsonl,
            _ => Format::Csv,
        },
        _ => Format::Csv,
    }
}

/// The next `file` part of a multipart body, skipping other fields.
async fn next_file_part(
    parts: &mut multer::Multipart<'static>,
) -> Result<Option<multer::Field<'static>>, multer::Error> {
    loop {
        match parts.next_field().await? {
            Some(f) if f.name() == Some("file") => return Ok(Some(f)),
            Some(_) => continue,
            None => return Ok(None),
        }
    }
}

/// What an upload reads rows from.
enum Source {
    /// A raw body.
    Body(ByteStream),
    /// A multipart body: its `file` parts one after the other, from `first`.
    Parts {
        parts: multer::Multipart<'static>,
        first: Box<multer::Field<'static>>,
    },
}

/// `POST /classify`, `/classify/`: the upload with four columns added.
///
/// A multipart body with several `file` parts has them classified one
/// after the other, into one answer: they must have the same format (and,
/// for CSV, the same header); the first part's name names the answer.
#[utoipa::path(post, path = "/classify", tag = "classify", security(("bearer" = [])),
    description = "Multipart form with field `file` (as the reference FastAPI server), or a raw text/csv or application/x-ndjson body. The response is the input with target_label, method, confidence and detail added, as an attachment. Also at /classify/.",
    request_body(content(
        (UploadForm = "multipart/form-data"),
        (String = "text/csv"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 200, description = "The classified file", content(
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        )),
        ClassifyErrors,
    ))]
pub async fn classify_upload(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    check_length(&st, &headers)?;
    let flags = Arc::new(BodyFlags::default());
    let (ct, mime) = content_type(&headers);
    let (source, format, name): (Source, Format, Option<String>) = if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(&ct)
            .map_err(|e| AppError::BadRequest(format!("bad multipart content type: {e}")))?;
        let input = limited(body_stream(body), st.config.max_upload_bytes, flags.clone());
        let guarded = crate::multipart_guard::Guard::new(input, &boundary);
        let mut parts = multer::Multipart::new(guarded, boundary);
        match next_file_part(&mut parts).await {
            Ok(Some(first)) => {
                let name = first.file_name().map(str::to_string);
                let format = part_format(&first);
                (
                    Source::Parts {
                        parts,
                        first: Box::new(first),
                    },
                    format,
                    name,
                )
            }
            Ok(None) => return Err(AppError::validation("the multipart body has no `file` field")),
            Err(_) if flags.exceeded.load(Ordering::Relaxed) => {
                return Err(AppError::PayloadTooLarge {
                    limit: st.config.max_upload_bytes,
                })
            }
            Err(_) if flags.stalled.load(Ordering::Relaxed) => {
                return Err(AppError::BodyTimeout(st.config.body_timeout_ms))
            }
            Err(e) => return Err(AppError::BadRequest(format!("unreadable multipart body: {e}"))),
        }
    } else if matches!(mime.as_str(), "text/csv" | "application/csv") {
        (Source::Body(body_stream(body)), Format::Csv, None)
    } else if jsonl_mime(&mime) {
        (Source::Body(body_stream(body)), Format::Jsonl, None)
    } else {
        return Err(AppError::UnsupportedMediaType {
            got: if ct.is_empty() { "(none)".into() } else { ct },
            expected: "multipart/form-data (field `file`), text/csv or application/x-ndjson",
        });
    };
    let body = stream_classify(&st, source, format, flags).await?;
    let (kind, ext) = match format {
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
        _ => ("text/csv; charset=utf-8", "csv"),
    };
    let file = format!("{}_classified.{ext}", safe_stem(name.as_deref()));
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        resp.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

/// `POST /v1/logs`: NDJSON in (one object per line with `source` and
/// `log_message`; other fields kept), NDJSON out, for log shippers.
#[utoipa::path(post, path = "/v1/logs", tag = "classify", security(("bearer" = [])),
    description = "One JSON object per line with `source` and `log_message`; other fields are kept and the four decision fields added. Streamed. Send `Content-Encoding: gzip` to post compressed batches (Vector's http sink, Fluent Bit's http output).",
    request_body(content((String = "application/x-ndjson"))),
    responses(
        (status = 200, description = "The lines with their decisions", content((String = "application/x-ndjson"))),
        ClassifyErrors,
    ))]
pub async fn ingest_logs(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    check_length(&st, &headers)?;
    let (ct, mime) = content_type(&headers);
    if !(jsonl_mime(&mime) || mime == "application/json") {
        return Err(AppError::UnsupportedMediaType {
            got: if ct.is_empty() { "(none)".into() } else { ct },
            expected: "application/x-ndjson",
        });
    }
    let flags = Arc::new(BodyFlags::default());
    let body = stream_classify(&st, Source::Body(body_stream(body)), Format::Jsonl, flags).await?;
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(resp)
}

/// A file name safe for a header: the upload's stem, ASCII letters, digits, `-_.`.
fn safe_stem(name: Option<&str>) -> String {
    let base = name
        .and_then(|n| n.rsplit(['/', '\\']).next())
        .map(|n| n.rsplit_once('.').map(|(s, _)| s).unwrap_or(n))
        .unwrap_or("");
    let s: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if s.trim_matches(['_', '.']).is_empty() {
        "logs".into()
    } else {
        s
    }
}

/// Start classifying `input` on a blocking thread; the response body once
/// the first rows are through (or the error that stopped them).
async fn stream_classify(
    st: &Arc<AppState>,
    source: Source,
    format: Format,
    flags: Arc<BodyFlags>,
) -> Result<Body, AppError> {
    let source = match source {
        Source::Body(input) => Source::Body(limited(input, st.config.max_upload_bytes, flags.clone())),
        parts => parts, // limited before multer saw it
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let task_st = st.clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || run_upload(&task_st, handle, source, format, ready_tx, tx, &flags));
    match tokio::time::timeout(st.request_timeout(), ready_rx).await {
        Err(_) => Err(AppError::Timeout(st.config.request_timeout_ms)),
        Ok(Err(_)) => Err(AppError::Internal(
            "the upload task ended without an answer".into(),
        )),
        Ok(Ok(Err(e))) => Err(e),
        Ok(Ok(Ok(()))) => Ok(Body::from_stream(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        }))),
    }
}

type Ready = Option<oneshot::Sender<Result<(), AppError>>>;

fn answer(ready: &mut Ready, r: Result<(), AppError>) -> bool {
    match ready.take() {
        Some(tx) => tx.send(r).is_ok(),
        None => false,
    }
}

/// Why an upload stopped classifying before its input ended.
#[derive(Debug, thiserror::Error)]
enum Stopped {
    #[error(transparent)]
    Batch(BatchError),
    #[error("the client went away")]
    ClientGone,
}

fn batch_error(e: BatchError, st: &AppState) -> AppError {
    match e {
        BatchError::Overloaded => AppError::Overloaded,
        BatchError::Closed => AppError::Internal("classifier threads stopped".into()),
        BatchError::Timeout => AppError::Timeout(st.config.request_timeout_ms),
    }
}

/// A blocking row reader over a byte stream, each line (record) kept to
/// `options.max_line_bytes`.
fn stream_reader(
    input: ByteStream,
    handle: &tokio::runtime::Handle,
    format: Format,
    options: ReaderOptions,
) -> Result<Box<dyn RowReader>, pio::InputError> {
    let src = SyncIoBridge::new_with_handle(StreamReader::new(input), handle.clone());
    pio::reader_with(BufReader::with_capacity(64 * 1024, src), format, None, options)
}

/// The rows of every `file` part of a multipart body, one part after the
/// other. Later parts must have the first one's format and header; notes and
/// errors about them name the part.
struct PartsReader {
    parts: multer::Multipart<'static>,
    current: Option<Box<dyn RowReader>>,
    handle: tokio::runtime::Handle,
    format: Format,
    options: ReaderOptions,
    header: Option<Vec<String>>,
    /// The current part: its number (1-based) and file name.
    part: usize,
    name: String,
}

impl PartsReader {
    fn start(
        parts: multer::Multipart<'static>,
        first: multer::Field<'static>,
        handle: tokio::runtime::Handle,
        format: Format,
        options: ReaderOptions,
    ) -> Result<Self, pio::InputError> {
        let name = first.file_name().unwrap_or("").to_string();
        let current = stream_reader(
            Box::pin(first.map_err(io::Error::other)),
            &handle,
            format,
            options,
        )?;
        let header = current.header().map(<[String]>::to_vec);
        Ok(Self {
            parts,
            current: Some(current),
            handle,
            format,
            options,
            header,
            part: 1,
            name,
        })
    }

    fn which(&self) -> String {
        format!("file part {} (`{}`)", self.part, self.name)
    }

    /// Open the next `file` part; `Ok(false)` when there is none.
    fn next_part(&mut self) -> Result<bool, pio::InputError> {
        let field = match self.handle.block_on(next_file_part(&mut self.parts)) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(false),
            Err(e) => return Err(pio::InputError::new(0, format!("unreadable multipart body: {e}"))),
        };
        self.part += 1;
        self.name = field.file_name().unwrap_or("").to_string();
        let format = part_format(&field);
        if format != self.format {
            return Err(pio::InputError::new(
                1,
                format!(
                    "{} is {format:?} but the first file part is {:?}; send one format per request",
                    self.which(),
                    self.format
                ),
            ));
        }
        let reader = stream_reader(
            Box::pin(field.map_err(io::Error::other)),
            &self.handle,
            format,
            self.options,
        )
        .map_err(|mut e| {
            e.message = format!("{}: {}", self.which(), e.message);
            e
        })?;
        let header = reader.header().map(<[String]>::to_vec);
        if header != self.header {
            return Err(pio::InputError::new(
                1,
                format!(
                    "{}: its header ({}) differs from the first file part's ({}); send files with one header per request",
                    self.which(),
                    header.unwrap_or_default().join(", "),
                    self.header.clone().unwrap_or_default().join(", ")
                ),
            ));
        }
        self.current = Some(reader);
        Ok(true)
    }
}

impl RowReader for PartsReader {
    fn next_row(&mut self) -> Option<Result<pio::InputRow, pio::InputError>> {
        loop {
            let next = self.current.as_mut()?.next_row();
            match next {
                Some(Ok(mut row)) => {
                    if self.part > 1 && !row.note.is_empty() {
                        row.note = format!("{}: {}", self.which(), row.note);
                    }
                    return Some(Ok(row));
                }
                Some(Err(mut e)) => {
                    if self.part > 1 {
                        e.message = format!("{}: {}", self.which(), e.message);
                    }
                    return Some(Err(e));
                }
                None => {
                    // The part's stream must be gone before multer reads on.
                    self.current = None;
                    match self.next_part() {
                        Ok(true) => continue,
                        Ok(false) => return None,
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }

    fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }
}

fn run_upload(
    st: &AppState,
    handle: tokio::runtime::Handle,
    source: Source,
    format: Format,
    ready_tx: oneshot::Sender<Result<(), AppError>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    flags: &BodyFlags,
) {
    let mut ready: Ready = Some(ready_tx);
    // A request's memory must not depend on its body: no line is kept
    // beyond what is classified of it.
    let options = ReaderOptions {
        max_line_bytes: Some(st.pipeline.config().input.max_message_bytes.max(1)),
    };
    let body_error = |fallback: AppError| {
        if flags.exceeded.load(Ordering::Relaxed) {
            AppError::PayloadTooLarge {
                limit: st.config.max_upload_bytes,
            }
        } else if flags.stalled.load(Ordering::Relaxed) {
            AppError::BodyTimeout(st.config.body_timeout_ms)
        } else {
            fallback
        }
    };
    let opened: Result<Box<dyn RowReader>, pio::InputError> = match source {
        Source::Body(input) => stream_reader(input, &handle, format, options),
        Source::Parts { parts, first } => {
            PartsReader::start(parts, *first, handle.clone(), format, options).map(|r| Box::new(r) as _)
        }
    };
    let mut reader = match opened {
        Ok(r) => r,
        Err(e) => {
            answer(&mut ready, Err(body_error(AppError::input(e))));
            return;
        }
    };
    let sink = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(OUT_CHUNK),
    };
    let mut writer: Box<dyn RowWriter> = match format {
        Format::Csv => match CsvWriter::new(sink, reader.header()) {
            Ok(w) => Box::new(w),
            Err(e) => {
                answer(
                    &mut ready,
                    Err(AppError::Internal(format!("writing the header: {e}"))),
                );
                return;
            }
        },
        _ => Box::new(JsonlWriter::new(sink)),
    };
    let mut first = true;
    let timeout = st.request_timeout();
    // Chunks no larger than a batch: each comes back well within the
    // timeout, and single requests queued meanwhile wait for one batch, not
    // for a 2048-row chunk.
    let mut config = st.pipeline.config().clone();
    config.input.chunk_rows = config.input.chunk_rows.min(st.config.max_batch_rows.max(1));
    let result = classify_stream_with(
        &config,
        reader.as_mut(),
        writer.as_mut(),
        |_| {},
        |items| {
            let rows: Vec<Row> = items
                .iter()
                .map(|i| (i.source.to_string(), i.message.to_string()))
                .collect();
            if first {
                first = false;
                // Admission for the first chunk: a full queue is 429 before
                // any output; once admitted, the response starts.
                let rx = match st.batcher.try_submit(rows) {
                    Ok(rx) => rx,
                    Err(e) => {
                        answer(&mut ready, Err(batch_error(e, st)));
                        return Err(Stopped::Batch(e));
                    }
                };
                if !answer(&mut ready, Ok(())) {
                    return Err(Stopped::ClientGone);
                }
                let waited = tokio::runtime::Handle::current().block_on(tokio::time::timeout(timeout, rx));
                return match waited {
                    Err(_) => Err(Stopped::Batch(BatchError::Timeout)),
                    Ok(r) => r.map_err(|_| Stopped::Batch(BatchError::Closed)),
                };
            }
            // Later chunks wait for room (back-pressure) rather than fail.
            st.batcher.submit_blocking(rows, timeout).map_err(Stopped::Batch)
        },
    );
    match result {
        Ok(summary) => match summary.fatal {
            None => {
                answer(&mut ready, Ok(())); // input with no rows
            }
            Some(f) => {
                let e = body_error(AppError::validation(f.clone()));
                tracing::warn!(rows = summary.rows, error = %e, "upload stopped early");
                if ready.is_some() {
                    answer(&mut ready, Err(e));
                } else {
                    let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                }
            }
        },
        Err(RunError::Write(e)) => {
            tracing::debug!(error = %e, "upload response not delivered (client gone?)");
            answer(&mut ready, Err(AppError::Internal(format!("writing: {e}"))));
        }
        Err(e) => {
            tracing::warn!(error = %e, "upload stopped");
            if ready.is_some() {
                answer(&mut ready, Err(AppError::Internal(e.to_string())));
            } else {
                let _ = tx.blocking_send(Err(io::Error::other("classification stopped")));
            }
        }
    }
}

/// `Write` into the response body channel, in pieces of [`OUT_CHUNK`];
/// blocks while the client is behind (back-pressure), fails once it is gone.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let b = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(OUT_CHUNK)));
        self.tx
            .blocking_send(Ok(b))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= OUT_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::safe_stem;

    #[test]
    fn file_names_are_made_header_safe() {
        assert_eq!(safe_stem(Some("../../etc/seed test.csv")), "seed_test");
        assert_eq!(safe_stem(Some("a\"b.csv")), "a_b");
        assert_eq!(safe_stem(None), "logs");
        assert_eq!(safe_stem(Some("日本.csv")), "logs");
    }
}
