//! The trained classifier on disk: one JSON file, `classifier.json`.
//!
//! Open and documented (see docs/model-format.md): labels, weights, bias,
//! the embedding model it was trained on (id and weights sha256), the
//! threshold, training metadata and held-out metrics. No pickles.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::hybrid::{Bank, HybridModel, BANK_FILE};
use crate::report::Report;
use crate::LinearModel;

pub const FORMAT: &str = "logsieve-classifier";
/// The version this build writes. Version 1 (no `examples`) and 2 (linear
/// model only) are still read; 3 adds the hybrid model and its bank file.
pub const FORMAT_VERSION: u32 = 3;
/// Oldest version this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;
pub const FILE_NAME: &str = "classifier.json";

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid classifier artifact: {message}")]
    Invalid { path: String, message: String },
}

/// What text the encoder saw, in training and so in the cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderInput {
    /// The message as logged.
    Raw,
    /// The message with variables replaced by typed placeholders (the text
    /// the template cache keys on).
    Masked,
}

impl EncoderInput {
    pub fn as_str(self) -> &'static str {
        match self {
            EncoderInput::Raw => "raw",
            EncoderInput::Masked => "masked",
        }
    }
}

impl std::str::FromStr for EncoderInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(EncoderInput::Raw),
            "masked" => Ok(EncoderInput::Masked),
            other => Err(format!("`{other}`: expected `raw` or `masked`")),
        }
    }
}

/// What the vectors were made with; a model is only valid with the same.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingInfo {
    pub model_id: String,
    pub weights_sha256: String,
    pub dim: usize,
    pub max_tokens: usize,
    /// What text the encoder saw: `raw` message, or `masked` (variables replaced).
    pub input: EncoderInput,
    /// Set when the encoder is a fine-tuned one the artifact carries
    /// (`train --fine-tune`); `weights_sha256` is then the sha256 of its
    /// weights file, and the cascade loads it instead of the cached model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_tuned: Option<FineTuned>,
}

/// A fine-tuned encoder carried by the artifact, and how it was made.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FineTuned {
    /// The encoder's directory, relative to the artifact's (`encoder`): the
    /// base model's layout (`config.json`, `tokenizer.json`,
    /// `model.safetensors`).
    pub dir: String,
    /// The model it was fine-tuned from.
    pub base_model_id: String,
    pub base_weights_sha256: String,
    /// Distinct (masked) texts trained on.
    pub texts: usize,
    pub epochs: usize,
    pub steps: usize,
    /// Labels × texts per label in a batch.
    pub batch: String,
    pub learning_rate: f64,
    pub temperature: f64,
    /// Texts were truncated to this many tokens in training.
    pub max_tokens: usize,
    /// The embeddings and this many first layers were left as they were.
    #[serde(default)]
    pub frozen_layers: usize,
    pub seed: u64,
    /// Mean loss of the first and the last tenth of the steps.
    pub loss_first: f32,
    pub loss_last: f32,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingInfo {
    pub data: String,
    pub data_sha256: String,
    /// Rows in the data file.
    pub rows_total: usize,
    /// Rows the model was fitted on (after rules, routes and the split).
    pub rows_fitted: usize,
    pub rows_per_label: Vec<(String, usize)>,
    /// `train-split` (held-out part never seen) or `all`.
    pub fitted_on: String,
    pub test_fraction: f64,
    pub seed: u64,
    pub alpha: f64,
    pub balance: crate::Balance,
    pub max_iterations: u64,
    pub logsieve_version: String,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Every data file trained on, with its sha256 and rows (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_files: Vec<DataFile>,
    /// Rows per source the model was fitted on (format 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows_per_source: Vec<(String, usize)>,
    /// Distinct (text, label) units fitted (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<usize>,
    /// The calibration folds' out-of-fold figures (format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_of_fold: Option<crate::selective::Selective>,
    /// Rows taken from a decision store (`train --store`): what the LLM and
    /// people decided, learnt by the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distilled: Option<Distilled>,
}

/// The decision-store rows a model was trained on, by kind. They are all
/// fitted (none held out): the held-out report covers the data files only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Distilled {
    /// The store's file name.
    pub store: String,
    /// LLM answers at or above `llm_min_confidence` (one row per template).
    pub llm_rows: usize,
    /// People's corrections (one row per template).
    pub feedback_rows: usize,
    pub llm_min_confidence: f32,
}

/// One training data file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataFile {
    pub path: String,
    pub sha256: String,
    pub rows: usize,
}

/// Which classifier the artifact holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ModelKind {
    /// Calibrated vector + words model ([`HybridModel`]); `kind: "hybrid"`.
    Hybrid(Box<HybridModel>),
    /// Plain logistic regression on the vector (formats 1 and 2).
    Linear(LinearModel),
}

impl ModelKind {
    pub fn labels(&self) -> &[String] {
        match self {
            Self::Hybrid(m) => &m.labels,
            Self::Linear(m) => &m.labels,
        }
    }
}

/// A labelled training row kept for the LLM's prompt (few-shot examples).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub source: String,
    pub message: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub format: String,
    pub format_version: u32,
    pub embedding: EmbeddingInfo,
    /// Below this top probability a row falls through to the next stage.
    pub model_threshold: f32,
    pub model: ModelKind,
    pub training: TrainingInfo,
    /// The model stage on the held-out split.
    pub heldout: Option<Report>,
    /// Training rows the LLM stage shows as examples (the nearest ones by
    /// embedding): a few distinct templates per label, LLM-only labels
    /// included. Never held-out rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<Example>,
}

impl Artifact {
    pub fn from_json(text: &str, path: &str) -> Result<Self, ArtifactError> {
        let invalid = |message: String| ArtifactError::Invalid {
            path: path.to_string(),
            message,
        };
        let a: Artifact = serde_json::from_str(text)
            .map_err(|e| invalid(format!("line {} column {}: {e}", e.line(), e.column())))?;
        if a.format != FORMAT {
            return Err(invalid(format!("format is `{}`, expected `{FORMAT}`", a.format)));
        }
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&a.format_version) {
            return Err(invalid(format!(
                "format_version {} is not supported (this build reads {MIN_FORMAT_VERSION} to {FORMAT_VERSION})",
                a.format_version
            )));
        }
        match &a.model {
            ModelKind::Linear(m) => m.validate(a.embedding.dim).map_err(invalid)?,
            ModelKind::Hybrid(m) => {
                if m.kind != "hybrid" {
                    return Err(invalid(format!("model kind `{}`, expected `hybrid`", m.kind)));
                }
                m.validate(a.embedding.dim).map_err(invalid)?
            }
        }
        if !(0.0..=1.0).contains(&a.model_threshold) {
            return Err(invalid(format!(
                "model_threshold {} is outside 0..1",
                a.model_threshold
            )));
        }
        Ok(a)
    }

    /// The classifier this artifact holds, as the pipeline takes it.
    pub fn classifier(&self) -> std::sync::Arc<dyn crate::Classifier> {
        match &self.model {
            ModelKind::Linear(m) => std::sync::Arc::new(m.clone()),
            ModelKind::Hybrid(m) => std::sync::Arc::new((**m).clone()),
        }
    }

    /// Give a hybrid model its bank (the bytes of [`BANK_FILE`]), checked
    /// against the sha256 and shape the artifact recorded. No-op for a
    /// linear model.
    pub fn attach_bank(&mut self, bytes: &[u8], origin: &str) -> Result<(), ArtifactError> {
        let dim = self.embedding.dim;
        if let ModelKind::Hybrid(m) = &mut self.model {
            let invalid = |message: String| ArtifactError::Invalid {
                path: origin.to_string(),
                message,
            };
            m.bank = Bank::from_bytes(bytes, &m.bank_sha256, origin).map_err(invalid)?;
            if m.bank.rows() != m.bank_rows || m.bank.dim != dim {
                return Err(invalid(format!(
                    "bank is {}×{}, the artifact expects {}×{dim}",
                    m.bank.rows(),
                    m.bank.dim,
                    m.bank_rows
                )));
            }
            m.bank.validate_labels(m.labels.len()).map_err(invalid)?;
        }
        Ok(())
    }

    /// The directory of the fine-tuned encoder this artifact carries, if
    /// any; `path` is what [`Artifact::load`] was given.
    pub fn encoder_dir(&self, path: &Path) -> Option<std::path::PathBuf> {
        let f = self.embedding.fine_tuned.as_ref()?;
        let base = if path.is_dir() {
            path
        } else {
            path.parent().unwrap_or(Path::new("."))
        };
        Some(base.join(&f.dir))
    }

    /// Load `classifier.json` from a directory (or the file itself).
    pub fn load(path: &Path) -> Result<Self, ArtifactError> {
        let file = if path.is_dir() {
            path.join(FILE_NAME)
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|source| ArtifactError::Io {
            path: file.display().to_string(),
            source,
        })?;
        let mut a = Self::from_json(&text, &file.display().to_string())?;
        if matches!(a.model, ModelKind::Hybrid(_)) {
            let bank_path = file.with_file_name(BANK_FILE);
            let bytes = std::fs::read(&bank_path).map_err(|source| ArtifactError::Io {
                path: bank_path.display().to_string(),
                source,
            })?;
            a.attach_bank(&bytes, &bank_path.display().to_string())?;
        }
        Ok(a)
    }

    /// Write `classifier.json` into `dir` (created if needed).
    pub fn save(&self, dir: &Path) -> Result<(), ArtifactError> {
        let io = |source| ArtifactError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut this = std::borrow::Cow::Borrowed(self);
        if let ModelKind::Hybrid(m) = &self.model {
            let bank_path = dir.join(BANK_FILE);
            let sha = m.bank.save(&bank_path).map_err(|source| ArtifactError::Io {
                path: bank_path.display().to_string(),
                source,
            })?;
            if let ModelKind::Hybrid(m) = &mut this.to_mut().model {
                m.bank_sha256 = sha;
                m.bank_rows = m.bank.rows();
            }
        }
        let self_ = this.as_ref();
        let text = serde_json::to_string_pretty(self_).expect("artifact serialises");
        let file = dir.join(FILE_NAME);
        std::fs::write(&file, text + "\n").map_err(|source| ArtifactError::Io {
            path: file.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Artifact {
        Artifact {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            embedding: EmbeddingInfo {
                model_id: "m".into(),
                weights_sha256: "00".into(),
                dim: 2,
                max_tokens: 256,
                input: EncoderInput::Raw,
                fine_tuned: None,
            },
            model_threshold: 0.5,
            model: ModelKind::Linear(LinearModel {
                labels: vec!["a".into(), "b".into()],
                weights: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
                bias: vec![0.0, 0.0],
            }),
            training: TrainingInfo {
                data: "d.csv".into(),
                data_sha256: "11".into(),
                rows_total: 2,
                rows_fitted: 2,
                rows_per_label: vec![("a".into(), 1), ("b".into(), 1)],
                fitted_on: "all".into(),
                test_fraction: 0.2,
                seed: 42,
                alpha: 1.0,
                balance: crate::Balance::Oversample,
                max_iterations: 100,
                logsieve_version: "0".into(),
                created_unix: 0,
                data_files: Vec::new(),
                rows_per_source: Vec::new(),
                units: None,
                out_of_fold: None,
                distilled: None,
            },
            heldout: None,
            examples: vec![Example {
                source: "s".into(),
                message: "m".into(),
                label: "a".into(),
            }],
        }
    }

    #[test]
    fn round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        sample().save(dir.path()).unwrap();
        let back = Artifact::load(dir.path()).unwrap();
        assert_eq!(back.model.labels(), ["a", "b"]);
        let ModelKind::Linear(m) = &back.model else {
            panic!("linear")
        };
        assert_eq!(m.weights[1], vec![0.0, 1.0]);
        assert_eq!(back.examples, sample().examples);
    }

    #[test]
    fn reads_version_1_files_without_examples() {
        let mut v: serde_json::Value = serde_json::to_value(sample()).unwrap();
        v["format_version"] = 1.into();
        v.as_object_mut().unwrap().remove("examples");
        let a = Artifact::from_json(&v.to_string(), "old.json").unwrap();
        assert!(a.examples.is_empty());
    }

    #[test]
    fn a_fine_tuned_encoder_is_found_beside_the_file_and_old_files_have_none() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = sample();
        assert_eq!(a.encoder_dir(dir.path()), None);
        let text = serde_json::to_string(&a).unwrap();
        assert!(!text.contains("fine_tuned"), "absent, not null: {text}");
        a.embedding.fine_tuned = Some(FineTuned {
            dir: "encoder".into(),
            base_model_id: "m".into(),
            base_weights_sha256: "00".into(),
            texts: 2,
            epochs: 1,
            steps: 1,
            batch: "8x4".into(),
            learning_rate: 2e-5,
            temperature: 0.1,
            max_tokens: 64,
            frozen_layers: 0,
            seed: 42,
            loss_first: 1.0,
            loss_last: 0.5,
            seconds: 1.0,
        });
        a.save(dir.path()).unwrap();
        let back = Artifact::load(dir.path()).unwrap();
        assert_eq!(back.embedding.fine_tuned, a.embedding.fine_tuned);
        assert_eq!(back.encoder_dir(dir.path()), Some(dir.path().join("encoder")));
        assert_eq!(
            back.encoder_dir(&dir.path().join(FILE_NAME)),
            Some(dir.path().join("encoder"))
        );
    }

    #[test]
    fn rejects_wrong_version_and_shapes_with_the_path() {
        let mut a = sample();
        a.format_version = 99;
        let e = Artifact::from_json(&serde_json::to_string(&a).unwrap(), "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("x.json: invalid classifier artifact: format_version 99"),
            "{e}"
        );
        let mut a = sample();
        if let ModelKind::Linear(m) = &mut a.model {
            m.weights[0].push(3.0);
        }
        let e = Artifact::from_json(&serde_json::to_string(&a).unwrap(), "x.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("weight row 0 has 3 values"), "{e}");
        let e = Artifact::from_json("{\"format\": ", "x.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1 column"), "{e}");
    }
}
