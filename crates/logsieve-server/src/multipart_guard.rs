//! A guard in front of `multer`, so that a multipart body cannot make it
//! buffer without bound.
//!
//! multer reads whatever its input stream has ready into one buffer, and
//! keeps a preamble or a part's headers whole until their end is found. A
//! small gzip body that inflates to gigabytes is always ready, and a part
//! header that never ends never ends. The guard hands multer at most
//! [`PACE`] bytes per poll (then yields, waking itself at once), and follows
//! the framing just enough to fail a preamble or a part header longer than
//! [`MAX_HEAD`] bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

/// Bytes handed to multer per poll before yielding.
pub const PACE: usize = 64 * 1024;
/// Longest preamble (before the first boundary) or part header accepted.
pub const MAX_HEAD: usize = 64 * 1024;

enum Phase {
    /// Before the first `--boundary`, or between a boundary and the end of
    /// its part's headers (`\r\n\r\n`): bytes seen in this phase.
    Head(usize),
    /// Part data, up to the next `\r\n--boundary`.
    Data,
}

pub struct Guard<S> {
    inner: S,
    /// `--boundary`, as the first boundary is found.
    delimiter: Vec<u8>,
    /// `\r\n--boundary`, as part data ends.
    data_end: Vec<u8>,
    phase: Phase,
    /// Whether the current head phase has passed its boundary yet.
    after_boundary: bool,
    /// The tail of what was scanned, so that patterns spanning two chunks are found.
    carry: Vec<u8>,
    /// Part of a chunk not yet handed on.
    pending: Option<Bytes>,
    /// Handed on since the last yield.
    this_poll: usize,
}

impl<S> Guard<S> {
    pub fn new(inner: S, boundary: &str) -> Self {
        Self {
            inner,
            delimiter: format!("--{boundary}").into_bytes(),
            data_end: format!("\r\n--{boundary}").into_bytes(),
            phase: Phase::Head(0),
            after_boundary: false,
            carry: Vec::new(),
            pending: None,
            this_poll: 0,
        }
    }

    /// Follow the framing over `chunk`; an error when a head runs too long.
    fn scan(&mut self, chunk: &[u8]) -> io::Result<()> {
        let mut window = std::mem::take(&mut self.carry);
        let carried = window.len();
        window.extend_from_slice(chunk);
        let mut at = 0; // scan position in `window`
        loop {
            match self.phase {
                Phase::Data => match memchr::memmem::find(&window[at..], &self.data_end) {
                    Some(i) => {
                        at += i + self.data_end.len();
                        self.phase = Phase::Head(0);
                        self.after_boundary = true;
                    }
                    None => break,
                },
                Phase::Head(seen) => {
                    let pattern: &[u8] = if self.after_boundary {
                        b"\r\n\r\n"
                    } else {
                        &self.delimiter
                    };
                    match memchr::memmem::find(&window[at..], pattern) {
                        Some(i) => {
                            at += i + pattern.len();
                            if self.after_boundary {
                                self.phase = Phase::Data;
                            } else {
                                self.phase = Phase::Head(0);
                                self.after_boundary = true;
                            }
                        }
                        None => {
                            // Bytes of this head not counted before (the carry was).
                            let seen = seen + (window.len() - at.max(carried));
                            if seen > MAX_HEAD {
                                return Err(io::Error::new(
                                    io::ErrorKind::InvalidData,
                                    format!(
                                        "a multipart {} is over {MAX_HEAD} bytes",
                                        if self.after_boundary {
                                            "part header"
                                        } else {
                                            "preamble"
                                        }
                                    ),
                                ));
                            }
                            self.phase = Phase::Head(seen);
                            break;
                        }
                    }
                }
            }
        }
        let keep = self.data_end.len();
        let from = window.len().saturating_sub(keep).max(at.min(window.len()));
        self.carry = window[from..].to_vec();
        Ok(())
    }
}

impl<S> Stream for Guard<S>
where
    S: Stream<Item = io::Result<Bytes>> + Unpin,
{
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.this_poll >= PACE {
            // Let multer work through what it has before it asks again.
            self.this_poll = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let chunk = match self.pending.take() {
            Some(c) => c,
            None => match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(c))) => c,
                other => {
                    self.this_poll = 0;
                    return other;
                }
            },
        };
        let room = PACE - self.this_poll;
        let (now, later) = if chunk.len() > room {
            (chunk.slice(..room), Some(chunk.slice(room..)))
        } else {
            (chunk, None)
        };
        self.pending = later;
        if let Err(e) = self.scan(&now) {
            return Poll::Ready(Some(Err(e)));
        }
        self.this_poll += now.len();
        Poll::Ready(Some(Ok(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn run(parts: Vec<&[u8]>) -> io::Result<usize> {
        let s = futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok(Bytes::copy_from_slice(p)))
                .collect::<Vec<_>>(),
        );
        let mut g = Guard::new(s, "B");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let mut n = 0;
            while let Some(c) = g.next().await {
                n += c?.len();
            }
            Ok(n)
        })
    }

    #[test]
    fn a_well_formed_body_passes_whole_across_chunk_edges() {
        let body = b"--B\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc\r\n--B--\r\n";
        for cut in 1..body.len() {
            assert_eq!(run(vec![&body[..cut], &body[cut..]]).unwrap(), body.len());
        }
    }

    #[test]
    fn a_header_that_never_ends_is_refused() {
        let mut body = b"--B\r\nX: ".to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        let err = run(vec![&body]).unwrap_err();
        assert!(err.to_string().contains("part header"), "{err}");
        let preamble = vec![b'x'; MAX_HEAD + 10];
        assert!(run(vec![&preamble]).is_err());
    }

    #[test]
    fn big_part_data_is_fine() {
        let mut body = b"--B\r\nA: b\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'a', 10 * MAX_HEAD));
        body.extend_from_slice(b"\r\n--B--\r\n");
        assert_eq!(run(vec![&body]).unwrap(), body.len());
    }
}
