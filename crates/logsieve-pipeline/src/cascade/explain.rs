//! Why a line got its label: [`Pipeline::explain`] runs the cascade on one
//! line and adds what each stage saw — the rule that matched (id and
//! pattern), the model's top three labels with probabilities and the
//! training examples nearest the line, the LLM's reason — plus the masked
//! text and its template id. The template id is the same for every line
//! that masks to the same text (it is a hash of the masked text), so it
//! ties an explanation to the dashboard's template counts.

use logsieve_linear::{decide, Input};
use serde::Serialize;

use super::{Item, Pipeline};
use crate::config::Route;
use crate::decision::{Decision, Method};

/// Everything logsieve can say about one line's label.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub source: String,
    pub log_message: String,
    /// The decision the cascade reached (as `/classify-single` answers it).
    pub target_label: String,
    /// `rule`, `model`, `llm` or `none`.
    pub method: &'static str,
    pub confidence: f32,
    pub detail: String,
    /// The source's route: `cascade`, `rules`, `model` or `llm`.
    pub route: &'static str,
    /// The message with its variables masked (`<NUM>`, `<IP>`, …).
    pub masked: String,
    /// 16 hex digits naming the masked text (see [`template_id`]).
    pub template_id: String,
    /// The rule that matched, when one did.
    pub rule: Option<RuleExplanation>,
    /// What the model stage says, when it was asked (not for a rule's line
    /// or a source routed to rules or the LLM), or why it could not.
    pub model: Option<ModelExplanation>,
    /// The LLM's reason, when the LLM decided.
    pub llm_reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleExplanation {
    pub id: String,
    pub pattern: String,
    pub label: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct ModelExplanation {
    /// The three most probable labels, most probable first.
    pub top: Vec<LabelProbability>,
    /// The model's own verdict: `model p=…; runner-up …` or why it is unsure.
    pub verdict: String,
    /// The training examples nearest the line (cosine similarity of the
    /// sentence vectors), most similar first.
    pub nearest: Vec<NearExample>,
    /// Set when the encoder could not be used; the other fields are empty.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelProbability {
    pub label: String,
    pub probability: f32,
}

#[derive(Debug, Clone, Serialize)]
pub struct NearExample {
    pub text: String,
    pub label: String,
    pub similarity: f32,
}

/// A stable id for a masked text: the first 8 bytes of its SHA-256, in hex.
/// Stable across runs and machines (the dashboard's stored template counts
/// use it too).
pub fn template_id(masked: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(masked.as_bytes())[..8])
}

/// How many nearest examples an explanation shows.
pub const NEAREST: usize = 5;

impl Pipeline {
    /// Classify one line and say why. Runs the whole cascade (the LLM
    /// included, when the line reaches it), so it costs what classifying
    /// the line costs, plus one encoder pass for the model's view.
    pub fn explain(&self, item: Item<'_>) -> Explanation {
        let decision: Decision = self
            .classify(&[item])
            .pop()
            .unwrap_or_else(|| Decision::none("internal error: no decision"));
        let route = self.config.route(item.source);
        let masked = self.masker.mask(item.message).into_owned();
        let rule = match (decision.method, route) {
            (Method::Rule, Route::Cascade | Route::Rules) => {
                self.rules.classify(item.source, item.message).and_then(|m| {
                    self.rules
                        .specs()
                        .iter()
                        .find(|s| s.id == m.id)
                        .map(|s| RuleExplanation {
                            id: s.id.clone(),
                            pattern: s.pattern.clone(),
                            label: s.label.clone(),
                        })
                })
            }
            _ => None,
        };
        let model_asked = rule.is_none()
            && matches!(route, Route::Cascade | Route::Model)
            && !item.message.trim().is_empty();
        let model = model_asked.then(|| self.model_view(item.message));
        let llm_reason = (decision.method == Method::Llm).then(|| {
            decision
                .detail
                .rsplit_once("llm: ")
                .map(|(_, r)| r.to_string())
                .unwrap_or_else(|| decision.detail.clone())
        });
        Explanation {
            source: item.source.to_string(),
            log_message: item.message.to_string(),
            target_label: decision.target_label,
            method: decision.method.as_str(),
            confidence: decision.confidence,
            detail: decision.detail,
            route: route.as_str(),
            template_id: template_id(&masked),
            masked,
            rule,
            model,
            llm_reason,
        }
    }

    /// The model stage's view of one message.
    fn model_view(&self, message: &str) -> ModelExplanation {
        let text = self.encoder_text(message);
        let vector = match self.model.embed(&[text.as_ref()], &self.stats) {
            Ok(mut v) => v.pop().unwrap_or_default(),
            Err(e) => {
                return ModelExplanation {
                    error: Some(e.to_string()),
                    ..Default::default()
                }
            }
        };
        let input = Input {
            text: text.as_ref(),
            vector: &vector,
        };
        let classifier = self.model.classifier.as_ref();
        let labels = classifier.labels();
        let p = classifier.predict_proba(input);
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let top = order
            .iter()
            .take(3)
            .map(|&i| LabelProbability {
                label: labels[i].clone(),
                probability: p[i],
            })
            .collect();
        let verdict = decide(classifier, input, self.model.threshold)
            .describe(labels)
            .to_string();
        let nearest = self
            .model
            .nearest_examples(&vector, NEAREST, &self.masker, &self.stats)
            .into_iter()
            .map(|(text, label, similarity)| NearExample {
                text,
                label,
                similarity,
            })
            .collect();
        ModelExplanation {
            top,
            verdict,
            nearest,
            error: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_ids_are_stable_and_tell_texts_apart() {
        assert_eq!(
            template_id("User <NUM> logged in."),
            template_id("User <NUM> logged in.")
        );
        assert_ne!(
            template_id("User <NUM> logged in."),
            template_id("User <NUM> logged out.")
        );
        assert_eq!(template_id("").len(), 16);
        // Pinned: stored template counts outlive the build that wrote them.
        assert_eq!(template_id("abc"), "ba7816bf8f01cfea");
    }
}
