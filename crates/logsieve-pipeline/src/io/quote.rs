//! A byte-stream adapter that makes the csv crate read loosely quoted CSV
//! the way Python's `skipinitialspace=True` does: `a, "b, c"` is two fields.
//!
//! Whitespace between a delimiter (or line start) and an opening quote is
//! dropped; everything else passes through unchanged, newlines included, so
//! the csv crate's line numbers stay true. It also notices a quoted field
//! still open at the end of input and records the line and column where it
//! opened, which the csv crate does not report.

use std::cell::Cell;
use std::io::{self, Read};
use std::rc::Rc;

/// Line and column (1-based) of a quote left open at end of input.
pub type OpenQuote = Rc<Cell<Option<(u64, u64)>>>;

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
        }
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
                self.out.append(&mut self.pending_ws);
                if self.in_quotes && !self.quote_seen {
                    self.open_quote.set(Some(self.open_at));
                }
                continue;
            }
            for i in 0..n {
                let b = self.inbuf[i];
                self.step(b);
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
