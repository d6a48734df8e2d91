//! `classify --follow FILE`: tail a growing log file, as `tail -F` does,
//! and write one JSON line per input line as soon as it is classified.
//!
//! Only whole lines are handed on (a line still being written waits for
//! its `\n`). Rotation is survived both ways:
//! - **by rename** (logrotate's default, `mv app.log app.log.1` and a new
//!   `app.log`): when the path names another file, the old one is read to
//!   its end (lines written just before the rename included) and then the
//!   new one from its start;
//! - **by truncation** (`copytruncate`, `> app.log`): when the file is
//!   shorter than the position read, reading restarts at its start.
//!
//! As with any tailer, lines written to a copytruncate'd file between the
//! copy and the truncation are in neither file's future and cannot be seen,
//! and a file truncated and then refilled past the old position between
//! two polls looks like growth.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Most bytes read from the file per poll (memory stays bounded however
/// far behind the reader is).
const MAX_READ: usize = 4 * 1024 * 1024;

/// Where a follower is: which file (device, inode) and how far into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub dev: u64,
    pub ino: u64,
    /// Bytes of the file consumed (whole lines handed on).
    pub offset: u64,
}

pub struct Follower {
    path: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    /// Bytes read from the file so far.
    read_to: u64,
    /// Bytes read but not handed on: the start of an unfinished line.
    partial: Vec<u8>,
    /// Rotations seen (rename, truncation), for the log.
    pub rotations: u64,
}

fn identity(f: &File) -> io::Result<(u64, u64)> {
    let m = f.metadata()?;
    Ok((m.dev(), m.ino()))
}

impl Follower {
    /// Follow `path` from its start, or from `resume` when it names the
    /// file now at `path` and the file is at least that long.
    pub fn open(path: &Path, resume: Option<Position>) -> io::Result<Follower> {
        let mut file = File::open(path)?;
        let (dev, ino) = identity(&file)?;
        let len = file.metadata()?.len();
        let start = match resume {
            Some(p) if (p.dev, p.ino) == (dev, ino) && p.offset <= len => p.offset,
            _ => 0,
        };
        file.seek(SeekFrom::Start(start))?;
        Ok(Follower {
            path: path.to_path_buf(),
            file,
            dev,
            ino,
            read_to: start,
            partial: Vec::new(),
            rotations: 0,
        })
    }

    /// Start at the file's current end instead (only lines written from now on).
    pub fn skip_to_end(&mut self) -> io::Result<()> {
        self.read_to = self.file.seek(SeekFrom::End(0))?;
        self.partial.clear();
        Ok(())
    }

    /// Where the lines handed on so far end.
    pub fn position(&self) -> Position {
        Position {
            dev: self.dev,
            ino: self.ino,
            offset: self.read_to - self.partial.len() as u64,
        }
    }

    /// Read what the current file has (up to MAX_READ bytes) into `partial`.
    fn read_some(&mut self) -> io::Result<usize> {
        let mut total = 0;
        let mut block = [0u8; 64 * 1024];
        while total < MAX_READ {
            let n = match self.file.read(&mut block) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            self.partial.extend_from_slice(&block[..n]);
            self.read_to += n as u64;
            total += n;
        }
        Ok(total)
    }

    /// Move the whole lines of `partial` to `out`.
    fn take_lines(&mut self, out: &mut Vec<u8>) {
        if let Some(end) = memchr_last_newline(&self.partial) {
            out.extend_from_slice(&self.partial[..=end]);
            self.partial.drain(..=end);
        }
    }

    /// The whole lines available now (empty when there are none), after
    /// noticing a rotation.
    pub fn poll(&mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        if self.read_some()? > 0 {
            self.take_lines(&mut out);
            return Ok(out);
        }
        // At the end of the file: has it been truncated or replaced?
        let len = self.file.metadata()?.len();
        if len < self.read_to {
            tracing::info!(path = %self.path.display(), "truncated: reading again from the start");
            self.finish_partial(&mut out);
            self.file.seek(SeekFrom::Start(0))?;
            self.read_to = 0;
            self.rotations += 1;
            self.read_some()?;
            self.take_lines(&mut out);
            return Ok(out);
        }
        let replaced = match File::open(&self.path) {
            Ok(f) => identity(&f)? != (self.dev, self.ino),
            // Renamed away and not created again yet: keep the old one.
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        if replaced {
            // Lines written to the old file just before the rename.
            while self.read_some()? > 0 {}
            self.take_lines(&mut out);
            self.finish_partial(&mut out);
            let file = File::open(&self.path)?;
            let (dev, ino) = identity(&file)?;
            tracing::info!(path = %self.path.display(), "rotated: following the new file");
            self.file = file;
            (self.dev, self.ino, self.read_to) = (dev, ino, 0);
            self.rotations += 1;
            self.read_some()?;
            self.take_lines(&mut out);
        }
        Ok(out)
    }

    /// A last line without its `\n` in a file that has been left: handed
    /// on as a line (nothing is lost).
    fn finish_partial(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            out.append(&mut self.partial);
            out.push(b'\n');
        }
    }
}

fn memchr_last_newline(b: &[u8]) -> Option<usize> {
    b.iter().rposition(|&c| c == b'\n')
}

/// Bytes handed to a row reader: whatever was pushed, then "end of input"
/// until more is pushed (the readers ask again on their next row).
#[derive(Default, Clone)]
pub struct Feed(std::rc::Rc<std::cell::RefCell<(Vec<u8>, usize)>>);

impl Feed {
    pub fn push(&self, bytes: Vec<u8>) {
        let mut s = self.0.borrow_mut();
        if s.1 >= s.0.len() {
            *s = (bytes, 0);
        } else {
            s.0.extend_from_slice(&bytes);
        }
    }
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.borrow_mut();
        let (data, pos) = &mut *s;
        let n = (data.len() - *pos).min(buf.len());
        buf[..n].copy_from_slice(&data[*pos..*pos + n]);
        *pos += n;
        Ok(n)
    }
}

/// What `classify --follow` needs from its arguments.
pub struct FollowArgs<'a> {
    pub path: &'a Path,
    pub format: logsieve_pipeline::io::Format,
    pub source: Option<String>,
    pub output: Option<&'a Path>,
    pub from_end: bool,
    pub interval: std::time::Duration,
}

/// Follow until SIGINT/SIGTERM (exit 130), writing JSON lines to stdout or
/// appending them to `output`, flushed after every poll that had lines.
pub fn run(
    pipeline: &logsieve_pipeline::Pipeline,
    a: FollowArgs<'_>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<i32> {
    use anyhow::Context;
    use logsieve_pipeline::io::{self as pio, JsonlWriter};
    use std::sync::atomic::Ordering;

    anyhow::ensure!(
        a.format != pio::Format::Csv,
        "--follow reads plain text or JSON lines (--format text|jsonl), not CSV"
    );
    let shown = a.path.display().to_string();
    // With a decision store, where this file was left is kept there (by
    // its absolute path): a restart resumes after the last line written.
    let store = pipeline.store().map(|(s, _)| s.clone());
    let key = std::fs::canonicalize(a.path)
        .unwrap_or_else(|_| a.path.to_path_buf())
        .display()
        .to_string();
    let resume = match &store {
        Some(s) => s
            .follow_position(&key)
            .with_context(|| format!("{shown}: reading its position from the store"))?
            .map(|p| Position {
                dev: p.dev,
                ino: p.ino,
                offset: p.offset,
            }),
        None => None,
    };
    let mut follower = Follower::open(a.path, resume).with_context(|| format!("{shown}: cannot open"))?;
    let resumed = resume.is_some_and(|r| r == follower.position());
    if resumed {
        eprintln!(
            "{shown}: resuming at byte {} (position kept in the decision store)",
            follower.position().offset
        );
    } else if a.from_end {
        follower.skip_to_end()?;
    }
    let out: Box<dyn io::Write> = match a.output {
        Some(p) => Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("{}: cannot open for appending", p.display()))?,
        ),
        None => Box::new(io::stdout()),
    };
    let mut writer = JsonlWriter::new(io::BufWriter::with_capacity(256 * 1024, out));
    let feed = Feed::default();
    let input = io::BufReader::with_capacity(64 * 1024, feed.clone());
    let mut reader = pio::reader(input, a.format, a.source).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let mut rows: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let bytes = follower.poll().with_context(|| format!("{shown}: reading"))?;
        if bytes.is_empty() {
            std::thread::sleep(a.interval);
            continue;
        }
        feed.push(bytes);
        let s = logsieve_pipeline::run::classify_stream(pipeline, reader.as_mut(), &mut writer, |_| {})?;
        rows += s.rows;
        if let Some(f) = s.fatal {
            anyhow::bail!("{shown}: {f}");
        }
        // The lines up to here are written and flushed: only now is their
        // end kept as the place to resume (a crash in between repeats
        // them, never skips them).
        if let Some(s) = &store {
            let at = follower.position();
            s.save_follow_position(&key, at.dev, at.ino, at.offset);
        }
    }
    let at = follower.position();
    eprintln!(
        "interrupted: {rows} lines of {shown} classified and written ({} rotations followed; stopped at byte {} of inode {})",
        follower.rotations, at.offset, at.ino
    );
    Ok(crate::interrupt::EXIT_INTERRUPTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(b: Vec<u8>) -> Vec<String> {
        String::from_utf8(b)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn partial_lines_wait_and_rotations_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.log");
        let mut f = File::create(&p).unwrap();
        write!(f, "one\ntw").unwrap();
        let mut fl = Follower::open(&p, None).unwrap();
        assert_eq!(lines(fl.poll().unwrap()), ["one"]);
        assert!(fl.poll().unwrap().is_empty());
        write!(f, "o\nthree\nfour").unwrap();
        assert_eq!(lines(fl.poll().unwrap()), ["two", "three"]);
        // Rename: the old file's unfinished last line comes out, then the new file.
        std::fs::rename(&p, dir.path().join("app.log.1")).unwrap();
        assert!(fl.poll().unwrap().is_empty(), "no new file yet");
        let mut g = File::create(&p).unwrap();
        writeln!(g, "five").unwrap();
        assert_eq!(lines(fl.poll().unwrap()), ["four", "five"]);
        assert_eq!(fl.rotations, 1);
        // Truncation.
        g.set_len(0).unwrap();
        let mut g = std::fs::OpenOptions::new().append(true).open(&p).unwrap();
        writeln!(g, "six").unwrap();
        assert_eq!(lines(fl.poll().unwrap()), ["six"]);
        assert_eq!(fl.rotations, 2);
        // The position resumes after "six" in the same file, not in another.
        let pos = fl.position();
        writeln!(g, "seven").unwrap();
        let mut again = Follower::open(&p, Some(pos)).unwrap();
        assert_eq!(lines(again.poll().unwrap()), ["seven"]);
        let other = Position {
            ino: pos.ino + 1,
            ..pos
        };
        let mut fresh = Follower::open(&p, Some(other)).unwrap();
        assert_eq!(lines(fresh.poll().unwrap()), ["six", "seven"]);
    }
}
