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
use logsieve_pipeline::io::{self as pio, CsvWriter, Format, JsonlWriter, RowWriter};
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

/// Count bytes as they pass; past `limit` the stream fails (and `exceeded` is set).
fn limited(s: ByteStream, limit: u64, exceeded: Arc<AtomicBool>) -> ByteStream {
    let mut seen = 0u64;
    Box::pin(s.map(move |r| {
        let b = r?;
        seen += b.len() as u64;
        if seen > limit {
            exceeded.store(true, Ordering::Relaxed);
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

/// `POST /classify`, `/classify/`: the upload with four columns added.
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
    let (ct, mime) = content_type(&headers);
    let (input, format, name): (ByteStream, Format, Option<String>) = if mime == "multipart/form-data" {
        let boundary = multer::parse_boundary(&ct)
            .map_err(|e| AppError::BadRequest(format!("bad multipart content type: {e}")))?;
        let mut parts = multer::Multipart::new(body.into_data_stream(), boundary);
        loop {
            match parts.next_field().await {
                Ok(Some(field)) if field.name() == Some("file") => {
                    let name = field.file_name().map(str::to_string);
                    let part_mime = field.content_type().map(|m| m.essence_str().to_ascii_lowercase());
                    let format = match (name.as_deref(), part_mime.as_deref()) {
                        (_, Some(m)) if jsonl_mime(m) => Format::Jsonl,
                        (Some(n), _) => match pio::sniff_format(Some(n), b"") {
                            Format::Jsonl => Format::Jsonl,
                            _ => Format::Csv,
                        },
                        _ => Format::Csv,
                    };
                    let s: ByteStream = Box::pin(field.map_err(io::Error::other));
                    break (s, format, name);
                }
                Ok(Some(_)) => continue,
                Ok(None) => {
                    return Err(AppError::Validation {
                        message: "the multipart body has no `file` field".into(),
                        line: None,
                        column: None,
                    })
                }
                Err(e) => return Err(AppError::BadRequest(format!("unreadable multipart body: {e}"))),
            }
        }
    } else if matches!(mime.as_str(), "text/csv" | "application/csv") {
        (body_stream(body), Format::Csv, None)
    } else if jsonl_mime(&mime) {
        (body_stream(body), Format::Jsonl, None)
    } else {
        return Err(AppError::UnsupportedMediaType {
            got: if ct.is_empty() { "(none)".into() } else { ct },
            expected: "multipart/form-data (field `file`), text/csv or application/x-ndjson",
        });
    };
    let body = stream_classify(&st, input, format).await?;
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
    let body = stream_classify(&st, body_stream(body), Format::Jsonl).await?;
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
async fn stream_classify(st: &Arc<AppState>, input: ByteStream, format: Format) -> Result<Body, AppError> {
    let exceeded = Arc::new(AtomicBool::new(false));
    let input = limited(input, st.config.max_upload_bytes, exceeded.clone());
    // Created here: the bridge needs the runtime's handle.
    let src = SyncIoBridge::new(StreamReader::new(input));
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(4);
    let task_st = st.clone();
    tokio::task::spawn_blocking(move || run_upload(&task_st, src, format, ready_tx, tx, &exceeded));
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

fn run_upload(
    st: &AppState,
    src: impl io::Read,
    format: Format,
    ready_tx: oneshot::Sender<Result<(), AppError>>,
    tx: mpsc::Sender<io::Result<Bytes>>,
    exceeded: &AtomicBool,
) {
    let mut ready: Ready = Some(ready_tx);
    let too_large = || AppError::PayloadTooLarge {
        limit: st.config.max_upload_bytes,
    };
    let input = BufReader::with_capacity(64 * 1024, src);
    let mut reader = match pio::reader(input, format, None) {
        Ok(r) => r,
        Err(e) => {
            let e = if exceeded.load(Ordering::Relaxed) {
                too_large()
            } else {
                AppError::input(e)
            };
            answer(&mut ready, Err(e));
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
                let e = if exceeded.load(Ordering::Relaxed) {
                    too_large()
                } else {
                    AppError::Validation {
                        message: f.clone(),
                        line: None,
                        column: None,
                    }
                };
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
