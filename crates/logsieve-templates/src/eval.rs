//! Scores of a template miner against ground truth, as Loghub-2.0 reports
//! them: grouping accuracy (GA: a line is right when its mined group holds
//! exactly the lines of its true event), the F1 of grouping (FGA: groups,
//! not lines, counted right or wrong) and parsing accuracy (PA: a line is
//! right when its template text is the true one). GA alone hides template
//! quality: a miner that groups well but keeps a variable as literal text
//! scores GA 1 and PA 0 on those lines.
//!
//! [`evaluate_loghub`] runs a miner over one loghub `X_structured.csv`
//! (`Content`, `EventId`, `EventTemplate`) and returns all three; the
//! ten loghub-2k systems are split into two fixed halves ([`HALF_A`],
//! [`HALF_B`]) so that a change tuned on one half is measured on the other.

use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;

use serde::Serialize;

use crate::mask::Masker;
use crate::miner::{Miner, MinerConfig};

/// The loghub-2k systems tuned on in one round and scored in the other:
/// the ten in alphabetical order (Android, Apache, BGL, HDFS, HPC, Hadoop,
/// OpenSSH, Spark, Windows, Zookeeper), odd places here and even places in
/// [`HALF_B`]. Fixed before any result was looked at.
pub const HALF_A: [&str; 5] = ["Android", "BGL", "HPC", "OpenSSH", "Windows"];
/// The other half of the loghub-2k systems (see [`HALF_A`]).
pub const HALF_B: [&str; 5] = ["Apache", "HDFS", "Hadoop", "Spark", "Zookeeper"];

/// Fraction of lines whose predicted group equals their true group, as sets
/// of lines. `predicted[i]` and `truth[i]` are the group labels of line `i`;
/// label values themselves do not matter, only which lines share one.
/// Returns 1.0 for no lines. Panics when the slices differ in length.
pub fn grouping_accuracy<P: Eq + Hash, T: Eq + Hash>(predicted: &[P], truth: &[T]) -> f64 {
    grouping_scores(predicted, truth).ga
}

/// GA and the group-level scores of one grouping against the truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GroupingScores {
    /// Grouping accuracy: the fraction of lines in a correct group.
    pub ga: f64,
    /// Correct groups over predicted groups.
    pub precision: f64,
    /// Correct groups over true groups.
    pub recall: f64,
    /// F1 of grouping (FGA): the harmonic mean of precision and recall.
    pub fga: f64,
    /// Groups predicted.
    pub predicted_groups: usize,
    /// Groups in the truth.
    pub true_groups: usize,
    /// Predicted groups whose lines are exactly one true group's.
    pub correct_groups: usize,
}

/// [`GroupingScores`] of `predicted` against `truth` (one label per line
/// each; equal labels mean one group). All scores are 1.0 for no lines.
/// Panics when the slices differ in length.
pub fn grouping_scores<P: Eq + Hash, T: Eq + Hash>(predicted: &[P], truth: &[T]) -> GroupingScores {
    assert_eq!(predicted.len(), truth.len(), "one prediction per line");
    if predicted.is_empty() {
        return GroupingScores {
            ga: 1.0,
            precision: 1.0,
            recall: 1.0,
            fga: 1.0,
            predicted_groups: 0,
            true_groups: 0,
            correct_groups: 0,
        };
    }
    // A predicted group is correct when all its lines carry one true label
    // and that label has no lines elsewhere: then the group sizes agree.
    let mut pred_size: HashMap<&P, usize> = HashMap::new();
    let mut truth_size: HashMap<&T, usize> = HashMap::new();
    let mut pair_size: HashMap<(&P, &T), usize> = HashMap::new();
    for (p, t) in predicted.iter().zip(truth) {
        *pred_size.entry(p).or_default() += 1;
        *truth_size.entry(t).or_default() += 1;
        *pair_size.entry((p, t)).or_default() += 1;
    }
    let (mut correct_lines, mut correct_groups) = (0, 0);
    for ((p, t), &n) in &pair_size {
        if pred_size[p] == n && truth_size[t] == n {
            correct_lines += n;
            correct_groups += 1;
        }
    }
    let precision = correct_groups as f64 / pred_size.len() as f64;
    let recall = correct_groups as f64 / truth_size.len() as f64;
    let fga = if correct_groups == 0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    GroupingScores {
        ga: correct_lines as f64 / predicted.len() as f64,
        precision,
        recall,
        fga,
        predicted_groups: pred_size.len(),
        true_groups: truth_size.len(),
        correct_groups,
    }
}

/// A template in the form PA compares: every typed variable (`<NUM>`,
/// `<IP>`) written `<*>`, then the template corrections Loghub-2.0 applies
/// before it compares templates (Khan et al., ICSE 2022), applied to both
/// sides: whitespace runs as one space (DS); a path-like piece (`/a/b`) as
/// `<*>` (PS); `true`, `false`, `null`, `root`, `admin` (BL, US) and
/// all-digit tokens (DG) as `<*>`; a token holding a variable glued to
/// other text (`blk_<*>`, `core.<*>`) as `<*>` (WV); `<*>.<*>` (DV),
/// `<*><*>` (CV), `#<*>#` and `<*>:<*>` as `<*>`.
pub fn normalize_template(template: &str) -> String {
    // Typed variables to `<*>`; whitespace runs to one space (DS).
    let mut t = String::with_capacity(template.len());
    for piece in crate::miner::template_pieces(template) {
        match piece {
            crate::miner::Piece::Var(_) => t.push_str("<*>"),
            crate::miner::Piece::Literal(text) => t.push_str(text),
        }
    }
    let t = t.split_whitespace().collect::<Vec<_>>().join(" ");
    const PATH_DELIMITERS: &[char] = &[
        ' ', ',', '!', ';', ':', '=', '|', '"', '\'', '[', ']', '(', ')', '{', '}',
    ];
    const MORE_DELIMITERS: &[char] = &['.', '-', '+', '@', '#', '$', '%', '&'];
    // PS: a piece between path delimiters that is one or more `/segment`.
    let t: String = split_keeping(&t, |c| PATH_DELIMITERS.contains(&c))
        .into_iter()
        .map(|p| {
            let path = p.len() > 1 && p.starts_with('/') && !p.ends_with('/') && !p.contains("//");
            if path {
                "<*>"
            } else {
                p
            }
        })
        .collect();
    // BL, US, DG, WV on tokens between all delimiters.
    let t: String = split_keeping(&t, |c| {
        PATH_DELIMITERS.contains(&c) || MORE_DELIMITERS.contains(&c)
    })
    .into_iter()
    .map(|tok| {
        let lower = tok.to_ascii_lowercase();
        let named = ["true", "false", "null", "root", "admin"].contains(&lower.as_str());
        let digits = !tok.is_empty() && tok.bytes().all(|b| b.is_ascii_digit());
        let glued = tok.contains("<*>") && !tok.contains('/') && !tok.contains(' ');
        if named || digits || glued {
            "<*>"
        } else {
            tok
        }
    })
    .collect();
    let mut t = replace_until_stable(t, "<*>.<*>", "<*>");
    for pattern in ["<*><*>", "#<*>#", "<*>:<*>"] {
        t = replace_until_stable(t, pattern, "<*>");
    }
    t
}

/// `s` cut before and after every delimiter character (each delimiter is
/// a piece of its own), so the pieces concatenate back to `s`.
fn split_keeping(s: &str, is_delimiter: impl Fn(char) -> bool) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if is_delimiter(c) {
            if start < i {
                pieces.push(&s[start..i]);
            }
            pieces.push(&s[i..i + c.len_utf8()]);
            start = i + c.len_utf8();
        }
    }
    if start < s.len() {
        pieces.push(&s[start..]);
    }
    pieces
}

fn replace_until_stable(mut s: String, from: &str, to: &str) -> String {
    while s.contains(from) {
        s = s.replace(from, to);
    }
    s
}

/// Parsing accuracy: the fraction of lines whose predicted template equals
/// the true one after [`normalize_template`] on both. 1.0 for no lines.
/// Panics when the slices differ in length.
pub fn parsing_accuracy<P: AsRef<str>, T: AsRef<str>>(predicted: &[P], truth: &[T]) -> f64 {
    assert_eq!(predicted.len(), truth.len(), "one template per line");
    if predicted.is_empty() {
        return 1.0;
    }
    let mut cache: HashMap<(&str, &str), bool> = HashMap::new();
    let mut right = 0;
    for (p, t) in predicted.iter().zip(truth) {
        let (p, t) = (p.as_ref(), t.as_ref());
        if *cache
            .entry((p, t))
            .or_insert_with(|| normalize_template(p) == normalize_template(t))
        {
            right += 1;
        }
    }
    right as f64 / predicted.len() as f64
}

/// The scores of one run of a miner over a labelled log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Lines scored.
    pub lines: usize,
    /// Grouping accuracy.
    pub ga: f64,
    /// Parsing accuracy (template text right, see [`parsing_accuracy`]).
    pub pa: f64,
    /// F1 of grouping.
    pub fga: f64,
    /// Templates mined.
    pub templates: usize,
    /// Events in the truth.
    pub events: usize,
}

/// Why a labelled log could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
}

/// A labelled log: each line's message, true event and true template.
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    pub contents: Vec<String>,
    pub events: Vec<String>,
    pub templates: Vec<String>,
}

impl Labelled {
    /// Reads a loghub `X_structured.csv`: the `Content`, `EventId` and
    /// `EventTemplate` columns, in file order.
    pub fn read_loghub(path: &Path) -> Result<Self, EvalError> {
        let file = path.display().to_string();
        let err = |message: String| EvalError::Read {
            file: file.clone(),
            message,
        };
        let mut rd = csv::Reader::from_path(path).map_err(|e| err(e.to_string()))?;
        let headers = rd.headers().map_err(|e| err(format!("line 1: {e}")))?.clone();
        let col = |name: &str| {
            headers.iter().position(|h| h == name).ok_or_else(|| {
                err(format!(
                    "line 1: the header has no `{name}` column (columns: {})",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })
        };
        let (c, e, t) = (col("Content")?, col("EventId")?, col("EventTemplate")?);
        let mut out = Labelled::default();
        for rec in rd.records() {
            let rec = rec.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line());
                err(format!("line {line}: {e}"))
            })?;
            let field = |i: usize, name: &str| {
                rec.get(i).map(str::to_string).ok_or_else(|| {
                    let line = rec.position().map_or(0, |p| p.line());
                    err(format!("line {line}: no `{name}` field"))
                })
            };
            out.contents.push(field(c, "Content")?);
            out.events.push(field(e, "EventId")?);
            out.templates.push(field(t, "EventTemplate")?);
        }
        Ok(out)
    }

    /// Mines the lines in order with a fresh miner and scores the result:
    /// each line's group and template are those of its template after the
    /// last line (as an offline parser reports them).
    pub fn evaluate(&self, config: &MinerConfig, masker: &Masker) -> Evaluation {
        let miner = Miner::new(config.clone(), masker.clone());
        let ids: Vec<u64> = self.contents.iter().map(|l| miner.add(l).template_id).collect();
        // With a cap an evicted template no longer resolves: such a line
        // keeps its own (stale) id and the text it was last given.
        let finals: Vec<(u64, String)> = ids
            .iter()
            .map(|&id| {
                let id = miner.resolve(id).unwrap_or(id);
                let text = miner.template(id).map(|t| t.template).unwrap_or_default();
                (id, text)
            })
            .collect();
        let groups: Vec<u64> = finals.iter().map(|f| f.0).collect();
        let texts: Vec<&str> = finals.iter().map(|f| f.1.as_str()).collect();
        let g = grouping_scores(&groups, &self.events);
        Evaluation {
            lines: self.contents.len(),
            ga: g.ga,
            pa: parsing_accuracy(&texts, &self.templates),
            fga: g.fga,
            templates: miner.len(),
            events: g.true_groups,
        }
    }
}

/// Reads `DIR/SYSTEM/SYSTEM_2k.log_structured.csv` and scores a fresh
/// miner on it.
pub fn evaluate_loghub(
    dir: &Path,
    system: &str,
    config: &MinerConfig,
    masker: &Masker,
) -> Result<Evaluation, EvalError> {
    let path = dir.join(system).join(format!("{system}_2k.log_structured.csv"));
    Ok(Labelled::read_loghub(&path)?.evaluate(config, masker))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_grouping_scores_one_whatever_the_labels() {
        assert_eq!(grouping_accuracy(&[7, 7, 9], &["a", "a", "b"]), 1.0);
        assert_eq!(grouping_accuracy::<u64, &str>(&[], &[]), 1.0);
        let s = grouping_scores(&[7, 7, 9], &["a", "a", "b"]);
        assert_eq!((s.fga, s.precision, s.recall), (1.0, 1.0, 1.0));
    }

    #[test]
    fn merging_two_events_makes_both_wrong() {
        assert_eq!(grouping_accuracy(&[1, 1, 1, 2], &["a", "a", "b", "c"]), 0.25);
    }

    #[test]
    fn splitting_an_event_makes_all_its_lines_wrong() {
        assert_eq!(grouping_accuracy(&[1, 1, 2, 3], &["a", "a", "a", "b"]), 0.25);
    }

    #[test]
    fn one_group_for_everything() {
        assert_eq!(grouping_accuracy(&[0, 0, 0, 0], &["a", "a", "a", "a"]), 1.0);
        assert_eq!(grouping_accuracy(&[0, 0, 0, 0], &["a", "a", "a", "b"]), 0.0);
    }

    #[test]
    fn fga_counts_groups_not_lines() {
        // A big event right and three small ones merged: GA is high, FGA
        // shows that three of the four events are wrong.
        let pred = [1, 1, 1, 1, 1, 1, 1, 2, 2, 2];
        let truth = ["a", "a", "a", "a", "a", "a", "a", "b", "c", "d"];
        let s = grouping_scores(&pred, &truth);
        assert_eq!(s.ga, 0.7);
        assert_eq!((s.correct_groups, s.predicted_groups, s.true_groups), (1, 2, 4));
        assert_eq!((s.precision, s.recall), (0.5, 0.25));
        assert!((s.fga - 2.0 * 0.5 * 0.25 / 0.75).abs() < 1e-12);
        assert_eq!(grouping_scores(&[1, 1], &["a", "b"]).fga, 0.0);
    }

    #[test]
    fn templates_compare_with_typed_variables_as_wildcards() {
        assert_eq!(
            normalize_template("Connection from <IP> port <NUM>"),
            "Connection from <*> port <*>"
        );
        // Spaces; a variable glued to text; digits; paths; `<*>.<*>`.
        assert_eq!(normalize_template("  a   <*>  b<NUM><HEX> "), "a <*> <*>");
        assert_eq!(normalize_template("Received blk_<NUM> size"), "Received <*> size");
        assert_eq!(normalize_template("src: /<IP> at /var/log/x"), "src: <*> at <*>");
        assert_eq!(
            normalize_template("v<*>.<*>.<*> user root t761"),
            "<*> user <*> t761"
        );
        assert_eq!(normalize_template("<*>:<*> and x=<NUM>"), "<*> and x=<*>");
        // `<` that is not a variable stays literal text.
        assert_eq!(normalize_template("a <b c> <x>"), "a <b c> <x>");
    }

    #[test]
    fn parsing_accuracy_needs_the_template_text_right() {
        let truth = [
            "Received block <*> of size <*>",
            "Received block <*> of size <*>",
            "x <*>",
        ];
        // Grouped right but a variable kept as literal text: PA counts it wrong.
        let pred = [
            "Received block <NUM> of size <SIZE>",
            "Received block <*> of <NUM>",
            "x y",
        ];
        assert!((parsing_accuracy(&pred, &truth) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(parsing_accuracy::<&str, &str>(&[], &[]), 1.0);
    }
}
