//! `train --fine-tune` end to end on a tiny generated BERT (random weights;
//! see logsieve-embed's tests/support/tiny.rs): the artifact carries the
//! fine-tuned encoder, `classify --model DIR` uses it without being told
//! where it is, and refuses weights other than the ones recorded. A build
//! without the `fine-tune` feature says how to get one instead.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "support/seed.rs"]
mod seed;

#[cfg(feature = "fine-tune")]
#[path = "../../logsieve-embed/tests/support/tiny.rs"]
mod tiny;

/// The binary with no LLM, no configuration from the environment, and a
/// cache it cannot fill (so the real model is never what answers).
fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logsieve"));
    for v in [
        "LOGSIEVE_LLM_API_KEY",
        "GROQ_API_KEY",
        "OPENAI_API_KEY",
        "LOGSIEVE_LLM_BASE_URL",
        "LOGSIEVE_LLM_MODEL",
        "LOGSIEVE_CONFIG",
        "LOGSIEVE_MODEL_DIR",
    ] {
        c.env_remove(v);
    }
    c.env("LOGSIEVE_HOME", home)
        .env("LOGSIEVE_SKIP_HUB", "1")
        .env("PIP_INDEX_URL", "http://127.0.0.1:9/simple");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// 150 seed rows of three labels the model stage learns.
fn small_data(dir: &Path) -> PathBuf {
    seed::seed_subset(dir, &["Resource Usage", "Critical Error", "Security Alert"], 150)
}

#[cfg(not(feature = "fine-tune"))]
#[test]
fn without_the_feature_fine_tune_says_how_to_build_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_data(dir.path());
    let out: Output = bin(dir.path())
        .args(["train", "--fine-tune", "--data", data.to_str().unwrap(), "--out"])
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--features fine-tune"), "{err}");
    assert!(!dir.path().join("m").exists(), "nothing written");
}

#[cfg(feature = "fine-tune")]
#[test]
fn a_fine_tuned_artifact_brings_its_encoder_and_it_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = small_data(dir.path());
    // The tiny model's vocabulary: the data's words.
    let csv = std::fs::read_to_string(&data).unwrap();
    let mut words: Vec<String> = csv
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() > 1)
        .map(str::to_lowercase)
        .collect();
    words.sort();
    words.dedup();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let base = dir.path().join("base");
    tiny::write_tiny_model(&base, &words, 3);
    let model = dir.path().join("model");
    let out: Output = bin(dir.path())
        .args([
            "--model-dir",
            base.to_str().unwrap(),
            "train",
            "--fine-tune",
            "--epochs",
            "1",
        ])
        .args(["--data", data.to_str().unwrap(), "--out", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "train: {}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("encoder fine-tuned on"),
        "{}",
        text(&out.stdout)
    );

    let art: serde_json::Value =
        serde_json::from_slice(&std::fs::read(model.join("classifier.json")).unwrap()).unwrap();
    let emb = &art["embedding"];
    assert_eq!(emb["dim"], tiny::HIDDEN);
    let ft = &emb["fine_tuned"];
    assert_eq!(ft["dir"], "encoder");
    let sha = |p: &Path| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(p).unwrap()))
    };
    let encoder_weights = model.join("encoder/model.safetensors");
    assert_eq!(ft["base_weights_sha256"], sha(&base.join("model.safetensors")));
    assert_eq!(emb["weights_sha256"], sha(&encoder_weights));
    assert_ne!(
        emb["weights_sha256"], ft["base_weights_sha256"],
        "the weights moved"
    );
    assert!(ft["steps"].as_u64().unwrap() > 0);
    for f in ["config.json", "tokenizer.json"] {
        assert!(model.join("encoder").join(f).is_file(), "{f} copied");
    }

    // No --model-dir: the artifact's own encoder (a 32-d classifier on the
    // 384-d cached model could not run, and the cache cannot be filled).
    let classify = || {
        bin(dir.path())
            .args(["--model", model.to_str().unwrap(), "--threshold", "0", "classify"])
            .stdin(std::fs::File::open(&data).unwrap())
            .output()
            .unwrap()
    };
    let out = classify();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = text(&out.stdout);
    assert!(rows.lines().any(|l| l.contains(",model,")), "{rows}");
    assert!(!rows.contains("sha256"), "{rows}");

    // Other weights under the same name: refused, saying which and why.
    let mut bytes = std::fs::read(&encoder_weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&encoder_weights, bytes).unwrap();
    let out = classify();
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(
        !said.contains(",model,"),
        "classified with the wrong weights: {said}"
    );
    assert!(
        said.contains("encoder/model.safetensors") && said.contains("the classifier was trained on"),
        "{said}"
    );
}
