//! A tiny BERT generated for tests: random weights (seeded), a two-layer,
//! 32-wide config and a WordPiece tokenizer over a word list, written in
//! all-MiniLM-L6-v2's layout (`config.json`, `tokenizer.json`,
//! `model.safetensors` with the same tensor names), so every engine and the
//! fine-tuner load it as they load the real model.

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;

pub const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const INTERMEDIATE: usize = 64;
const POSITIONS: usize = 64;

/// A tensor to write: name, shape, values.
type Named = (String, Vec<usize>, Vec<f32>);

/// Special tokens first, as BERT's vocabularies have them.
const SPECIAL: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
}

/// Write the model into `dir`: a vocabulary of the special tokens and
/// `words` (lower case), weights drawn from `seed`.
pub fn write_tiny_model(dir: &Path, words: &[&str], seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut vocab: Vec<String> = SPECIAL.iter().map(|s| s.to_string()).collect();
    for w in words {
        let w = w.to_lowercase();
        if !vocab.contains(&w) {
            vocab.push(w);
        }
    }
    let vocab_path = dir.join("vocab.txt");
    std::fs::write(&vocab_path, vocab.join("\n") + "\n").unwrap();
    let wp = tokenizers::models::wordpiece::WordPiece::from_file(vocab_path.to_str().unwrap())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(wp);
    tok.with_normalizer(Some(tokenizers::normalizers::BertNormalizer::default()));
    tok.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::bert::BertPreTokenizer));
    tok.with_post_processor(Some(tokenizers::processors::bert::BertProcessing::new(
        ("[SEP]".into(), 3),
        ("[CLS]".into(), 2),
    )));
    tok.save(dir.join("tokenizer.json"), false).unwrap();
    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab.len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": POSITIONS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let mut rng = Rng(seed);
    let mut tensors: Vec<Named> = Vec::new();
    let mut random = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.uniform(scale)).collect();
        (name, shape, v)
    };
    let ones = |name: String, n: usize| (name, vec![n], vec![1.0f32; n]);
    let zeros = |name: String, n: usize| (name, vec![n], vec![0.0f32; n]);
    tensors.push(random(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab.len(), HIDDEN],
        1.0,
    ));
    tensors.push(random(
        "embeddings.position_embeddings.weight".into(),
        vec![POSITIONS, HIDDEN],
        0.1,
    ));
    tensors.push(random(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, HIDDEN],
        0.1,
    ));
    tensors.push(ones("embeddings.LayerNorm.weight".into(), HIDDEN));
    tensors.push(zeros("embeddings.LayerNorm.bias".into(), HIDDEN));
    // Linear weights are [out × in], as PyTorch stores them.
    let dense = |rng: &mut dyn FnMut(String, Vec<usize>, f32) -> Named,
                 t: &mut Vec<Named>,
                 name: String,
                 out: usize,
                 inp: usize| {
        t.push(rng(
            format!("{name}.weight"),
            vec![out, inp],
            (1.0 / inp as f32).sqrt(),
        ));
        t.push(rng(format!("{name}.bias"), vec![out], 0.02));
    };
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}");
        for n in ["query", "key", "value"] {
            dense(
                &mut random,
                &mut tensors,
                format!("{p}.attention.self.{n}"),
                HIDDEN,
                HIDDEN,
            );
        }
        dense(
            &mut random,
            &mut tensors,
            format!("{p}.attention.output.dense"),
            HIDDEN,
            HIDDEN,
        );
        tensors.push(ones(format!("{p}.attention.output.LayerNorm.weight"), HIDDEN));
        tensors.push(zeros(format!("{p}.attention.output.LayerNorm.bias"), HIDDEN));
        dense(
            &mut random,
            &mut tensors,
            format!("{p}.intermediate.dense"),
            INTERMEDIATE,
            HIDDEN,
        );
        dense(
            &mut random,
            &mut tensors,
            format!("{p}.output.dense"),
            HIDDEN,
            INTERMEDIATE,
        );
        tensors.push(ones(format!("{p}.output.LayerNorm.weight"), HIDDEN));
        tensors.push(zeros(format!("{p}.output.LayerNorm.bias"), HIDDEN));
    }
    // A pooler, as the real snapshot has: not used by the sentence
    // vectors, so fine-tuning must carry it over unchanged.
    dense(&mut random, &mut tensors, "pooler.dense".into(), HIDDEN, HIDDEN);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}
