//! Grouping accuracy (GA), the standard score of log template miners: a line
//! counts as correct when the set of lines in its mined group is exactly the
//! set of lines sharing its ground-truth event.

use std::collections::HashMap;
use std::hash::Hash;

/// Fraction of lines whose predicted group equals their true group, as sets
/// of lines. `predicted[i]` and `truth[i]` are the group labels of line `i`;
/// label values themselves do not matter, only which lines share one.
/// Returns 1.0 for no lines. Panics when the slices differ in length.
pub fn grouping_accuracy<P: Eq + Hash, T: Eq + Hash>(predicted: &[P], truth: &[T]) -> f64 {
    assert_eq!(predicted.len(), truth.len(), "one prediction per line");
    if predicted.is_empty() {
        return 1.0;
    }
    // A predicted group is correct when all its lines carry one true label
    // and that label has no lines elsewhere: then the group sizes agree.
    let mut pred_size: HashMap<&P, usize> = HashMap::new();
    let mut truth_size: HashMap<&T, usize> = HashMap::new();
    let mut pair_size: HashMap<(&P, &T), usize> = HashMap::new();
    for (p, t) in predicted.iter().zip(truth) {
        *pred_size.entry(p).or_default() += 1;
        *truth_size.entry(t).or_default() += 1;
        *pair_size.entry((p, t)).or_default() += 1;
    }
    let correct: usize = pair_size
        .iter()
        .filter(|((p, t), &n)| pred_size[p] == n && truth_size[t] == n)
        .map(|(_, &n)| n)
        .sum();
    correct as f64 / predicted.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_grouping_scores_one_whatever_the_labels() {
        assert_eq!(grouping_accuracy(&[7, 7, 9], &["a", "a", "b"]), 1.0);
        assert_eq!(grouping_accuracy::<u64, &str>(&[], &[]), 1.0);
    }

    #[test]
    fn merging_two_events_makes_both_wrong() {
        assert_eq!(grouping_accuracy(&[1, 1, 1, 2], &["a", "a", "b", "c"]), 0.25);
    }

    #[test]
    fn splitting_an_event_makes_all_its_lines_wrong() {
        assert_eq!(grouping_accuracy(&[1, 1, 2, 3], &["a", "a", "a", "b"]), 0.25);
    }

    #[test]
    fn one_group_for_everything() {
        assert_eq!(grouping_accuracy(&[0, 0, 0, 0], &["a", "a", "a", "a"]), 1.0);
        assert_eq!(grouping_accuracy(&[0, 0, 0, 0], &["a", "a", "a", "b"]), 0.0);
    }
}
