//! The label taxonomy the pipeline owns: the nine labels of
//! docs/taxonomy.md with their one-line descriptions and prototype
//! sentences, from config/labels.toml (compiled in). The LLM stage's label
//! descriptions come from here unless the configuration's `[llm.labels]`
//! gives its own.

use std::collections::BTreeMap;

use serde::Deserialize;

/// config/labels.toml, built into the binary.
pub const LABELS_TOML: &str = include_str!("../../../config/labels.toml");

/// One label as the guide defines it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelDef {
    pub name: String,
    /// The guide's definition in one line (the LLM's prompt shows it).
    pub description: String,
    /// Short sentences in the words logs use for the label.
    #[serde(default)]
    pub prototypes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    #[serde(rename = "label")]
    pub labels: Vec<LabelDef>,
}

impl Taxonomy {
    /// The built-in taxonomy.
    pub fn builtin() -> Self {
        toml::from_str(LABELS_TOML).expect("config/labels.toml is valid")
    }

    /// Label name → description, as `[llm.labels]` takes them.
    pub fn descriptions(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .map(|l| (l.name.clone(), l.description.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_taxonomy_has_the_nine_labels_described() {
        let t = Taxonomy::builtin();
        let names: Vec<&str> = t.labels.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names.len(), 9, "{names:?}");
        for l in [
            "Workflow Error",
            "Deprecation Warning",
            "HTTP Status",
            "User Action",
        ] {
            assert!(names.contains(&l), "{l} missing from {names:?}");
        }
        assert!(t.labels.iter().all(|l| !l.description.is_empty()));
    }
}
