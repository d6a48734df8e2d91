//! Streaming input and output: CSV, JSON lines and plain text.
//!
//! Readers yield one [`InputRow`] at a time (memory stays flat on any file
//! size) and never drop a row silently: a row that can be read but is odd
//! (ragged, invalid UTF-8, huge) carries a `note` that ends up in the
//! output's `detail`; a row that cannot be classified at all (bad JSON, no
//! `log_message`) is still written, with the reason. Only input that cannot
//! be read as rows at all (no header, no `log_message` column, an
//! unterminated quote) is a fatal [`InputError`], naming line and column.
//!
//! [`ReaderOptions::max_line_bytes`] bounds what a reader buffers per line
//! (per record, for CSV): the first bytes are kept, the rest is skipped
//! while reading and counted, and the row says so. The server sets it so
//! that a request's memory does not depend on its body; the CLI leaves it
//! off and keeps every line whole.

mod csv_in;
mod json_in;
mod quote;
mod writer;

use std::io::{BufRead, Read};

pub use csv_in::CsvReader;
pub use json_in::{JsonObject, JsonlReader};
pub use writer::{CsvWriter, JsonlWriter, RowWriter};

use crate::decision::Decision;

/// Output columns logsieve adds, in order.
pub const OUTPUT_COLUMNS: [&str; 4] = ["target_label", "method", "confidence", "detail"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Jsonl,
    Text,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Ok(Format::Csv),
            "jsonl" | "ndjson" | "json" => Ok(Format::Jsonl),
            "text" | "txt" | "log" => Ok(Format::Text),
            other => Err(format!("unknown format `{other}` (expected csv, jsonl or text)")),
        }
    }
}

/// A fatal input error: the input cannot be read as rows from here on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}{}: {message}", column.as_ref().map(|c| format!(" column {c}")).unwrap_or_default())]
pub struct InputError {
    pub line: u64,
    pub column: Option<String>,
    pub message: String,
}

impl InputError {
    pub fn new(line: u64, message: impl Into<String>) -> Self {
        Self {
            line,
            column: None,
            message: message.into(),
        }
    }
}

/// How a row is written back out.
#[derive(Debug, Clone)]
pub enum Payload {
    /// The CSV record as read (original bytes).
    Csv(csv::ByteRecord),
    /// A JSON object as read: its text and where its fields are, so that
    /// output passes every field through byte for byte (numbers, `-0`,
    /// duplicate keys and spacing included).
    Json(JsonObject),
    /// A line that was not a JSON object: its text.
    Raw(String),
    /// A plain text line.
    Text,
}

#[derive(Debug, Clone)]
pub struct InputRow {
    /// 1-based line where the row starts.
    pub line: u64,
    pub source: String,
    pub message: String,
    /// Oddities found reading the row; prefixed to the output's `detail`.
    pub note: String,
    /// The row could not be read as a (source, message) pair; it is written
    /// with `method=none` and `note` as the reason.
    pub unreadable: bool,
    pub payload: Payload,
}

impl InputRow {
    /// A readable row with no notes yet.
    pub fn new(line: u64, source: String, message: String, payload: Payload) -> Self {
        Self {
            line,
            source,
            message,
            note: String::new(),
            unreadable: false,
            payload,
        }
    }

    fn add_note(&mut self, note: impl AsRef<str>) {
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(note.as_ref());
    }
}

/// A source of rows.
pub trait RowReader {
    /// The next row, a fatal error, or `None` at the end.
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>>;
    /// The input's column names, for CSV.
    fn header(&self) -> Option<&[String]> {
        None
    }
}

/// How readers treat long lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Keep at most this many bytes of a line (of a record, for CSV); the
    /// rest is skipped while reading, counted, and noted on the row. `None`:
    /// lines are kept whole, whatever their size.
    pub max_line_bytes: Option<usize>,
}

/// Decide a format from a file name, else from the first bytes (`{`: JSON
/// lines), else CSV. [`sniff_format_or`] for another fallback.
pub fn sniff_format(name: Option<&str>, head: &[u8]) -> Format {
    sniff_format_or(name, head, Format::Csv)
}

/// [`sniff_format`] with `fallback` when neither the name nor the first
/// bytes tell (`logsieve templates` reads plain text then).
pub fn sniff_format_or(name: Option<&str>, head: &[u8], fallback: Format) -> Format {
    if let Some(ext) = name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
    {
        match ext.as_str() {
            "csv" => return Format::Csv,
            "jsonl" | "ndjson" | "json" => return Format::Jsonl,
            "txt" | "log" => return Format::Text,
            _ => {}
        }
    }
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'{') {
        Format::Jsonl
    } else {
        fallback
    }
}

/// Build a reader for `format`. `source` is the source for text input (and
/// for CSV/JSON rows lacking one). Lines are kept whole.
pub fn reader<'a, R: BufRead + 'a>(
    input: R,
    format: Format,
    default_source: Option<String>,
) -> Result<Box<dyn RowReader + 'a>, InputError> {
    reader_with(input, format, default_source, ReaderOptions::default())
}

/// [`reader`] with options (a bound on the bytes kept per line).
pub fn reader_with<'a, R: BufRead + 'a>(
    input: R,
    format: Format,
    default_source: Option<String>,
    options: ReaderOptions,
) -> Result<Box<dyn RowReader + 'a>, InputError> {
    Ok(match format {
        Format::Csv => Box::new(CsvReader::with_options(input, default_source, options)?),
        Format::Jsonl => Box::new(JsonlReader::new(input, default_source).with_options(options)),
        Format::Text => {
            Box::new(TextReader::new(input, default_source.unwrap_or_default()).with_options(options))
        }
    })
}

/// One line as read: its text (lossy UTF-8), whether bytes were invalid,
/// and its length in the input when it was longer than what was kept.
struct Line {
    text: String,
    bad_utf8: bool,
    /// `Some(bytes the line had)` when it was cut at the limit.
    clipped: Option<u64>,
}

/// Read one line (up to and including `\n`), keeping at most `limit` bytes
/// of it (cut on a character boundary) and skipping the rest; the line
/// ending (`\n`, `\r\n`) is not part of the text.
fn read_line<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: Option<usize>,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let limit = limit.unwrap_or(usize::MAX);
    // Bytes of the line before its `\n`, and the last of them.
    let mut total: u64 = 0;
    let mut last: Option<u8> = None;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            break;
        }
        any = true;
        let (take, newline) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        let content = take - usize::from(newline);
        if content > 0 {
            last = Some(avail[content - 1]);
        }
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&avail[..content.min(room)]);
        total += content as u64;
        r.consume(take);
        if newline {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    let cr = u64::from(last == Some(b'\r'));
    let mut clipped = None;
    if total - cr <= buf.len() as u64 {
        // Whole (at most the `\r` of a `\r\n` was left out).
        while buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else {
        trim_partial_char(buf);
        clipped = Some(total - cr);
    }
    Ok(Some(match std::str::from_utf8(buf) {
        Ok(s) => Line {
            text: s.to_string(),
            bad_utf8: false,
            clipped,
        },
        Err(_) => Line {
            text: String::from_utf8_lossy(buf).into_owned(),
            bad_utf8: true,
            clipped,
        },
    }))
}

/// Drop an incomplete UTF-8 sequence at the end of `buf` (left by a cut).
pub(crate) fn trim_partial_char(buf: &mut Vec<u8>) {
    let n = buf.len();
    for back in 1..=n.min(4) {
        let b = buf[n - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back for the lead
        }
        let want = match b {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        if back < want {
            buf.truncate(n - back);
        }
        return;
    }
}

/// The note on a row cut at the line limit.
pub(crate) fn clipped_note(line: u64, total: u64, limit: usize) -> String {
    format!(
        "line {line}: the row is {total} bytes, over the limit of {limit}; only its first bytes were read (the rest is not in the output)"
    )
}

const BAD_UTF8: &str = "invalid UTF-8, replaced with U+FFFD";

/// Plain text: each line is one message.
pub struct TextReader<R> {
    input: R,
    source: String,
    line: u64,
    buf: Vec<u8>,
    options: ReaderOptions,
}

impl<R: BufRead> TextReader<R> {
    pub fn new(input: R, source: String) -> Self {
        Self {
            input,
            source,
            line: 0,
            buf: Vec::new(),
            options: ReaderOptions::default(),
        }
    }

    pub fn with_options(mut self, options: ReaderOptions) -> Self {
        self.options = options;
        self
    }
}

impl<R: BufRead> RowReader for TextReader<R> {
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        match read_line(&mut self.input, &mut self.buf, self.options.max_line_bytes) {
            Err(e) => Some(Err(InputError::new(self.line + 1, format!("read error: {e}")))),
            Ok(None) => None,
            Ok(Some(l)) => {
                self.line += 1;
                let mut row = InputRow::new(self.line, self.source.clone(), l.text, Payload::Text);
                if l.bad_utf8 {
                    row.add_note(format!("line {}: {BAD_UTF8}", self.line));
                }
                if let (Some(total), Some(limit)) = (l.clipped, self.options.max_line_bytes) {
                    row.add_note(clipped_note(self.line, total, limit));
                }
                Some(Ok(row))
            }
        }
    }
}

/// Bytes read so far, for progress bars.
pub struct CountingReader<R> {
    inner: R,
    pub counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> CountingReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            counter: Default::default(),
        }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// The decision for a row, with the row's own notes prefixed.
pub fn finish_decision(row: &InputRow, d: Decision) -> Decision {
    d.with_note(&row.note)
}

/// The decision `row` comes out with, given `decided` (one decision per
/// readable row, in order): none for an unreadable row (its note says
/// why), else the next decision, with the row's notes prefixed.
pub fn row_decision(row: &InputRow, decided: &mut impl Iterator<Item = Decision>) -> Decision {
    let d = if row.unreadable {
        Decision::none("")
    } else {
        decided
            .next()
            .unwrap_or_else(|| Decision::none("internal error: no decision for this row"))
    };
    finish_decision(row, d)
}
