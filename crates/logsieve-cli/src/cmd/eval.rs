//! `logsieve eval`: run the whole cascade on labelled rows and score it.

use std::time::Instant;

use anyhow::Result;
use logsieve_pipeline::eval::{evaluate, select, Split};

use crate::common::{llm_summary, ConfigArgs, LabelledArgs};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    All,
    Test,
    Train,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Which rows: all, or the test/train part of training's stratified split.
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitArg,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let pipeline = cfg.pipeline()?;
    let (_, rows) = a.labelled.read()?;
    let split = match a.split {
        SplitArg::All => Split::All,
        SplitArg::Test => Split::Test,
        SplitArg::Train => Split::Train,
    };
    let rows = select(&rows, split, a.labelled.test_fraction, a.labelled.seed);
    let t0 = Instant::now();
    let (report, _) = evaluate(&pipeline, &rows);
    let secs = t0.elapsed().as_secs_f64();
    if let Some(line) = llm_summary(&pipeline) {
        eprintln!("{line}");
    }
    if a.json {
        let mut out = serde_json::to_value(&report)?;
        out["seconds"] = serde_json::json!((secs * 1000.0).round() / 1000.0);
        out["llm"] = serde_json::to_value(pipeline.llm().stats())?;
        println!("{}", serde_json::to_string_pretty(&out)?);
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
