//! The encoder against sentence-transformers' own vectors.
//!
//! `shared/fixtures/minilm_reference.jsonl` holds 66 texts (the empty string,
//! unicode and over-long lines among them) with the embedding and token count
//! sentence-transformers produced. Ours must agree: cosine ≥ 0.9999 and the
//! same token counts. Uses the real weights (fetched once into the cache).
//! Every engine in the build is checked.

use std::path::PathBuf;

use logsieve_embed::lean::kernels::Backend;
use logsieve_embed::{BatchOptions, Embedder, Engine, MiniLm};

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    tokens: usize,
    embedding: Vec<f32>,
}

/// The vendored copy of the shared fixture (see tests/fixtures/README.md);
/// where the shared one is present, the two must be identical.
fn fixture() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = dir.join("tests/fixtures/minilm_reference.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let shared = dir.join("../../../shared/fixtures/minilm_reference.jsonl");
    if let Ok(original) = std::fs::read_to_string(&shared) {
        assert!(
            original == text,
            "{} differs from {}",
            path.display(),
            shared.display()
        );
    }
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn check(model: &MiniLm, cases: &[Case]) {
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let counts = model.token_counts(&texts).unwrap();
    let vectors = model.embed(&texts).unwrap();
    assert_eq!(vectors.len(), cases.len());
    let mut worst = (1.0f32, String::new());
    for ((case, got), n) in cases.iter().zip(&vectors).zip(&counts) {
        assert_eq!(*n, case.tokens, "token count for {:?}", truncate(&case.text));
        assert_eq!(got.len(), 384);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "not unit length: {norm}");
        let c = cosine(got, &case.embedding);
        if c < worst.0 {
            worst = (c, truncate(&case.text));
        }
        assert!(c >= 0.9999, "cosine {c} for {:?}", truncate(&case.text));
    }
    eprintln!(
        "{}: worst cosine {:.7} for {:?}",
        model.engine().name(),
        worst.0,
        worst.1
    );
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

#[test]
fn matches_sentence_transformers_in_one_call() {
    let cases = fixture();
    assert!(cases.len() >= 60);
    assert!(
        cases.iter().any(|c| c.text.is_empty()),
        "fixture includes the empty string"
    );
    for &engine in Engine::all() {
        let model = MiniLm::load_default_with(None, BatchOptions::default(), engine).expect("model loads");
        check(&model, &cases);
    }
}

#[test]
fn engines_agree_row_by_row() {
    // Every engine in the build, and the lean engine on both of its
    // matrix-product backends: at least two variants in any build, so the
    // comparison always runs.
    let cases = fixture();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let mut variants: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
    for &e in Engine::all() {
        let load = || MiniLm::load_default_with(None, BatchOptions::default(), e).expect("model loads");
        if e == Engine::Lean {
            for b in [Backend::MatrixMultiply, Backend::Gemm] {
                let m = load().with_lean_backend(b);
                variants.push((format!("lean/{}", b.name()), m.embed(&texts).unwrap()));
            }
        } else {
            variants.push((e.name().to_string(), load().embed(&texts).unwrap()));
        }
    }
    assert!(variants.len() >= 2, "nothing to compare: {}", variants.len());
    let (first, reference) = &variants[0];
    for (name, other) in &variants[1..] {
        assert_eq!(other.len(), reference.len());
        for ((a, b), text) in reference.iter().zip(other).zip(&texts) {
            let c = cosine(a, b);
            assert!(
                c >= 0.99999,
                "{first} and {name} disagree on {:?}: cosine {c}",
                truncate(text)
            );
        }
    }
}

#[test]
fn batching_does_not_change_vectors() {
    // Tiny batches: every text alone, so padding never appears.
    let opts = BatchOptions {
        max_batch: 1,
        ..BatchOptions::default()
    };
    let cases = fixture();
    for &engine in Engine::all() {
        let model = MiniLm::load_default_with(None, opts, engine).expect("model loads");
        check(&model, &cases[..cases.len().min(20)]);
    }
}
