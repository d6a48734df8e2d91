//! `logsieve report FILE -o report.html`: the dashboard's charts for one
//! file, as one self-contained HTML page (Chart.js and the data inlined; no
//! server, no network). The file is classified as `classify` does it, and
//! every row is counted with the dashboard's own aggregation; times are
//! when the rows were classified (input timestamps are not read).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use logsieve_pipeline::io::{self, InputRow, RowWriter};
use logsieve_pipeline::run::classify_stream;
use logsieve_pipeline::Decision;
use logsieve_server::aggregates::{Aggregates, Delta, RowRef};
use logsieve_server::stats::{summarise, StatsQuery};
use logsieve_templates::Masker;

use crate::common::ConfigArgs;
use crate::output::{refuse_same_file, Output};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input file (CSV, JSON lines or text, as `classify` reads them).
    pub input: PathBuf,
    /// The HTML file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Input format: csv, jsonl or text. Default: from the file name, else sniffed.
    #[arg(long)]
    pub format: Option<io::Format>,
    /// Source for text input, and for rows that lack one.
    #[arg(long)]
    pub source: Option<String>,
    /// Alert lines the report lists at most.
    #[arg(long, default_value_t = 1000)]
    pub alerts: usize,
}

/// Counts each chunk's rows as they are written.
struct Counting<'m> {
    delta: Delta,
    masker: &'m Masker,
}

impl RowWriter for Counting<'_> {
    fn write(&mut self, _row: &InputRow, _d: &Decision) -> std::io::Result<()> {
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    /// Each chunk is counted as it comes (rows moved, not copied).
    fn written(&mut self, rows: Vec<InputRow>, decisions: Vec<Decision>) {
        self.delta.add_rows(
            logsieve_server::aggregates::now_ms(),
            rows.iter().zip(&decisions).map(|(r, d)| RowRef {
                source: &r.source,
                message: &r.message,
                decision: d.into(),
            }),
            self.masker,
        );
    }
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    refuse_same_file(Some(&a.input), Some(&a.output))?;
    let shown = a.input.display().to_string();
    let pipeline = cfg.pipeline()?;
    let file = std::fs::File::open(&a.input).with_context(|| format!("opening {shown}"))?;
    let mut input = std::io::BufReader::with_capacity(256 * 1024, file);
    let format = match a.format {
        Some(f) => f,
        None => {
            let head = std::io::BufRead::fill_buf(&mut input).context("reading input")?;
            io::sniff_format(Some(&shown), head)
        }
    };
    let mut reader =
        io::reader(input, format, a.source.clone()).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let mut counting = Counting {
        delta: Delta::default(),
        masker: pipeline.masker(),
    };
    let summary = classify_stream(&pipeline, reader.as_mut(), &mut counting, |_| {})?;
    if let Some(f) = &summary.fatal {
        anyhow::bail!("{shown}: {f}");
    }
    // The template cache's and the LLM's figures for the run.
    counting.delta.add_sieve(
        logsieve_server::aggregates::now_ms().div_euclid(60_000) * 60,
        &logsieve_server::aggregates::SieveCounts::of(&pipeline),
    );
    let mut agg = Aggregates::new(a.alerts);
    agg.merge(std::mem::take(&mut counting.delta));
    let stats = summarise(
        &agg,
        &StatsQuery::default()
            .window(logsieve_server::aggregates::now_ms() / 1000)
            .expect("no bounds"),
    );
    let title = a
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| shown.clone());
    let html = logsieve_server::dashboard::report_html(&stats, &title);
    let mut out = Output::open(Some(&a.output))?;
    out.writer()?.write_all(html.as_bytes())?;
    out.commit()?;
    eprintln!(
        "{}: {} rows, {} labels → {} ({} KB)",
        shown,
        summary.rows,
        stats.labels.len(),
        a.output.display(),
        html.len() / 1024
    );
    Ok(0)
}
