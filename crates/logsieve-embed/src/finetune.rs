//! Fine-tuning the encoder on labelled texts, SetFit-style, on candle.
//!
//! The base model's weights are loaded into a `VarMap` (so they are
//! trainable) behind [`BertModel`]'s differentiable forward pass. Batches
//! hold a few labels with a few distinct texts each (P×K sampling, seeded),
//! and the loss is the supervised contrastive loss (Khosla et al. 2020) on
//! the mean-pooled, unit-length vectors: for each text, the texts of its
//! label in the batch are pulled towards it and every other text pushed
//! away, at a temperature. AdamW with a linear warm-up and decay.
//! [`FineTuner::save`] writes the encoder in the layout it was read from
//! (every tensor of the base file under its own name, the trained ones
//! replaced; `config.json` and the tokenizer files copied; the `.sha256`
//! marker), so the lean engine and [`crate::MiniLm`] load it unchanged.
//!
//! The caller chooses the texts: logsieve fine-tunes on masked templates,
//! each distinct text once, so one frequent template does not dominate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use tokenizers::Tokenizer;

use crate::bert::BertModel;
use crate::config::BertConfig;
use crate::fetch::{self, ModelFiles, OPTIONAL, WEIGHTS};
use crate::EmbedError;

/// How to fine-tune.
#[derive(Debug, Clone)]
pub struct FineTuneOptions {
    /// Passes over the texts (a pass is texts / batch size steps).
    pub epochs: usize,
    /// Labels drawn per batch (fewer when there are fewer labels).
    pub labels_per_batch: usize,
    /// Distinct texts drawn per label and batch (fewer when a label has fewer).
    pub per_label: usize,
    /// Peak learning rate of AdamW.
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Share of the steps the learning rate climbs to its peak in; it then
    /// falls linearly to zero.
    pub warmup: f64,
    /// Temperature of the contrastive loss (cosine similarities are divided by it).
    pub temperature: f64,
    /// Texts are truncated to this many tokens in training (log templates are short).
    pub max_tokens: usize,
    /// Also train the word embeddings (the largest tensor; frozen by default).
    pub train_word_embeddings: bool,
    /// Leave the embeddings and the first this many layers as they are
    /// (the backward pass, most of a step's cost, stops above them).
    pub frozen_layers: usize,
    /// Stop after this many steps (a cap on the cost on a large corpus).
    pub max_steps: Option<usize>,
    /// Seed of the batch sampler.
    pub seed: u64,
}

impl Default for FineTuneOptions {
    fn default() -> Self {
        Self {
            epochs: 1,
            labels_per_batch: 8,
            per_label: 4,
            learning_rate: 2e-5,
            weight_decay: 0.01,
            warmup: 0.1,
            temperature: 0.1,
            max_tokens: 64,
            train_word_embeddings: false,
            frozen_layers: 0,
            max_steps: None,
            seed: 42,
        }
    }
}

/// One optimiser step done.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// 1-based.
    pub step: usize,
    pub steps: usize,
    pub loss: f32,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct FineTuneReport {
    /// Distinct texts trained on.
    pub texts: usize,
    pub steps: usize,
    pub epochs: usize,
    /// Mean loss of the first and the last tenth of the steps.
    pub loss_first: f32,
    pub loss_last: f32,
    pub seconds: f64,
}

/// A base encoder loaded for training.
pub struct FineTuner {
    cfg: BertConfig,
    /// The base model's directory (its untrained tensors and files are copied on save).
    base_dir: PathBuf,
    base_sha256: String,
    tokenizer: Tokenizer,
    varmap: VarMap,
    model: BertModel,
    opts: FineTuneOptions,
    device: Device,
    /// `bert.` when the base file's tensor names carry it.
    prefix: &'static str,
}

fn forward_err(path: &Path) -> impl Fn(candle_core::Error) -> EmbedError + '_ {
    move |e| EmbedError::Weights {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

impl FineTuner {
    /// Load the encoder in `dir` (`config.json`, `tokenizer.json`,
    /// `model.safetensors`) with its weights trainable.
    pub fn load(dir: &Path, opts: FineTuneOptions) -> Result<Self, EmbedError> {
        let files = ModelFiles::local(dir)?;
        let weights = files.dir.join(WEIGHTS);
        let base_sha256 = fetch::sha256_file(&weights)?;
        let cfg = BertConfig::load(&files.dir)?;
        let max_tokens = opts.max_tokens.clamp(2, cfg.max_position_embeddings);
        let tokenizer = crate::load_tokenizer(&files.dir, max_tokens)?;
        let device = Device::Cpu;
        let werr = forward_err(&weights);
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let model = BertModel::new(&cfg, vb, &device)
            .map_err(&werr)?
            .trainable(opts.train_word_embeddings)
            .freeze_layers(opts.frozen_layers);
        let tensors = candle_core::safetensors::load(&weights, &device).map_err(&werr)?;
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        {
            let vars = varmap.data().lock().expect("the var map is not poisoned");
            for (name, var) in vars.iter() {
                let full = format!("{prefix}{name}");
                let t = tensors.get(&full).ok_or_else(|| EmbedError::Weights {
                    path: weights.display().to_string(),
                    message: format!("tensor `{full}` missing"),
                })?;
                if t.dims() != var.dims() {
                    return Err(EmbedError::Weights {
                        path: weights.display().to_string(),
                        message: format!(
                            "tensor `{full}` has shape {:?}, expected {:?}",
                            t.dims(),
                            var.dims()
                        ),
                    });
                }
                var.set(&t.to_dtype(DType::F32).map_err(&werr)?).map_err(&werr)?;
            }
        }
        Ok(Self {
            cfg,
            base_dir: files.dir,
            base_sha256,
            tokenizer,
            varmap,
            model,
            opts,
            device,
            prefix,
        })
    }

    /// The sha256 of the base model's weights file.
    pub fn base_sha256(&self) -> &str {
        &self.base_sha256
    }

    pub fn options(&self) -> &FineTuneOptions {
        &self.opts
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EmbedError> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| EmbedError::Tokenize(e.to_string()))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// The supervised contrastive loss of unit vectors `emb` [b × d] with
    /// `labels`; `None` when no text has another of its label in the batch.
    fn contrastive(&self, emb: &Tensor, labels: &[usize]) -> candle_core::Result<Option<Tensor>> {
        let b = labels.len();
        let mut self_mask = vec![0f32; b * b];
        let mut positive = vec![0f32; b * b];
        let mut weight = vec![0f32; b];
        for i in 0..b {
            self_mask[i * b + i] = -1e4;
            let mut n = 0;
            for j in 0..b {
                if i != j && labels[i] == labels[j] {
                    positive[i * b + j] = 1.0;
                    n += 1;
                }
            }
            if n > 0 {
                weight[i] = 1.0 / n as f32;
            }
        }
        let anchors = weight.iter().filter(|&&w| w > 0.0).count();
        if anchors == 0 {
            return Ok(None);
        }
        weight.iter_mut().for_each(|w| *w /= anchors as f32);
        let sim = (emb.matmul(&emb.t()?)? / self.opts.temperature)?;
        let sim = (sim + Tensor::from_vec(self_mask, (b, b), &self.device)?)?;
        let log_p = candle_nn::ops::log_softmax(&sim, D::Minus1)?;
        let positive = Tensor::from_vec(positive, (b, b), &self.device)?;
        let weight = Tensor::from_vec(weight, b, &self.device)?;
        let per_anchor = (log_p * positive)?.sum(1)?;
        Ok(Some((per_anchor * weight)?.sum_all()?.neg()?))
    }

    /// The loss of `texts` with `labels` as one batch, with the current
    /// weights (no step taken).
    pub fn loss(&self, texts: &[&str], labels: &[usize]) -> Result<Option<f32>, EmbedError> {
        let ids = self.encode(texts)?;
        let rows: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let (ids, mask) = crate::bert::padded(&rows, &self.device)?;
        let emb = self.model.forward(&ids, &mask)?;
        Ok(match self.contrastive(&emb, labels)? {
            Some(l) => Some(l.to_scalar::<f32>()?),
            None => None,
        })
    }

    /// Unit vectors of `texts` from the current weights (candle, training
    /// truncation), in batches of 32.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let ids = self.encode(texts)?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in ids.chunks(32) {
            let rows: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
            let (ids, mask) = crate::bert::padded(&rows, &self.device)?;
            out.extend(self.model.forward(&ids, &mask)?.to_vec2::<f32>()?);
        }
        Ok(out)
    }

    /// The steps [`FineTuner::train`] takes for `labels`.
    pub fn plan(&self, labels: &[usize]) -> Vec<Vec<usize>> {
        plan_batches(labels, &self.opts)
    }

    /// Train on `texts` (distinct, as the caller wants them weighed) with
    /// `labels` (indices); `on_step` hears of every step.
    pub fn train(
        &mut self,
        texts: &[&str],
        labels: &[usize],
        mut on_step: impl FnMut(Step),
    ) -> Result<FineTuneReport, EmbedError> {
        if texts.len() != labels.len() {
            return Err(EmbedError::FineTune(format!(
                "{} texts but {} labels",
                texts.len(),
                labels.len()
            )));
        }
        if texts.len() < 2 {
            return Err(EmbedError::FineTune(format!(
                "{} distinct texts: at least two are needed",
                texts.len()
            )));
        }
        let t0 = Instant::now();
        let ids = self.encode(texts)?;
        let batches = self.plan(labels);
        let steps = batches.len();
        let vars: Vec<candle_core::Var> = {
            let data = self.varmap.data().lock().expect("the var map is not poisoned");
            let mut named: Vec<(&String, &candle_core::Var)> = data
                .iter()
                .filter(|(n, _)| {
                    self.opts.train_word_embeddings || n.as_str() != "embeddings.word_embeddings.weight"
                })
                .collect();
            named.sort_by(|a, b| a.0.cmp(b.0));
            named.into_iter().map(|(_, v)| v.clone()).collect()
        };
        let mut opt = AdamW::new(
            vars,
            ParamsAdamW {
                lr: self.opts.learning_rate,
                weight_decay: self.opts.weight_decay,
                ..ParamsAdamW::default()
            },
        )?;
        let warm = ((self.opts.warmup * steps as f64).ceil() as usize).clamp(1, steps.max(1));
        let mut losses = Vec::with_capacity(steps);
        for (s, batch) in batches.iter().enumerate() {
            let scale = if s < warm {
                (s + 1) as f64 / warm as f64
            } else {
                (steps - s) as f64 / (steps - warm + 1) as f64
            };
            opt.set_learning_rate(self.opts.learning_rate * scale);
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let batch_labels: Vec<usize> = batch.iter().map(|&i| labels[i]).collect();
            let (t_ids, t_mask) = crate::bert::padded(&rows, &self.device)?;
            let emb = self.model.forward(&t_ids, &t_mask)?;
            let Some(loss) = self.contrastive(&emb, &batch_labels)? else {
                continue;
            };
            opt.backward_step(&loss)?;
            let loss = loss.to_scalar::<f32>()?;
            if !loss.is_finite() {
                return Err(EmbedError::FineTune(format!(
                    "the loss is {loss} at step {} of {steps}",
                    s + 1
                )));
            }
            losses.push(loss);
            on_step(Step {
                step: s + 1,
                steps,
                loss,
            });
        }
        let tenth = (losses.len() / 10).max(1).min(losses.len().max(1));
        let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len().max(1) as f32;
        Ok(FineTuneReport {
            texts: texts.len(),
            steps: losses.len(),
            epochs: self.opts.epochs,
            loss_first: mean(&losses[..tenth.min(losses.len())]),
            loss_last: mean(&losses[losses.len().saturating_sub(tenth)..]),
            seconds: t0.elapsed().as_secs_f64(),
        })
    }

    /// Write the encoder into `out` (created if needed) in the base model's
    /// layout; returns the sha256 of the weights file written.
    pub fn save(&self, out: &Path) -> Result<String, EmbedError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| fetch::FetchError::Io { path, source }
        };
        std::fs::create_dir_all(out).map_err(io(out))?;
        let base = self.base_dir.join(WEIGHTS);
        let werr = forward_err(&base);
        let mut tensors = candle_core::safetensors::load(&base, &self.device).map_err(&werr)?;
        {
            let vars = self.varmap.data().lock().expect("the var map is not poisoned");
            for (name, t) in tensors.iter_mut() {
                let key = name.strip_prefix(self.prefix).unwrap_or(name);
                if let Some(v) = vars.get(key) {
                    *t = v.as_tensor().detach();
                }
            }
        }
        let weights = out.join(WEIGHTS);
        candle_core::safetensors::save(&tensors, &weights).map_err(forward_err(&weights))?;
        for f in fetch::REQUIRED.iter().chain(OPTIONAL).filter(|f| **f != WEIGHTS) {
            let from = self.base_dir.join(f);
            if !from.is_file() {
                continue;
            }
            let to = out.join(f);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p).map_err(io(p))?;
            }
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
        let sha = fetch::sha256_file(&weights)?;
        fetch::write_marker(out, &sha)?;
        Ok(sha)
    }
}

/// A small deterministic generator (SplitMix64): the sampler's order must
/// not change with a dependency's version.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The batches of a run: `epochs × ⌈texts / (P·K)⌉` steps (at most
/// `max_steps`); each draws up to
/// P labels (with probability ∝ √texts of the label, without replacement)
/// and up to K texts of each from the label's shuffled queue, which wraps
/// and reshuffles, so every text comes round and rare labels are not
/// drowned.
fn plan_batches(labels: &[usize], opts: &FineTuneOptions) -> Vec<Vec<usize>> {
    let mut rng = SplitMix(opts.seed);
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, &l) in labels.iter().enumerate() {
        groups.entry(l).or_default().push(i);
    }
    let mut queues: Vec<(Vec<usize>, usize)> = groups
        .into_values()
        .map(|mut g| {
            rng.shuffle(&mut g);
            (g, 0)
        })
        .collect();
    let per_batch = (opts.labels_per_batch.max(1) * opts.per_label.max(1)).max(2);
    let mut steps = opts.epochs.max(1) * labels.len().div_ceil(per_batch).max(1);
    if let Some(cap) = opts.max_steps {
        steps = steps.min(cap.max(1));
    }
    let mut out = Vec::with_capacity(steps);
    for _ in 0..steps {
        let mut weights: Vec<f64> = queues.iter().map(|(q, _)| (q.len() as f64).sqrt()).collect();
        let mut batch = Vec::with_capacity(per_batch);
        for _ in 0..opts.labels_per_batch.max(1).min(queues.len()) {
            let total: f64 = weights.iter().sum();
            let mut r = rng.unit() * total;
            let mut pick = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
            for (g, &w) in weights.iter().enumerate() {
                if w > 0.0 && r < w {
                    pick = g;
                    break;
                }
                r -= w;
            }
            weights[pick] = 0.0;
            let (q, at) = &mut queues[pick];
            for _ in 0..opts.per_label.max(1).min(q.len()) {
                if *at == q.len() {
                    rng.shuffle(q);
                    *at = 0;
                }
                batch.push(q[*at]);
                *at += 1;
            }
        }
        out.push(batch);
    }
    out
}

/// Texts and labels as [`FineTuner::train`] takes them: each distinct text
/// once, with the label most of its rows carry (ties: the first seen), and
/// the label names in index order.
pub fn distinct_texts<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (Vec<&'a str>, Vec<usize>, Vec<String>) {
    let mut order: Vec<&str> = Vec::new();
    let mut counts: HashMap<&str, Vec<(&str, usize)>> = HashMap::new();
    for (text, label) in rows {
        let c = counts.entry(text).or_insert_with(|| {
            order.push(text);
            Vec::new()
        });
        match c.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => c.push((label, 1)),
        }
    }
    let mut names: Vec<String> = Vec::new();
    let mut labels = Vec::with_capacity(order.len());
    for t in &order {
        let c = &counts[t];
        let mut best = c[0];
        for &x in &c[1..] {
            if x.1 > best.1 {
                best = x;
            }
        }
        let id = match names.iter().position(|n| n == best.0) {
            Some(i) => i,
            None => {
                names.push(best.0.to_string());
                names.len() - 1
            }
        };
        labels.push(id);
    }
    (order, labels, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_mix_labels_and_every_text_comes_round() {
        // Label 0: 40 texts, label 1: 10, label 2: 2, label 3: 1.
        let labels: Vec<usize> = (0..53)
            .map(|i| match i {
                0..40 => 0,
                40..50 => 1,
                50..52 => 2,
                _ => 3,
            })
            .collect();
        let opts = FineTuneOptions {
            epochs: 3,
            labels_per_batch: 3,
            per_label: 4,
            ..FineTuneOptions::default()
        };
        let plan = plan_batches(&labels, &opts);
        assert_eq!(plan.len(), 3 * 53usize.div_ceil(12));
        for b in &plan {
            let mut ls: Vec<usize> = b.iter().map(|&i| labels[i]).collect();
            ls.dedup();
            assert!(b.len() <= 12, "{b:?}");
            let mut distinct = ls.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), 3, "three labels per batch: {ls:?}");
            let mut rows = b.clone();
            rows.sort();
            rows.dedup();
            assert_eq!(rows.len(), b.len(), "a text twice in one batch: {b:?}");
        }
        let seen: std::collections::BTreeSet<usize> = plan.iter().flatten().copied().collect();
        assert!(seen.len() >= 45, "only {} of 53 texts drawn", seen.len());
        assert_eq!(plan, plan_batches(&labels, &opts), "seeded: the same plan twice");
        let capped = FineTuneOptions {
            max_steps: Some(4),
            ..opts.clone()
        };
        assert_eq!(
            plan_batches(&labels, &capped),
            plan[..4],
            "a cap keeps the plan's start"
        );
    }

    #[test]
    fn distinct_texts_keep_the_majority_label() {
        let rows = [("a", "x"), ("b", "y"), ("a", "z"), ("a", "z"), ("c", "x")];
        let (texts, labels, names) = distinct_texts(rows);
        assert_eq!(texts, ["a", "b", "c"]);
        assert_eq!(names, ["z", "y", "x"]);
        assert_eq!(labels, [0, 1, 2]);
    }
}
