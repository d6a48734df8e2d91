//! The nine labels of docs/taxonomy.md as the model stage learns them: a
//! one-line description and prototype sentences per label
//! (config/labels.toml, built in). Training embeds the prototypes and adds
//! them as weighted rows, so every label is learnable even where the data
//! has few rows of it.

use serde::Deserialize;

pub const BUILTIN_LABELS_TOML: &str = include_str!("../../../config/labels.toml");

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    pub name: String,
    pub description: String,
    pub prototypes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    label: Vec<LabelSpec>,
}

#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct LabelsError {
    pub origin: String,
    pub message: String,
}

/// Parse a labels file (`origin` names it in errors).
pub fn parse_labels(text: &str, origin: &str) -> Result<Vec<LabelSpec>, LabelsError> {
    let err = |message: String| LabelsError {
        origin: origin.to_string(),
        message,
    };
    let f: File = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    let mut seen = std::collections::BTreeSet::new();
    for l in &f.label {
        if !seen.insert(l.name.as_str()) {
            return Err(err(format!("label `{}` is defined twice", l.name)));
        }
        if l.prototypes.is_empty() {
            return Err(err(format!("label `{}` has no prototypes", l.name)));
        }
    }
    Ok(f.label)
}

/// The built-in nine labels.
pub fn builtin_labels() -> Vec<LabelSpec> {
    parse_labels(BUILTIN_LABELS_TOML, "config/labels.toml").expect("the built-in labels parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_labels_are_the_nine_of_the_taxonomy() {
        let names: Vec<String> = builtin_labels().into_iter().map(|l| l.name).collect();
        let guide = include_str!("../../../docs/taxonomy.md");
        assert_eq!(names.len(), 9);
        for n in &names {
            assert!(
                guide.contains(&format!("### {n}")),
                "{n} is not a section of the guide"
            );
        }
    }

    #[test]
    fn a_duplicate_label_is_named() {
        let t = "[[label]]\nname='A'\ndescription='x'\nprototypes=['a']\n[[label]]\nname='A'\ndescription='y'\nprototypes=['b']\n";
        let e = parse_labels(t, "l.toml").unwrap_err().to_string();
        assert_eq!(e, "l.toml: label `A` is defined twice");
    }
}
