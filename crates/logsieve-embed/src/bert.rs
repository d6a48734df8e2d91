//! A BERT encoder on candle, sized by the model's `config.json`.
//!
//! Written against candle-core/candle-nn directly (not candle-transformers'
//! BertModel) so the forward pass is ours to shape: one padded batch in,
//! mean-pooled, L2-normalised sentence vectors out. Built with the `candle`
//! feature, as a second engine to check and time the lean one against, and
//! as the model [`crate::finetune`] trains: built from any `VarBuilder` (a
//! `VarMap`'s makes its weights trainable), with a differentiable forward
//! pass (candle's fused softmax and LayerNorm kernels have no backward).

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::config::BertConfig;
use crate::EmbedError;

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
}

pub struct BertModel {
    cfg: BertConfig,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    device: Device,
    /// Composed (differentiable) softmax and LayerNorm instead of the fused
    /// inference kernels.
    differentiable: bool,
    /// Keep gradients away from the word embeddings (they stay as loaded).
    freeze_words: bool,
    /// Keep gradients away from the embeddings and the first this many
    /// layers (no backward pass through them).
    frozen_layers: usize,
}

fn linear(vb: VarBuilder, i: usize, o: usize) -> candle_core::Result<Linear> {
    candle_nn::linear(i, o, vb)
}

/// A linear layer on [batch × len × in] as one [batch·len × in] product:
/// candle's 3-d `Linear` broadcasts the weight over the batch, and the
/// backward pass then sums a batch of weight gradients, slowly.
fn dense(l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, n, h) = x.dims3()?;
    l.forward(&x.reshape((b * n, h))?)?.reshape((b, n, ()))
}

fn norm(vb: VarBuilder, n: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    candle_nn::layer_norm(n, eps, vb)
}

impl BertModel {
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let weights = dir.join("model.safetensors");
        let werr = |message: String| EmbedError::Weights {
            path: weights.display().to_string(),
            message,
        };
        let cfg = BertConfig::load(dir)?;
        let device = Device::Cpu;
        // Safety: the file is memory-mapped read-only and not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .map_err(|e| werr(e.to_string()))?;
        // Some exports prefix every tensor with `bert.`.
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        Self::new(&cfg, vb, &device).map_err(|e| werr(e.to_string()))
    }

    /// Build the encoder from `vb` (tensor names as in the model's
    /// safetensors, no `bert.` prefix): inference weights from a file, or a
    /// `VarMap`'s variables, created on first use, for training.
    pub fn new(cfg: &BertConfig, vb: VarBuilder, device: &Device) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(cfg.vocab_size, h, e.pp("word_embeddings"))?;
        let position = candle_nn::embedding(cfg.max_position_embeddings, h, e.pp("position_embeddings"))?;
        let token_type = candle_nn::embedding(cfg.type_vocab_size, h, e.pp("token_type_embeddings"))?;
        let emb_norm = norm(e.pp("LayerNorm"), h, cfg.layer_norm_eps)?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention");
            layers.push(Layer {
                query: linear(a.pp("self.query"), h, h)?,
                key: linear(a.pp("self.key"), h, h)?,
                value: linear(a.pp("self.value"), h, h)?,
                attn_out: linear(a.pp("output.dense"), h, h)?,
                attn_norm: norm(a.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
                inter: linear(l.pp("intermediate.dense"), h, cfg.intermediate_size)?,
                out: linear(l.pp("output.dense"), cfg.intermediate_size, h)?,
                out_norm: norm(l.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word,
            position,
            token_type,
            emb_norm,
            layers,
            device: device.clone(),
            differentiable: false,
            freeze_words: false,
            frozen_layers: 0,
        })
    }

    /// This model with a forward pass gradients flow through, into the
    /// word embeddings too when `word_embeddings`.
    pub fn trainable(mut self, word_embeddings: bool) -> Self {
        self.differentiable = true;
        self.freeze_words = !word_embeddings;
        self
    }

    /// Train only the layers above the first `n` (and not the embeddings
    /// when `n` > 0): the backward pass stops at layer `n`. At least the
    /// top layer stays trainable.
    pub fn freeze_layers(mut self, n: usize) -> Self {
        self.frozen_layers = n.min(self.cfg.num_hidden_layers.saturating_sub(1));
        self
    }

    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// Embed one batch of token-id rows (already truncated, specials included).
    /// Rows are right-padded to the batch's longest; padding is masked out of
    /// attention and pooling.
    pub fn embed(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (ids, mask) = padded(rows, &self.device)?;
        let pooled = self.forward(&ids, &mask)?;
        Ok(pooled.to_vec2::<f32>()?)
    }

    /// `ids` [batch × len] (u32), `mask` [batch × len] (f32, 1 for real
    /// tokens): mean-pooled, L2-normalised vectors [batch × hidden].
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, len) = ids.dims2()?;
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let hd = h / heads;
        let positions = Tensor::arange(0u32, len as u32, &self.device)?;
        let types = Tensor::zeros((b, len), DType::U32, &self.device)?;
        let words = self.word.forward(ids)?;
        let words = if self.freeze_words { words.detach() } else { words };
        let x = words
            .broadcast_add(&self.position.forward(&positions)?)?
            .add(&self.token_type.forward(&types)?)?;
        let mut x = self.norm(&self.emb_norm, &x)?;
        // Additive attention bias: 0 for real tokens, a large negative for padding.
        let bias = ((mask.clone() - 1.0)? * 1e9f64)?.reshape((b, 1, 1, len))?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (n, l) in self.layers.iter().enumerate() {
            if n > 0 && n == self.frozen_layers {
                // The frozen layers' output is a constant to the rest.
                x = x.detach();
            }
            let split = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, len, heads, hd))?.transpose(1, 2)?.contiguous()
            };
            let q = split(dense(&l.query, &x)?)?;
            let k = split(dense(&l.key, &x)?)?;
            let v = split(dense(&l.value, &x)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = if self.differentiable {
                candle_nn::ops::softmax(&scores, D::Minus1)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores)?
            };
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, h))?;
            let a = self.norm(&l.attn_norm, &(dense(&l.attn_out, &ctx)? + &x)?)?;
            let i = dense(&l.inter, &a)?.gelu_erf()?;
            x = self.norm(&l.out_norm, &(dense(&l.out, &i)? + &a)?)?;
        }
        // Mean pooling over real tokens, then L2 normalisation.
        let m = mask.unsqueeze(2)?;
        let summed = x.broadcast_mul(&m)?.sum(1)?;
        let counts = m.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        mean.broadcast_div(&norms)
    }

    fn norm(&self, n: &LayerNorm, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.differentiable {
            // LayerNorm's fused kernel has no backward; the slow path (the
            // same arithmetic in composed ops) has one.
            let w = n.weight();
            let b = n.bias().expect("BERT's LayerNorms have a bias");
            candle_nn::ops::layer_norm_slow(x, w, b, self.cfg.layer_norm_eps as f32)
        } else {
            n.forward(x)
        }
    }
}

/// Token-id rows as one batch: ids [rows × longest] (u32, right-padded
/// with 0) and the attention mask (f32, 1 for real tokens).
pub(crate) fn padded(rows: &[&[u32]], device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let b = rows.len();
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut ids = vec![0u32; b * len];
    let mut mask = vec![0f32; b * len];
    for (r, row) in rows.iter().enumerate() {
        ids[r * len..r * len + row.len()].copy_from_slice(row);
        mask[r * len..r * len + row.len()].fill(1.0);
    }
    Ok((
        Tensor::from_vec(ids, (b, len), device)?,
        Tensor::from_vec(mask, (b, len), device)?,
    ))
}
