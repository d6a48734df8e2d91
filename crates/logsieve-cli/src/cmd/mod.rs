//! One module per subcommand, each with its own `Args`.

mod bench;
mod classify;
mod eval;
mod explain;
mod feedback;
mod mine_rules;
mod model;
mod report;
mod serve;
mod templates;
pub mod train;

use clap::{Parser, Subcommand};

use crate::common::ConfigArgs;

/// logsieve: a functional label for every log line: rules, then
/// all-MiniLM-L6-v2 + logistic regression, then an LLM.
#[derive(Debug, Parser)]
#[command(name = "logsieve", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Label every row of a CSV, JSON-lines or text input.
    Classify(classify::Args),
    /// Train the model stage on labelled rows and write a classifier artifact.
    Train(train::Args),
    /// Score the whole cascade on labelled rows.
    Eval(eval::Args),
    /// Manage the embedding model files.
    #[command(subcommand)]
    Model(model::Command),
    /// Measure the stages' speed and memory.
    Bench(bench::Args),
    /// Mine log templates from an input and print them with counts (or one JSON object per line).
    Templates(templates::Args),
    /// Turn templates whose lines all carry one label into regex rules.
    MineRules(mine_rules::Args),
    /// Serve the cascade over HTTP (see crates/logsieve-server/README.md).
    Serve(serve::Args),
    /// Store people's corrections (a CSV with target_label) in the decision store.
    Feedback(feedback::Args),
    /// Classify one line and say why: the rule, the model's top labels and nearest examples, or the LLM's reason.
    Explain(explain::Args),
    /// The dashboard's charts for one file, as one self-contained HTML page.
    Report(report::Args),
}

/// Run a subcommand; the exit code on success.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Classify(a) => classify::run(&cli.config, a),
        Command::Train(a) => train::run(&cli.config, a),
        Command::Eval(a) => eval::run(&cli.config, a),
        Command::Model(c) => model::run(&cli.config, c),
        Command::Bench(a) => bench::run(&cli.config, a),
        Command::Templates(a) => templates::run(&cli.config, a),
        Command::MineRules(a) => mine_rules::run(&cli.config, a),
        Command::Serve(a) => serve::run(&cli.config, a),
        Command::Feedback(a) => feedback::run(&cli.config, a),
        Command::Explain(a) => explain::run(&cli.config, a),
        Command::Report(a) => report::run(&cli.config, a),
    }
}
