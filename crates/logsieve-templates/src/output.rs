//! Output helpers for the CLI's `templates` command: one JSON object per
//! line (`--per-line`), and the list of templates with their counts as a
//! text table or JSON.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::miner::{template_regex, Miner, TemplateInfo};

/// What `--per-line` prints for one line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineRecord {
    /// 1-based line number in the input.
    pub line: u64,
    pub template_id: u64,
    pub template: String,
    /// True when this line created the template.
    pub is_new: bool,
    /// The raw text under each variable of the template, in order.
    pub parameters: Vec<String>,
}

/// Adds lines to a miner and describes each one, caching one compiled
/// parameter regex per template text.
pub struct LineAnnotator<'m> {
    miner: &'m Miner,
    regexes: HashMap<Arc<str>, Option<regex::Regex>>,
    line_no: u64,
}

impl<'m> LineAnnotator<'m> {
    pub fn new(miner: &'m Miner) -> Self {
        LineAnnotator {
            miner,
            regexes: HashMap::new(),
            line_no: 0,
        }
    }

    /// Adds the next line of the input and describes it.
    pub fn annotate(&mut self, line: &str) -> LineRecord {
        self.line_no += 1;
        let m = self.miner.add(line);
        // One regex per template: with a cap, no more than the templates kept
        // (twice over, so a working set at the cap does not thrash).
        let limit = match self.miner.config().max_templates {
            0 => 100_000,
            cap => cap.saturating_mul(2).clamp(1024, 100_000),
        };
        if self.regexes.len() > limit {
            self.regexes.clear();
        }
        let re = self
            .regexes
            .entry(m.template.clone())
            .or_insert_with(|| regex::Regex::new(&template_regex(&m.template, "(.*?)", true)).ok());
        let parameters = re
            .as_ref()
            .and_then(|re| re.captures(line.trim()))
            .map(|caps| {
                caps.iter()
                    .skip(1)
                    .map(|g| g.map_or(String::new(), |g| g.as_str().to_string()))
                    .collect()
            })
            .unwrap_or_default();
        LineRecord {
            line: self.line_no,
            template_id: m.template_id,
            template: m.template.to_string(),
            is_new: m.is_new,
            parameters,
        }
    }

    /// [`LineAnnotator::annotate`] as one line of JSON (no newline).
    pub fn annotate_json(&mut self, line: &str) -> String {
        serde_json::to_string(&self.annotate(line)).expect("records serialise")
    }
}

/// Templates sorted by count (largest first, then id).
pub fn by_count(templates: &[TemplateInfo]) -> Vec<TemplateInfo> {
    let mut t = templates.to_vec();
    t.sort_by(|a, b| b.count.cmp(&a.count).then(a.id.cmp(&b.id)));
    t
}

/// A text table: id, count, share of lines, template; largest first.
pub fn templates_table(templates: &[TemplateInfo]) -> String {
    let total: u64 = templates.iter().map(|t| t.count).sum();
    let sorted = by_count(templates);
    let idw = sorted
        .iter()
        .map(|t| t.id.to_string().len())
        .max()
        .unwrap_or(2)
        .max(2);
    let cw = sorted
        .iter()
        .map(|t| t.count.to_string().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:>idw$}  {:>cw$}  {:>6}  template\n", "id", "count", "share");
    for t in &sorted {
        let share = 100.0 * t.count as f64 / total.max(1) as f64;
        out.push_str(&format!(
            "{:>idw$}  {:>cw$}  {:>5.1}%  {}\n",
            t.id, t.count, share, t.template
        ));
    }
    out
}

/// The templates as a JSON array of `{id, template, count}`, largest first.
pub fn templates_json(templates: &[TemplateInfo]) -> String {
    serde_json::to_string_pretty(&by_count(templates)).expect("templates serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_line_records_carry_template_and_parameters() {
        let miner = Miner::with_defaults();
        let mut a = LineAnnotator::new(&miner);
        let first = a.annotate_json("Connection from 10.0.0.1 closed after 3 s");
        let v: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["line"], 1);
        assert_eq!(v["template"], "Connection from <IP> closed after <NUM> s");
        assert_eq!(v["parameters"], serde_json::json!(["10.0.0.1", "3"]));
        assert_eq!(v["is_new"], true);
        let second = a.annotate("Connection from 10.0.0.2 closed after 12 s");
        assert_eq!(second.line, 2);
        assert_eq!(second.template_id, v["template_id"].as_u64().unwrap());
        assert_eq!(second.parameters, ["10.0.0.2", "12"]);
    }

    #[test]
    fn listings_put_the_largest_template_first() {
        let miner = Miner::with_defaults();
        miner.add("disk full");
        for i in 0..3 {
            miner.add(&format!("job {i} done"));
        }
        let table = templates_table(&miner.templates());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("count") && lines[0].contains("template"));
        assert!(
            lines[1].ends_with("job <NUM> done") && lines[1].contains("75.0%"),
            "{table}"
        );
        assert!(lines[2].ends_with("disk full"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&templates_json(&miner.templates())).unwrap();
        assert_eq!(json[0]["count"], 3);
        assert_eq!(json[1]["template"], "disk full");
    }
}
