//! What the sieve says about one line: label, method, confidence, detail.

use serde::Serialize;

/// The label of a row no stage could decide (one constant: the LLM stage's,
/// whose answers may be it too).
pub use logsieve_llm::UNCLASSIFIED;

/// Which stage decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Rule,
    Model,
    Llm,
    /// A person's correction for the line's template (`POST /v1/feedback`,
    /// `logsieve feedback`); confidence 1.
    Feedback,
    /// No stage decided; `detail` says why.
    None,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Rule => "rule",
            Method::Model => "model",
            Method::Llm => "llm",
            Method::Feedback => "feedback",
            Method::None => "none",
        }
    }

    pub const ALL: [Method; 5] = [
        Method::Rule,
        Method::Model,
        Method::Llm,
        Method::Feedback,
        Method::None,
    ];
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub target_label: String,
    pub method: Method,
    /// 0–1: 1 for rules, the top probability for the model.
    pub confidence: f32,
    /// The rule id, the model's runner-up, or why the row fell through.
    pub detail: String,
}

impl Decision {
    pub fn none(detail: impl Into<String>) -> Self {
        Self {
            target_label: UNCLASSIFIED.into(),
            method: Method::None,
            confidence: 0.0,
            detail: detail.into(),
        }
    }

    /// Prefix a note about the input row (e.g. "ragged row") to the detail.
    pub fn with_note(mut self, note: &str) -> Self {
        if !note.is_empty() {
            self.detail = if self.detail.is_empty() {
                note.to_string()
            } else {
                format!("{note}; {}", self.detail)
            };
        }
        self
    }
}
