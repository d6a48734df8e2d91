//! An encoder that answers at once with one fixed vector: the tests that
//! use it are about the server, not about embeddings.

use logsieve_embed::{EmbedError, Embedder};

pub struct Fixed;

impl Embedder for Fixed {
    fn model_id(&self) -> &str {
        "fixed"
    }
    fn weights_sha256(&self) -> &str {
        "fixed"
    }
    fn dim(&self) -> usize {
        384
    }
    fn token_counts(&self, texts: &[&str]) -> Result<Vec<usize>, EmbedError> {
        Ok(texts.iter().map(|_| 1).collect())
    }
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut v = vec![0.0; 384];
        v[0] = 1.0;
        Ok(vec![v; texts.len()])
    }
}
