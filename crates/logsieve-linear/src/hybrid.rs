//! The real-world classifier: logistic regression over the sentence vector
//! and the line's words, trained on template units with label prototypes as
//! a prior, calibrated on held-out sources, and aware of how far a line is
//! from everything it was trained on.
//!
//! Why each part (measured leave-one-system-out on data/real, see README):
//! - **units, not lines**: each distinct (masked text, label) counts once, so
//!   one chatty template does not outvote a system's rare ones;
//! - **words beside the vector** ([`crate::lexical`]): 0.75 → 0.85 accuracy;
//! - **prototypes** (docs/taxonomy.md's labels in a few sentences each, from
//!   config/labels.toml) as weighted training rows: every label is learnable
//!   even where the data has few rows of it;
//! - **calibration** ([`crate::calibrate`]) on out-of-fold predictions whose
//!   folds hold out whole sources: the confidence says how often the label
//!   is right on logs like none seen;
//! - **familiarity**: the nearest training unit's cosine similarity; below
//!   `min_similarity` the line is [`Unsure::Unfamiliar`].

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::calibrate::{Calibrator, Evidence};
use crate::lexical::Lexicon;
use crate::predict::{Prediction, Unsure};
use crate::softmax::{FitOptions, Row, Softmax};
use crate::{Classifier, Input, TrainError};

/// The bank's file beside `classifier.json`.
pub const BANK_FILE: &str = "bank.safetensors";

/// One training unit: a distinct text with its label.
#[derive(Debug, Clone)]
pub struct Unit {
    /// The text the encoder saw (masked).
    pub text: String,
    pub vector: Vec<f32>,
    pub label: String,
    /// Held out together in calibration folds (the row's source).
    pub group: String,
    /// Lines behind this unit.
    pub lines: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HybridOptions {
    /// Inverse L2 strength of the main model.
    pub c: f64,
    /// Weight of each label prototype row (a unit weighs 1).
    pub prototype_weight: f64,
    /// Source-grouped folds for calibration (0 or 1: no calibration).
    pub folds: usize,
    pub max_iterations: u64,
    /// Below this nearest-unit similarity a line is unfamiliar.
    pub min_similarity: f32,
    /// Bank vectors closer than this to one already kept are dropped.
    pub bank_merge_above: f32,
}

impl Default for HybridOptions {
    fn default() -> Self {
        Self {
            c: 10.0,
            prototype_weight: 3.0,
            folds: 5,
            max_iterations: 500,
            min_similarity: 0.35,
            bank_merge_above: 0.98,
        }
    }
}

/// Unit vectors a line's familiarity is measured against.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bank {
    pub dim: usize,
    /// `rows × dim`, row-major, each row unit length.
    pub vectors: Vec<f32>,
}

impl Bank {
    /// Keep each vector unless one already kept is within `merge_above`.
    pub fn build<'a>(vectors: impl IntoIterator<Item = &'a [f32]>, merge_above: f32) -> Self {
        let mut bank = Self::default();
        for v in vectors {
            if bank.dim == 0 {
                bank.dim = v.len();
            }
            if bank.rows() == 0 || bank.nearest(v) < merge_above {
                bank.vectors.extend_from_slice(v);
            }
        }
        bank
    }

    pub fn rows(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Highest cosine similarity to a bank row (vectors are unit length);
    /// -1 for an empty bank.
    pub fn nearest(&self, v: &[f32]) -> f32 {
        self.vectors
            .chunks_exact(self.dim.max(1))
            .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
            .fold(-1.0, f32::max)
    }

    pub fn save(&self, path: &Path) -> Result<String, std::io::Error> {
        let bytes: Vec<u8> = self.vectors.iter().flat_map(|f| f.to_le_bytes()).collect();
        let view = safetensors::tensor::TensorView::new(
            safetensors::Dtype::F32,
            vec![self.rows(), self.dim],
            &bytes,
        )
        .map_err(std::io::Error::other)?;
        let data = safetensors::serialize([("vectors", view)], None).map_err(std::io::Error::other)?;
        std::fs::write(path, &data)?;
        Ok(sha256_hex(&data))
    }

    /// Load and check against the sha256 the artifact recorded.
    pub fn load(path: &Path, sha256: &str) -> Result<Self, String> {
        let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_bytes(&data, sha256, &path.display().to_string())
    }

    /// Parse a bank file's bytes (`origin` names it in errors).
    pub fn from_bytes(data: &[u8], sha256: &str, origin: &str) -> Result<Self, String> {
        let got = sha256_hex(data);
        if got != sha256 {
            return Err(format!("{origin}: sha256 {got}, the artifact expects {sha256}"));
        }
        let st = safetensors::SafeTensors::deserialize(data).map_err(|e| format!("{origin}: {e}"))?;
        let t = st.tensor("vectors").map_err(|e| format!("{origin}: {e}"))?;
        let shape = t.shape();
        if t.dtype() != safetensors::Dtype::F32 || shape.len() != 2 {
            return Err(format!("{origin}: `vectors` must be a 2-d f32 tensor"));
        }
        let vectors = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            dim: shape[1],
            vectors,
        })
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The fitted model. `bank` lives in [`BANK_FILE`], checked by `bank_sha256`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HybridModel {
    /// Always `"hybrid"`: tells this model from the plain linear one.
    pub kind: String,
    pub labels: Vec<String>,
    pub lexicon: Lexicon,
    pub softmax: Softmax,
    pub calibrator: Calibrator,
    pub min_similarity: f32,
    pub bank_rows: usize,
    pub bank_sha256: String,
    pub options: HybridOptions,
    #[serde(skip)]
    pub bank: Bank,
}

/// Out-of-fold figures from training (what the calibrator was fitted on).
#[derive(Debug, Clone)]
pub struct OutOfFold {
    pub evidence: Vec<Evidence>,
    pub right: Vec<bool>,
    pub weight: Vec<f64>,
}

struct Core {
    lexicon: Lexicon,
    softmax: Softmax,
}

fn fit_core(
    units: &[&Unit],
    prototypes: &[Unit],
    labels: &[String],
    opts: &HybridOptions,
) -> Result<Core, TrainError> {
    let all: Vec<&Unit> = units.iter().copied().chain(prototypes).collect();
    let lexicon = Lexicon::fit(all.iter().map(|u| u.text.as_str()));
    let rows: Vec<Row> = all
        .iter()
        .map(|u| Row {
            dense: u.vector.clone(),
            sparse: lexicon.vectorize(&u.text),
        })
        .collect();
    let y: Vec<usize> = all
        .iter()
        .map(|u| labels.binary_search(&u.label).expect("label from the set"))
        .collect();
    let w: Vec<f64> = units
        .iter()
        .map(|_| 1.0)
        .chain(prototypes.iter().map(|_| opts.prototype_weight))
        .collect();
    let softmax = Softmax::fit(
        &rows,
        &y,
        &w,
        labels.len(),
        lexicon.len(),
        FitOptions {
            c: opts.c,
            max_iterations: opts.max_iterations,
        },
    )?;
    Ok(Core { lexicon, softmax })
}

impl Core {
    fn proba(&self, text: &str, v: &[f32]) -> Vec<f32> {
        proba(&self.lexicon, &self.softmax, text, v)
    }
}

/// Class probabilities of one line: its vector and its words.
fn proba(lexicon: &Lexicon, softmax: &Softmax, text: &str, v: &[f32]) -> Vec<f32> {
    softmax.proba(v, &lexicon.vectorize(text))
}

fn top2(p: &[f32]) -> (usize, f32, f32) {
    let r = Prediction::rank(p);
    (r.label, r.probability, r.runner_up.map(|x| x.1).unwrap_or(0.0))
}

impl HybridModel {
    /// Train on `units` (distinct texts) and label `prototypes`; calibrate on
    /// source-grouped out-of-fold predictions.
    pub fn train(
        units: &[Unit],
        prototypes: &[Unit],
        opts: &HybridOptions,
    ) -> Result<(Self, Option<OutOfFold>), TrainError> {
        if units.is_empty() {
            return Err(TrainError::Empty);
        }
        let labels: Vec<String> = units
            .iter()
            .chain(prototypes)
            .map(|u| u.label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if labels.len() < 2 {
            return Err(TrainError::OneLabel(labels));
        }
        let groups: Vec<&str> = units
            .iter()
            .map(|u| u.group.as_str())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let folds = opts.folds.min(groups.len());
        let oof = if folds >= 2 {
            Some(out_of_fold(units, prototypes, &labels, &groups, folds, opts)?)
        } else {
            None
        };
        let calibrator = match &oof {
            Some(o) => Calibrator::fit(&o.evidence, &o.right, &o.weight)?,
            None => Calibrator::identity(),
        };
        let refs: Vec<&Unit> = units.iter().collect();
        let core = fit_core(&refs, prototypes, &labels, opts)?;
        let bank = Bank::build(
            units.iter().chain(prototypes).map(|u| u.vector.as_slice()),
            opts.bank_merge_above,
        );
        Ok((
            Self {
                kind: "hybrid".into(),
                labels,
                lexicon: core.lexicon,
                softmax: core.softmax,
                calibrator,
                min_similarity: opts.min_similarity,
                bank_rows: bank.rows(),
                bank_sha256: String::new(),
                options: opts.clone(),
                bank,
            },
            oof,
        ))
    }

    /// Everything the model says about one line.
    pub fn explain(&self, text: &str, v: &[f32]) -> (Vec<f32>, Evidence, f32) {
        let p = proba(&self.lexicon, &self.softmax, text, v);
        let (_, p1, p2) = top2(&p);
        let e = Evidence {
            p1,
            p2,
            nearest: self.bank.nearest(v),
        };
        let c = self.calibrator.confidence(&e);
        (p, e, c)
    }

    /// Check shapes after loading (the bank included).
    pub fn validate(&self, dim: usize) -> Result<(), String> {
        let k = self.labels.len();
        let s = &self.softmax;
        if k < 2 || s.classes != k || s.bias.len() != k {
            return Err(format!(
                "{k} labels but {} classes and {} biases",
                s.classes,
                s.bias.len()
            ));
        }
        if s.dense_dim != dim || s.dense_weights.len() != k * dim {
            return Err(format!(
                "dense weights are {}×{}, embedding dim is {dim}",
                k, s.dense_dim
            ));
        }
        if s.sparse_dim != self.lexicon.len() || s.sparse_weights.len() != k * s.sparse_dim {
            return Err(format!(
                "{} word weights per label, lexicon has {}",
                s.sparse_dim,
                self.lexicon.len()
            ));
        }
        if self.lexicon.idf.len() != self.lexicon.len() {
            return Err("lexicon words and idf differ in length".into());
        }
        Ok(())
    }
}

fn out_of_fold(
    units: &[Unit],
    prototypes: &[Unit],
    labels: &[String],
    groups: &[&str],
    folds: usize,
    opts: &HybridOptions,
) -> Result<OutOfFold, TrainError> {
    let fold_of = |g: &str| groups.iter().position(|x| *x == g).expect("group listed") % folds;
    let mut oof = OutOfFold {
        evidence: Vec::new(),
        right: Vec::new(),
        weight: Vec::new(),
    };
    for f in 0..folds {
        let train: Vec<&Unit> = units.iter().filter(|u| fold_of(&u.group) != f).collect();
        let test: Vec<&Unit> = units.iter().filter(|u| fold_of(&u.group) == f).collect();
        if test.is_empty() || train.is_empty() {
            continue;
        }
        let core = fit_core(&train, prototypes, labels, opts)?;
        let bank = Bank::build(
            train
                .iter()
                .map(|u| u.vector.as_slice())
                .chain(prototypes.iter().map(|u| u.vector.as_slice())),
            opts.bank_merge_above,
        );
        for u in test {
            let p = core.proba(&u.text, &u.vector);
            let (best, p1, p2) = top2(&p);
            oof.evidence.push(Evidence {
                p1,
                p2,
                nearest: bank.nearest(&u.vector),
            });
            oof.right.push(labels[best] == u.label);
            // Per line, as confidence is read: a template of 700 lines
            // weighs 700 times one of a single line.
            oof.weight.push(u.lines as f64);
        }
    }
    Ok(oof)
}

impl Classifier for HybridModel {
    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn predict_proba(&self, x: Input<'_>) -> Vec<f32> {
        proba(&self.lexicon, &self.softmax, x.text, x.vector)
    }

    /// The top label with its calibrated confidence as the probability;
    /// unfamiliar below `min_similarity`.
    fn predict(&self, x: Input<'_>) -> Prediction {
        let (p, e, conf) = self.explain(x.text, x.vector);
        let mut r = Prediction::rank(&p);
        // The runner-up keeps its softmax share, scaled like the winner's.
        let scale = if e.p1 > 0.0 { conf / e.p1 } else { 0.0 };
        r.runner_up = r.runner_up.map(|(i, q)| (i, q * scale));
        r.probability = conf;
        if e.nearest < self.min_similarity {
            r.unsure = Some(Unsure::Unfamiliar {
                similarity: e.nearest,
                min_similarity: self.min_similarity,
            });
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(text: &str, v: [f32; 3], label: &str, group: &str) -> Unit {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        Unit {
            text: text.into(),
            vector: v.iter().map(|x| x / n).collect(),
            label: label.into(),
            group: group.into(),
            lines: 1,
        }
    }

    fn data() -> Vec<Unit> {
        let mut u = Vec::new();
        for g in ["a", "b", "c", "d"] {
            u.push(unit(&format!("{g} disk failure"), [1.0, 0.1, 0.0], "Error", g));
            u.push(unit(&format!("{g} write failure"), [0.9, 0.2, 0.0], "Error", g));
            u.push(unit(
                &format!("{g} service started"),
                [0.1, 1.0, 0.0],
                "System Notification",
                g,
            ));
            u.push(unit(
                &format!("{g} worker started"),
                [0.2, 0.9, 0.0],
                "System Notification",
                g,
            ));
        }
        u
    }

    #[test]
    fn an_unfamiliar_line_is_unsure_with_its_similarity() {
        let (m, oof) = HybridModel::train(
            &data(),
            &[],
            &HybridOptions {
                min_similarity: 0.5,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(oof.is_some());
        let known = m.predict(Input {
            text: "disk failure",
            vector: &data()[0].vector,
        });
        assert_eq!(m.labels[known.label], "Error");
        assert!(known.unsure.is_none());
        // Orthogonal to every unit: far from all training data.
        let far = m.predict(Input {
            text: "quux",
            vector: &[0.0, 0.0, 1.0],
        });
        match far.unsure {
            Some(Unsure::Unfamiliar {
                similarity,
                min_similarity,
            }) => {
                assert!(similarity < 0.5 && min_similarity == 0.5, "{similarity}");
            }
            other => panic!("expected unfamiliar, got {other:?}"),
        }
    }

    #[test]
    fn words_decide_where_vectors_cannot() {
        // Same vector, different words: only the lexicon tells them apart.
        let mut units = Vec::new();
        for g in ["a", "b", "c"] {
            units.push(unit(
                &format!("{g} job failed"),
                [1.0, 1.0, 1.0],
                "Workflow Error",
                g,
            ));
            units.push(unit(
                &format!("{g} job finished"),
                [1.0, 1.0, 1.0],
                "System Notification",
                g,
            ));
        }
        let (m, _) = HybridModel::train(
            &units,
            &[],
            &HybridOptions {
                folds: 0,
                ..Default::default()
            },
        )
        .unwrap();
        let v = units[0].vector.clone();
        let f = m.predict(Input {
            text: "job failed",
            vector: &v,
        });
        let s = m.predict(Input {
            text: "job finished",
            vector: &v,
        });
        assert_eq!(m.labels[f.label], "Workflow Error");
        assert_eq!(m.labels[s.label], "System Notification");
    }

    #[test]
    fn the_bank_round_trips_and_its_checksum_is_enforced() {
        let b = Bank::build(data().iter().map(|u| u.vector.as_slice()), 0.999);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BANK_FILE);
        let sha = b.save(&path).unwrap();
        assert_eq!(Bank::load(&path, &sha).unwrap(), b);
        let err = Bank::load(&path, "00").unwrap_err();
        assert!(err.contains("sha256"), "{err}");
    }

    #[test]
    fn a_saved_model_predicts_as_the_trained_one() {
        let (m, _) = HybridModel::train(&data(), &[], &HybridOptions::default()).unwrap();
        let mut back: HybridModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        back.bank = m.bank.clone();
        for u in data() {
            let x = Input {
                text: &u.text,
                vector: &u.vector,
            };
            assert_eq!(back.predict(x), m.predict(x), "{}", u.text);
        }
    }

    #[test]
    fn near_duplicates_are_merged_in_the_bank() {
        let b = Bank::build([[1.0f32, 0.0].as_slice(), &[0.9999, 0.01], &[0.0, 1.0]], 0.99);
        assert_eq!(b.rows(), 2);
    }
}
