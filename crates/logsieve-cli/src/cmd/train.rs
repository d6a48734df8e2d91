//! `logsieve train`: fit the model stage on labelled rows, print the
//! held-out report, write the artifact.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use logsieve_linear::{Balance, EncoderInput, TrainOptions};
use logsieve_pipeline::train::{save, train, TrainSettings};

use crate::common::{ConfigArgs, LabelledArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Directory to write classifier.json into.
    #[arg(long)]
    pub out: PathBuf,
    /// L2 penalty (sklearn's 1/C).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 300)]
    pub max_iterations: u64,
    /// Train on rows as they are instead of balancing rare labels.
    #[arg(long)]
    pub no_balance: bool,
    /// After the held-out report, refit on every row (the held-out part included).
    #[arg(long)]
    pub refit_all: bool,
    /// What the encoder sees: `masked` (variables replaced by typed
    /// placeholders, the text the template cache keys on) or `raw`.
    #[arg(long, default_value = "masked", value_parser = input_parser())]
    pub input: EncoderInput,
    /// Training rows kept per label (distinct templates, most frequent first)
    /// as the LLM stage's few-shot examples; 0 keeps none.
    #[arg(long, default_value_t = 12)]
    pub examples_per_label: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

fn input_parser() -> impl clap::builder::TypedValueParser<Value = EncoderInput> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new([EncoderInput::Masked.as_str(), EncoderInput::Raw.as_str()])
        .map(|s| s.parse::<EncoderInput>().expect("one of the possible values"))
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let pipeline = cfg.pipeline()?;
    let (bytes, rows) = a.labelled.read()?;
    let settings = TrainSettings {
        test_fraction: a.labelled.test_fraction,
        seed: a.labelled.seed,
        options: TrainOptions {
            alpha: a.alpha,
            max_iterations: a.max_iterations,
            balance: if a.no_balance {
                Balance::None
            } else {
                Balance::Oversample
            },
        },
        refit_all: a.refit_all,
        threshold: cfg.threshold.unwrap_or(0.5),
        input: a.input,
        examples_per_label: a.examples_per_label,
    };
    let t0 = Instant::now();
    let name = a
        .labelled
        .data
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let trained = train(&pipeline, &rows, &name, &bytes, &settings)?;
    save(&trained, &a.out)?;
    let art = &trained.artifact;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&art.heldout)?);
    } else {
        println!(
            "{} rows; {} claimed by rules or routes; model fitted on {} rows ({}) in {:.1}s",
            rows.len(),
            trained.claimed,
            art.training.rows_fitted,
            art.training.fitted_on,
            t0.elapsed().as_secs_f64()
        );
        if let Some(r) = &art.heldout {
            println!(
                "\nmodel stage on the held-out {:.0}% (seed {}):\n{}",
                a.labelled.test_fraction * 100.0,
                a.labelled.seed,
                r.to_text()
            );
        }
        println!(
            "wrote {}",
            a.out.join(logsieve_linear::artifact::FILE_NAME).display()
        );
    }
    Ok(0)
}
