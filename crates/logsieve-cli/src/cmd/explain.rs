//! `logsieve explain "LINE"`: classify one line and say why — the rule and
//! its pattern, or the model's top three labels and the nearest training
//! examples, or the LLM's reason — with the masked text and template id.
//! The same answer as `POST /v1/explain`; `--json` prints it as JSON.

use anyhow::Result;
use logsieve_pipeline::{Explanation, Item};

use crate::common::ConfigArgs;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The log line.
    pub line: String,
    /// The line's source (routes and source-specific rules depend on it).
    #[arg(long, default_value = "unknown")]
    pub source: String,
    /// Print the explanation as JSON (the shape `/v1/explain` answers).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cfg: &ConfigArgs, a: Args) -> Result<i32> {
    let pipeline = cfg.pipeline()?;
    let e = pipeline.explain(Item {
        source: &a.source,
        message: &a.line,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", text(&e));
    }
    Ok(0)
}

/// The explanation as a person reads it.
fn text(e: &Explanation) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} (method {}, confidence {:.3})",
        e.target_label, e.method, e.confidence
    );
    let _ = writeln!(s, "  source    {} (route {})", e.source, e.route);
    if let Some(r) = &e.rule {
        let _ = writeln!(s, "  rule      {}: {}", r.id, r.pattern);
    }
    if let Some(m) = &e.model {
        match &m.error {
            Some(err) => {
                let _ = writeln!(s, "  model     unavailable: {err}");
            }
            None => {
                let top: Vec<String> = m
                    .top
                    .iter()
                    .map(|t| format!("{} {:.3}", t.label, t.probability))
                    .collect();
                let _ = writeln!(s, "  model     {}", top.join(", "));
                let _ = writeln!(s, "            {}", m.verdict);
                for n in &m.nearest {
                    let _ = writeln!(s, "  nearest   {:.3} {:<20} {}", n.similarity, n.label, n.text);
                }
            }
        }
    }
    if let Some(r) = &e.llm_reason {
        let _ = writeln!(s, "  llm       {r}");
    }
    if e.rule.is_none() && e.llm_reason.is_none() && e.method == "none" {
        let _ = writeln!(s, "  why       {}", e.detail);
    }
    let _ = writeln!(s, "  template  {} {}", e.template_id, e.masked);
    s
}
