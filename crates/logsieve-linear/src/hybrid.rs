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
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::calibrate::{Calibrator, Evidence};
use crate::lexical::{Lexicon, Sparse};
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
    /// Class balance: a label's units weigh (largest label's units / its
    /// units)^balance. 0 (models trained before it existed) weighs all alike.
    #[serde(default)]
    pub balance: f64,
    /// Fit the calibrator freely instead of monotone in its evidence
    /// (false in models trained before it existed).
    #[serde(default)]
    pub free_calibration: bool,
    /// Weight of the prototypes' words as a prior ([`Prior`]): each
    /// label's logit gains this times the cosine of the line's words to its
    /// nearest prototype's (0 in models trained before it existed).
    #[serde(default)]
    pub word_prior_weight: f64,
}

impl Default for HybridOptions {
    fn default() -> Self {
        Self {
            c: 10.0,
            prototype_weight: 3.0,
            folds: 10,
            max_iterations: 500,
            min_similarity: 0.35,
            bank_merge_above: 0.98,
            balance: 0.0,
            free_calibration: false,
            word_prior_weight: 10.0,
        }
    }
}

/// The training units a line is compared with: how familiar it is (the
/// nearest one's similarity), which labels its neighbours carry, and which
/// training lines explain a decision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bank {
    pub dim: usize,
    /// `rows × dim`, row-major, each row unit length.
    pub vectors: Vec<f32>,
    /// Each row's label (an index into the model's labels). Empty in banks
    /// written before labels were kept: those measure familiarity only.
    pub labels: Vec<u32>,
    /// Each row's text (the encoder's input), beside `labels`.
    pub texts: Vec<String>,
}

/// Neighbours the label agreement is read from.
pub const NEIGHBOURS: usize = 7;

impl Bank {
    /// Keep each unit unless one already kept has its label and is within
    /// `merge_above`.
    pub fn build<'a>(units: impl IntoIterator<Item = (&'a [f32], u32, &'a str)>, merge_above: f32) -> Self {
        let mut bank = Self::default();
        for (v, label, text) in units {
            if bank.dim == 0 {
                bank.dim = v.len();
            }
            let dup = bank
                .neighbours(v, 1)
                .first()
                .is_some_and(|&(i, sim)| sim >= merge_above && bank.labels[i] == label);
            if !dup {
                bank.vectors.extend_from_slice(v);
                bank.labels.push(label);
                bank.texts.push(text.to_string());
            }
        }
        bank
    }

    pub fn rows(&self) -> usize {
        self.vectors.len().checked_div(self.dim).unwrap_or(0)
    }

    fn similarities<'s>(&'s self, v: &'s [f32]) -> impl Iterator<Item = f32> + 's {
        self.vectors
            .chunks_exact(self.dim.max(1))
            .map(move |r| r.iter().zip(v).map(|(a, b)| a * b).sum::<f32>())
    }

    /// Highest cosine similarity to a bank row (vectors are unit length);
    /// -1 for an empty bank.
    pub fn nearest(&self, v: &[f32]) -> f32 {
        self.similarities(v).fold(-1.0, f32::max)
    }

    /// The `k` most similar rows, most similar first: (row, similarity).
    pub fn neighbours(&self, v: &[f32], k: usize) -> Vec<(usize, f32)> {
        let mut top: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        if k == 0 {
            return top;
        }
        for (i, s) in self.similarities(v).enumerate() {
            if top.len() == k && s <= top[k - 1].1 {
                continue;
            }
            let at = top.partition_point(|&(_, t)| t >= s);
            top.insert(at, (i, s));
            top.truncate(k);
        }
        top
    }

    /// What a line's neighbourhood says: the nearest row's similarity, and
    /// the similarity-weighted share of its `NEIGHBOURS` nearest rows that
    /// carry `label` (NaN where the bank keeps no labels).
    pub fn familiarity(&self, v: &[f32], label: usize) -> (f32, f32) {
        let (nearest, agree, _) = self.familiarity_within(v, label, f32::INFINITY);
        (nearest, agree)
    }

    /// [`Bank::familiarity`], and whether the line is a known template: at
    /// least one row is within `same` (the merge distance: the same
    /// template) and every such row carries `label`.
    pub fn familiarity_within(&self, v: &[f32], label: usize, same: f32) -> (f32, f32, bool) {
        let near = self.neighbours(v, NEIGHBOURS);
        let nearest = near.first().map_or(-1.0, |n| n.1);
        if self.labels.len() != self.rows() || near.is_empty() {
            return (nearest, f32::NAN, false);
        }
        let mut twins = near.iter().filter(|&&(_, s)| s >= same).peekable();
        let known = twins.peek().is_some() && twins.all(|&(i, _)| self.labels[i] as usize == label);
        let (mut with, mut all) = (0.0f32, 0.0f32);
        for &(i, s) in &near {
            let w = s.max(0.0);
            all += w;
            if self.labels[i] as usize == label {
                with += w;
            }
        }
        (nearest, if all > 0.0 { with / all } else { 0.0 }, known)
    }

    pub fn save(&self, path: &Path) -> Result<String, std::io::Error> {
        let bytes: Vec<u8> = self.vectors.iter().flat_map(|f| f.to_le_bytes()).collect();
        let labels: Vec<u8> = self.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
        let view = |dtype, shape, data| {
            safetensors::tensor::TensorView::new(dtype, shape, data).map_err(std::io::Error::other)
        };
        let tensors = [
            (
                "vectors",
                view(safetensors::Dtype::F32, vec![self.rows(), self.dim], &bytes)?,
            ),
            (
                "labels",
                view(safetensors::Dtype::U32, vec![self.labels.len()], &labels)?,
            ),
        ];
        let meta = std::collections::HashMap::from([(
            "texts".to_string(),
            serde_json::to_string(&self.texts).map_err(std::io::Error::other)?,
        )]);
        let data = safetensors::serialize(tensors, Some(meta)).map_err(std::io::Error::other)?;
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
        let mut bank = Self {
            dim: shape[1],
            vectors,
            labels: Vec::new(),
            texts: Vec::new(),
        };
        // Labels and texts: present in banks written since they were kept.
        if let Ok(l) = st.tensor("labels") {
            if l.dtype() != safetensors::Dtype::U32 || l.shape() != [bank.rows()] {
                return Err(format!(
                    "{origin}: `labels` must be a u32 tensor of {} rows",
                    bank.rows()
                ));
            }
            bank.labels = l
                .data()
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let (_, meta) =
                safetensors::SafeTensors::read_metadata(data).map_err(|e| format!("{origin}: {e}"))?;
            let texts = meta
                .metadata()
                .as_ref()
                .and_then(|m| m.get("texts"))
                .ok_or_else(|| format!("{origin}: labels without `texts` metadata"))?;
            bank.texts = serde_json::from_str(texts).map_err(|e| format!("{origin}: texts: {e}"))?;
            if bank.texts.len() != bank.rows() {
                return Err(format!(
                    "{origin}: {} texts for {} rows",
                    bank.texts.len(),
                    bank.rows()
                ));
            }
        }
        Ok(bank)
    }

    /// Check the labels index a model's `classes` labels.
    pub fn validate_labels(&self, classes: usize) -> Result<(), String> {
        match self.labels.iter().find(|&&l| l as usize >= classes) {
            Some(l) => Err(format!(
                "bank label index {l} outside the model's {classes} labels"
            )),
            None => Ok(()),
        }
    }
}

/// The label prototypes' words: how near a line's words are to each
/// label's description, a prior that does not depend on which systems the
/// training data came from. Each label's score gains `word_prior_weight`
/// times the cosine of the line's words to its nearest prototype's, in
/// training and prediction alike.
///
/// Why words and not the vectors (measured leave-one-system-out, README):
/// the vectors' similarity to the prototypes as the prior moved accuracy
/// 0.863 → 0.819–0.824 and ECE to 0.087–0.161; the words' 0.863 → 0.843,
/// selective accuracy at 0.80 0.875 → 0.922, AURC 0.095 → 0.058, ECE
/// 0.095 → 0.077. Added at prediction only (not while fitting) it ranked
/// worse (AURC 0.067–0.075).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prior {
    /// Each prototype: its label (an index into the model's labels) and
    /// its text (masked, as the model reads a line).
    pub prototypes: Vec<(u32, String)>,
    /// The prototypes' words under the lexicon of the model holding this
    /// prior, made on first use.
    #[serde(skip)]
    words: OnceLock<Vec<Sparse>>,
}

impl PartialEq for Prior {
    fn eq(&self, other: &Self) -> bool {
        self.prototypes == other.prototypes
    }
}

impl Prior {
    /// The same prototypes, their words not yet read (for another lexicon).
    fn clone_unread(&self) -> Self {
        Self {
            prototypes: self.prototypes.clone(),
            words: OnceLock::new(),
        }
    }

    pub fn of(prototypes: &[Unit], labels: &[String]) -> Self {
        Self {
            prototypes: prototypes
                .iter()
                .map(|u| {
                    let l = labels.binary_search(&u.label).expect("label from the set") as u32;
                    (l, u.text.clone())
                })
                .collect(),
            words: OnceLock::new(),
        }
    }

    /// Per label, `weight` times the highest cosine of the line's words `x`
    /// to one of that label's prototypes' (0 for a label without any), the
    /// words read by `lexicon`, the same lexicon on every call. Empty when
    /// `weight` is 0 or there are no prototypes.
    pub fn offsets(&self, lexicon: &Lexicon, x: &[(u32, f32)], classes: usize, weight: f64) -> Vec<f32> {
        if weight == 0.0 || self.prototypes.is_empty() {
            return Vec::new();
        }
        let words = self.words.get_or_init(|| {
            self.prototypes
                .iter()
                .map(|(_, t)| lexicon.vectorize(t))
                .collect()
        });
        let mut best = vec![0f32; classes];
        for ((l, _), w) in self.prototypes.iter().zip(words) {
            if let Some(b) = best.get_mut(*l as usize) {
                *b = b.max(sparse_dot(x, w));
            }
        }
        best.iter_mut().for_each(|b| *b *= weight as f32);
        best
    }
}

/// Dot product of two sparse rows, indices ascending.
fn sparse_dot(a: &[(u32, f32)], b: &[(u32, f32)]) -> f32 {
    let (mut i, mut j, mut s) = (0, 0, 0.0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                s += a[i].1 * b[j].1;
                i += 1;
                j += 1;
            }
        }
    }
    s
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
    /// The prototypes the prior reads (none in models trained before it).
    #[serde(default)]
    pub prior: Prior,
}

/// Out-of-fold figures from training (what the calibrator was fitted on).
#[derive(Debug, Clone)]
pub struct OutOfFold {
    pub evidence: Vec<Evidence>,
    pub right: Vec<bool>,
    pub weight: Vec<f64>,
}

struct Core<'o> {
    lexicon: Lexicon,
    softmax: Softmax,
    prior: Prior,
    opts: &'o HybridOptions,
}

fn fit_core<'o>(
    units: &[&Unit],
    prototypes: &[Unit],
    prior: &Prior,
    labels: &[String],
    opts: &'o HybridOptions,
) -> Result<Core<'o>, TrainError> {
    let all: Vec<&Unit> = units.iter().copied().chain(prototypes).collect();
    let lexicon = Lexicon::fit(all.iter().map(|u| u.text.as_str()));
    // Its own copy: the prototypes' words are read by this lexicon.
    let prior = prior.clone_unread();
    let rows: Vec<Row> = all
        .iter()
        .map(|u| {
            let sparse = lexicon.vectorize(&u.text);
            Row {
                offset: prior.offsets(&lexicon, &sparse, labels.len(), opts.word_prior_weight),
                dense: u.vector.clone(),
                sparse,
            }
        })
        .collect();
    let y: Vec<usize> = all
        .iter()
        .map(|u| labels.binary_search(&u.label).expect("label from the set"))
        .collect();
    let mut count = vec![0usize; labels.len()];
    for &i in &y[..units.len()] {
        count[i] += 1;
    }
    let most = count.iter().copied().max().unwrap_or(1) as f64;
    let w: Vec<f64> = y[..units.len()]
        .iter()
        .map(|&i| (most / count[i] as f64).powf(opts.balance))
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
    Ok(Core {
        lexicon,
        softmax,
        prior,
        opts,
    })
}

impl Core<'_> {
    fn proba(&self, x: &Sparse, v: &[f32]) -> Vec<f32> {
        proba(&self.lexicon, &self.softmax, &self.prior, self.opts, x, v)
    }
}

/// Class probabilities of one line: its vector, its words `x` (read by
/// `lexicon`) and the prior.
fn proba(
    lexicon: &Lexicon,
    softmax: &Softmax,
    prior: &Prior,
    opts: &HybridOptions,
    x: &Sparse,
    v: &[f32],
) -> Vec<f32> {
    let offset = prior.offsets(lexicon, x, softmax.classes, opts.word_prior_weight);
    softmax.proba_with(v, x, &offset)
}

/// The bank of `units`, each row labelled with its index in `labels`.
fn bank_of<'a>(units: impl Iterator<Item = &'a Unit>, labels: &[String], opts: &HybridOptions) -> Bank {
    Bank::build(
        units.map(|u| {
            let l = labels.binary_search(&u.label).expect("label from the set") as u32;
            (u.vector.as_slice(), l, u.text.as_str())
        }),
        opts.bank_merge_above,
    )
}

/// What the calibrator reads of a prediction `p` for one line of `words`
/// known words.
fn evidence(p: &[f32], bank: &Bank, same: f32, words: usize, v: &[f32]) -> Evidence {
    let (label, p1, p2) = top2(p);
    let (nearest, agree, known) = bank.familiarity_within(v, label, same);
    Evidence {
        p1,
        p2,
        nearest,
        agree,
        known,
        words,
        label,
        classes: p.len(),
    }
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
        let prior = Prior::of(prototypes, &labels);
        let oof = if folds >= 2 {
            Some(out_of_fold(
                units, prototypes, &prior, &labels, &groups, folds, opts,
            )?)
        } else {
            None
        };
        let calibrator = match &oof {
            Some(o) => Calibrator::fit(&o.evidence, &o.right, &o.weight, opts.free_calibration)?,
            None => Calibrator::identity(),
        };
        let refs: Vec<&Unit> = units.iter().collect();
        let core = fit_core(&refs, prototypes, &prior, &labels, opts)?;
        let bank = bank_of(units.iter().chain(prototypes), &labels, opts);
        let (lexicon, softmax) = (core.lexicon, core.softmax);
        Ok((
            Self {
                kind: "hybrid".into(),
                labels,
                lexicon,
                softmax,
                calibrator,
                min_similarity: opts.min_similarity,
                bank_rows: bank.rows(),
                bank_sha256: String::new(),
                options: opts.clone(),
                bank,
                prior,
            },
            oof,
        ))
    }

    /// Everything the model says about one line: its probabilities, the
    /// evidence, and the confidence. A known template keeps the model's own
    /// probability: the model was trained on templates closer to it than
    /// any line the calibrator was fitted on came to its training data, and
    /// all of those carry the label it gives. The calibrator speaks for
    /// systems the model has not seen; fitted there, it marks lines down
    /// for being close to another system's templates, which would mark the
    /// model's own templates down too.
    pub fn explain(&self, text: &str, v: &[f32]) -> (Vec<f32>, Evidence, f32) {
        let x = self.lexicon.vectorize(text);
        let p = self.proba(&x, v);
        let same = self
            .calibrator
            .nearest_max
            .map_or(self.options.bank_merge_above, |m| {
                m.min(self.options.bank_merge_above)
            });
        let e = evidence(&p, &self.bank, same, x.len(), v);
        let c = if e.known {
            e.p1
        } else {
            self.calibrator.confidence(&e)
        };
        (p, e, c)
    }

    fn proba(&self, x: &Sparse, v: &[f32]) -> Vec<f32> {
        proba(&self.lexicon, &self.softmax, &self.prior, &self.options, x, v)
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
        if let Some((l, t)) = self.prior.prototypes.iter().find(|(l, _)| *l as usize >= k) {
            return Err(format!(
                "prior prototype `{t}` has label index {l}, but the model has {k} labels"
            ));
        }
        Ok(())
    }
}

fn out_of_fold(
    units: &[Unit],
    prototypes: &[Unit],
    prior: &Prior,
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
        let core = fit_core(&train, prototypes, prior, labels, opts)?;
        let bank = bank_of(train.iter().copied().chain(prototypes), labels, opts);
        for u in test {
            let x = core.lexicon.vectorize(&u.text);
            let p = core.proba(&x, &u.vector);
            oof.evidence
                .push(evidence(&p, &bank, opts.bank_merge_above, x.len(), &u.vector));
            let best = oof.evidence.last().expect("just pushed").label;
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
        self.proba(&self.lexicon.vectorize(x.text), x.vector)
    }

    /// From the bank: every distinct training template and prototype (near
    /// duplicates of one label merged), with its label.
    fn neighbours(&self, vector: &[f32], k: usize) -> Vec<(String, String, f32)> {
        if self.bank.labels.len() != self.bank.rows() {
            return Vec::new();
        }
        self.bank
            .neighbours(vector, k)
            .into_iter()
            .filter_map(|(i, s)| {
                let label = self.labels.get(self.bank.labels[i] as usize)?;
                Some((self.bank.texts[i].clone(), label.clone(), s))
            })
            .collect()
    }

    /// The top label with its calibrated confidence as the probability;
    /// unfamiliar below `min_similarity`.
    fn predict(&self, x: Input<'_>) -> Prediction {
        let (p, e, conf) = self.explain(x.text, x.vector);
        let mut r = Prediction::rank(&p);
        // The other labels share what the calibrated confidence leaves, in
        // their softmax proportions (the runner-up never outgrows the top).
        let rest = if e.p1 < 1.0 {
            (1.0 - conf) / (1.0 - e.p1)
        } else {
            0.0
        };
        r.runner_up = r.runner_up.map(|(i, q)| (i, q * rest));
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

    /// The calibrator speaks for systems the model has not seen; a line of
    /// a template it was trained on keeps the model's own probability, even
    /// under a calibrator that distrusts familiar lines.
    #[test]
    fn a_known_template_keeps_its_probability_and_a_new_line_is_calibrated() {
        let (mut m, _) = HybridModel::train(&data(), &[], &HybridOptions::default()).unwrap();
        // Familiarity weighs -20: a calibrator fitted on held-out systems
        // where lines near another system's templates were often wrong.
        m.calibrator = Calibrator {
            weights: vec![1.0, 0.0, -20.0],
            bias: 10.0,
            fitted_on: 1,
            nearest_max: Some(0.95),
        };
        let seen = &data()[0];
        let (p, e, conf) = m.explain("disk failure", &seen.vector);
        assert!(e.known, "{e:?}");
        let pr = m.predict(Input {
            text: "disk failure",
            vector: &seen.vector,
        });
        assert_eq!(m.labels[pr.label], "Error");
        assert_eq!(pr.probability, conf);
        assert_eq!(conf, p.iter().copied().fold(0.0, f32::max));
        assert!(conf > 0.5, "{conf}");
        // Between the two kinds of line: near both, the same as neither.
        let n = (0.55f32 * 0.55 + 0.55 * 0.55 + 0.6 * 0.6).sqrt();
        let new = [0.55 / n, 0.55 / n, 0.6 / n];
        let (_, e, conf) = m.explain("disk started", &new);
        assert!(!e.known && e.nearest < 0.98, "{e:?}");
        assert_eq!(conf, m.calibrator.confidence(&e));
        assert!(conf < 0.5, "the calibrator marks it down: {conf}");
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
        let units = data();
        let labels = vec!["Error".to_string(), "System Notification".to_string()];
        let opts = HybridOptions {
            bank_merge_above: 0.999,
            ..Default::default()
        };
        let b = bank_of(units.iter(), &labels, &opts);
        // Four sources repeat four vectors: each kept once, first text first.
        assert_eq!(b.rows(), 4);
        assert_eq!(b.texts[2], "a service started");
        assert_eq!(b.labels, [0, 0, 1, 1]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(BANK_FILE);
        let sha = b.save(&path).unwrap();
        assert_eq!(Bank::load(&path, &sha).unwrap(), b);
        let err = Bank::load(&path, "00").unwrap_err();
        assert!(err.contains("sha256"), "{err}");
    }

    /// A bank written before labels were kept (vectors only) still loads and
    /// measures familiarity; label agreement is then unknown.
    #[test]
    fn a_bank_without_labels_still_measures_familiarity() {
        let v: Vec<u8> = [1.0f32, 0.0, 0.0, 1.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &v).unwrap();
        let bytes = safetensors::serialize([("vectors", view)], None).unwrap();
        let b = Bank::from_bytes(&bytes, &sha256_hex(&bytes), "old").unwrap();
        let (nearest, agree) = b.familiarity(&[0.6, 0.8], 0);
        assert!((nearest - 0.8).abs() < 1e-6 && agree.is_nan());
    }

    /// Agreement reads the neighbours' labels, nearest weighing most.
    #[test]
    fn label_agreement_is_the_weighted_share_of_neighbours() {
        let a = [1.0f32, 0.0];
        let b = [0.8f32, 0.6];
        let c = [0.0f32, 1.0];
        let bank = Bank::build([(&a[..], 0, "a"), (&b[..], 1, "b"), (&c[..], 1, "c")], 0.99);
        let n = bank.neighbours(&[0.6, 0.8], 2);
        assert_eq!(n.iter().map(|x| x.0).collect::<Vec<_>>(), [1, 2]);
        assert!((n[0].1 - 0.96).abs() < 1e-6 && (n[1].1 - 0.8).abs() < 1e-6);
        let (near, agree) = bank.familiarity(&[1.0, 0.0], 0);
        assert_eq!(near, 1.0);
        // Weights 1.0 (label 0), 0.8 (label 1), 0.0: share 1 / 1.8.
        assert!((agree - 1.0 / 1.8).abs() < 1e-6, "{agree}");
    }

    /// A label no training line carries, only its prototypes: the
    /// prototypes' words as a prior let a line in those words come out
    /// under it, where its vector alone sits among another label's lines.
    #[test]
    fn a_label_known_only_by_its_prototypes_words_is_predicted() {
        let mut units = data();
        for g in ["a", "b", "c", "d"] {
            units.push(unit(
                &format!("{g} setting loaded"),
                [0.1, 1.0, 0.05],
                "System Notification",
                g,
            ));
        }
        let protos = [
            unit(
                "option is deprecated, use the new option instead",
                [0.0, 0.3, 1.0],
                "Deprecation Warning",
                "prototype",
            ),
            unit(
                "service started",
                [0.1, 1.0, 0.0],
                "System Notification",
                "prototype",
            ),
        ];
        // The line's vector is a System Notification's; its words are the
        // deprecation prototype's.
        let line = "setting is deprecated, use another setting instead";
        let v = &units[2].vector;
        let label = |weight: f64| {
            let (m, _) = HybridModel::train(
                &units,
                &protos,
                &HybridOptions {
                    word_prior_weight: weight,
                    folds: 0,
                    ..Default::default()
                },
            )
            .unwrap();
            let pr = m.predict(Input {
                text: line,
                vector: v,
            });
            m.labels[pr.label].clone()
        };
        assert_eq!(label(0.0), "System Notification");
        assert_eq!(
            label(HybridOptions::default().word_prior_weight),
            "Deprecation Warning"
        );
    }

    #[test]
    fn a_saved_model_predicts_as_the_trained_one() {
        let protos = [unit(
            "disk failure detected",
            [1.0, 0.0, 0.2],
            "Error",
            "prototype",
        )];
        let (m, _) = HybridModel::train(&data(), &protos, &HybridOptions::default()).unwrap();
        assert_eq!(m.prior.prototypes.len(), 1);
        let mut back: HybridModel = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.prior, m.prior);
        back.bank = m.bank.clone();
        assert_eq!(back.validate(3), Ok(()));
        let mut broken = back.clone();
        broken.prior.prototypes[0].0 = 9;
        let err = broken.validate(3).unwrap_err();
        assert!(
            err.contains("disk failure detected") && err.contains("index 9"),
            "{err}"
        );
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
        let b = Bank::build(
            [
                ([1.0f32, 0.0].as_slice(), 0, "x"),
                (&[0.9999, 0.01], 0, "x'"),
                (&[0.0, 1.0], 0, "y"),
            ],
            0.99,
        );
        assert_eq!(b.rows(), 2);
        // The same vector under another label is kept: its label counts.
        let b = Bank::build([([1.0f32, 0.0].as_slice(), 0, "x"), (&[1.0, 0.0], 1, "x")], 0.99);
        assert_eq!(b.rows(), 2);
    }
}
