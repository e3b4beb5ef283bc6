//! The sizes a compaction pass compacts to: size tiers, so that a file
//! compaction wrote is not rewritten every time a few small files arrive.
//!
//! Delta OPTIMIZE rewrites every file smaller than its target size. With
//! one target (128 MiB by default) and a table that gains a few MiB between
//! passes, every pass rewrote everything compacted so far, together with
//! the new small files, until the file reached the target: the cost of a
//! pass grew with the table (measured by the soak bench: the storage root
//! grew 3x faster than the data at a 1-minute maintenance interval, and
//! epochs slowed as the passes did). Tiers, as an LSM tree's size-tiered
//! compaction: the target, an eighth of it, and so on down to
//! [`MIN_TIER`]. A pass first compacts the epochs' small files into files
//! of the smallest tier, then each larger tier that has gathered enough
//! files of the tiers below. A byte is rewritten about once per tier (3
//! times for 128 MiB), however long the table lives, instead of once per
//! pass. Pure: the sizes in, the decision out.

/// The smallest tier: below it a file costs its reader more in opening
/// than in reading.
pub const MIN_TIER: u64 = 1024 * 1024;

/// Each tier is this many times the one below.
const FACTOR: u64 = 8;

/// The tiers for a target size, smallest first: `target`, `target / 8`,
/// ... down to [`MIN_TIER`] (only `target` when it is below that).
///
/// ```
/// use strata_engine::maintenance::tiers::tiers;
/// const MIB: u64 = 1024 * 1024;
/// assert_eq!(tiers(128 * MIB), vec![2 * MIB, 16 * MIB, 128 * MIB]);
/// assert_eq!(tiers(MIB / 2), vec![MIB / 2]);
/// ```
pub fn tiers(target: u64) -> Vec<u64> {
    let mut out = vec![target];
    let mut tier = target;
    while tier / FACTOR >= MIN_TIER {
        tier /= FACTOR;
        out.push(tier);
    }
    out.reverse();
    out
}

/// Whether files of `sizes` are due for compaction to `tier`: at least
/// `min_small` (and never fewer than 2) of them are under half of it.
///
/// ```
/// use strata_engine::maintenance::tiers::due;
/// const MIB: u64 = 1024 * 1024;
/// // 16 epoch files of 100 KiB: due for the 2 MiB tier.
/// assert!(due(std::iter::repeat_n(100 * 1024, 16), 2 * MIB, 16));
/// // One compacted 1.5 MiB file and 3 new small ones: not yet.
/// assert!(!due([3 * MIB / 2, 1024, 1024, 1024].into_iter(), 2 * MIB, 16));
/// ```
pub fn due(sizes: impl Iterator<Item = u64>, tier: u64, min_small: usize) -> bool {
    sizes.filter(|s| *s < tier / 2).count() >= min_small.max(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn tiers_divide_the_target_down_to_the_smallest() {
        assert_eq!(tiers(MIB), vec![MIB]);
        assert_eq!(tiers(8 * MIB), vec![MIB, 8 * MIB]);
        assert_eq!(tiers(100 * MIB), vec![1_638_400, 13_107_200, 100 * MIB]);
    }

    /// A simulated day of one-minute passes: every pass adds 16 files of
    /// 64 KiB, then compacts to each tier in `tiers` that is due, as
    /// `compact` does (delta-rs packs the files up to the tier in order and
    /// leaves a bin of one file as it is). Bytes written, bytes rewritten,
    /// files left.
    fn a_day(tiers: &[u64]) -> (u64, u64, usize) {
        let mut files: Vec<u64> = Vec::new();
        let (mut written, mut rewritten) = (0u64, 0u64);
        for _ in 0..1440 {
            files.extend(std::iter::repeat_n(64 * 1024, 16));
            written += 16 * 64 * 1024;
            for &tier in tiers {
                if !due(files.iter().copied(), tier, 16) {
                    continue;
                }
                let (small, large): (Vec<u64>, Vec<u64>) = files.iter().partition(|s| **s <= tier);
                files = large;
                let mut bins: Vec<Vec<u64>> = Vec::new();
                for s in small {
                    match bins.last_mut() {
                        Some(b) if b.iter().sum::<u64>() + s <= tier => b.push(s),
                        _ => bins.push(vec![s]),
                    }
                }
                for bin in bins {
                    let size: u64 = bin.iter().sum();
                    if bin.len() > 1 {
                        rewritten += size;
                    }
                    files.push(size);
                }
            }
        }
        assert_eq!(files.iter().sum::<u64>(), written, "no byte lost");
        (written, rewritten, files.len())
    }

    #[test]
    fn a_byte_is_rewritten_about_once_per_tier() {
        let (written, rewritten, files) = a_day(&tiers(128 * MIB));
        assert!(
            rewritten < 5 * written,
            "rewrote {rewritten} bytes for {written} written"
        );
        assert!(files < 64, "{files} files left");
        // One target, as before the tiers: the table rewritten every pass.
        let (written, rewritten, _) = a_day(&[128 * MIB]);
        assert!(
            rewritten > 50 * written,
            "rewrote {rewritten} bytes for {written} written"
        );
    }
}
