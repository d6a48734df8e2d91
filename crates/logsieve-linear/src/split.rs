//! A stratified train/test split with a fixed seed.
//!
//! The shuffle is our own (splitmix64 + Fisher–Yates), so the split of a
//! data file stays the same across releases of any random-number crate:
//! `train` and `eval --split test` must agree on which rows are held out.

use std::collections::BTreeMap;

pub const DEFAULT_SEED: u64 = 42;
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Which rows are held out: `true` for test. Each label contributes
/// `round(n × fraction)` rows to the test part (at least one when it has two
/// or more rows), chosen by a seeded shuffle within the label.
pub fn stratified_split<S: AsRef<str>>(labels: &[S], test_fraction: f64, seed: u64) -> Vec<bool> {
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in labels.iter().enumerate() {
        groups.entry(l.as_ref()).or_default().push(i);
    }
    let mut is_test = vec![false; labels.len()];
    let mut state = seed;
    for idx in groups.values_mut() {
        for i in (1..idx.len()).rev() {
            let j = (splitmix64(&mut state) % (i as u64 + 1)) as usize;
            idx.swap(i, j);
        }
        let mut n_test = (idx.len() as f64 * test_fraction).round() as usize;
        if n_test == 0 && idx.len() >= 2 && test_fraction > 0.0 {
            n_test = 1;
        }
        for &i in idx.iter().take(n_test) {
            is_test[i] = true;
        }
    }
    is_test
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_label_is_split_in_proportion() {
        let labels: Vec<&str> = std::iter::repeat_n("a", 100)
            .chain(std::iter::repeat_n("b", 10))
            .collect();
        let t = stratified_split(&labels, 0.2, 42);
        assert_eq!(t[..100].iter().filter(|&&x| x).count(), 20);
        assert_eq!(t[100..].iter().filter(|&&x| x).count(), 2);
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let labels: Vec<String> = (0..200).map(|i| format!("l{}", i % 3)).collect();
        assert_eq!(
            stratified_split(&labels, 0.2, 42),
            stratified_split(&labels, 0.2, 42)
        );
        assert_ne!(
            stratified_split(&labels, 0.2, 42),
            stratified_split(&labels, 0.2, 7)
        );
    }
}
