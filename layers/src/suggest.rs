//! "Did you mean ...?": the closest known name to a misspelled one.

/// The candidate closest to `given` by edit distance, if it is close enough
/// to be a plausible typo (at most a third of the name's length, and 3).
///
/// ```
/// use strata_layers::closest;
/// assert_eq!(closest("topik", ["topic", "topics", "schema"]), Some("topic"));
/// assert_eq!(closest("xyz", ["topic", "schema"]), None);
/// ```
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(given, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, case-insensitive.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitution.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("Schema", "schema"), 0);
    }

    #[test]
    fn picks_the_nearest() {
        assert_eq!(
            closest("ods_deal", ["ods_deals", "dwd_deals"]),
            Some("ods_deals")
        );
        assert_eq!(closest("layer", ["layers", "schemas"]), Some("layers"));
    }
}
