//! Streaming classification: read a chunk of rows, classify it, write it,
//! repeat. Memory is bounded by the chunk size whatever the input size;
//! output order is input order.

use crate::cascade::{Item, Pipeline};
use crate::decision::{Decision, Method};
use crate::io::{finish_decision, InputError, InputRow, RowReader, RowWriter};

/// What a run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunSummary {
    pub rows: u64,
    /// Rows written with a note about their input (ragged, bad UTF-8, …).
    pub flagged: u64,
    /// Rows that could not be read as (source, message) and were written unclassified.
    pub unreadable: u64,
    /// The fatal input error that ended the run early, if any.
    pub fatal: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("writing output: {0}")]
    Write(#[from] std::io::Error),
    /// The classify function given to [`classify_stream_with`] gave up
    /// (e.g. the server is shutting down).
    #[error("classifying: {0}")]
    Classify(String),
}

/// The prefix of `s` of at most `max` bytes, on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Classify every row of `reader` into `writer`. `on_chunk` is called after
/// each chunk (for progress bars). A fatal input error stops reading; the rows
/// before it are written and the error is returned in the summary.
pub fn classify_stream(
    pipeline: &Pipeline,
    reader: &mut dyn RowReader,
    writer: &mut dyn RowWriter,
    on_chunk: impl FnMut(&RunSummary),
) -> Result<RunSummary, RunError> {
    classify_stream_with(pipeline.config(), reader, writer, on_chunk, |items| {
        Ok(pipeline.classify(items))
    })
}

/// [`classify_stream`] with the classification done by `classify` (one
/// decision per item, in order) instead of a `Pipeline` at hand: the server
/// sends each chunk through its batching queue. `config` gives the chunk
/// size and message limit.
pub fn classify_stream_with(
    config: &crate::Config,
    reader: &mut dyn RowReader,
    writer: &mut dyn RowWriter,
    mut on_chunk: impl FnMut(&RunSummary),
    mut classify: impl FnMut(&[Item]) -> Result<Vec<Decision>, String>,
) -> Result<RunSummary, RunError> {
    let chunk_rows = config.input.chunk_rows.max(1);
    let max_bytes = config.input.max_message_bytes.max(1);
    let mut summary = RunSummary::default();
    let mut chunk: Vec<InputRow> = Vec::with_capacity(chunk_rows);
    let mut fatal: Option<InputError> = None;
    loop {
        chunk.clear();
        while chunk.len() < chunk_rows {
            match reader.next_row() {
                None => break,
                Some(Ok(mut row)) => {
                    if row.message.len() > max_bytes {
                        let note = format!(
                            "line {}: log_message is {} bytes; the first {max_bytes} were classified",
                            row.line,
                            row.message.len()
                        );
                        if !row.note.is_empty() {
                            row.note.push_str("; ");
                        }
                        row.note.push_str(&note);
                    }
                    chunk.push(row);
                }
                Some(Err(e)) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if chunk.is_empty() {
            break;
        }
        let readable: Vec<usize> = (0..chunk.len()).filter(|&i| !chunk[i].unreadable).collect();
        let items: Vec<Item> = readable
            .iter()
            .map(|&i| Item {
                source: &chunk[i].source,
                message: clip(&chunk[i].message, max_bytes),
            })
            .collect();
        let decided = classify(&items).map_err(RunError::Classify)?;
        assert_eq!(decided.len(), items.len(), "one decision per item");
        let mut decided = decided.into_iter();
        for (i, row) in chunk.iter().enumerate() {
            let d = if row.unreadable {
                Decision::none("")
            } else {
                decided.next().expect("one decision per readable row")
            };
            debug_assert!(row.unreadable || readable.contains(&i));
            let d = finish_decision(row, d);
            summary.rows += 1;
            if !row.note.is_empty() {
                summary.flagged += 1;
            }
            if row.unreadable {
                summary.unreadable += 1;
                debug_assert_eq!(d.method, Method::None);
            }
            writer.write(row, &d)?;
        }
        on_chunk(&summary);
        if fatal.is_some() {
            break;
        }
    }
    writer.finish()?;
    summary.fatal = fatal.map(|e| e.to_string());
    Ok(summary)
}
