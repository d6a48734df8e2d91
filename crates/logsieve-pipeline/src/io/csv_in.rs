//! CSV input: a header naming `source` and `log_message` (any order, other
//! columns kept), loosely quoted files accepted (see `quote.rs`).

use std::io::BufRead;

use super::quote::{Clips, OpenQuote, QuoteFix};
use super::{clipped_note, InputError, InputRow, Payload, ReaderOptions, RowReader, BAD_UTF8};

pub struct CsvReader<'a> {
    rdr: csv::Reader<QuoteFix<Box<dyn BufRead + 'a>>>,
    open_quote: OpenQuote,
    /// Records cut at the line limit, in order.
    clips: Clips,
    /// Newlines skipped in records cut before this one: the csv crate's
    /// line numbers are this many short.
    line_shift: u64,
    limit: Option<usize>,
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
        Self::with_options(input, default_source, ReaderOptions::default())
    }

    /// [`Self::new`] with a bound on the bytes kept per record.
    pub fn with_options<R: BufRead + 'a>(
        input: R,
        default_source: Option<String>,
        options: ReaderOptions,
    ) -> Result<Self, InputError> {
        let fix = QuoteFix::new(Box::new(input) as Box<dyn BufRead + 'a>).with_limit(options.max_line_bytes);
        let open_quote = fix.open_quote.clone();
        let clips = fix.clips.clone();
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
        // A cut header is no row; later lines shift by what it skipped.
        let mut line_shift = 0;
        let header_clip = clips.borrow().front().copied().filter(|c| c.out_line == 1);
        if let Some(c) = header_clip {
            line_shift = c.skipped_newlines;
            clips.borrow_mut().pop_front();
        }
        let find = |name: &str| -> Result<Option<usize>, InputError> {
            let at: Vec<usize> = (0..header.len())
                .filter(|&i| header[i].eq_ignore_ascii_case(name))
                .collect();
            match at.as_slice() {
                [] => Ok(None),
                [i] => Ok(Some(*i)),
                many => Err(InputError::new(
                    1,
                    format!(
                        "the header has {} `{name}` columns ({}); which one to use is unclear, so keep one",
                        many.len(),
                        many.iter()
                            .map(|&i| format!("column {} `{}`", i + 1, header[i]))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )),
            }
        };
        let message_col = find("log_message")?;
        let source_col = find("source")?;
        let Some(message_col) = message_col else {
            return Err(InputError::new(
                1,
                format!(
                    "the header has no `log_message` column (columns: {})",
                    header.join(", ")
                ),
            ));
        };
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
            clips,
            line_shift,
            limit: options.max_line_bytes,
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
        let out_line = rec.position().map(|p| p.line()).unwrap_or(0);
        let line = out_line + self.line_shift;
        // Was this record cut? (Clips of earlier records were taken when they were read.)
        let clip = {
            let mut clips = self.clips.borrow_mut();
            while clips.front().is_some_and(|c| c.out_line < out_line) {
                let c = clips.pop_front().expect("front");
                self.line_shift += c.skipped_newlines;
            }
            clips
                .front()
                .copied()
                .filter(|c| c.out_line == out_line)
                .inspect(|_| {
                    clips.pop_front();
                })
        };
        if let Some(c) = clip {
            self.line_shift += c.skipped_newlines;
        }
        // A blank line is no row.
        if rec.len() == 1 && rec[0].is_empty() {
            return self.next_row();
        }
        let mut row = InputRow::new(line, String::new(), String::new(), Payload::Csv(rec.clone()));
        if let (Some(c), Some(limit)) = (clip, self.limit) {
            row.add_note(clipped_note(line, c.total, limit));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &str, limit: Option<usize>) -> Vec<InputRow> {
        let options = ReaderOptions {
            max_line_bytes: limit,
        };
        let mut r = CsvReader::with_options(input.as_bytes(), None, options).unwrap();
        std::iter::from_fn(|| r.next_row()).map(Result::unwrap).collect()
    }

    #[test]
    fn a_long_record_is_cut_while_reading_and_later_lines_keep_their_numbers() {
        let long = "a".repeat(100);
        let input = format!("source,log_message\nA,short\nB,\"{long}\nb\nc\",x\nC,after\n");
        let rows = read(&input, Some(20));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].line, 3);
        assert!(rows[1].message.len() < 20 && rows[1].message.starts_with("aaa"));
        assert!(rows[1].note.contains("the row is 110 bytes"), "{}", rows[1].note);
        assert_eq!((rows[2].line, rows[2].message.as_str()), (6, "after"));
        // Without a limit the same input reads whole.
        let whole = read(&input, None);
        assert_eq!(whole[1].message, format!("{long}\nb\nc"));
        assert_eq!(whole[2].line, 6);
    }

    #[test]
    fn a_cut_never_splits_a_character() {
        let input = format!("source,log_message\nA,{}\n", "é".repeat(50));
        let rows = read(&input, Some(31));
        assert!(rows[0].note.contains("over the limit"), "{}", rows[0].note);
        assert!(!rows[0].note.contains("UTF-8"), "{}", rows[0].note);
    }

    #[test]
    fn two_log_message_columns_are_an_error_naming_both() {
        let e = CsvReader::new("source,log_message,Log_Message\nA,b,c\n".as_bytes(), None)
            .err()
            .unwrap();
        assert!(
            e.message
                .contains("column 2 `log_message`, column 3 `Log_Message`"),
            "{}",
            e.message
        );
    }
}
