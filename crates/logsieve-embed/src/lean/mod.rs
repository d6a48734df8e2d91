//! The lean encoder: a BERT forward pass on plain f32 buffers, no tensor
//! library. Weights are read once from safetensors and laid out for the
//! kernels (K×N row-major, Q/K/V fused, 1/√d folded into Q). A batch is
//! never padded: the rows of all its sequences are stacked into one
//! [tokens × hidden] matrix for the dense layers, and attention runs per
//! (sequence, head) over the sequence's real length. Buffers live in a pool of
//! workspaces reused across calls.
//!
//! Files: this one is the model and its forward pass; `weights` reads and
//! lays out the weights; `kernels` holds the matrix products and fused ops.

pub mod kernels;
mod weights;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use safetensors::tensor::TensorInfo;
use safetensors::Dtype;

use crate::config::BertConfig;
use kernels::{Backend, View};

/// Why the lean encoder could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum LeanError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: bad safetensors header: {message}")]
    Header { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}` missing")]
    Missing { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {got:?}, expected {want:?}")]
    Shape {
        path: PathBuf,
        name: String,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("{path}: tensor `{name}` has dtype {dtype:?} (f32, f16 and bf16 are supported)")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: Dtype,
    },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenId { id: u32, vocab: usize },
    #[error("a sequence of {len} tokens exceeds the {max} positions of the model")]
    TooLong { len: usize, max: usize },
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// [hidden × 3·hidden]: Q (pre-scaled by 1/√head_dim), K, V side by side.
    qkv: Vec<f32>,
    qkv_bias: Vec<f32>,
    /// [hidden × hidden].
    attn_out: Vec<f32>,
    attn_out_bias: Vec<f32>,
    attn_norm: Norm,
    /// [hidden × intermediate].
    inter: Vec<f32>,
    inter_bias: Vec<f32>,
    /// [intermediate × hidden].
    out: Vec<f32>,
    out_bias: Vec<f32>,
    out_norm: Norm,
}

/// Buffers for one forward pass, grown to the largest batch seen and reused.
#[derive(Default)]
struct Workspace {
    /// [tokens × hidden]: the hidden state.
    x: Vec<f32>,
    /// [tokens × 3·hidden].
    qkv: Vec<f32>,
    /// Attention context, head-major: [heads × tokens × head_dim].
    ctx_heads: Vec<f32>,
    /// Attention context, [tokens × hidden].
    ctx: Vec<f32>,
}

fn grow(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

thread_local! {
    /// Attention scores of one (sequence, head), per worker thread.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The feed-forward activations of one row tile, per worker thread.
    static FFN: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows per tile for the dense layers: enough tiles to keep every thread
/// busy, few enough rows that a tile's activations stay in cache.
fn tile_rows(tokens: usize, threads: usize) -> usize {
    const MAX_TILE: usize = 512;
    let tiles = threads.max(tokens.div_ceil(MAX_TILE)).max(1);
    tokens.div_ceil(tiles).max(1)
}

pub struct LeanModel {
    cfg: BertConfig,
    eps: f32,
    /// [vocab × hidden].
    word: Vec<f32>,
    /// [positions × hidden], with token type 0 already added.
    position: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    backend: Backend,
    pool: Mutex<Vec<Workspace>>,
}

impl LeanModel {
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }

    /// The matrix-product backend (`LOGSIEVE_LEAN_GEMM` at load).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// This model on another matrix-product backend (the weights' layout is
    /// the same for both).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Embed token-id rows (already truncated, specials included): one
    /// mean-pooled, L2-normalised vector per row.
    pub fn embed(&self, rows: &[&[u32]]) -> Result<Vec<Vec<f32>>, LeanError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        for r in rows {
            if r.len() > self.cfg.max_position_embeddings {
                return Err(LeanError::TooLong {
                    len: r.len(),
                    max: self.cfg.max_position_embeddings,
                });
            }
            if let Some(&id) = r.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(LeanError::TokenId {
                    id,
                    vocab: self.cfg.vocab_size,
                });
            }
        }
        let mut ws = self
            .pool
            .lock()
            .map(|mut p| p.pop())
            .unwrap_or(None)
            .unwrap_or_default();
        let out = self.forward(&mut ws, rows);
        if let Ok(mut p) = self.pool.lock() {
            p.push(ws);
        }
        Ok(out)
    }

    fn forward(&self, ws: &mut Workspace, rows: &[&[u32]]) -> Vec<Vec<f32>> {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let hd = h / heads;
        let inter = self.cfg.intermediate_size;
        let threads = rayon::current_num_threads();
        let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let mut starts = Vec::with_capacity(rows.len());
        let mut t = 0;
        for &l in &lens {
            starts.push(t);
            t += l;
        }
        grow(&mut ws.x, t * h);
        grow(&mut ws.qkv, t * 3 * h);
        grow(&mut ws.ctx_heads, t * h);
        grow(&mut ws.ctx, t * h);
        let x = &mut ws.x[..t * h];
        let qkv = &mut ws.qkv[..t * 3 * h];
        let ctx_heads = &mut ws.ctx_heads[..t * h];
        let ctx = &mut ws.ctx[..t * h];
        let tile = tile_rows(t, threads);

        // Embeddings: word + (position + type 0), then LayerNorm.
        let ids: Vec<(u32, usize)> = rows
            .iter()
            .flat_map(|r| r.iter().enumerate().map(|(p, &id)| (id, p)))
            .collect();
        x.par_chunks_mut(h)
            .zip(ids.par_iter())
            .for_each(|(row, &(id, p))| {
                let w = &self.word[id as usize * h..][..h];
                let pe = &self.position[p * h..][..h];
                for ((v, a), b) in row.iter_mut().zip(w).zip(pe) {
                    *v = a + b;
                }
                kernels::layer_norm_rows(row, &self.emb_norm.gamma, &self.emb_norm.beta, self.eps);
            });

        for l in &self.layers {
            // Q, K, V in one product per row tile, bias fused.
            let x_ro: &[f32] = x;
            qkv.par_chunks_mut(tile * 3 * h).enumerate().for_each(|(i, out)| {
                let m = out.len() / (3 * h);
                kernels::fill_rows(out, &l.qkv_bias);
                kernels::matmul(
                    self.backend,
                    out,
                    &x_ro[i * tile * h..][..m * h],
                    &l.qkv,
                    m,
                    h,
                    3 * h,
                    true,
                    1,
                );
            });

            // Attention per (head, sequence) over the real length only; each
            // task owns one contiguous block of the head-major context.
            let mut tasks = Vec::with_capacity(heads * rows.len());
            for (head, per_head) in ctx_heads.chunks_mut(t * hd).enumerate() {
                let mut rest = per_head;
                for (s, &len) in lens.iter().enumerate() {
                    let (mine, tail) = rest.split_at_mut(len * hd);
                    rest = tail;
                    tasks.push((head, starts[s], len, mine));
                }
            }
            let qkv_ro: &[f32] = qkv;
            tasks.into_par_iter().for_each(|(head, start, len, out)| {
                attend(self.backend, qkv_ro, h, hd, head, start, len, out);
            });
            // Back to [tokens × hidden].
            let ctx_heads_ro: &[f32] = ctx_heads;
            ctx.par_chunks_mut(h * tile)
                .enumerate()
                .for_each(|(bi, rows_out)| {
                    for (r, row) in rows_out.chunks_exact_mut(h).enumerate() {
                        let tok = bi * tile + r;
                        for head in 0..heads {
                            let src = &ctx_heads_ro[head * t * hd + tok * hd..][..hd];
                            row[head * hd..][..hd].copy_from_slice(src);
                        }
                    }
                });

            // The rest of the layer is row-wise: per tile, output projection
            // onto the residual, LayerNorm, feed-forward (bias + GELU fused),
            // residual, LayerNorm, with the tile's activations kept hot.
            let ctx_ro: &[f32] = ctx;
            x.par_chunks_mut(tile * h).enumerate().for_each(|(i, xt)| {
                let m = xt.len() / h;
                kernels::add_rows(xt, &l.attn_out_bias);
                kernels::matmul(
                    self.backend,
                    xt,
                    &ctx_ro[i * tile * h..][..m * h],
                    &l.attn_out,
                    m,
                    h,
                    h,
                    true,
                    1,
                );
                kernels::layer_norm_rows(xt, &l.attn_norm.gamma, &l.attn_norm.beta, self.eps);
                FFN.with(|cell| {
                    let mut buf = cell.borrow_mut();
                    grow(&mut buf, m * inter);
                    let hid = &mut buf[..m * inter];
                    kernels::matmul(self.backend, hid, xt, &l.inter, m, h, inter, false, 1);
                    kernels::bias_gelu(hid, &l.inter_bias);
                    kernels::add_rows(xt, &l.out_bias);
                    kernels::matmul(self.backend, xt, hid, &l.out, m, inter, h, true, 1);
                });
                kernels::layer_norm_rows(xt, &l.out_norm.gamma, &l.out_norm.beta, self.eps);
            });
        }

        // Mean pooling, then L2 normalisation.
        let x: &[f32] = x;
        lens.iter()
            .zip(&starts)
            .map(|(&len, &start)| {
                let mut v = vec![0f32; h];
                for row in x[start * h..(start + len) * h].chunks_exact(h) {
                    for (a, b) in v.iter_mut().zip(row) {
                        *a += b;
                    }
                }
                let inv_len = 1.0 / len.max(1) as f32;
                v.iter_mut().for_each(|a| *a *= inv_len);
                let norm = kernels::sum(&v.iter().map(|a| a * a).collect::<Vec<_>>()).sqrt();
                let inv = 1.0 / norm.max(1e-12);
                v.iter_mut().for_each(|a| *a *= inv);
                v
            })
            .collect()
    }
}

/// One head of one sequence: `out[len × hd] = softmax(Q Kᵀ) V`, with Q
/// already scaled. `qkv` is [tokens × 3·hidden].
#[allow(clippy::too_many_arguments)]
fn attend(
    backend: Backend,
    qkv: &[f32],
    h: usize,
    hd: usize,
    head: usize,
    start: usize,
    len: usize,
    out: &mut [f32],
) {
    if len == 0 {
        return;
    }
    SCORES.with(|cell| {
        let mut scores = cell.borrow_mut();
        grow(&mut scores, len * len);
        let scores = &mut scores[..len * len];
        let row0 = start * 3 * h;
        let q = View {
            offset: row0 + head * hd,
            rows: len,
            cols: hd,
            rs: 3 * h,
            cs: 1,
        };
        // Kᵀ: element (d, j) is K[j][d].
        let kt = View {
            offset: row0 + h + head * hd,
            rows: hd,
            cols: len,
            rs: 1,
            cs: 3 * h,
        };
        let s = View {
            offset: 0,
            rows: len,
            cols: len,
            rs: len,
            cs: 1,
        };
        kernels::matmul_strided(backend, scores, s, qkv, q, qkv, kt, false);
        kernels::softmax_rows(scores, len);
        let v = View {
            offset: row0 + 2 * h + head * hd,
            rows: len,
            cols: hd,
            rs: 3 * h,
            cs: 1,
        };
        let o = View {
            offset: 0,
            rows: len,
            cols: hd,
            rs: hd,
            cs: 1,
        };
        kernels::matmul_strided(backend, out, o, scores, s, qkv, v, false);
    });
}
