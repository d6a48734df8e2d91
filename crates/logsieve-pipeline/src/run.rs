//! Streaming classification: read a chunk of rows, classify it, write it,
//! repeat. Memory is bounded by the chunk size whatever the input size;
//! output order is input order.

use crate::cascade::{Item, Partial, Pipeline};
use crate::decision::{Decision, Method};
use crate::io::{row_decision, InputError, InputRow, RowReader, RowWriter};

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
    /// (e.g. the server's queue timed out); rows before it were written.
    #[error("classifying: {0}")]
    Classify(#[source] Box<dyn std::error::Error + Send + Sync>),
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

/// How a chunk's items become decisions, in two steps so that one chunk's
/// slow part (the LLM) can overlap the next chunk's rules and model:
/// `start` on chunk N+1 runs before `finish` on chunk N.
trait ChunkStage {
    /// Whether `finish` on chunk N waits until chunk N+1 is read and started
    /// (else each chunk is finished and written before the next is read).
    const OVERLAP: bool;
    type Pending;
    /// Begin classifying `items` (the work may go on in the background).
    fn start(&mut self, items: &[Item<'_>]) -> Result<Self::Pending, RunError>;
    /// One decision per readable row of `chunk` (the chunk `start` was
    /// given the items of), in order.
    fn finish(
        &mut self,
        pending: Self::Pending,
        chunk: &[InputRow],
        max_bytes: usize,
    ) -> Result<Vec<Decision>, RunError>;
}

/// The pipeline itself: rules and model in `start`, the LLM's requests on a
/// thread of their own until `finish`.
struct PipelineStage<'p, 's, 'env> {
    pipeline: &'p Pipeline,
    scope: &'s std::thread::Scope<'s, 'env>,
}

impl<'s, 'env: 's> ChunkStage for PipelineStage<'env, 's, 'env> {
    const OVERLAP: bool = true;
    type Pending = (
        Partial,
        Option<std::thread::ScopedJoinHandle<'s, Vec<logsieve_llm::LlmOutcome>>>,
    );

    fn start(&mut self, items: &[Item<'_>]) -> Result<Self::Pending, RunError> {
        let (partial, requests) = self.pipeline.prepare(items);
        let llm = self.pipeline.llm();
        let answers = (!requests.is_empty()).then(|| self.scope.spawn(move || llm.classify_many(requests)));
        Ok((partial, answers))
    }

    fn finish(
        &mut self,
        (partial, answers): Self::Pending,
        _: &[InputRow],
        _: usize,
    ) -> Result<Vec<Decision>, RunError> {
        let outcomes = match answers {
            Some(h) => h.join().unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(self.pipeline.complete(partial, outcomes))
    }
}

/// A classify function (the server's batching queue): all the work in
/// `finish`, one chunk at a time.
struct FnStage<F>(F);

impl<F, E> ChunkStage for FnStage<F>
where
    F: FnMut(&[Item]) -> Result<Vec<Decision>, E>,
    E: std::error::Error + Send + Sync + 'static,
{
    const OVERLAP: bool = false;
    type Pending = ();

    fn start(&mut self, _: &[Item<'_>]) -> Result<(), RunError> {
        Ok(())
    }

    fn finish(&mut self, _: (), chunk: &[InputRow], max_bytes: usize) -> Result<Vec<Decision>, RunError> {
        let items = readable_items(chunk, max_bytes);
        let decided = (self.0)(&items).map_err(|e| RunError::Classify(Box::new(e)))?;
        assert_eq!(decided.len(), items.len(), "one decision per item");
        Ok(decided)
    }
}

/// Classify every row of `reader` into `writer`. `on_chunk` is called after
/// each chunk (for progress bars). A fatal input error stops reading; the rows
/// before it are written and the error is returned in the summary.
///
/// Chunks overlap: while chunk N's LLM requests are in flight (on their own
/// thread, bounded by the stage's concurrency cap), chunk N+1 is read and
/// goes through the rules and the model. Output order is input order.
pub fn classify_stream(
    pipeline: &Pipeline,
    reader: &mut dyn RowReader,
    writer: &mut dyn RowWriter,
    on_chunk: impl FnMut(&RunSummary),
) -> Result<RunSummary, RunError> {
    std::thread::scope(|scope| {
        let stage = PipelineStage { pipeline, scope };
        run_chunks(pipeline.config(), reader, writer, on_chunk, stage)
    })
}

/// [`classify_stream`] with the classification done by `classify` (one
/// decision per item, in order) instead of a `Pipeline` at hand: the server
/// sends each chunk through its batching queue. `config` gives the chunk
/// size and message limit. The next chunk is read while one is classified.
pub fn classify_stream_with<E>(
    config: &crate::Config,
    reader: &mut dyn RowReader,
    writer: &mut dyn RowWriter,
    on_chunk: impl FnMut(&RunSummary),
    classify: impl FnMut(&[Item]) -> Result<Vec<Decision>, E>,
) -> Result<RunSummary, RunError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    run_chunks(config, reader, writer, on_chunk, FnStage(classify))
}

/// The one streaming loop: read a chunk, start it, finish and write the one
/// before, until the input ends or a fatal input error stops it.
fn run_chunks<S: ChunkStage>(
    config: &crate::Config,
    reader: &mut dyn RowReader,
    writer: &mut dyn RowWriter,
    mut on_chunk: impl FnMut(&RunSummary),
    mut stage: S,
) -> Result<RunSummary, RunError> {
    let chunk_rows = config.input.chunk_rows.max(1);
    let max_bytes = config.input.max_message_bytes.max(1);
    let mut summary = RunSummary::default();
    let mut fatal: Option<InputError> = None;
    let mut in_flight: Option<(Vec<InputRow>, S::Pending)> = None;
    let mut flush = |(chunk, pending): (Vec<InputRow>, S::Pending), stage: &mut S| -> Result<(), RunError> {
        let decided = stage.finish(pending, &chunk, max_bytes)?;
        write_rows(chunk, decided, writer, &mut summary)?;
        on_chunk(&summary);
        Ok(())
    };
    loop {
        let chunk = read_chunk(reader, chunk_rows, max_bytes, &mut fatal);
        let next = if chunk.is_empty() {
            None
        } else {
            let pending = stage.start(&readable_items(&chunk, max_bytes))?;
            Some((chunk, pending))
        };
        let done = next.is_none() || fatal.is_some();
        if let Some(prev) = in_flight.take() {
            flush(prev, &mut stage)?;
        }
        match next {
            Some(n) if S::OVERLAP && !done => in_flight = Some(n),
            Some(n) => flush(n, &mut stage)?,
            None => {}
        }
        if done {
            break;
        }
    }
    writer.finish()?;
    summary.fatal = fatal.map(|e| e.to_string());
    Ok(summary)
}

/// The (source, message) pairs of a chunk's readable rows, messages clipped.
fn readable_items(chunk: &[InputRow], max_bytes: usize) -> Vec<Item<'_>> {
    chunk
        .iter()
        .filter(|r| !r.unreadable)
        .map(|r| Item {
            source: &r.source,
            message: clip(&r.message, max_bytes),
        })
        .collect()
}

fn read_chunk(
    reader: &mut dyn RowReader,
    chunk_rows: usize,
    max_bytes: usize,
    fatal: &mut Option<InputError>,
) -> Vec<InputRow> {
    let mut chunk = Vec::with_capacity(chunk_rows.min(4096));
    if fatal.is_some() {
        return chunk;
    }
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
                *fatal = Some(e);
                break;
            }
        }
    }
    chunk
}

/// Write a chunk's rows with their decisions (one per readable row, in order).
fn write_rows(
    chunk: Vec<InputRow>,
    decided: Vec<Decision>,
    writer: &mut dyn RowWriter,
    summary: &mut RunSummary,
) -> Result<(), RunError> {
    let mut decided = decided.into_iter();
    let mut out = Vec::with_capacity(chunk.len());
    for row in &chunk {
        let d = row_decision(row, &mut decided);
        summary.rows += 1;
        if !row.note.is_empty() {
            summary.flagged += 1;
        }
        if row.unreadable {
            summary.unreadable += 1;
            debug_assert_eq!(d.method, Method::None);
        }
        writer.write(row, &d)?;
        out.push(d);
    }
    writer.written(chunk, out);
    Ok(())
}
