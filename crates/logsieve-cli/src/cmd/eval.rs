//! `logsieve eval`: run the whole cascade on labelled rows and score it, or
//! (`--leave-one-out source`) hold out each source in turn, train on the
//! rest and score the model stage on it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use logsieve_embed::{Embedder, Engine, MiniLm};
use logsieve_linear::TrainOptions;
use logsieve_pipeline::eval::{evaluate, select, Split};
use logsieve_pipeline::loso::{leave_one_source_out_with, FoldEncoder, LosoOptions};
use logsieve_pipeline::train::TrainFailure;
use logsieve_pipeline::train::TrainSettings;

use crate::cmd::train::{input_parser, HybridArgs, DEFAULT_THRESHOLD};
use crate::common::{llm_summary, read_labelled_file, ConfigArgs, LabelledArgs};
use crate::finetune::FineTuneArgs;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SplitArg {
    All,
    Test,
    Train,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LeaveOut {
    /// Each source (system) of --data in turn.
    Source,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Which rows: all, or the test/train part of training's stratified split (per file).
    #[arg(long, value_enum, default_value = "all")]
    pub split: SplitArg,
    /// Hold out each source of --data in turn: train the hybrid model on the
    /// other sources and --train-data, score the held-out source's lines
    /// (model stage alone, no rules, no LLM).
    #[arg(long, value_enum)]
    pub leave_one_out: Option<LeaveOut>,
    /// Labelled files always in training with --leave-one-out (the seed set).
    #[arg(long)]
    pub train_data: Vec<PathBuf>,
    #[command(flatten)]
    pub hybrid: HybridArgs,
    #[arg(long, default_value_t = 500)]
    pub max_iterations: u64,
    #[arg(long, default_value = "masked", value_parser = input_parser())]
    pub input: logsieve_linear::EncoderInput,
    /// With --leave-one-out: write what the model said of every held-out
    /// template (source, text, lines, truth, predicted, confidence,
    /// unfamiliar) to this CSV.
    #[arg(long)]
    pub predictions: Option<PathBuf>,
    /// With --leave-one-out: write each fold's calibration data (the
    /// out-of-fold evidence its calibrator was fitted on, and the evidence
    /// of the held-out templates) to this file, one JSON object a line.
    #[arg(long)]
    pub calibration_dump: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// With --leave-one-out: hold out only these sources (comma-separated;
    /// default every source of --data).
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<String>,
    // With --leave-one-out --fine-tune, each fold fine-tunes the encoder on
    // its own training rows (the held-out source's never among them).
    #[command(flatten)]
    pub fine_tune: FineTuneArgs,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    a.fine_tune.check_build()?;
    anyhow::ensure!(
        a.leave_one_out.is_some() || (!a.fine_tune.fine_tune && a.sources.is_empty()),
        "--fine-tune and --sources go with --leave-one-out (to score a fine-tuned classifier, pass --model DIR)"
    );
    let pipeline = cfg.pipeline()?;
    let t0 = Instant::now();
    if a.leave_one_out.is_some() {
        let data = a.labelled.read()?;
        let mut always = Vec::new();
        for p in &a.train_data {
            always.extend(read_labelled_file(p)?.rows);
        }
        let settings = TrainSettings {
            test_fraction: a.labelled.test_fraction,
            seed: a.labelled.seed,
            options: TrainOptions::default(),
            refit_all: true,
            threshold: cfg.threshold.unwrap_or(DEFAULT_THRESHOLD),
            input: a.input,
            examples_per_label: 0,
        };
        let config = cfg.load()?;
        let base = if a.fine_tune.fine_tune {
            Some(crate::finetune::base_dir(&config)?)
        } else {
            None
        };
        let options = config.batch_options();
        let make =
            |src: &str, pairs: &[(&str, &str)]| -> Result<std::sync::Arc<dyn Embedder>, TrainFailure> {
                let failed = |e: anyhow::Error| TrainFailure::FineTune(format!("{e:#}"));
                let base = base.as_deref().expect("set with --fine-tune");
                let tmp = tempfile::tempdir().map_err(|e| failed(e.into()))?;
                let dir = tmp.path().join("encoder");
                let (_, sha) = crate::finetune::fine_tune(
                    base,
                    pairs,
                    &a.fine_tune,
                    a.labelled.seed,
                    &dir,
                    &format!("fold without {src}"),
                )
                .map_err(failed)?;
                // The lean engine reads the weights whole at load: the
                // temporary directory can go once it has.
                let m = MiniLm::load_verified(&dir, options, Engine::default(), &sha)?;
                Ok(std::sync::Arc::new(m))
            };
        let fold_encoder: Option<FoldEncoder<'_>> = a.fine_tune.fine_tune.then_some(&make as _);
        let report = leave_one_source_out_with(
            &pipeline,
            &always,
            &data,
            &a.hybrid.labels()?,
            &settings,
            &a.hybrid.options(a.max_iterations),
            LosoOptions {
                only: &a.sources,
                fold_encoder,
            },
        )?;
        if let Some(path) = &a.predictions {
            let mut w = csv::Writer::from_path(path)
                .map_err(|e| anyhow::anyhow!("--predictions {}: {e}", path.display()))?;
            for t in &report.templates {
                w.serialize(t)?;
            }
            w.flush()?;
        }
        if let Some(path) = &a.calibration_dump {
            let mut out = String::new();
            for e in &report.evidence {
                out.push_str(&serde_json::to_string(e)?);
                out.push('\n');
            }
            std::fs::write(path, out)
                .map_err(|e| anyhow::anyhow!("--calibration-dump {}: {e}", path.display()))?;
        }
        if a.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            println!(
                "leave-one-source-out over {} sources ({} held-out lines), {} always-in rows, in {:.1}s\n",
                report.sources.len(),
                report.overall.rows,
                always.len(),
                t0.elapsed().as_secs_f64()
            );
            print!("{}", report.to_text());
        }
        return Ok(0);
    }
    let split = match a.split {
        SplitArg::All => Split::All,
        SplitArg::Test => Split::Test,
        SplitArg::Train => Split::Train,
    };
    let rows: Vec<_> = a
        .labelled
        .read_each()?
        .into_iter()
        .flat_map(|f| select(&f.rows, split, a.labelled.test_fraction, a.labelled.seed))
        .collect();
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
