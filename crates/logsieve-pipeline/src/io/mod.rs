//! Streaming input and output: CSV, JSON lines and plain text.
//!
//! Readers yield one [`InputRow`] at a time (memory stays flat on any file
//! size) and never drop a row silently: a row that can be read but is odd
//! (ragged, invalid UTF-8, huge) carries a `note` that ends up in the
//! output's `detail`; a row that cannot be classified at all (bad JSON, no
//! `log_message`) is still written, with the reason. Only input that cannot
//! be read as rows at all (no header, no `log_message` column, an
//! unterminated quote) is a fatal [`InputError`], naming line and column.

mod csv_in;
mod quote;
mod writer;

use std::io::{BufRead, Read};

pub use csv_in::CsvReader;
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
    /// A JSON object as read (field order kept).
    Json(serde_json::Map<String, serde_json::Value>),
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
/// for CSV/JSON rows lacking one).
pub fn reader<'a, R: BufRead + 'a>(
    input: R,
    format: Format,
    default_source: Option<String>,
) -> Result<Box<dyn RowReader + 'a>, InputError> {
    Ok(match format {
        Format::Csv => Box::new(CsvReader::new(input, default_source)?),
        Format::Jsonl => Box::new(JsonlReader::new(input, default_source)),
        Format::Text => Box::new(TextReader::new(input, default_source.unwrap_or_default())),
    })
}

/// Read one line (up to and including `\n`) as lossy UTF-8, noting bad bytes.
fn read_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<Option<(String, bool)>> {
    buf.clear();
    if r.read_until(b'\n', buf)? == 0 {
        return Ok(None);
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(Some(match std::str::from_utf8(buf) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(buf).into_owned(), true),
    }))
}

const BAD_UTF8: &str = "invalid UTF-8, replaced with U+FFFD";

/// Plain text: each line is one message.
pub struct TextReader<R> {
    input: R,
    source: String,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> TextReader<R> {
    pub fn new(input: R, source: String) -> Self {
        Self {
            input,
            source,
            line: 0,
            buf: Vec::new(),
        }
    }
}

impl<R: BufRead> RowReader for TextReader<R> {
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        match read_line(&mut self.input, &mut self.buf) {
            Err(e) => Some(Err(InputError::new(self.line + 1, format!("read error: {e}")))),
            Ok(None) => None,
            Ok(Some((text, bad))) => {
                self.line += 1;
                let mut row = InputRow::new(self.line, self.source.clone(), text, Payload::Text);
                if bad {
                    row.add_note(format!("line {}: {BAD_UTF8}", self.line));
                }
                Some(Ok(row))
            }
        }
    }
}

/// JSON lines: one object per line with `source` and `log_message`.
pub struct JsonlReader<R> {
    input: R,
    default_source: Option<String>,
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> JsonlReader<R> {
    pub fn new(input: R, default_source: Option<String>) -> Self {
        Self {
            input,
            default_source,
            line: 0,
            buf: Vec::new(),
        }
    }
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

impl<R: BufRead> RowReader for JsonlReader<R> {
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        loop {
            let (text, bad) = match read_line(&mut self.input, &mut self.buf) {
                Err(e) => return Some(Err(InputError::new(self.line + 1, format!("read error: {e}")))),
                Ok(None) => return None,
                Ok(Some(x)) => x,
            };
            self.line += 1;
            if text.trim().is_empty() {
                continue; // blank lines separate nothing in JSON lines
            }
            let line = self.line;
            let mut row = InputRow::new(line, String::new(), String::new(), Payload::Raw(text.clone()));
            if bad {
                row.add_note(format!("line {line}: {BAD_UTF8}"));
            }
            match serde_json::from_str::<serde_json::Value>(&text) {
                Err(e) => {
                    row.unreadable = true;
                    row.add_note(format!("line {line} column {}: invalid JSON: {e}", e.column()));
                }
                Ok(serde_json::Value::Object(map)) => {
                    match map.get("log_message").and_then(json_text) {
                        Some(m) => row.message = m,
                        None => {
                            row.unreadable = true;
                            row.add_note(format!("line {line}: object has no `log_message` string"));
                        }
                    }
                    row.source = map
                        .get("source")
                        .and_then(json_text)
                        .or_else(|| self.default_source.clone())
                        .unwrap_or_default()
                        .trim()
                        .to_string();
                    row.payload = Payload::Json(map);
                }
                Ok(other) => {
                    row.unreadable = true;
                    let kind = match other {
                        serde_json::Value::Array(_) => "an array",
                        serde_json::Value::String(_) => "a string",
                        serde_json::Value::Number(_) => "a number",
                        _ => "not an object",
                    };
                    row.add_note(format!("line {line}: expected a JSON object, found {kind}"));
                }
            }
            return Some(Ok(row));
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
