//! `logsieve templates`: the shape of a log file — mined templates with
//! counts (table or JSON), or `--per-line` one JSON object per input line,
//! in input order, with `template_id`, `template` and its parameters.
//! `--eval DIR` scores the miner on labelled logs instead (loghub's
//! `X_structured.csv`): GA, PA and FGA per system.

use std::io::{BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_pipeline::io::{self, Format};
use logsieve_templates::{
    templates_json, templates_table, Evaluation, Labelled, LineAnnotator, Masker, Miner, MinerConfig, HALF_A,
    HALF_B,
};

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
    /// Score the miner on labelled logs instead of mining an input: DIR
    /// holds one folder per system with a loghub `X_structured.csv`
    /// (`Content`, `EventId`, `EventTemplate`), as loghub-2k does, or is
    /// one such file. Prints grouping accuracy (GA), parsing accuracy (PA:
    /// the template text right) and the F1 of grouping (FGA) per system,
    /// and their means (over all, and over each fixed half of loghub-2k).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["input", "per_line", "snapshot", "restore"])]
    pub eval: Option<PathBuf>,
    /// With `--eval`: only these systems (folder names, comma-separated).
    #[arg(long, value_delimiter = ',', requires = "eval")]
    pub systems: Vec<String>,
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
    if let Some(dir) = &a.eval {
        let config = MinerConfig {
            max_templates: cap.unwrap_or(0),
            ..MinerConfig::default()
        };
        return evaluate(dir, &a, &config, &masker);
    }
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

/// The labelled files under `dir`: `(system, file)` for each folder holding
/// a `*_structured.csv` (the first by name), sorted; or `dir` itself when
/// it is such a file.
fn labelled_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let structured = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_structured.csv"))
    };
    if dir.is_file() {
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let system = name.split('_').next().unwrap_or(name).to_string();
        return Ok(vec![(system, dir.to_path_buf())]);
    }
    let entries = std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("{}: cannot read", dir.display()))?
            .path();
        if !path.is_dir() {
            continue;
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| structured(p))
            .collect();
        files.sort();
        if let Some(f) = files.into_iter().next() {
            let system = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            out.push((system, f));
        }
    }
    out.sort();
    anyhow::ensure!(
        !out.is_empty(),
        "{}: no labelled logs (expected folders holding an X_structured.csv, or such a file)",
        dir.display()
    );
    Ok(out)
}

/// `--eval`: scores a fresh miner on each labelled log under `dir`.
fn evaluate(dir: &Path, a: &Args, config: &MinerConfig, masker: &Masker) -> Result<i32> {
    let mut files = labelled_files(dir)?;
    if !a.systems.is_empty() {
        for s in &a.systems {
            anyhow::ensure!(
                files.iter().any(|(name, _)| name == s),
                "--systems: no system `{s}` under {} (found: {})",
                dir.display(),
                files.iter().map(|f| f.0.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        files.retain(|(name, _)| a.systems.contains(name));
    }
    let mut rows: Vec<(String, Evaluation)> = Vec::new();
    for (system, file) in &files {
        let labelled = Labelled::read_loghub(file)?;
        rows.push((system.clone(), labelled.evaluate(config, masker)));
    }
    let half = |s: &str| {
        if HALF_A.contains(&s) {
            "A"
        } else if HALF_B.contains(&s) {
            "B"
        } else {
            "-"
        }
    };
    let mean = |pick: &dyn Fn(&str) -> bool| -> Option<(usize, f64, f64, f64)> {
        let sel: Vec<&Evaluation> = rows.iter().filter(|r| pick(&r.0)).map(|r| &r.1).collect();
        let n = sel.len();
        (n > 0).then(|| {
            let m = |f: fn(&Evaluation) -> f64| sel.iter().map(|e| f(e)).sum::<f64>() / n as f64;
            (n, m(|e| e.ga), m(|e| e.pa), m(|e| e.fga))
        })
    };
    let means = [
        ("mean", mean(&|_| true)),
        ("mean A", mean(&|s| half(s) == "A")),
        ("mean B", mean(&|s| half(s) == "B")),
    ];
    let out: Box<dyn Write> = match &a.output {
        Some(p) => {
            Box::new(std::fs::File::create(p).with_context(|| format!("{}: cannot create", p.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::new(out);
    if a.json {
        let systems: Vec<serde_json::Value> = rows
            .iter()
            .map(|(s, e)| {
                let mut v = serde_json::to_value(e).expect("scores serialise");
                v["system"] = serde_json::json!(s);
                v["half"] = serde_json::json!(half(s));
                v
            })
            .collect();
        let summary: serde_json::Map<String, serde_json::Value> = means
            .iter()
            .filter_map(|(name, m)| {
                m.map(|(n, ga, pa, fga)| {
                    (
                        name.replace(' ', "_"),
                        serde_json::json!({"systems": n, "ga": ga, "pa": pa, "fga": fga}),
                    )
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"systems": systems, "means": summary})
        )?;
    } else {
        writeln!(
            out,
            "{:<12} {:>4} {:>6} {:>6} {:>9} {:>6} {:>6} {:>6}",
            "system", "half", "lines", "events", "templates", "GA", "PA", "FGA"
        )?;
        for (s, e) in &rows {
            writeln!(
                out,
                "{:<12} {:>4} {:>6} {:>6} {:>9} {:>6.3} {:>6.3} {:>6.3}",
                s,
                half(s),
                e.lines,
                e.events,
                e.templates,
                e.ga,
                e.pa,
                e.fga
            )?;
        }
        for (name, m) in means {
            if let Some((n, ga, pa, fga)) = m {
                let label = format!("{name} ({n})");
                writeln!(
                    out,
                    "{label:<12} {:>4} {:>6} {:>6} {:>9} {ga:>6.3} {pa:>6.3} {fga:>6.3}",
                    "", "", "", ""
                )?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}
