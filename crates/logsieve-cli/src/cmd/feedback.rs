//! `logsieve feedback FILE --store PATH`: people's corrections from a CSV
//! (`source`, `log_message`, `target_label`), written to the decision store.
//! Each applies to every line of its row's template (source + masked text)
//! from then on, in `classify --store` and `serve` alike. A row with an
//! unknown label refuses the whole file, naming its line.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use logsieve_pipeline::{Correction, FeedbackError};

use crate::common::{open_store, pipeline_with_store, read_labelled_file, ConfigArgs, StoreArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// CSV of corrections: `source`, `log_message`, `target_label` (other columns ignored).
    pub file: PathBuf,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let config = cfg.load()?;
    let path = a.store.path(&config).ok_or_else(|| {
        anyhow!("feedback needs a decision store to keep the corrections in: --store PATH (or [store] path in the config)")
    })?;
    let file = read_labelled_file(&a.file)?;
    let shown = a.file.display();
    let pipeline = pipeline_with_store(config, Some(open_store(&path)?))?;
    let corrections: Vec<Correction> = file
        .rows
        .iter()
        .map(|r| Correction {
            source: r.source.clone(),
            message: r.message.clone(),
            label: r.label.clone(),
        })
        .collect();
    let applied = pipeline.feedback(&corrections).map_err(|e| match e {
        FeedbackError::UnknownLabel { index, label, known } => anyhow!(
            "{shown}: line {} column target_label: unknown label `{label}` (known labels: {}); nothing was stored",
            file.rows[index].line,
            known.join(", ")
        ),
        FeedbackError::EmptyMessage { index } => anyhow!(
            "{shown}: line {} column log_message: empty log_message; nothing was stored",
            file.rows[index].line
        ),
        FeedbackError::Store(e) => anyhow!(e),
    })?;
    let templates: BTreeSet<(&str, &str)> = corrections
        .iter()
        .zip(&applied)
        .map(|(c, a)| (c.source.as_str(), a.template.as_str()))
        .collect();
    println!(
        "{} corrections ({} templates) stored in {}",
        applied.len(),
        templates.len(),
        path.display()
    );
    Ok(0)
}
