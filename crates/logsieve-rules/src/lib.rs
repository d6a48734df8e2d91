//! The rules stage: the first, deterministic mesh of the sieve.
//!
//! Rules live in a TOML file (`[[rule]]` tables with `id`, `pattern`, `label`,
//! optional `sources` and `priority`). They are compiled once into a single
//! [`regex::RegexSet`], so one pass over a line finds every rule that matches;
//! the highest-priority match wins (ties go to the rule written first).

use std::collections::HashMap;
use std::path::Path;

use regex::{RegexSet, RegexSetBuilder};
use serde::Deserialize;

/// The default rules shipped with logsieve (see `rules/default.toml`).
pub const DEFAULT_RULES_TOML: &str = include_str!("../../../rules/default.toml");
const DEFAULT_RULES_NAME: &str = "<built-in rules/default.toml>";

/// Why a rules file could not be loaded. Each variant names the file and,
/// where it applies, the rule and its line in the file.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: invalid TOML: {message}")]
    Toml { file: String, message: String },
    #[error("{file}:{line}: rule `{id}`: invalid pattern: {message}")]
    Pattern {
        file: String,
        id: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: rule `{id}`: {message}")]
    Invalid {
        file: String,
        id: String,
        line: usize,
        message: String,
    },
}

/// One rule as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Stable identifier, reported in the output's `detail` column.
    pub id: String,
    /// A regular expression (Rust `regex` syntax); matched anywhere in the line.
    pub pattern: String,
    /// The label given to a matching line.
    pub label: String,
    /// Only lines from these sources are considered; empty means every source.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Higher wins when several rules match. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// Match case-insensitively (default true, as the reference systems do).
    #[serde(default = "yes")]
    pub case_insensitive: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

/// A rule that matched a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch<'a> {
    pub id: &'a str,
    pub label: &'a str,
}

/// The compiled rule set.
#[derive(Debug, Clone)]
pub struct Rules {
    specs: Vec<RuleSpec>,
    set: RegexSet,
    /// Rule indices in the order they are tried: priority descending, then file order.
    order: Vec<usize>,
}

impl Rules {
    /// The built-in default rules.
    pub fn builtin() -> Self {
        Self::from_toml(DEFAULT_RULES_TOML, DEFAULT_RULES_NAME)
            .expect("built-in rules are valid (checked by tests)")
    }

    /// Load rules from a TOML file.
    pub fn from_path(path: &Path) -> Result<Self, RulesError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_toml(&text, &file)
    }

    /// Parse rules from TOML text; `file` names the source in errors.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, RulesError> {
        let parsed: RulesFile = toml::from_str(text).map_err(|e| RulesError::Toml {
            file: file.to_string(),
            message: match e.span() {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    format!("line {line} column {col}: {}", e.message())
                }
                None => e.message().to_string(),
            },
        })?;
        Self::from_specs(parsed.rules, Some((text, file)))
    }

    /// Build from rule specs (e.g. mined rules). `origin` is the TOML text and
    /// file name, used to report the line of a faulty rule.
    pub fn from_specs(specs: Vec<RuleSpec>, origin: Option<(&str, &str)>) -> Result<Self, RulesError> {
        let file = origin.map(|o| o.1).unwrap_or("<rules>").to_string();
        let line_of = |id: &str| origin.map(|(text, _)| rule_line(text, id)).unwrap_or(0);
        let mut seen = HashMap::new();
        let mut patterns = Vec::with_capacity(specs.len());
        for spec in &specs {
            if seen.insert(spec.id.clone(), ()).is_some() {
                return Err(RulesError::Invalid {
                    file,
                    line: line_of(&spec.id),
                    id: spec.id.clone(),
                    message: "duplicate rule id".into(),
                });
            }
            if spec.label.trim().is_empty() {
                return Err(RulesError::Invalid {
                    file,
                    line: line_of(&spec.id),
                    id: spec.id.clone(),
                    message: "empty label".into(),
                });
            }
            // Compile each pattern alone first, so an error names its rule.
            let pattern = if spec.case_insensitive {
                format!("(?i:{})", spec.pattern)
            } else {
                spec.pattern.clone()
            };
            if let Err(e) = regex::RegexBuilder::new(&spec.pattern).build() {
                return Err(RulesError::Pattern {
                    file,
                    line: line_of(&spec.id),
                    id: spec.id.clone(),
                    message: e.to_string(),
                });
            }
            patterns.push(pattern);
        }
        let set = RegexSetBuilder::new(&patterns)
            .size_limit(64 << 20)
            .build()
            .map_err(|e| RulesError::Invalid {
                file: file.clone(),
                line: 0,
                id: "*".into(),
                message: format!("rule set too large to compile: {e}"),
            })?;
        let mut order: Vec<usize> = (0..specs.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(specs[i].priority), i));
        Ok(Self { specs, set, order })
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn specs(&self) -> &[RuleSpec] {
        &self.specs
    }

    /// The winning rule for a line from `source`, if any.
    pub fn classify(&self, source: &str, message: &str) -> Option<RuleMatch<'_>> {
        let matches = self.set.matches(message);
        if !matches.matched_any() {
            return None;
        }
        self.order
            .iter()
            .copied()
            .filter(|&i| matches.matched(i))
            .map(|i| &self.specs[i])
            .find(|s| s.sources.is_empty() || s.sources.iter().any(|x| x == source))
            .map(|s| RuleMatch {
                id: &s.id,
                label: &s.label,
            })
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|p| p + 1).unwrap_or(0) + 1;
    (line, col)
}

/// The line of `id = "<id>"` in the TOML text (1-based), or 0 when not found.
fn rule_line(text: &str, id: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim();
            l.starts_with("id") && l.contains(&format!("\"{id}\"")) || l.contains(&format!("'{id}'"))
        })
        .map(|p| p + 1)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(src: &str) -> Rules {
        Rules::from_toml(src, "test.toml").unwrap()
    }

    #[test]
    fn builtin_rules_cover_the_reference_patterns() {
        let r = Rules::builtin();
        let cases = [
            ("User User101 logged in.", "User Action"),
            ("User User7 logged out.", "User Action"),
            ("User 12345 logged in.", "User Action"),
            ("Backup started at 2025-05-14 07:06:55.", "System Notification"),
            ("Backup ended at 2025-05-14 07:06:55.", "System Notification"),
            ("Backup completed successfully.", "System Notification"),
            ("System updated to version 3.2.1.", "System Notification"),
            ("Disk cleanup completed successfully.", "System Notification"),
            ("System reboot initiated by user User243.", "System Notification"),
            ("Account with ID 5351 created by User634.", "User Action"),
            ("Admin privilege escalation alert for user 9429", "Security Alert"),
            ("User 2049 escalated privileges to admin level", "Security Alert"),
            (
                "Elevation of admin privileges detected for user 1234",
                "Security Alert",
            ),
        ];
        for (line, want) in cases {
            let got = r.classify("ModernCRM", line).map(|m| m.label);
            assert_eq!(got, Some(want), "{line}");
        }
        assert_eq!(
            r.classify("x", "Email service experiencing issues with sending"),
            None
        );
    }

    #[test]
    fn highest_priority_wins_then_file_order() {
        let r = rules(
            r#"
[[rule]]
id = "low"
pattern = "disk"
label = "Resource Usage"
[[rule]]
id = "high"
pattern = "disk full"
label = "Critical Error"
priority = 10
[[rule]]
id = "low2"
pattern = "full"
label = "Other"
"#,
        );
        assert_eq!(r.classify("s", "disk full now").unwrap().id, "high");
        assert_eq!(r.classify("s", "disk almost empty").unwrap().id, "low");
        assert_eq!(r.classify("s", "tank full").unwrap().id, "low2");
    }

    #[test]
    fn source_scope_limits_a_rule() {
        let r = rules(
            r#"
[[rule]]
id = "crm-only"
pattern = "ticket"
label = "Workflow Error"
sources = ["LegacyCRM"]
"#,
        );
        assert!(r.classify("LegacyCRM", "ticket 5 failed").is_some());
        assert!(r.classify("ModernHR", "ticket 5 failed").is_none());
    }

    #[test]
    fn bad_pattern_names_rule_and_line() {
        let err = Rules::from_toml(
            "[[rule]]\nid = \"ok\"\npattern = \"a\"\nlabel = \"X\"\n\n[[rule]]\nid = \"broken\"\npattern = \"(unclosed\"\nlabel = \"X\"\n",
            "my.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("my.toml:7: rule `broken`: invalid pattern"),
            "{err}"
        );
    }

    #[test]
    fn unknown_field_is_rejected_with_position() {
        let err = Rules::from_toml(
            "[[rule]]\nid = \"a\"\npattern = \"a\"\nlabel = \"X\"\nlabell = \"Y\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("f.toml: invalid TOML: line 5"), "{err}");
        assert!(err.contains("labell"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_rejected() {
        let err = Rules::from_toml(
            "[[rule]]\nid = \"a\"\npattern = \"a\"\nlabel = \"X\"\n[[rule]]\nid = \"a\"\npattern = \"b\"\nlabel = \"X\"\n",
            "f.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("duplicate rule id"), "{err}");
    }

    #[test]
    fn case_sensitivity_is_per_rule() {
        let r = rules("[[rule]]\nid = \"a\"\npattern = \"ERROR\"\nlabel = \"X\"\ncase_insensitive = false\n");
        assert!(r.classify("s", "ERROR here").is_some());
        assert!(r.classify("s", "error here").is_none());
    }
}
