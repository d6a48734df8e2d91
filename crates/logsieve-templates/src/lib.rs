//! logsieve-templates: the layer that makes the cost per log line fall as
//! logs repeat. Lines are masked ([`mask`]), grouped into templates by an
//! online Drain-family miner ([`miner`]), scored against ground truth
//! ([`eval`]: GA, PA, FGA), pure templates become regex rules ([`rules`]), and
//! [`output`] formats results for the CLI.
//!
//! ```
//! use logsieve_templates::{Masker, Miner, MinerConfig};
//!
//! let miner = Miner::new(MinerConfig::default(), Masker::builtin());
//! let a = miner.add("Connection from 10.0.0.1 closed");
//! let b = miner.add("Connection from 10.0.0.2 closed");
//! assert_eq!(a.template_id, b.template_id);
//! assert_eq!(&*b.template, "Connection from <IP> closed");
//! assert_eq!(miner.parameters(b.template_id, "Connection from 10.0.0.2 closed").unwrap(), ["10.0.0.2"]);
//! // Lines differing in one meaningful word stay apart.
//! assert_ne!(miner.add("VM Started").template_id, miner.add("VM Paused").template_id);
//! ```
//!
//! Template ids are stable: when templates merge (a word position turns
//! out to be a variable), the older id survives and [`Miner::resolve`] maps
//! the others to it; snapshots keep that mapping.

pub mod eval;
pub mod mask;
pub mod miner;
pub mod output;
pub mod rules;

pub use eval::{
    evaluate_loghub, grouping_accuracy, grouping_scores, normalize_template, parsing_accuracy, EvalError,
    Evaluation, GroupingScores, Labelled, HALF_A, HALF_B,
};
pub use mask::{MaskConfig, MaskError, MaskRule, Masker, BUILTIN_MASKING_TOML};
pub use miner::{
    extract_parameters, Inconsistency, Match, Miner, MinerConfig, Scratch, SnapshotError, TemplateInfo,
    SNAPSHOT_FORMAT_VERSION, WILDCARD,
};
pub use output::{templates_json, templates_table, LineAnnotator, LineRecord};
pub use rules::{mine_rules, mine_rules_with, rules_to_toml, MineOptions, MinedRule};

/// `NAME` of a typed placeholder `<NAME>`: a capital letter, then capitals,
/// digits or `_`.
pub(crate) fn is_placeholder_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_uppercase()
        && b.iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == b'_')
}

/// Whether a whole token is a variable: `<*>` or a typed placeholder.
pub(crate) fn is_placeholder_token(tok: &str) -> bool {
    match tok.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        Some("*") => true,
        Some(name) => is_placeholder_name(name),
        None => false,
    }
}
