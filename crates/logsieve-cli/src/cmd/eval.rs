//! `logsieve eval`: run the whole cascade on labelled rows and score it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_pipeline::eval::{evaluate, select, Split};
use logsieve_pipeline::labelled::read_labelled;

use crate::common::ConfigArgs;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    All,
    Test,
    Train,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Labelled CSV: source, log_message, target_label.
    #[arg(long)]
    pub data: PathBuf,
    /// Which rows: all, or the test/train part of training's stratified split.
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitArg,
    #[arg(long, default_value_t = logsieve_linear::split::DEFAULT_TEST_FRACTION)]
    pub test_fraction: f64,
    #[arg(long, default_value_t = logsieve_linear::split::DEFAULT_SEED)]
    pub seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let pipeline = cfg.pipeline()?;
    let bytes = std::fs::read(&a.data).with_context(|| format!("{}: cannot read", a.data.display()))?;
    let rows = read_labelled(bytes.as_slice()).map_err(|e| anyhow::anyhow!("{}: {e}", a.data.display()))?;
    let split = match a.split {
        SplitArg::All => Split::All,
        SplitArg::Test => Split::Test,
        SplitArg::Train => Split::Train,
    };
    let rows = select(&rows, split, a.test_fraction, a.seed);
    let t0 = Instant::now();
    let (report, _) = evaluate(&pipeline, &rows);
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} rows ({:?} split) in {:.1}s, {:.0} rows/s\n",
            rows.len(),
            a.split,
            secs,
            rows.len() as f64 / secs
        );
        print!("{}", report.to_text());
    }
    Ok(0)
}
