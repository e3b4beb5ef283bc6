//! "Did you mean ...?": the closest known name to a misspelled one, for
//! every error message that names something the user wrote (a config key,
//! a type, a schema, a table in a query).

/// The candidate closest to `given` by edit distance, if it is close enough
/// to be a plausible typo (at most a third of the name's length, and 3).
///
/// ```
/// use strata_schemas::closest;
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

/// Edit distance, case-insensitive, where swapping two neighbouring letters
/// counts as one edit (optimal string alignment): `dael` is one typo away
/// from `deal`, not two.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    // d[i][j]: distance between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("Schema", "schema"), 0);
        assert_eq!(edit_distance("dael", "deal"), 1);
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
