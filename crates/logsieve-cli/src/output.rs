//! Where `classify` writes: stdout, or a file replaced only once the run
//! has finished.
//!
//! A file target is written under a temporary name in its own directory
//! (`.<name>.<random>.logsieve-tmp`, created with the permissions a new file
//! would get, or the target's own when it exists) and renamed over the
//! target on success, after an fsync: readers of the target see the old file
//! or the whole new one, never a prefix. A run that stops early renames what
//! it wrote to `<target>.partial` instead; a run that is killed leaves the
//! temporary file and the target untouched. A target that exists and is not
//! a regular file (`/dev/null`, a FIFO) is written directly, since renaming
//! over it would replace the device or pipe itself.

use std::fs::{File, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::TempPath;

/// Device and inode of a regular file, the identity that survives symlinks,
/// `..` and hard links.
fn identity(m: &std::fs::Metadata) -> Option<(u64, u64)> {
    m.is_file().then(|| (m.dev(), m.ino()))
}

fn stdio_identity(fd: std::os::fd::BorrowedFd<'_>) -> Option<(u64, u64)> {
    let f = File::from(fd.try_clone_to_owned().ok()?);
    identity(&f.metadata().ok()?)
}

pub fn stdin_is_regular_file() -> bool {
    use std::os::fd::AsFd;
    stdio_identity(std::io::stdin().as_fd()).is_some()
}

/// Refuse an output that is the input file: writing it while it is read
/// would destroy the input. Checked before anything is opened for writing.
pub fn refuse_same_file(input: Option<&Path>, output: Option<&Path>) -> Result<()> {
    use std::os::fd::AsFd;
    let input_path = input.filter(|p| p.as_os_str() != "-");
    let input_id = match input_path {
        // A missing input is reported when it is opened.
        Some(p) => std::fs::metadata(p).ok().as_ref().and_then(identity),
        None => stdio_identity(std::io::stdin().as_fd()),
    };
    let Some(input_id) = input_id else {
        return Ok(());
    };
    let shown = input_path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "standard input".into());
    let same = match output {
        Some(o) => std::fs::metadata(o).ok().as_ref().and_then(identity) == Some(input_id),
        None => stdio_identity(std::io::stdout().as_fd()) == Some(input_id),
    };
    if same {
        let out = output
            .map(|o| format!("the output {}", o.display()))
            .unwrap_or_else(|| "standard output".into());
        bail!(
            "{out} is the input file ({shown}): writing it while reading it would destroy the input; \
             write to another file (and rename it afterwards if you want it in place)"
        );
    }
    Ok(())
}

/// The run's output.
pub enum Output {
    Stdout,
    /// A device, FIFO or other non-regular file: written directly.
    Direct(File),
    /// A regular file (or none yet): written to `temp`, renamed to `target`.
    Replace {
        target: PathBuf,
        file: Option<File>,
        sync: File,
        temp: TempPath,
    },
}

impl Output {
    /// `None`: stdout. Fails (touching nothing) when the temporary file
    /// cannot be created beside the target.
    pub fn open(path: Option<&Path>) -> Result<Output> {
        let Some(path) = path else {
            return Ok(Output::Stdout);
        };
        let existing = std::fs::metadata(path).ok();
        if let Some(m) = &existing {
            if m.is_dir() {
                bail!("{}: cannot create: it is a directory", path.display());
            }
            if !m.is_file() {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(|| format!("{}: cannot open", path.display()))?;
                return Ok(Output::Direct(f));
            }
        }
        // Through a symlink, the file it points to is the one replaced.
        let target = if existing.is_some() {
            std::fs::canonicalize(path).with_context(|| format!("{}: cannot resolve", path.display()))?
        } else {
            path.to_path_buf()
        };
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .with_context(|| format!("{}: not a file name", path.display()))?;
        let prefix = format!(".{name}.");
        let mode = existing
            .as_ref()
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o666);
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".logsieve-tmp")
            .permissions(Permissions::from_mode(mode))
            .tempfile_in(&dir)
            .with_context(|| {
                format!(
                    "{}: cannot create (a temporary file in {})",
                    path.display(),
                    dir.display()
                )
            })?;
        let (file, temp) = temp.into_parts();
        if existing.is_some() {
            // Exactly the target's mode, whatever the umask.
            let _ = file.set_permissions(Permissions::from_mode(mode));
        }
        let sync = file.try_clone().context("output file")?;
        Ok(Output::Replace {
            target,
            file: Some(file),
            sync,
            temp,
        })
    }

    /// The stream to write the rows to (call once).
    pub fn writer(&mut self) -> Result<Box<dyn Write>> {
        Ok(match self {
            Output::Stdout => Box::new(std::io::stdout().lock()),
            Output::Direct(f) => Box::new(f.try_clone()?),
            Output::Replace { file, .. } => Box::new(file.take().context("output already taken")?),
        })
    }

    /// The run finished: put the file in place.
    pub fn commit(self) -> Result<()> {
        if let Output::Replace {
            target, sync, temp, ..
        } = self
        {
            sync.sync_all()
                .with_context(|| format!("{}: cannot write", target.display()))?;
            temp.persist(&target).map_err(|e| {
                anyhow::anyhow!(
                    "{}: cannot put the output in place: {}",
                    target.display(),
                    e.error
                )
            })?;
        }
        Ok(())
    }

    /// The run stopped early: keep what was written as `<target>.partial`
    /// (its path), leaving the target as it was.
    pub fn keep_partial(self) -> Result<Option<PathBuf>> {
        match self {
            Output::Replace {
                target, sync, temp, ..
            } => {
                let _ = sync.sync_all();
                let mut partial = target.into_os_string();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                temp.persist(&partial).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: cannot keep the partial output: {}",
                        partial.display(),
                        e.error
                    )
                })?;
                Ok(Some(partial))
            }
            _ => Ok(None),
        }
    }
}
