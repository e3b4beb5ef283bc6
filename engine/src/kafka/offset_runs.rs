//! A set of a partition's offsets, kept as runs of consecutive offsets.
//!
//! A backfill proves its replay read every record the ODS table holds for
//! the range by comparing the two sets of offsets per partition. A range's
//! records sit mostly in long consecutive stretches of a partition (records
//! of other times interleave only at its edges), so runs keep the sets
//! small where a plain set would hold every offset, and a difference comes
//! out as the stretches missing, which is what a user needs to be told.

use std::fmt;

/// Offsets as sorted, disjoint, non-adjacent half-open runs.
///
/// ```
/// use strata_engine::kafka::offset_runs::OffsetRuns;
/// let mut read = OffsetRuns::default();
/// for o in [5, 6, 7, 9] { read.insert(o); }
/// assert_eq!(read.len(), 4);
/// let mut held = read.clone();
/// held.insert(8);
/// held.insert(20);
/// assert_eq!(held.missing_from(&read).to_string(), "8, 20");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetRuns {
    runs: Vec<(i64, i64)>,
}

impl OffsetRuns {
    /// Adds `offset`. Cheap when offsets come in ascending order.
    pub fn insert(&mut self, offset: i64) {
        self.insert_run(offset, offset.saturating_add(1));
    }

    /// Adds the offsets `[start, end)`.
    pub fn insert_run(&mut self, start: i64, end: i64) {
        if start >= end {
            return;
        }
        // Usually appends to, or extends, the last run.
        if let Some(last) = self.runs.last_mut() {
            if start > last.1 {
                self.runs.push((start, end));
                return;
            }
            if start >= last.0 {
                last.1 = last.1.max(end);
                return;
            }
        } else {
            self.runs.push((start, end));
            return;
        }
        // Out of order: merge into place.
        let at = self.runs.partition_point(|r| r.1 < start);
        let mut merged = (start, end);
        let mut until = at;
        while until < self.runs.len() && self.runs[until].0 <= merged.1 {
            merged.0 = merged.0.min(self.runs[until].0);
            merged.1 = merged.1.max(self.runs[until].1);
            until += 1;
        }
        self.runs.splice(at..until, [merged]);
    }

    /// Adds every offset of `other`.
    pub fn extend(&mut self, other: &OffsetRuns) {
        for (start, end) in &other.runs {
            self.insert_run(*start, *end);
        }
    }

    /// How many offsets.
    pub fn len(&self) -> u64 {
        self.runs.iter().map(|(a, b)| (b - a) as u64).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The smallest offset.
    pub fn first(&self) -> Option<i64> {
        self.runs.first().map(|r| r.0)
    }

    /// The largest offset.
    pub fn last(&self) -> Option<i64> {
        self.runs.last().map(|r| r.1 - 1)
    }

    /// The runs, `[start, end)`.
    pub fn runs(&self) -> &[(i64, i64)] {
        &self.runs
    }

    /// The offsets of `self` that `other` lacks.
    pub fn missing_from(&self, other: &OffsetRuns) -> OffsetRuns {
        let mut out = OffsetRuns::default();
        let theirs = &other.runs;
        let mut j = 0;
        for &(start, end) in &self.runs {
            let mut at = start;
            while j < theirs.len() && theirs[j].1 <= at {
                j += 1;
            }
            let mut k = j;
            while at < end {
                match theirs.get(k) {
                    Some(&(a, b)) if a < end => {
                        if a > at {
                            out.insert_run(at, a);
                        }
                        at = at.max(b);
                        k += 1;
                    }
                    _ => {
                        out.insert_run(at, end);
                        at = end;
                    }
                }
            }
        }
        out
    }
}

/// `3..=7, 9, 12..=20` (offsets, inclusive), at most the first eight runs.
impl fmt::Display for OffsetRuns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        for (i, (start, end)) in self.runs.iter().take(SHOWN).enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if end - start == 1 {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}..={}", end - 1)?;
            }
        }
        if self.runs.len() > SHOWN {
            write!(f, " and {} more runs", self.runs.len() - SHOWN)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(offsets: &[i64]) -> OffsetRuns {
        let mut r = OffsetRuns::default();
        for o in offsets {
            r.insert(*o);
        }
        r
    }

    #[test]
    fn consecutive_offsets_make_one_run_in_any_order() {
        let r = of(&[4, 2, 3, 9, 1, 8, 10, 7, 5, 6]);
        assert_eq!(r.runs(), &[(1, 11)]);
        assert_eq!(r.len(), 10);
        assert_eq!((r.first(), r.last()), (Some(1), Some(10)));
        assert_eq!(of(&[3, 3, 3]).len(), 1);
    }

    #[test]
    fn a_run_inserted_in_between_merges_its_neighbours() {
        let mut r = of(&[1, 2, 10, 11, 20]);
        r.insert_run(3, 10);
        assert_eq!(r.runs(), &[(1, 12), (20, 21)]);
        r.insert_run(0, 30);
        assert_eq!(r.runs(), &[(0, 30)]);
    }

    #[test]
    fn the_difference_is_what_the_other_lacks() {
        let held = of(&[1, 2, 3, 4, 5, 10, 11, 12]);
        let read = of(&[2, 3, 11]);
        let missing = held.missing_from(&read);
        assert_eq!(missing.runs(), &[(1, 2), (4, 6), (10, 11), (12, 13)]);
        assert_eq!(missing.to_string(), "1, 4..=5, 10, 12");
        assert!(read.missing_from(&held).is_empty());
        assert!(held.missing_from(&held).is_empty());
        assert_eq!(held.missing_from(&OffsetRuns::default()), held);
        let mut wide = OffsetRuns::default();
        wide.insert_run(0, 100);
        assert!(held.missing_from(&wide).is_empty());
    }

    #[test]
    fn long_lists_are_cut_short() {
        let gaps = of(&(0..40).map(|i| i * 2).collect::<Vec<_>>());
        assert!(gaps.to_string().ends_with("and 32 more runs"), "{gaps}");
    }
}
