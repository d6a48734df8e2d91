//! What the sieve says about one line: label, method, confidence, detail.

use std::sync::Arc;

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

#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub target_label: String,
    pub method: Method,
    /// 0–1: 1 for rules, the top probability for the model.
    pub confidence: f32,
    /// The rule id, the model's runner-up, or why the row fell through.
    pub detail: String,
    /// The line's masked text, when the cascade masked it (every row past
    /// the rules): shared with the template cache, so carrying it costs a
    /// reference count, and whoever groups lines by template (the
    /// dashboard's aggregates) need not mask the line again. Not output.
    #[serde(skip)]
    pub template: Option<Arc<str>>,
}

/// Two decisions are equal when they say the same (label, method,
/// confidence, detail); the template they carry is where they came from,
/// not what they say.
impl PartialEq for Decision {
    fn eq(&self, o: &Self) -> bool {
        self.target_label == o.target_label
            && self.method == o.method
            && self.confidence == o.confidence
            && self.detail == o.detail
    }
}

impl Decision {
    pub fn none(detail: impl Into<String>) -> Self {
        Self {
            target_label: UNCLASSIFIED.into(),
            method: Method::None,
            confidence: 0.0,
            detail: detail.into(),
            template: None,
        }
    }

    /// This decision, carrying `template` (when it carries none yet).
    pub fn with_template(mut self, template: &Arc<str>) -> Self {
        if self.template.is_none() {
            self.template = Some(template.clone());
        }
        self
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
