//! A small labelled file cut from the seed data, for tests that train.

use std::path::{Path, PathBuf};

/// The first `n` rows of `data/synthetic_logs.csv` labelled one of
/// `labels`, with its header, written to `dir/small.csv`.
pub fn seed_subset(dir: &Path, labels: &[&str], n: usize) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let seed = std::fs::read_to_string(repo.join("data/synthetic_logs.csv")).unwrap();
    let mut lines = seed.lines();
    let header = lines.next().unwrap();
    let keep: Vec<&str> = lines
        .filter(|l| labels.iter().any(|label| l.contains(&format!(",{label}"))))
        .take(n)
        .collect();
    let data = dir.join("small.csv");
    std::fs::write(&data, format!("{header}\n{}\n", keep.join("\n"))).unwrap();
    data
}
