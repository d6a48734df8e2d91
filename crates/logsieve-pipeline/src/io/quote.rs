//! A byte-stream adapter that makes the csv crate read loosely quoted CSV
//! the way Python's `skipinitialspace=True` does: `a, "b, c"` is two fields.
//!
//! Whitespace between a delimiter (or line start) and an opening quote is
//! dropped; everything else passes through unchanged, newlines included, so
//! the csv crate's line numbers stay true. It also notices a quoted field
//! still open at the end of input and records the line and column where it
//! opened, which the csv crate does not report.
//!
//! With a limit, it also bounds what the csv crate buffers per record: past
//! `limit` bytes of a record the rest is skipped (quote state still
//! followed, so the record's end is found), an open quoted field is closed,
//! and a [`Clip`] says which record was cut and how long it was.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::rc::Rc;

/// Line and column (1-based) of a quote left open at end of input.
pub type OpenQuote = Rc<Cell<Option<(u64, u64)>>>;

/// A record cut at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clip {
    /// The line the record starts on, as the csv crate counts lines in the
    /// cut stream (skipped newlines are not in it).
    pub out_line: u64,
    /// Bytes the record had in the input.
    pub total: u64,
    /// Newlines skipped with the rest (inside a quoted field): later lines
    /// are this many further down in the input than the csv crate says.
    pub skipped_newlines: u64,
}

pub type Clips = Rc<RefCell<VecDeque<Clip>>>;

pub struct QuoteFix<R> {
    inner: R,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    pending_ws: Vec<u8>,
    field_start: bool,
    in_quotes: bool,
    quote_seen: bool,
    line: u64,
    col: u64,
    open_at: (u64, u64),
    eof: bool,
    pub open_quote: OpenQuote,
    /// Bytes kept per record; `None`: no limit.
    limit: Option<usize>,
    /// Output bytes of the current record so far.
    rec_bytes: usize,
    /// Input line the current record started on.
    rec_line: u64,
    /// The record passed the limit: its bytes are being skipped.
    skipping: bool,
    /// When skipping began, the output was inside a quoted field.
    skip_in_quotes: bool,
    skip_bytes: u64,
    skip_newlines: u64,
    /// Newlines skipped so far in the whole input.
    skipped_newlines_total: u64,
    /// Set by `step` when a byte ended a record (a newline outside quotes).
    rec_end: bool,
    pub clips: Clips,
}

impl<R: Read> QuoteFix<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            inbuf: vec![0; 64 * 1024],
            out: Vec::with_capacity(64 * 1024),
            out_pos: 0,
            pending_ws: Vec::new(),
            field_start: true,
            in_quotes: false,
            quote_seen: false,
            line: 1,
            col: 0,
            open_at: (0, 0),
            eof: false,
            open_quote: Rc::new(Cell::new(None)),
            limit: None,
            rec_bytes: 0,
            rec_line: 1,
            skipping: false,
            skip_in_quotes: false,
            skip_bytes: 0,
            skip_newlines: 0,
            skipped_newlines_total: 0,
            rec_end: false,
            clips: Rc::new(RefCell::new(VecDeque::new())),
        }
    }

    /// Keep at most `limit` bytes of each record.
    pub fn with_limit(mut self, limit: Option<usize>) -> Self {
        self.limit = limit;
        self
    }

    /// One input byte: follow the quoting, and keep or skip the byte.
    fn feed(&mut self, b: u8) {
        if let Some(limit) = self.limit {
            // Cut only where the output can be closed cleanly: not inside a
            // UTF-8 sequence, not on a quote that may be half of `""`, not
            // on the newline that ends the record anyway.
            if !self.skipping
                && self.rec_bytes >= limit
                && b & 0xC0 != 0x80
                && !(self.in_quotes && self.quote_seen)
                && (b != b'\n' || self.in_quotes)
            {
                self.skipping = true;
                self.skip_in_quotes = self.in_quotes;
                self.skip_bytes = 0;
                self.skip_newlines = 0;
            }
        }
        let before = self.out.len();
        let line_before = self.line;
        self.rec_end = false;
        self.step(b);
        if self.skipping {
            self.out.truncate(before);
            self.skip_bytes += 1;
            if self.rec_end {
                self.end_skip(true);
            } else if self.line > line_before {
                self.skip_newlines += 1;
            }
        } else {
            self.rec_bytes += self.out.len() - before;
        }
        if self.rec_end {
            self.rec_bytes = 0;
            self.rec_line = self.line;
        }
    }

    /// The cut record ends (at its newline, or at the end of input): close
    /// what the output left open and say what was cut.
    fn end_skip(&mut self, newline: bool) {
        if self.skip_in_quotes {
            self.out.push(b'"');
        }
        if newline {
            self.out.push(b'\n');
        }
        let out_line = self.rec_line - self.skipped_newlines_total;
        self.clips.borrow_mut().push_back(Clip {
            out_line,
            total: self.rec_bytes as u64 + self.skip_bytes - u64::from(newline),
            skipped_newlines: self.skip_newlines,
        });
        self.skipped_newlines_total += self.skip_newlines;
        self.skipping = false;
    }

    fn step(&mut self, b: u8) {
        self.col += 1;
        if self.in_quotes {
            if self.quote_seen {
                self.quote_seen = false;
                if b == b'"' {
                    self.out.push(b); // escaped quote
                    return;
                }
                self.in_quotes = false; // the quote closed the field; fall through
            } else {
                if b == b'"' {
                    self.quote_seen = true;
                } else if b == b'\n' {
                    self.line += 1;
                    self.col = 0;
                }
                self.out.push(b);
                return;
            }
        }
        if self.field_start && (b == b' ' || b == b'\t') {
            self.pending_ws.push(b);
            return;
        }
        if self.field_start && b == b'"' {
            self.pending_ws.clear();
            self.in_quotes = true;
            self.open_at = (self.line, self.col);
            self.field_start = false;
            self.out.push(b);
            return;
        }
        self.out.append(&mut self.pending_ws);
        match b {
            b',' => self.field_start = true,
            b'\n' => {
                self.field_start = true;
                self.line += 1;
                self.col = 0;
                self.rec_end = true;
            }
            b'\r' => {}
            _ => self.field_start = false,
        }
        self.out.push(b);
    }
}

impl<R: Read> Read for QuoteFix<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.out_pos >= self.out.len() {
            if self.eof {
                return Ok(0);
            }
            self.out.clear();
            self.out_pos = 0;
            let n = self.inner.read(&mut self.inbuf)?;
            if n == 0 {
                self.eof = true;
                if self.skipping {
                    self.pending_ws.clear();
                    self.end_skip(false);
                } else {
                    self.out.append(&mut self.pending_ws);
                }
                if self.in_quotes && !self.quote_seen {
                    self.open_quote.set(Some(self.open_at));
                }
                continue;
            }
            for i in 0..n {
                let b = self.inbuf[i];
                self.feed(b);
            }
        }
        let n = (self.out.len() - self.out_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(s: &str) -> (String, Option<(u64, u64)>) {
        let mut r = QuoteFix::new(s.as_bytes());
        let flag = r.open_quote.clone();
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        (out, flag.get())
    }

    #[test]
    fn drops_space_before_an_opening_quote_only() {
        assert_eq!(fix("a, \"b, c\"\n").0, "a,\"b, c\"\n");
        assert_eq!(fix("a,  b c\n").0, "a,  b c\n");
        assert_eq!(fix("\"x \"\"y\"\" z\", w\n").0, "\"x \"\"y\"\" z\", w\n");
    }

    #[test]
    fn reports_where_an_unterminated_quote_opened() {
        let (_, open) = fix("source,log_message\nA,ok\nB, \"never closed\nC,more\n");
        assert_eq!(open, Some((3, 4)));
        assert_eq!(fix("a,\"closed\"\n").1, None);
    }
}
