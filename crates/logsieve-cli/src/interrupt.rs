//! Stopping `classify` cleanly on SIGINT or SIGTERM: the first signal sets a
//! flag that makes the reader stop at the next row boundary, so the rows
//! already read are classified, written and flushed; a second signal exits
//! at once (130).
//!
//! A file never blocks, so checking the flag between rows is enough. A pipe
//! or a terminal can block forever in `read` (std retries interrupted
//! reads), so such input is read on a thread of its own and handed over in
//! blocks; the reading side gives up waiting as soon as the flag is set.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use logsieve_pipeline::io::{InputError, InputRow, RowReader};

/// Exit status of a run stopped by a signal (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// Install the handlers; the flag turns true on the first SIGINT/SIGTERM.
pub fn install() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // Registered first, so it fires only on a signal after the flag is set.
        signal_hook::flag::register_conditional_shutdown(sig, EXIT_INTERRUPTED, stop.clone())?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}

/// A reader that ends at the first row boundary after the flag is set. A
/// row whose reading was cut short by the stop is not a row: it is dropped.
pub struct StopAt<'a> {
    pub inner: Box<dyn RowReader + 'a>,
    pub stop: Arc<AtomicBool>,
}

impl RowReader for StopAt<'_> {
    fn next_row(&mut self) -> Option<Result<InputRow, InputError>> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        match self.inner.next_row() {
            Some(Err(_)) if self.stop.load(Ordering::Relaxed) => None,
            other => other,
        }
    }

    fn header(&self) -> Option<&[String]> {
        self.inner.header()
    }
}

/// Input read on a thread of its own, so that waiting for it can be given up.
pub struct Interruptible {
    blocks: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    pos: usize,
    stop: Arc<AtomicBool>,
    done: bool,
}

impl Interruptible {
    pub fn new(mut input: Box<dyn Read + Send>, stop: Arc<AtomicBool>) -> Self {
        // A few blocks ahead at most: memory stays bounded, as with a plain read.
        let (tx, rx) = mpsc::sync_channel(4);
        std::thread::Builder::new()
            .name("logsieve-input".into())
            .spawn(move || loop {
                let mut block = vec![0; 64 * 1024];
                match input.read(&mut block) {
                    Ok(0) => break,
                    Ok(n) => {
                        block.truncate(n);
                        if tx.send(Ok(block)).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            })
            .expect("spawn the input thread");
        Self {
            blocks: rx,
            current: Vec::new(),
            pos: 0,
            stop,
            done: false,
        }
    }
}

impl Read for Interruptible {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.done {
                return Ok(0);
            }
            // What has arrived is still read after a stop; only the wait is given up.
            let got = match self.blocks.try_recv() {
                Ok(b) => Some(b),
                Err(mpsc::TryRecvError::Disconnected) => None,
                Err(mpsc::TryRecvError::Empty) => loop {
                    if self.stop.load(Ordering::Relaxed) {
                        return Err(io::Error::other("interrupted by a signal"));
                    }
                    match self.blocks.recv_timeout(Duration::from_millis(50)) {
                        Ok(b) => break Some(b),
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                    }
                },
            };
            match got {
                None => self.done = true,
                Some(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Some(Ok(b)) => {
                    self.current = b;
                    self.pos = 0;
                }
            }
        }
        let n = (self.current.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`crate::common::open_input`], with stdin read on its own thread when it
/// is a pipe or a terminal (a regular file never blocks).
pub fn open_input(
    path: Option<&std::path::PathBuf>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<crate::common::OpenedInput> {
    let is_stdin = path.is_none_or(|p| p.as_os_str() == "-");
    if !is_stdin || crate::output::stdin_is_regular_file() {
        return crate::common::open_input(path);
    }
    let input = Interruptible::new(Box::new(std::io::stdin()), stop);
    Ok((
        Box::new(io::BufReader::with_capacity(64 * 1024, input)),
        None,
        None,
    ))
}
