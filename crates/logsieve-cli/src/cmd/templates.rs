//! `logsieve templates`: the shape of a log file — mined templates with
//! counts (table or JSON), or `--per-line` one JSON object per input line,
//! in input order, with `template_id`, `template` and its parameters.

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_pipeline::io::{self, Format};
use logsieve_templates::{templates_json, templates_table, LineAnnotator, Miner, MinerConfig};

use crate::common::{open_input, ConfigArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: plain text (one message per line, as loghub's `Content`), or
    /// CSV / JSON lines (the `log_message` field). `-` or nothing: stdin.
    pub input: Option<PathBuf>,
    /// Input format: text, csv or jsonl. Default: from the file name (.csv,
    /// .jsonl, .log, …), else JSON lines when the input starts with `{`, else
    /// text (as `classify` sniffs, with text instead of CSV as the fallback).
    #[arg(long)]
    pub format: Option<Format>,
    /// One JSON object per input line instead of the template list.
    #[arg(long)]
    pub per_line: bool,
    /// The template list as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write the miner's state here when done (JSON, versioned).
    #[arg(long)]
    pub snapshot: Option<PathBuf>,
    /// Start from a saved snapshot.
    #[arg(long)]
    pub restore: Option<PathBuf>,
    /// Most templates kept: past it the least recently matched template is
    /// evicted (bounded memory on endless streams); 0 = unlimited. Overrides
    /// `[templates] max_templates` and the cap stored in a restored snapshot
    /// (which a nonzero config value also overrides).
    #[arg(long, value_name = "N")]
    pub max_templates: Option<usize>,
    /// Output file; default stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// This command's part of the configuration file: `[templates]
/// max_templates` (the rest of the table is the cascade's).
#[derive(serde::Deserialize)]
struct TemplatesFile {
    #[serde(default)]
    templates: TemplatesTable,
}

#[derive(Default, serde::Deserialize)]
struct TemplatesTable {
    /// Most templates the miner keeps; past it the least recently matched
    /// one is evicted (bounded memory on endless streams). 0: unlimited.
    /// `--max-templates` overrides it.
    #[serde(default)]
    max_templates: usize,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let config = cfg.load()?;
    let masker = crate::common::masker(&config)?;
    let file: TemplatesFile = cfg.file()?.parse()?;
    let configured = file.templates.max_templates;
    let cap = a.max_templates.or((configured > 0).then_some(configured));
    let miner = match &a.restore {
        Some(p) => {
            let m = Miner::load(p, masker)?;
            match cap {
                Some(cap) => m.with_max_templates(cap),
                None => m,
            }
        }
        None => Miner::new(
            MinerConfig {
                max_templates: cap.unwrap_or(0),
                ..MinerConfig::default()
            },
            masker,
        ),
    };
    let (input, _, name) = open_input(a.input.as_ref())?;
    let shown = name.clone().unwrap_or_else(|| "<stdin>".into());
    let mut input = input;
    let format = match a.format {
        Some(f) => f,
        None => {
            let head = input.fill_buf().context("reading input")?;
            io::sniff_format_or(name.as_deref(), head, Format::Text)
        }
    };
    let mut reader =
        io::reader(input, format, Some(String::new())).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let out: Box<dyn Write> = match &a.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    let mut annotator = LineAnnotator::new(&miner);
    let t0 = Instant::now();
    let mut lines = 0u64;
    while let Some(row) = reader.next_row() {
        let row = row.map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
        lines += 1;
        if a.per_line {
            let mut rec = serde_json::to_value(annotator.annotate(&row.message))?;
            rec["line"] = serde_json::json!(row.line);
            writeln!(out, "{rec}")?;
        } else {
            miner.add(&row.message);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if !a.per_line {
        let t = miner.templates();
        if a.json {
            writeln!(out, "{}", templates_json(&t))?;
        } else {
            write!(out, "{}", templates_table(&t))?;
        }
    }
    out.flush()?;
    if let Some(p) = &a.snapshot {
        miner.save(p)?;
    }
    let evicted = match miner.evicted() {
        0 => String::new(),
        n => format!(", {n} evicted (max_templates {})", miner.config().max_templates),
    };
    eprintln!(
        "{lines} lines, {} templates{evicted}, {:.0} lines/s",
        miner.len(),
        lines as f64 / secs.max(1e-9)
    );
    Ok(0)
}
