//! The lean encoder's weights: read once from safetensors (f32 or f16,
//! one tensor at a time, never the whole file in memory) and laid out for
//! the kernels: K×N row-major, Q/K/V fused, 1/√d folded into Q.

use super::*;

/// The tensors of a safetensors file, read one at a time (no full copy of
/// the file in memory).
struct TensorFile {
    path: PathBuf,
    file: File,
    data_start: u64,
    tensors: HashMap<String, TensorInfo>,
    prefix: &'static str,
}

impl TensorFile {
    fn open(path: &Path) -> Result<Self, LeanError> {
        let io = |source| LeanError::Io {
            path: path.to_path_buf(),
            source,
        };
        let header = |message: String| LeanError::Header {
            path: path.to_path_buf(),
            message,
        };
        let mut file = File::open(path).map_err(io)?;
        let mut n = [0u8; 8];
        file.read_exact(&mut n).map_err(io)?;
        let n = u64::from_le_bytes(n);
        if n > 100 << 20 {
            return Err(header(format!("header of {n} bytes")));
        }
        let mut text = vec![0u8; n as usize];
        file.read_exact(&mut text).map_err(io)?;
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&text).map_err(|e| header(e.to_string()))?;
        let mut tensors = HashMap::new();
        for (name, v) in raw {
            if name == "__metadata__" {
                continue;
            }
            let info: TensorInfo = serde_json::from_value(v).map_err(|e| header(format!("{name}: {e}")))?;
            tensors.insert(name, info);
        }
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        Ok(Self {
            path: path.to_path_buf(),
            file,
            data_start: 8 + n,
            tensors,
            prefix,
        })
    }

    /// Read tensor `name` as f32, checking its shape.
    fn read(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LeanError> {
        let full = format!("{}{name}", self.prefix);
        let info = self.tensors.get(&full).ok_or_else(|| LeanError::Missing {
            path: self.path.clone(),
            name: full.clone(),
        })?;
        if info.shape != shape {
            return Err(LeanError::Shape {
                path: self.path.clone(),
                name: full,
                got: info.shape.clone(),
                want: shape.to_vec(),
            });
        }
        let count: usize = shape.iter().product();
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            dtype => {
                return Err(LeanError::Dtype {
                    path: self.path.clone(),
                    name: full,
                    dtype,
                })
            }
        };
        let (start, end) = info.data_offsets;
        if end - start != count * width {
            return Err(LeanError::Header {
                path: self.path.clone(),
                message: format!("{full}: {} bytes for {count} values", end - start),
            });
        }
        let dtype = info.dtype;
        let io = |source| LeanError::Io {
            path: self.path.clone(),
            source,
        };
        self.file
            .seek(SeekFrom::Start(self.data_start + start as u64))
            .map_err(io)?;
        let mut out = Vec::with_capacity(count);
        let mut buf = vec![0u8; 1 << 16];
        let mut left = count * width;
        while left > 0 {
            let take = left.min(buf.len());
            self.file.read_exact(&mut buf[..take]).map_err(io)?;
            match dtype {
                Dtype::F32 => out.extend(
                    buf[..take]
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
                Dtype::BF16 => out.extend(
                    buf[..take]
                        .chunks_exact(2)
                        .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)),
                ),
                _ => out.extend(
                    buf[..take]
                        .chunks_exact(2)
                        .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
                ),
            }
            left -= take;
        }
        Ok(out)
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match exp {
        0 if frac == 0 => sign,
        0 => {
            // Subnormal: value = frac · 2^-24.
            let v = frac as f32 * (1.0 / (1u32 << 24) as f32);
            return if sign != 0 { -v } else { v };
        }
        0x1f => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// `w` is a torch Linear weight [out × in]; return it as [in × out].
fn transpose(w: &[f32], out: usize, inp: usize) -> Vec<f32> {
    let mut t = vec![0f32; w.len()];
    for o in 0..out {
        for i in 0..inp {
            t[i * out + o] = w[o * inp + i];
        }
    }
    t
}

impl LeanModel {
    /// Load from a directory holding `config.json` and `model.safetensors`.
    pub fn load(dir: &Path, cfg: BertConfig) -> Result<Self, LeanError> {
        let mut f = TensorFile::open(&dir.join("model.safetensors"))?;
        let (h, inter, heads) = (cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads);
        let hd = h / heads;
        let word = f.read("embeddings.word_embeddings.weight", &[cfg.vocab_size, h])?;
        let mut position = f.read(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let types = f.read(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        for row in position.chunks_exact_mut(h) {
            for (p, t) in row.iter_mut().zip(&types[..h]) {
                *p += t;
            }
        }
        let norm = |f: &mut TensorFile, name: &str| -> Result<Norm, LeanError> {
            Ok(Norm {
                gamma: f.read(&format!("{name}.weight"), &[h])?,
                beta: f.read(&format!("{name}.bias"), &[h])?,
            })
        };
        let emb_norm = norm(&mut f, "embeddings.LayerNorm")?;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let a = format!("{p}.attention");
            let mut qkv = vec![0f32; h * 3 * h];
            let mut qkv_bias = vec![0f32; 3 * h];
            for (j, part) in ["query", "key", "value"].iter().enumerate() {
                let s = if j == 0 { scale } else { 1.0 };
                let w = f.read(&format!("{a}.self.{part}.weight"), &[h, h])?;
                let b = f.read(&format!("{a}.self.{part}.bias"), &[h])?;
                for o in 0..h {
                    for k in 0..h {
                        qkv[k * 3 * h + j * h + o] = w[o * h + k] * s;
                    }
                    qkv_bias[j * h + o] = b[o] * s;
                }
            }
            let w = f.read(&format!("{a}.output.dense.weight"), &[h, h])?;
            let attn_out = transpose(&w, h, h);
            let attn_out_bias = f.read(&format!("{a}.output.dense.bias"), &[h])?;
            let attn_norm = norm(&mut f, &format!("{a}.output.LayerNorm"))?;
            let w = f.read(&format!("{p}.intermediate.dense.weight"), &[inter, h])?;
            let inter_w = transpose(&w, inter, h);
            let inter_bias = f.read(&format!("{p}.intermediate.dense.bias"), &[inter])?;
            let w = f.read(&format!("{p}.output.dense.weight"), &[h, inter])?;
            let out = transpose(&w, h, inter);
            let out_bias = f.read(&format!("{p}.output.dense.bias"), &[h])?;
            let out_norm = norm(&mut f, &format!("{p}.output.LayerNorm"))?;
            layers.push(Layer {
                qkv,
                qkv_bias,
                attn_out,
                attn_out_bias,
                attn_norm,
                inter: inter_w,
                inter_bias,
                out,
                out_bias,
                out_norm,
            });
        }
        Ok(Self {
            eps: cfg.layer_norm_eps as f32,
            cfg,
            word,
            position,
            emb_norm,
            layers,
            backend: Backend::from_env(),
            pool: Mutex::new(Vec::new()),
        })
    }
}
