//! `logsieve train`: fit the model stage on labelled rows (one or more
//! files), print the held-out report, write the artifact.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use logsieve_linear::artifact::Distilled;
use logsieve_linear::hybrid::HybridOptions;
use logsieve_linear::{Balance, EncoderInput, TrainOptions};
use logsieve_pipeline::labelled::LabelledRow;
use logsieve_pipeline::labels::{builtin_labels, parse_labels, LabelSpec};
use logsieve_pipeline::train::{save, train, TrainSettings};
use logsieve_pipeline::train_hybrid::{fitted_texts, train_hybrid, DataSet};
use sha2::{Digest, Sha256};

use crate::common::{ConfigArgs, LabelledArgs};
use crate::finetune::FineTuneArgs;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    /// Vector + words, label prototypes, calibrated, aware of unfamiliar lines.
    Hybrid,
    /// Logistic regression on the vector alone (the seed design).
    Linear,
}

/// The hybrid model's threshold unless the config or `--threshold` says
/// otherwise. Its confidence is calibrated (how often it is right on systems
/// it never saw), so 0.8 means "right four times in five"; measured
/// leave-one-system-out, lines at or above it are right 0.92 of the time at
/// coverage 0.70 (README), and the rest go to the LLM.
pub const DEFAULT_THRESHOLD: f32 = 0.8;

/// The hybrid model's settings, shared by `train` and `eval --leave-one-out`.
#[derive(Debug, Clone, clap::Args)]
pub struct HybridArgs {
    /// Inverse L2 strength (scikit-learn's C) of the hybrid model.
    #[arg(long, default_value_t = 10.0)]
    pub c: f64,
    /// Weight of each label prototype row (a distinct training text weighs 1).
    #[arg(long, default_value_t = 3.0)]
    pub prototype_weight: f64,
    /// Source-grouped folds for calibration.
    #[arg(long, default_value_t = HybridOptions::default().folds)]
    pub folds: usize,
    /// Below this similarity to every training text and prototype a line is unfamiliar.
    #[arg(long, default_value_t = 0.35)]
    pub min_similarity: f32,
    /// Label definitions and prototypes (TOML, as config/labels.toml); default: built in.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Class balance: each label's training texts weigh (largest label's
    /// count / this label's count)^balance; 0 weighs every text alike, 1
    /// gives every label the same total weight.
    #[arg(long, default_value_t = HybridOptions::default().balance)]
    pub balance: f64,
    /// Calibrate freely instead of monotone in the evidence: ranks lines of
    /// unseen systems better (leave-one-system-out selective accuracy 0.93
    /// against 0.88 at 0.80), but marks down the seed's ambiguous lines
    /// (seed held-out macro F1 0.988 against 0.998).
    #[arg(long)]
    pub free_calibration: bool,
    /// Weight of the prototypes' words as a prior: each label's score
    /// gains this times the cosine of the line's words to its nearest
    /// prototype's (0: the prototypes are training rows only).
    #[arg(long, default_value_t = HybridOptions::default().word_prior_weight)]
    pub word_prior_weight: f64,
}

impl HybridArgs {
    pub fn options(&self, max_iterations: u64) -> HybridOptions {
        HybridOptions {
            c: self.c,
            prototype_weight: self.prototype_weight,
            folds: self.folds,
            max_iterations,
            min_similarity: self.min_similarity,
            balance: self.balance,
            free_calibration: self.free_calibration,
            word_prior_weight: self.word_prior_weight,
            ..HybridOptions::default()
        }
    }

    pub fn labels(&self) -> Result<Vec<LabelSpec>> {
        match &self.labels {
            None => Ok(builtin_labels()),
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
                Ok(parse_labels(&text, &p.display().to_string())?)
            }
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Directory to write classifier.json (and the hybrid model's bank) into.
    #[arg(long)]
    pub out: PathBuf,
    /// Which classifier.
    #[arg(long, value_enum, default_value = "hybrid")]
    pub kind: Kind,
    #[command(flatten)]
    pub hybrid: HybridArgs,
    /// L2 penalty of the linear model (sklearn's 1/C).
    #[arg(long, default_value_t = 1.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 500)]
    pub max_iterations: u64,
    /// Linear model: train on rows as they are instead of balancing rare labels.
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
    #[command(flatten)]
    pub fine_tune: FineTuneArgs,
    /// Also learn from a decision store: its LLM answers at or above
    /// `llm.min_confidence` and its corrections, one row per template, all
    /// fitted (counted in the artifact's `training.distilled`).
    #[arg(long)]
    pub store: Option<PathBuf>,
}

pub(crate) fn input_parser() -> impl clap::builder::TypedValueParser<Value = EncoderInput> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new([EncoderInput::Masked.as_str(), EncoderInput::Raw.as_str()])
        .map(|s| s.parse::<EncoderInput>().expect("one of the possible values"))
}

/// The rows a decision store teaches: the LLM's answers at or above
/// `min_confidence` (not `Unclassified`) and people's corrections, each
/// stored template once, with the line it was stored with.
fn store_rows(path: &std::path::Path, min_confidence: f32) -> Result<(DataSet, Distilled)> {
    use logsieve_store::StoredMethod;
    let store = crate::common::open_store(path)?;
    let llm: Vec<_> = store
        .decisions_by(StoredMethod::Llm, min_confidence)?
        .into_iter()
        .filter(|d| d.label != logsieve_pipeline::UNCLASSIFIED)
        .collect();
    let feedback = store.decisions_by(StoredMethod::Feedback, 0.0)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let distilled = Distilled {
        store: name.clone(),
        llm_rows: llm.len(),
        feedback_rows: feedback.len(),
        llm_min_confidence: min_confidence,
    };
    let mut digest = Sha256::new();
    let rows: Vec<LabelledRow> = llm
        .into_iter()
        .chain(feedback)
        .enumerate()
        .map(|(i, d)| {
            digest.update(format!("{}\u{1f}{}\u{1f}{}\n", d.source, d.example, d.label));
            LabelledRow {
                line: i as u64 + 1,
                source: d.source,
                message: d.example,
                label: d.label,
            }
        })
        .collect();
    anyhow::ensure!(
        !rows.is_empty(),
        "store {}: no LLM answers at or above llm.min_confidence {min_confidence} and no corrections to learn from",
        path.display()
    );
    Ok((
        DataSet {
            name: format!("store:{name}"),
            sha256: hex::encode(digest.finalize()),
            rows,
            split: false,
        },
        distilled,
    ))
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    a.fine_tune.check_build()?;
    anyhow::ensure!(
        !a.fine_tune.fine_tune || matches!(a.kind, Kind::Hybrid),
        "--fine-tune trains the hybrid model; drop --kind linear"
    );
    let mut pipeline = cfg.pipeline()?;
    let files = a.labelled.read_each()?;
    let from_store = match &a.store {
        Some(p) => {
            anyhow::ensure!(
                matches!(a.kind, Kind::Hybrid),
                "--store teaches the hybrid model; drop --kind linear"
            );
            Some(store_rows(p, pipeline.config().llm.min_confidence)?)
        }
        None => None,
    };
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
        threshold: cfg.threshold.unwrap_or(match a.kind {
            Kind::Hybrid => DEFAULT_THRESHOLD,
            Kind::Linear => 0.5,
        }),
        input: a.input,
        examples_per_label: a.examples_per_label,
    };
    let t0 = Instant::now();
    let name = |p: &PathBuf| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let rows_total: usize = files.iter().map(|f| f.rows.len()).sum();
    let trained = match a.kind {
        Kind::Linear => {
            if files.len() != 1 {
                anyhow::bail!("--kind linear trains on one --data file, got {}", files.len());
            }
            let f = &files[0];
            train(&pipeline, &f.rows, &name(&f.path), &f.bytes, &settings)?
        }
        Kind::Hybrid => {
            let mut data: Vec<DataSet> = files
                .into_iter()
                .map(|f| DataSet {
                    name: name(&f.path),
                    sha256: hex::encode(Sha256::digest(&f.bytes)),
                    rows: f.rows,
                    split: true,
                })
                .collect();
            let mut distilled = None;
            if let Some((d, counts)) = from_store {
                data.push(d);
                distilled = Some(counts);
            }
            let mut fine_tuned = None;
            if a.fine_tune.fine_tune {
                let config = cfg.load()?;
                let pairs = fitted_texts(&pipeline, &data, &settings);
                let pairs: Vec<(&str, &str)> = pairs.iter().map(|(t, l)| (t.as_str(), l.as_str())).collect();
                let dir = a.out.join("encoder");
                let (info, sha) = crate::finetune::fine_tune(
                    &crate::finetune::base_dir(&config)?,
                    &pairs,
                    &a.fine_tune,
                    a.labelled.seed,
                    &dir,
                    "the encoder",
                )?;
                let encoder = logsieve_embed::MiniLm::load_verified(
                    &dir,
                    config.batch_options(),
                    logsieve_embed::Engine::default(),
                    &sha,
                )?;
                pipeline = crate::common::builder(config)?
                    .embedder(std::sync::Arc::new(encoder))
                    .build()?;
                fine_tuned = Some(info);
            }
            let mut t = train_hybrid(
                &pipeline,
                &data,
                &a.hybrid.labels()?,
                &settings,
                &a.hybrid.options(a.max_iterations),
            )?;
            t.artifact.training.distilled = distilled;
            t.artifact.embedding.fine_tuned = fine_tuned;
            t
        }
    };
    save(&trained, &a.out)?;
    let art = &trained.artifact;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&art.heldout)?);
    } else {
        println!(
            "{rows_total} rows; {} claimed by rules or routes; model fitted on {} rows ({}{}) in {:.1}s",
            trained.claimed,
            art.training.rows_fitted,
            art.training.fitted_on,
            art.training
                .units
                .map(|u| format!(", {u} distinct texts"))
                .unwrap_or_default(),
            t0.elapsed().as_secs_f64()
        );
        if let Some(f) = &art.embedding.fine_tuned {
            println!(
                "encoder fine-tuned on {} distinct texts ({} steps, {:.0}s, loss {:.3} -> {:.3}), weights sha256 {}",
                f.texts, f.steps, f.seconds, f.loss_first, f.loss_last, art.embedding.weights_sha256
            );
        }
        if let Some(d) = &art.training.distilled {
            println!(
                "from store {}: {} LLM answers (confidence >= {}) and {} corrections, all fitted",
                d.store, d.llm_rows, d.llm_min_confidence, d.feedback_rows
            );
        }
        if let Some(o) = &art.training.out_of_fold {
            println!(
                "calibration folds (sources held out): accuracy {:.3}, coverage {:.3} at {:.2} with selective accuracy {:.3}, ECE {:.3}",
                o.accuracy, o.coverage, o.threshold, o.selective_accuracy, o.ece
            );
        }
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
