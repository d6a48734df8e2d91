//! CSV input: a header naming `source` and `log_message` (any order, other
//! columns kept), loosely quoted files accepted (see `quote.rs`).

use std::io::BufRead;

use super::quote::{OpenQuote, QuoteFix};
use super::{InputError, InputRow, Payload, RowReader, BAD_UTF8};

pub struct CsvReader<'a> {
    rdr: csv::Reader<QuoteFix<Box<dyn BufRead + 'a>>>,
    open_quote: OpenQuote,
    header: Vec<String>,
    source_col: Option<usize>,
    message_col: usize,
    default_source: Option<String>,
    peeked: Option<Result<Option<csv::ByteRecord>, csv::Error>>,
    fatal_pending: Option<InputError>,
    done: bool,
}

fn header_name(raw: &[u8], first: bool) -> String {
    let s = String::from_utf8_lossy(raw);
    let s = if first {
        s.trim_start_matches('\u{feff}')
    } else {
        &s
    };
    s.trim().to_string()
}

impl<'a> CsvReader<'a> {
    pub fn new<R: BufRead + 'a>(input: R, default_source: Option<String>) -> Result<Self, InputError> {
        let fix = QuoteFix::new(Box::new(input) as Box<dyn BufRead + 'a>);
        let open_quote = fix.open_quote.clone();
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(fix);
        let mut rec = csv::ByteRecord::new();
        let got = rdr
            .read_byte_record(&mut rec)
            .map_err(|e| InputError::new(1, format!("cannot read the header: {e}")))?;
        if !got || (rec.len() == 1 && rec[0].iter().all(u8::is_ascii_whitespace)) {
            return Err(InputError::new(
                1,
                "empty input: expected a header line naming `source` and `log_message`",
            ));
        }
        let header: Vec<String> = rec
            .iter()
            .enumerate()
            .map(|(i, f)| header_name(f, i == 0))
            .collect();
        let find = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
        let Some(message_col) = find("log_message") else {
            return Err(InputError::new(
                1,
                format!(
                    "the header has no `log_message` column (columns: {})",
                    header.join(", ")
                ),
            ));
        };
        let source_col = find("source");
        if source_col.is_none() && default_source.is_none() {
            return Err(InputError::new(
                1,
                format!(
                    "the header has no `source` column (columns: {}); pass --source to set one for every row",
                    header.join(", ")
                ),
            ));
        }
        Ok(Self {
            rdr,
            open_quote,
            header,
            source_col,
            message_col,
            default_source,
            peeked: None,
            fatal_pending: None,
            done: false,
        })
    }

    /// Column names as read (trimmed).
    pub fn columns(&self) -> &[String] {
        &self.header
    }

    fn read(&mut self) -> Result<Option<csv::ByteRecord>, csv::Error> {
        let mut rec = csv::ByteRecord::new();
        Ok(self.rdr.read_byte_record(&mut rec)?.then_some(rec))
    }
}

fn field(rec: &csv::ByteRecord, i: usize) -> Option<(String, bool)> {
    rec.get(i).map(|b| match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), true),
    })
}

impl RowReader for CsvReader<'_> {
    fn header(&self) -> Option<&[String]> {
        Some(&self.header)
    }

    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        if let Some(e) = self.fatal_pending.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        let current = match self.peeked.take() {
            Some(r) => r,
            None => self.read(),
        };
        let rec = match current {
            Err(e) => {
                self.done = true;
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                return Some(Err(InputError::new(line, format!("unreadable CSV: {e}"))));
            }
            Ok(None) => return None,
            Ok(Some(rec)) => rec,
        };
        // Look one record ahead: an unterminated quote swallows the rest of
        // the input into the last record, which is only known at the end.
        self.peeked = Some(self.read());
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        // A blank line is no row.
        if rec.len() == 1 && rec[0].is_empty() {
            return self.next_row();
        }
        let mut row = InputRow::new(line, String::new(), String::new(), Payload::Csv(rec.clone()));
        let is_last = matches!(self.peeked, Some(Ok(None)));
        if let (true, Some((qline, qcol))) = (is_last, self.open_quote.get()) {
            if qline >= line {
                let msg = format!(
                    "line {qline} column {qcol}: unterminated quoted field runs to the end of the input"
                );
                row.unreadable = true;
                row.add_note(&msg);
                self.fatal_pending = Some(InputError {
                    line: qline,
                    column: Some(qcol.to_string()),
                    message: "unterminated quoted field runs to the end of the input (the row is written unclassified)".into(),
                });
            }
        }
        let n = self.header.len();
        if rec.len() != n {
            let mut note = format!("line {line}: {} fields, header has {n}", rec.len());
            if rec.len() > n {
                let extra: Vec<String> = rec
                    .iter()
                    .skip(n)
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                note.push_str(&format!(
                    "; extra fields: {}",
                    serde_json::to_string(&extra).unwrap_or_default()
                ));
            }
            row.add_note(note);
        }
        match field(&rec, self.message_col) {
            Some((m, bad)) => {
                if bad {
                    row.add_note(format!("line {line} column log_message: {BAD_UTF8}"));
                }
                row.message = m;
            }
            None => {
                row.unreadable = true;
                row.add_note(format!("line {line}: no log_message field"));
            }
        }
        row.source = match self.source_col.and_then(|c| field(&rec, c)) {
            Some((s, bad)) => {
                if bad {
                    row.add_note(format!("line {line} column source: {BAD_UTF8}"));
                }
                s.trim().to_string()
            }
            None => self.default_source.clone().unwrap_or_default(),
        };
        Some(Ok(row))
    }
}
