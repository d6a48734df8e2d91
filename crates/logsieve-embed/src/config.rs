//! The encoder's `config.json`: sizes of a BERT-family model, read once and
//! shared by every engine.

use std::path::Path;

use serde::Deserialize;

use crate::EmbedError;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl BertConfig {
    /// Read `dir/config.json` and check the engines can run it.
    pub fn load(dir: &Path) -> Result<Self, EmbedError> {
        let path = dir.join("config.json");
        let err = |message: String| EmbedError::Weights {
            path: path.display().to_string(),
            message,
        };
        let cfg: BertConfig = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
            .map_err(err)?;
        if cfg.hidden_act != "gelu" {
            return Err(err(format!(
                "unsupported hidden_act `{}` (only gelu)",
                cfg.hidden_act
            )));
        }
        if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden_size, cfg.num_attention_heads
            )));
        }
        if cfg.type_vocab_size == 0 {
            return Err(err("type_vocab_size is 0".into()));
        }
        Ok(cfg)
    }
}
