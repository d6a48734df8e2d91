//! `logsieve classify`: label every row of an input, streaming.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use logsieve_pipeline::io::{self, CountingReader, CsvWriter, Format, JsonlWriter, RowWriter};
use logsieve_pipeline::run::classify_stream;

use crate::common::{llm_summary, open_input, ConfigArgs};

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
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let pipeline = cfg.pipeline()?;
    let (input, len, name) = open_input(a.input.as_ref())?;
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
    let mut reader =
        io::reader(input, format, a.source.clone()).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let out: Box<dyn Write> = match &a.output {
        Some(p) if p.as_os_str() != "-" => {
            Box::new(File::create(p).with_context(|| format!("{}: cannot create", p.display()))?)
        }
        _ => Box::new(std::io::stdout().lock()),
    };
    let out = BufWriter::with_capacity(256 * 1024, out);
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
    let summary = classify_stream(&pipeline, reader.as_mut(), writer.as_mut(), |s| {
        bar.set_position(counter.load(Ordering::Relaxed));
        bar.set_message(format!("{} rows", s.rows));
    })?;
    bar.finish_and_clear();
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
        };
        eprintln!("{}", serde_json::to_string(&report)?);
    }
    if let Some(f) = summary.fatal {
        anyhow::bail!("{shown}: {f}");
    }
    Ok(0)
}
