//! `logsieve classify`: label every row of an input, streaming.
//!
//! The output file is written beside its target under a temporary name and
//! renamed into place only when the run finishes, so the target never holds
//! a half-written file: a run that stops early (a fatal input error, a write
//! error, SIGINT/SIGTERM) leaves what it wrote under `<target>.partial`, and
//! one that is killed leaves the target as it was. An output naming the
//! input itself is refused before anything is opened for writing.

use std::io::{BufWriter, IsTerminal};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logsieve_pipeline::io::{self, CountingReader, CsvWriter, Format, JsonlWriter, RowReader, RowWriter};
use logsieve_pipeline::run::classify_stream;

use crate::common::{llm_summary, pipeline_with_store, ConfigArgs, StoreArgs};
use crate::interrupt::{self, open_input, StopAt, EXIT_INTERRUPTED};
use crate::output::{refuse_same_file, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input file; `-` or nothing reads stdin.
    pub input: Option<PathBuf>,
    /// Output file; default stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Input format: csv, jsonl or text. Default: from the file name, else sniffed.
    #[arg(long)]
    pub format: Option<Format>,
    /// Output format: csv or jsonl. Default: the input's (text input → jsonl).
    #[arg(long)]
    pub output_format: Option<Format>,
    /// Source for text input, and for rows that lack one.
    #[arg(long)]
    pub source: Option<String>,
    /// Print a JSON summary (rows, methods, rows/s, encoder use) to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Never show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Keep reading INPUT as it grows (surviving rotation by rename or
    /// truncation) and write JSON lines as they come, until SIGINT/SIGTERM.
    /// With -o, lines are appended to OUT.
    #[arg(long, requires = "input")]
    pub follow: bool,
    /// With --follow: start at the file's end (only new lines), not its start.
    #[arg(long, requires = "follow")]
    pub from_end: bool,
    /// With --follow: milliseconds between looks at an idle file.
    #[arg(long, default_value_t = 200, requires = "follow")]
    pub follow_interval_ms: u64,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// The `--stats` line: the pipeline's counters, then the run's.
#[derive(serde::Serialize)]
struct StatsReport {
    #[serde(flatten)]
    pipeline: logsieve_pipeline::StatsSnapshot,
    seconds: f64,
    rows_per_s: f64,
    flagged: u64,
    unreadable: u64,
    llm: logsieve_llm::LlmStats,
    /// What was read from the decision store on start, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<logsieve_pipeline::StoreStatus>,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    // First, so that a signal at any point from here is a clean stop.
    let stop = interrupt::install().context("installing signal handlers")?;
    let out_path = a.output.clone().filter(|p| p.as_os_str() != "-");
    refuse_same_file(a.input.as_deref(), out_path.as_deref())?;
    let config = cfg.load()?;
    let store = a.store.open(&config)?;
    let pipeline = pipeline_with_store(config, store)?;
    if a.follow {
        let path = a.input.as_deref().filter(|p| p.as_os_str() != "-");
        let path = path.ok_or_else(|| anyhow::anyhow!("--follow needs a file, not standard input"))?;
        anyhow::ensure!(
            a.output_format.is_none_or(|f| f == Format::Jsonl),
            "--follow writes JSON lines (--output-format jsonl)"
        );
        let format = match a.format {
            Some(f) => f,
            None => io::sniff_format_or(path.to_str(), b"", Format::Text),
        };
        let args = crate::follow::FollowArgs {
            path,
            format,
            source: a.source.clone(),
            output: out_path.as_deref(),
            from_end: a.from_end,
            interval: std::time::Duration::from_millis(a.follow_interval_ms.max(1)),
        };
        let code = crate::follow::run(&pipeline, args, stop)?;
        if let Err(e) = pipeline.flush_store() {
            eprintln!("warning: decision store: {e}");
        }
        return Ok(code);
    }
    let (input, len, name) = open_input(a.input.as_ref(), stop.clone())?;
    let shown = name.clone().unwrap_or_else(|| "<stdin>".into());
    let mut input = std::io::BufReader::with_capacity(256 * 1024, CountingReader::new(input));
    let counter = input.get_ref().counter.clone();
    let format = match a.format {
        Some(f) => f,
        None => {
            let head = std::io::BufRead::fill_buf(&mut input).context("reading input")?;
            io::sniff_format(name.as_deref(), head)
        }
    };
    let out_format = a.output_format.unwrap_or(match format {
        Format::Text => Format::Jsonl,
        f => f,
    });
    anyhow::ensure!(out_format != Format::Text, "--output-format must be csv or jsonl");
    let reader = io::reader(input, format, a.source.clone()).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let mut reader = StopAt {
        inner: reader,
        stop: stop.clone(),
    };
    let mut output = Output::open(out_path.as_deref())?;
    let out = BufWriter::with_capacity(256 * 1024, output.writer()?);
    let mut writer: Box<dyn RowWriter> = match out_format {
        Format::Csv => {
            let h = reader.header().map(<[String]>::to_vec);
            Box::new(CsvWriter::new(out, h.as_deref())?)
        }
        _ => Box::new(JsonlWriter::new(out)),
    };

    let bar = if !a.no_progress && std::io::stderr().is_terminal() {
        let b = match len {
            Some(n) => ProgressBar::new(n).with_style(
                ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {msg} ({eta})")
                    .expect("template"),
            ),
            None => ProgressBar::new_spinner(),
        };
        b.set_draw_target(ProgressDrawTarget::stderr());
        b
    } else {
        ProgressBar::hidden()
    };
    let t0 = Instant::now();
    let result = classify_stream(&pipeline, &mut reader, writer.as_mut(), |s| {
        bar.set_position(counter.load(Ordering::Relaxed));
        bar.set_message(format!("{} rows", s.rows));
    });
    drop(writer);
    bar.finish_and_clear();
    // The decisions are written whatever happened to the output; a store
    // that fails to take them costs them, never a row.
    if let Err(e) = pipeline.flush_store() {
        eprintln!("warning: {e}");
    }
    let interrupted = stop.load(Ordering::Relaxed);
    let summary = match result {
        Ok(s) if s.fatal.is_none() && !interrupted => {
            output.commit()?;
            s
        }
        Ok(s) => {
            let kept = output.keep_partial()?;
            if interrupted {
                eprintln!(
                    "interrupted: the {} rows read were classified and written{}",
                    s.rows,
                    kept.map(|p| format!(" to {}", p.display())).unwrap_or_default()
                );
                return Ok(EXIT_INTERRUPTED);
            }
            if let Some(p) = kept {
                eprintln!(
                    "note: the run stopped early; the {} rows written are in {}",
                    s.rows,
                    p.display()
                );
            }
            s
        }
        Err(e) => {
            if let Ok(Some(p)) = output.keep_partial() {
                eprintln!("note: what was written before the error is in {}", p.display());
            }
            return Err(e.into());
        }
    };
    let secs = t0.elapsed().as_secs_f64();
    if summary.rows == 0 && summary.fatal.is_none() {
        eprintln!("warning: {shown}: no rows after the header");
    }
    if summary.flagged > 0 {
        eprintln!(
            "note: {} of {} rows were flagged (see their `detail`); {} could not be classified",
            summary.flagged, summary.rows, summary.unreadable
        );
    }
    if let Some(line) = llm_summary(&pipeline) {
        eprintln!("{line}");
    }
    if a.stats {
        let report = StatsReport {
            pipeline: pipeline.stats(),
            seconds: (secs * 1000.0).round() / 1000.0,
            rows_per_s: (summary.rows as f64 / secs.max(1e-9)).round(),
            flagged: summary.flagged,
            unreadable: summary.unreadable,
            llm: pipeline.llm().stats(),
            store: pipeline.store().map(|(_, s)| s.clone()),
        };
        eprintln!("{}", serde_json::to_string(&report)?);
    }
    if let Some(f) = summary.fatal {
        anyhow::bail!("{shown}: {f}");
    }
    Ok(0)
}
