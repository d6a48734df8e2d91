//! `logsieve mine-rules`: templates whose lines all carry one label become
//! regex rules (literal parts escaped, variables as character classes),
//! mined on the training part of the split and scored on the held-out part,
//! with the configuration's masking rules.

use std::path::PathBuf;

use anyhow::{Context, Result};
use logsieve_linear::split::stratified_split;
use logsieve_rules::Rules;
use logsieve_templates::{mine_rules_with, rules_to_toml, MineOptions};

use crate::common::{ConfigArgs, LabelledArgs};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub labelled: LabelledArgs,
    /// Where to write the rules (logsieve rules TOML).
    #[arg(long)]
    pub out: PathBuf,
    /// Least number of lines a template needs to become a rule.
    #[arg(long, default_value_t = 5)]
    pub min_support: usize,
    /// Least share of a template's lines that carry its label.
    #[arg(long, default_value_t = 1.0)]
    pub min_purity: f64,
    /// Mine on every row (no held-out report).
    #[arg(long)]
    pub all: bool,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    // Templates are mined on the text the configuration masks.
    let masker = crate::common::masker(&cfg.load()?)?;
    let rows = a.labelled.read()?;
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let is_test = if a.all {
        vec![false; rows.len()]
    } else {
        stratified_split(&labels, a.labelled.test_fraction, a.labelled.seed)
    };
    let train: Vec<(&str, &str, &str)> = rows
        .iter()
        .zip(&is_test)
        .filter(|(_, t)| !**t)
        .map(|(r, _)| (r.source.as_str(), r.message.as_str(), r.label.as_str()))
        .collect();
    let opts = MineOptions {
        min_support: a.min_support,
        min_purity: a.min_purity,
        ..MineOptions::default()
    };
    let mined = mine_rules_with(&train, &opts, masker);
    let toml = rules_to_toml(&mined);
    std::fs::write(&a.out, &toml).with_context(|| format!("{}: cannot write", a.out.display()))?;
    // The file must load as logsieve rules.
    let rules = Rules::from_toml(&toml, &a.out.display().to_string())?;
    let covered_train: usize = mined.iter().map(|r| r.support).sum();
    println!(
        "{} rules from {} training rows (support >= {}, purity >= {}); they cover {} training rows",
        rules.len(),
        train.len(),
        a.min_support,
        a.min_purity,
        covered_train
    );
    if !a.all {
        let test: Vec<_> = rows
            .iter()
            .zip(&is_test)
            .filter(|(_, t)| **t)
            .map(|(r, _)| r)
            .collect();
        let mut matched = 0;
        let mut correct = 0;
        for r in &test {
            if let Some(m) = rules.classify(&r.source, &r.message) {
                matched += 1;
                correct += (m.label == r.label) as usize;
            }
        }
        println!(
            "held-out {:.0}% ({} rows): coverage {:.4} ({matched} rows), precision {:.4}",
            a.labelled.test_fraction * 100.0,
            test.len(),
            matched as f64 / test.len().max(1) as f64,
            if matched == 0 {
                0.0
            } else {
                correct as f64 / matched as f64
            },
        );
    }
    println!("wrote {}", a.out.display());
    Ok(0)
}
