//! Rule mining: templates whose lines all carry one label become anchored
//! regular-expression rules in logsieve's rules TOML format, so the cheap
//! first stage of the sieve learns what the expensive stages keep answering.
//!
//! Literal parts of a template are `regex::escape`d; each variable becomes
//! the narrowest of a ladder of character classes (`\d+`, `-?\d+`,
//! `[0-9a-fA-F]+`, `\S+`, ...) that covers every value it took, keeping a
//! prefix or suffix all values share (`User\d+`). Every rule is checked
//! against all rows: it must match the lines it was mined from and, for
//! purity 1.0, no line with another label.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::mask::Masker;
use crate::miner::{extract_parameters, template_pieces, template_regex_with, Miner, MinerConfig, Piece};

/// What counts as a rule worth emitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MineOptions {
    /// Least number of lines of the label a rule must match. Default 5.
    #[serde(default = "default_min_support")]
    pub min_support: usize,
    /// Least fraction of the lines a rule matches that carry its label.
    /// Default 1.0: a rule never matches a line of another label.
    #[serde(default = "default_min_purity")]
    pub min_purity: f64,
    /// Rule ids are `<id_prefix>-0001`, ... Default `mined`.
    #[serde(default = "default_id_prefix")]
    pub id_prefix: String,
    /// Restrict a rule to the sources of the lines it was mined from, when
    /// there are at most this many (0: never restrict). Default 0.
    #[serde(default)]
    pub max_sources: usize,
    /// The template miner used to group lines.
    #[serde(default)]
    pub miner: MinerConfig,
}

fn default_min_support() -> usize {
    5
}
fn default_min_purity() -> f64 {
    1.0
}
fn default_id_prefix() -> String {
    "mined".into()
}

impl Default for MineOptions {
    fn default() -> Self {
        MineOptions {
            min_support: default_min_support(),
            min_purity: default_min_purity(),
            id_prefix: default_id_prefix(),
            max_sources: 0,
            miner: MinerConfig::default(),
        }
    }
}

/// A mined rule, ready for [`rules_to_toml`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinedRule {
    pub id: String,
    /// Anchored, case-sensitive Rust regex.
    pub pattern: String,
    pub label: String,
    /// Lines of `label` the pattern matches in the mining data.
    pub support: usize,
    /// `support` over all lines the pattern matches.
    pub purity: f64,
    /// The template the rule was made from.
    pub template: String,
    /// Sources the rule is restricted to; empty for all.
    pub sources: Vec<String>,
}

/// Mines rules from `(source, message, label)` rows. Rules come out in
/// order of support, largest first.
pub fn mine_rules(rows: &[(&str, &str, &str)], opts: &MineOptions) -> Vec<MinedRule> {
    mine_rules_with(rows, opts, Masker::builtin())
}

/// [`mine_rules`] with these masking rules (the configuration's) instead of
/// the built-in ones.
pub fn mine_rules_with(rows: &[(&str, &str, &str)], opts: &MineOptions, masker: Masker) -> Vec<MinedRule> {
    let miner = Miner::new(opts.miner.clone(), masker);
    let ids: Vec<u64> = rows
        .iter()
        .map(|(_, msg, _)| miner.add(msg).template_id)
        .collect();
    let mut groups: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        let id = miner.resolve(*id).unwrap_or(*id);
        groups.entry(id).or_default().push(i);
    }

    let mut candidates = Vec::new();
    for (id, members) in &groups {
        let mut labels: HashMap<&str, usize> = HashMap::new();
        for &i in members {
            *labels.entry(rows[i].2).or_default() += 1;
        }
        let (label, n) = labels
            .iter()
            .max_by_key(|(l, n)| (**n, std::cmp::Reverse(**l)))
            .map(|(l, n)| (*l, *n))
            .expect("groups are not empty");
        if n < opts.min_support || (n as f64) < opts.min_purity * members.len() as f64 {
            continue;
        }
        let template = miner.template(*id).expect("group ids exist").template;
        let lines: Vec<&str> = members
            .iter()
            .filter(|&&i| rows[i].2 == label)
            .map(|&i| rows[i].1)
            .collect();
        if let Some(pattern) = pattern_for(&template, &lines) {
            candidates.push((template, pattern, label.to_string()));
        }
    }

    // Check each pattern against every row: what it matches decides its
    // support and purity, not what the miner grouped.
    let mut rules = Vec::new();
    for (template, pattern, label) in candidates {
        let Ok(re) = regex::Regex::new(&pattern) else {
            continue;
        };
        let mut support = 0;
        let mut total = 0;
        let mut sources = BTreeSet::new();
        for (source, message, l) in rows {
            if re.is_match(message) {
                total += 1;
                if *l == label {
                    support += 1;
                    sources.insert(source.to_string());
                }
            }
        }
        let purity = support as f64 / total.max(1) as f64;
        if support < opts.min_support || purity < opts.min_purity {
            continue;
        }
        let sources = if opts.max_sources > 0 && sources.len() <= opts.max_sources {
            sources.into_iter().collect()
        } else {
            Vec::new()
        };
        rules.push(MinedRule {
            id: String::new(),
            pattern,
            label,
            support,
            purity,
            template,
            sources,
        });
    }
    rules.sort_by(|a, b| b.support.cmp(&a.support).then_with(|| a.pattern.cmp(&b.pattern)));
    for (i, r) in rules.iter_mut().enumerate() {
        r.id = format!("{}-{:04}", opts.id_prefix, i + 1);
    }
    rules
}

/// An anchored regex for `template` covering all `lines`, or `None` when
/// a line does not fit the template.
fn pattern_for(template: &str, lines: &[&str]) -> Option<String> {
    let nvars = template_pieces(template)
        .iter()
        .filter(|p| matches!(p, Piece::Var(_)))
        .count();
    let mut values: Vec<Vec<String>> = vec![Vec::new(); nvars];
    for line in lines {
        let params = extract_parameters(template, line)?;
        for (k, v) in params.into_iter().enumerate() {
            values[k].push(v);
        }
    }
    let mut body = String::from(r"^\s*");
    body.push_str(&template_regex_with(template, false, |k| {
        value_pattern(&values[k]).into()
    }));
    body.push_str(r"\s*$");
    Some(body)
}

/// The narrowest pattern covering every value: a shared non-digit prefix
/// and suffix kept literally, the rest from a ladder of classes.
fn value_pattern(values: &[String]) -> String {
    let first = values.first().map(String::as_str).unwrap_or("");
    let mut prefix = values.iter().fold(first, |p, v| common_prefix(p, v));
    // Keep only the leading non-digit part: `User` of User12/User7.
    if let Some(i) = prefix.find(|c: char| c.is_ascii_digit()) {
        prefix = &prefix[..i];
    }
    let rests: Vec<&str> = values.iter().map(|v| &v[prefix.len()..]).collect();
    let rfirst = rests.first().copied().unwrap_or("");
    let mut suffix = rests.iter().fold(rfirst, |s, v| common_suffix(s, v));
    if let Some(i) = suffix.rfind(|c: char| c.is_ascii_digit()) {
        suffix = &suffix[i + 1..];
    }
    // Leave at least one character to the class in every value.
    if rests.iter().any(|r| r.len() <= suffix.len()) {
        suffix = "";
    }
    let cores: Vec<&str> = rests.iter().map(|r| &r[..r.len() - suffix.len()]).collect();
    format!(
        "{}{}{}",
        regex::escape(prefix),
        multi_token_class(&cores).unwrap_or_else(|| class_for(&cores)),
        regex::escape(suffix)
    )
}

/// For values that all span the same number (2 or more) of
/// whitespace-separated tokens, such as two hex ids that masking collapsed
/// into one variable: one class per token position, joined by `\s+`.
/// Precise where `.+?` would not be, and cheaper for a `RegexSet` to run.
fn multi_token_class(values: &[&str]) -> Option<String> {
    let split: Vec<Vec<&str>> = values.iter().map(|v| v.split_whitespace().collect()).collect();
    let n = split.first()?.len();
    if n < 2 || split.iter().any(|t| t.len() != n) || values.iter().any(|v| v.trim() != *v) {
        return None;
    }
    let classes: Vec<String> = (0..n)
        .map(|k| class_for(&split.iter().map(|t| t[k]).collect::<Vec<_>>()))
        .collect();
    Some(classes.join(r"\s+"))
}

fn common_prefix<'a>(a: &'a str, b: &str) -> &'a str {
    let n = a
        .char_indices()
        .zip(b.chars())
        .take_while(|((_, x), y)| x == y)
        .last()
        .map_or(0, |((i, x), _)| i + x.len_utf8());
    &a[..n]
}

fn common_suffix<'a>(a: &'a str, b: &str) -> &'a str {
    let n: usize = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum();
    &a[a.len() - n..]
}

/// The first class of the ladder that covers all values.
fn class_for(values: &[&str]) -> String {
    const LADDER: [(&str, &str); 9] = [
        (r"^\d+$", r"\d+"),
        (r"^-?\d+$", r"-?\d+"),
        (r"^-?\d+(?:\.\d+)*$", r"-?\d+(?:\.\d+)*"),
        (r"^[0-9a-f]+$", r"[0-9a-f]+"),
        (r"^[0-9a-fA-F]+$", r"[0-9a-fA-F]+"),
        (r"^0[xX][0-9a-fA-F]+$", r"0[xX][0-9a-fA-F]+"),
        (r"^[0-9a-fA-F.:]+$", r"[0-9a-fA-F.:]+"),
        (r"^[A-Za-z0-9_.-]+$", r"[A-Za-z0-9_.-]+"),
        (r"^\S+$", r"\S+"),
    ];
    let non_empty: Vec<&str> = values.iter().copied().filter(|v| !v.is_empty()).collect();
    let optional = non_empty.len() < values.len();
    if non_empty.is_empty() {
        return String::new();
    }
    for (test, class) in LADDER {
        let re = regex::Regex::new(test).expect("ladder patterns are valid");
        if non_empty.iter().all(|v| re.is_match(v)) {
            return if optional {
                format!("(?:{class})?")
            } else {
                class.to_string()
            };
        }
    }
    if optional {
        r".*?".into()
    } else {
        r".+?".into()
    }
}

/// Writes rules in logsieve's rules TOML format (`[[rule]]` tables), each
/// with its support, purity and template in a comment. Mined rules are
/// case-sensitive.
pub fn rules_to_toml(rules: &[MinedRule]) -> String {
    let mut out = String::from("# Rules mined by logsieve-templates from labelled lines.\n");
    for r in rules {
        out.push('\n');
        out.push_str(&format!(
            "# support {}, purity {:.3}, template: {}\n",
            r.support,
            r.purity,
            r.template.replace('\n', " ")
        ));
        out.push_str("[[rule]]\n");
        out.push_str(&format!("id = {}\n", toml_string(&r.id)));
        out.push_str(&format!("pattern = {}\n", toml_string(&r.pattern)));
        out.push_str(&format!("label = {}\n", toml_string(&r.label)));
        if !r.sources.is_empty() {
            let list: Vec<String> = r.sources.iter().map(|s| toml_string(s)).collect();
            out.push_str(&format!("sources = [{}]\n", list.join(", ")));
        }
        out.push_str("case_insensitive = false\n");
    }
    out
}

/// A TOML string: a literal `'...'` when possible (regexes stay readable),
/// else a basic string with escapes.
fn toml_string(s: &str) -> String {
    if !s.contains(['\'', '\n', '\r']) && !s.chars().any(char::is_control) {
        format!("'{s}'")
    } else {
        toml::Value::String(s.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<(&'static str, &'static str, &'static str)> {
        vec![
            ("ModernCRM", "User User12 logged in.", "User Action"),
            ("ModernCRM", "User User7 logged in.", "User Action"),
            ("ModernHR", "User User301 logged in.", "User Action"),
            ("ModernCRM", "User User44 logged out.", "User Action"),
            ("ModernCRM", "User User45 logged out.", "User Action"),
            ("ModernCRM", "User User46 logged out.", "User Action"),
            (
                "BillingSystem",
                "IP 192.168.1.10 blocked due to potential attack",
                "Security Alert",
            ),
            (
                "BillingSystem",
                "IP 10.0.0.7 blocked due to potential attack",
                "Security Alert",
            ),
            (
                "BillingSystem",
                "IP 172.16.5.4 blocked due to potential attack",
                "Security Alert",
            ),
            (
                "ModernCRM",
                "Backup completed successfully.",
                "System Notification",
            ),
            (
                "ModernCRM",
                "Backup completed successfully.",
                "System Notification",
            ),
            (
                "ModernCRM",
                "Backup completed successfully.",
                "System Notification",
            ),
            ("ModernCRM", "Disk usage at 91% on node-3", "Resource Usage"),
            ("ModernCRM", "Disk usage at 95% on node-12", "Resource Usage"),
            ("ModernCRM", "Disk usage at 97% on node-4", "Critical Error"),
            ("ModernCRM", "Disk usage at 99% on node-9", "Critical Error"),
        ]
    }

    fn opts() -> MineOptions {
        MineOptions {
            min_support: 3,
            ..Default::default()
        }
    }

    #[test]
    fn pure_templates_become_precise_anchored_rules() {
        let rules = mine_rules(&rows(), &opts());
        let patterns: Vec<(&str, &str, usize)> = rules
            .iter()
            .map(|r| (r.pattern.as_str(), r.label.as_str(), r.support))
            .collect();
        assert!(
            patterns.contains(&(r"^\s*User\s+User\d+\s+logged\s+in\.\s*$", "User Action", 3)),
            "{patterns:#?}"
        );
        assert!(
            patterns.contains(&(r"^\s*User\s+User\d+\s+logged\s+out\.\s*$", "User Action", 3)),
            "{patterns:#?}"
        );
        assert!(patterns.iter().any(|p| p.1 == "Security Alert" && p.2 == 3));
        assert!(patterns.iter().any(|p| p.1 == "System Notification" && p.2 == 3));
        // Disk usage lines carry two labels: no rule.
        assert!(rules.iter().all(|r| !r.pattern.contains("Disk")), "{patterns:#?}");
        assert_eq!(rules[0].id, "mined-0001");
    }

    #[test]
    fn support_below_the_minimum_gives_no_rule() {
        let rules = mine_rules(
            &rows(),
            &MineOptions {
                min_support: 4,
                ..Default::default()
            },
        );
        assert!(rules.is_empty(), "{rules:#?}");
    }

    #[test]
    fn emitted_toml_round_trips_through_the_rules_stage() {
        let data = rows();
        let rules = mine_rules(&data, &opts());
        let text = rules_to_toml(&rules);
        assert!(text.contains("# support 3"), "{text}");
        let compiled = logsieve_rules::Rules::from_toml(&text, "mined.toml").expect("valid rules TOML");
        assert_eq!(compiled.len(), rules.len());
        for (source, message, label) in &data {
            match compiled.classify(source, message) {
                Some(m) => assert_eq!(m.label, *label, "{message} matched {}", m.id),
                None => assert!(message.starts_with("Disk"), "{message} unmatched"),
            }
        }
        assert!(
            compiled.classify("x", "user User12 logged in.").is_none(),
            "mined rules are case-sensitive"
        );
        assert!(
            compiled.classify("x", "User Bob logged in.").is_none(),
            "variables keep their class"
        );
    }

    #[test]
    fn sources_are_bound_when_asked() {
        let rules = mine_rules(
            &rows(),
            &MineOptions {
                max_sources: 1,
                ..opts()
            },
        );
        let ip = rules.iter().find(|r| r.label == "Security Alert").unwrap();
        assert_eq!(ip.sources, ["BillingSystem"]);
        let login = rules.iter().find(|r| r.pattern.contains("in\\.")).unwrap();
        assert!(login.sources.is_empty(), "two sources > max_sources");
        let text = rules_to_toml(&rules);
        assert!(text.contains("sources = ['BillingSystem']"), "{text}");
    }

    #[test]
    fn value_classes_follow_the_values() {
        let v = |xs: &[&str]| value_pattern(&xs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(v(&["12", "7"]), r"\d+");
        assert_eq!(v(&["-12", "7"]), r"-?\d+");
        assert_eq!(v(&["9.2", "10"]), r"-?\d+(?:\.\d+)*");
        assert_eq!(v(&["0x1f", "0x00e462c0"]), r"0[xX][0-9a-fA-F]+");
        assert_eq!(v(&["blk_-1", "blk_22"]), r"blk_-?\d+");
        assert_eq!(v(&["12ms", "7ms"]), r"\d+ms");
        assert_eq!(v(&["10.0.0.1:80", "::1"]), r"[0-9a-fA-F.:]+");
        assert_eq!(v(&["a b", "c"]), r".+?");
        assert_eq!(v(&["1f2e 33", "ab 7"]), r"[0-9a-f]+\s+\d+");
        assert_eq!(v(&["a b", "c d e"]), r".+?");
    }
}
