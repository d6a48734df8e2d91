//! Fine-tuning on a tiny generated BERT (random weights, see
//! `support/tiny.rs`): a few steps make the loss fall and texts of one
//! label closer to each other than to the other labels' texts; the saved
//! encoder keeps the base file's layout and gives, on the lean engine, the
//! vectors the trained weights give on candle.
#![cfg(feature = "candle")]

mod support;

use std::collections::BTreeSet;

use logsieve_embed::finetune::{FineTuneOptions, FineTuner};
use logsieve_embed::{BatchOptions, EmbedError, Embedder, Engine, MiniLm};

const DISK: [&str; 6] = ["disk", "full", "quota", "volume", "space", "inode"];
const AUTH: [&str; 6] = ["login", "password", "denied", "user", "token", "auth"];
const BOOT: [&str; 6] = ["started", "service", "ready", "listening", "boot", "init"];
const SHARED: [&str; 6] = ["node", "host", "on", "at", "the", "now"];

/// Twelve texts per label: two of the label's words and two shared ones, in
/// an order that varies.
fn corpus() -> (Vec<String>, Vec<usize>) {
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for (l, words) in [DISK, AUTH, BOOT].iter().enumerate() {
        for i in 0..12 {
            let a = words[i % 6];
            let b = words[(i * 5 + 1) % 6];
            let s1 = SHARED[(i + l) % 6];
            let s2 = SHARED[(i * 7 + 2 * l + 3) % 6];
            let t = match i % 3 {
                0 => format!("{a} {s1} {b} {s2}"),
                1 => format!("{s1} {a} {s2} {b}"),
                _ => format!("{s1} {s2} {a} {b}"),
            };
            texts.push(t);
            labels.push(l);
        }
    }
    (texts, labels)
}

fn vocabulary() -> Vec<&'static str> {
    DISK.iter()
        .chain(&AUTH)
        .chain(&BOOT)
        .chain(&SHARED)
        .copied()
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Mean cosine within labels minus mean cosine across labels.
fn separation(v: &[Vec<f32>], labels: &[usize]) -> f32 {
    let (mut within, mut nw, mut across, mut na) = (0.0, 0, 0.0, 0);
    for i in 0..v.len() {
        for j in i + 1..v.len() {
            let c = cosine(&v[i], &v[j]);
            if labels[i] == labels[j] {
                within += c;
                nw += 1;
            } else {
                across += c;
                na += 1;
            }
        }
    }
    within / nw as f32 - across / na as f32
}

fn options() -> FineTuneOptions {
    FineTuneOptions {
        epochs: 20,
        labels_per_batch: 3,
        per_label: 4,
        // A random model needs larger steps than a pretrained one.
        learning_rate: 3e-3,
        warmup: 0.1,
        ..FineTuneOptions::default()
    }
}

#[test]
fn a_few_steps_lower_the_loss_and_pull_each_label_together() {
    let dir = tempfile::tempdir().unwrap();
    support::tiny::write_tiny_model(dir.path(), &vocabulary(), 7);
    let (texts, labels) = corpus();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tuner = FineTuner::load(dir.path(), options()).unwrap();
    let loss_before = tuner
        .loss(&texts, &labels)
        .unwrap()
        .expect("positives in the batch");
    let sep_before = separation(&tuner.embed(&texts).unwrap(), &labels);
    let mut steps = 0;
    let report = tuner
        .train(&texts, &labels, |s| {
            steps += 1;
            assert_eq!(s.step, steps, "steps reported in order");
            assert!(s.loss.is_finite());
        })
        .unwrap();
    assert_eq!(report.steps, steps);
    assert_eq!(report.steps, 20 * 36usize.div_ceil(12));
    let loss_after = tuner.loss(&texts, &labels).unwrap().unwrap();
    let sep_after = separation(&tuner.embed(&texts).unwrap(), &labels);
    eprintln!(
        "loss {loss_before:.3} -> {loss_after:.3}; within-minus-across cosine {sep_before:.3} -> {sep_after:.3}; \
         training loss {:.3} -> {:.3}",
        report.loss_first, report.loss_last
    );
    assert!(
        loss_after < 0.8 * loss_before,
        "loss did not fall: {loss_before} -> {loss_after}"
    );
    assert!(
        sep_after > sep_before + 0.1,
        "labels not pulled together: {sep_before} -> {sep_after}"
    );
}

#[test]
fn the_saved_encoder_loads_on_the_lean_engine_with_the_trained_vectors() {
    let base = tempfile::tempdir().unwrap();
    support::tiny::write_tiny_model(base.path(), &vocabulary(), 11);
    let (texts, labels) = corpus();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut tuner = FineTuner::load(base.path(), options()).unwrap();
    tuner.train(&texts, &labels, |_| {}).unwrap();
    let out = tempfile::tempdir().unwrap();
    let enc = out.path().join("encoder");
    let sha = tuner.save(&enc).unwrap();

    // The base file's layout: the same tensor names (the unused pooler
    // carried over unchanged), the config and tokenizer copied.
    let names = |p: &std::path::Path| -> BTreeSet<String> {
        let bytes = std::fs::read(p.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().map(String::from).collect()
    };
    assert_eq!(names(base.path()), names(&enc));
    let pooler = |p: &std::path::Path| -> Vec<u8> {
        let bytes = std::fs::read(p.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor("pooler.dense.weight").unwrap().data().to_vec()
    };
    assert_eq!(pooler(base.path()), pooler(&enc));
    for f in ["config.json", "tokenizer.json", "vocab.txt"] {
        assert_eq!(
            std::fs::read(base.path().join(f)).unwrap(),
            std::fs::read(enc.join(f)).unwrap(),
            "{f} copied"
        );
    }
    assert_eq!(
        logsieve_embed::fetch::read_sha256_marker(&enc).as_deref(),
        Some(sha.as_str())
    );

    let trained = tuner.embed(&texts).unwrap();
    let lean = MiniLm::load_verified(&enc, BatchOptions::default(), Engine::Lean, &sha).unwrap();
    assert_eq!(lean.weights_sha256(), sha);
    let got = lean.embed(&texts).unwrap();
    let base_lean = MiniLm::load_with(base.path(), BatchOptions::default(), Engine::Lean)
        .unwrap()
        .embed(&texts)
        .unwrap();
    let mut moved = 0.0f32;
    for ((t, g), (b, text)) in trained.iter().zip(&got).zip(base_lean.iter().zip(&texts)) {
        let c = cosine(t, g);
        assert!(c >= 0.99999, "lean and candle disagree on {text:?}: cosine {c}");
        let max_diff = t.iter().zip(g).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_diff < 1e-4, "{text:?}: largest difference {max_diff}");
        moved = moved.max(1.0 - cosine(b, g));
    }
    assert!(
        moved > 1e-3,
        "the saved weights are the base model's (largest move {moved})"
    );

    // Other weights than the ones recorded: refused, naming the file.
    let err = MiniLm::load_verified(&enc, BatchOptions::default(), Engine::Lean, &"0".repeat(64))
        .err()
        .expect("a wrong sha256 is refused");
    assert!(matches!(err, EmbedError::WrongWeights { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("model.safetensors") && msg.contains(&sha), "{msg}");
}
