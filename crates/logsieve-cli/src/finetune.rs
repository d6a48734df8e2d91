//! `--fine-tune` for `train` and `eval --leave-one-out`: the encoder is
//! fine-tuned on the training rows' encoder texts (masked templates, each
//! distinct text once) before the classifier is fitted on its vectors.
//! Needs the `fine-tune` feature (candle's autograd); a build without it
//! keeps the flags and says how to build one that has it.

use std::path::Path;

use anyhow::Result;
use logsieve_linear::artifact::FineTuned;
use logsieve_pipeline::Config;

/// How to build a logsieve that can fine-tune.
pub const BUILD_HINT: &str =
    "this logsieve was built without fine-tuning; build it with `cargo build --release -p logsieve-cli --features fine-tune`";

/// The fine-tuning flags `train` and `eval` share.
#[derive(Debug, Clone, clap::Args)]
pub struct FineTuneArgs {
    /// Fine-tune the encoder on the training rows first (SetFit-style
    /// supervised contrastive loss on masked templates), then fit the
    /// classifier on the new vectors; `train` writes the encoder into
    /// `--out`/encoder. Needs a build with `--features fine-tune`.
    #[arg(long)]
    pub fine_tune: bool,
    /// Fine-tuning: passes over the distinct training texts.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Fine-tuning: AdamW's peak learning rate (linear warm-up over 10% of
    /// the steps, then linear decay).
    #[arg(long, default_value_t = 2e-5)]
    pub learning_rate: f64,
    /// Fine-tuning: labels drawn per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_labels: usize,
    /// Fine-tuning: distinct texts drawn per label and batch.
    #[arg(long, default_value_t = 4)]
    pub per_label: usize,
    /// Fine-tuning: temperature of the contrastive loss.
    #[arg(long, default_value_t = 0.1)]
    pub temperature: f64,
    /// Fine-tuning: texts are truncated to this many tokens.
    #[arg(long, default_value_t = 64)]
    pub fine_tune_max_tokens: usize,
    /// Fine-tuning: leave the embeddings and the first N of the encoder's
    /// layers as they are (the backward pass stops above them; all six
    /// layers of all-MiniLM-L6-v2 train with 0).
    #[arg(long, default_value_t = 0)]
    pub frozen_layers: usize,
    /// Fine-tuning: stop after this many steps (0: no cap).
    #[arg(long, default_value_t = 0)]
    pub max_steps: usize,
}

impl FineTuneArgs {
    /// Fail early, with the way out, when `--fine-tune` is asked of a build
    /// that cannot do it.
    pub fn check_build(&self) -> Result<()> {
        if self.fine_tune && !cfg!(feature = "fine-tune") {
            anyhow::bail!("--fine-tune: {BUILD_HINT}");
        }
        Ok(())
    }
}

/// The base encoder's directory: `--model-dir` (`model.embedding_dir`),
/// else the cache (fetched on first use).
pub fn base_dir(config: &Config) -> Result<std::path::PathBuf> {
    Ok(match &config.model.embedding_dir {
        Some(d) => logsieve_embed::ModelFiles::local(d)?.dir,
        None => logsieve_embed::fetch::ensure_model(&Default::default())?.dir,
    })
}

/// Fine-tune the encoder in `base` on `pairs` (encoder text, label) and
/// write it into `out`; `what` names the run on the progress bar. Returns
/// what the artifact records of it (its weights' sha256 is the second value).
#[cfg(feature = "fine-tune")]
pub fn fine_tune(
    base: &Path,
    pairs: &[(&str, &str)],
    a: &FineTuneArgs,
    seed: u64,
    out: &Path,
    what: &str,
) -> Result<(FineTuned, String)> {
    use anyhow::Context;
    use logsieve_embed::finetune::{distinct_texts, FineTuneOptions, FineTuner};

    let opts = FineTuneOptions {
        epochs: a.epochs,
        labels_per_batch: a.batch_labels,
        per_label: a.per_label,
        learning_rate: a.learning_rate,
        temperature: a.temperature,
        max_tokens: a.fine_tune_max_tokens,
        frozen_layers: a.frozen_layers,
        max_steps: (a.max_steps > 0).then_some(a.max_steps),
        seed,
        ..FineTuneOptions::default()
    };
    anyhow::ensure!(a.epochs >= 1, "--epochs must be at least 1");
    anyhow::ensure!(
        a.temperature > 0.0 && a.learning_rate > 0.0,
        "--temperature and --learning-rate must be positive"
    );
    let (texts, labels, _) = distinct_texts(pairs.iter().copied());
    let mut tuner =
        FineTuner::load(base, opts.clone()).with_context(|| format!("{what}: loading the base encoder"))?;
    let steps = tuner.plan(&labels).len() as u64;
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} steps, {elapsed} (eta {eta}) {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("fine-tuning {what} on {} distinct texts", texts.len()));
    // Off a terminal the bar is hidden: a line every tenth of the run instead.
    let quiet = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let every = (steps / 10).max(1) as usize;
    let t0 = std::time::Instant::now();
    let report = tuner
        .train(&texts, &labels, |s| {
            bar.set_position(s.step as u64);
            bar.set_message(format!("loss {:.3}", s.loss));
            if quiet && (s.step % every == 0 || s.step == s.steps) {
                eprintln!(
                    "fine-tuning {what}: step {}/{}, loss {:.3}, {:.0}s",
                    s.step,
                    s.steps,
                    s.loss,
                    t0.elapsed().as_secs_f64()
                );
            }
        })
        .with_context(|| format!("{what}: fine-tuning"))?;
    bar.finish_and_clear();
    let sha = tuner
        .save(out)
        .with_context(|| format!("{what}: writing the encoder"))?;
    eprintln!(
        "fine-tuned {what}: {} distinct texts, {} steps in {:.0}s, loss {:.3} -> {:.3}; encoder in {}",
        report.texts,
        report.steps,
        report.seconds,
        report.loss_first,
        report.loss_last,
        out.display()
    );
    let dir = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "encoder".into());
    Ok((
        FineTuned {
            dir,
            base_model_id: logsieve_embed::MODEL_ID.into(),
            base_weights_sha256: tuner.base_sha256().into(),
            texts: report.texts,
            epochs: report.epochs,
            steps: report.steps,
            batch: format!("{}x{}", a.batch_labels, a.per_label),
            learning_rate: a.learning_rate,
            temperature: a.temperature,
            max_tokens: tuner.options().max_tokens,
            frozen_layers: a.frozen_layers,
            seed,
            loss_first: report.loss_first,
            loss_last: report.loss_last,
            seconds: (report.seconds * 10.0).round() / 10.0,
        },
        sha,
    ))
}

/// Without the `fine-tune` feature: the error [`FineTuneArgs::check_build`] gives.
#[cfg(not(feature = "fine-tune"))]
pub fn fine_tune(
    _base: &Path,
    _pairs: &[(&str, &str)],
    _a: &FineTuneArgs,
    _seed: u64,
    _out: &Path,
    _what: &str,
) -> Result<(FineTuned, String)> {
    anyhow::bail!("--fine-tune: {BUILD_HINT}")
}
