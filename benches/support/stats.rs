//! Percentiles of a sample, and the process's peak memory.
//!
//! A percentile is one of the [`Percentile`] constants, never a bare number:
//! a bare `0.99` once meant "the 99th percentile" to one bench and "the 1st"
//! to the function, and printed the wrong figures. And a percentile that
//! the sample is too small to tell from its maximum is printed as not
//! measured, so a "p99" is never the largest sample under another name.

/// A percentile of a sample: only these are measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentile {
    /// Of 100.
    of_100: f64,
    name: &'static str,
}

impl Percentile {
    pub const P50: Percentile = Percentile {
        of_100: 50.0,
        name: "p50",
    };
    pub const P90: Percentile = Percentile {
        of_100: 90.0,
        name: "p90",
    };
    pub const P95: Percentile = Percentile {
        of_100: 95.0,
        name: "p95",
    };
    pub const P99: Percentile = Percentile {
        of_100: 99.0,
        name: "p99",
    };

    /// How the percentile is printed (`p99`).
    pub fn name(self) -> &'static str {
        self.name
    }
}

/// A sample (latencies, durations), sorted.
#[derive(Debug, Clone)]
pub struct Samples {
    sorted: Vec<i64>,
}

impl Samples {
    /// The sample of `values`, in any order.
    pub fn new(mut values: Vec<i64>) -> Self {
        values.sort_unstable();
        Samples { sorted: values }
    }

    /// How many values there are.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The largest value.
    pub fn max(&self) -> Option<i64> {
        self.sorted.last().copied()
    }

    /// The nearest-rank percentile `p`, if the sample has a value below
    /// its maximum at that rank's place: with `n` values, p99 needs
    /// `n >= 100` (with fewer, the 99th percentile is the maximum itself).
    pub fn at(&self, p: Percentile) -> Option<i64> {
        let n = self.sorted.len();
        let rank = self.rank(p)?;
        (rank < n).then(|| self.sorted[rank - 1])
    }

    /// The nearest-rank percentile `p` even where it is the maximum.
    pub fn at_or_max(&self, p: Percentile) -> Option<i64> {
        self.rank(p).map(|rank| self.sorted[rank - 1])
    }

    fn rank(&self, p: Percentile) -> Option<usize> {
        let n = self.sorted.len();
        if n == 0 {
            return None;
        }
        let rank = ((p.of_100 / 100.0) * n as f64).ceil() as usize;
        Some(rank.clamp(1, n))
    }

    /// `p50 1.2 ms, p99 3.4 ms, max 5.6 ms (250 samples)`: each value
    /// divided by `per_unit` and printed with `decimals`; a percentile the
    /// sample cannot tell from its maximum says so instead of a number.
    pub fn describe(
        &self,
        ps: &[Percentile],
        per_unit: f64,
        unit: &str,
        decimals: usize,
    ) -> String {
        let show = |v: i64| format!("{:.*} {unit}", decimals, v as f64 / per_unit);
        let mut parts: Vec<String> = ps
            .iter()
            .map(|&p| match self.at(p) {
                Some(v) => format!("{} {}", p.name(), show(v)),
                None => format!("{} not measured", p.name()),
            })
            .collect();
        parts.push(match self.max() {
            Some(v) => format!("max {}", show(v)),
            None => "no samples".to_string(),
        });
        let too_few = ps.iter().any(|&p| self.at(p).is_none());
        format!(
            "{} ({} samples{})",
            parts.join(", "),
            self.len(),
            if too_few {
                "; too few to tell some percentiles from the max"
            } else {
                ""
            }
        )
    }
}

/// The process's peak resident set (VmHWM), MiB.
pub fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Starts a new peak for [`peak_rss_mib`] (Linux: `clear_refs` 5).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// Run by `cargo test --test bench_stats` (bench targets have no test
// harness); the imports are inside the tests, which a bench build drops.
#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_are_nearest_rank_on_a_0_to_100_scale() {
        use super::{Percentile, Samples};
        let s = Samples::new((1..=1000).rev().collect());
        assert_eq!(s.at(Percentile::P50), Some(500));
        assert_eq!(s.at(Percentile::P99), Some(990));
        assert_eq!(s.max(), Some(1000));
    }

    #[test]
    fn a_p99_of_fewer_than_100_samples_is_the_max_and_is_not_reported() {
        use super::{Percentile, Samples};
        let s = Samples::new((1..=99).collect());
        assert_eq!(s.at(Percentile::P99), None);
        assert_eq!(s.at_or_max(Percentile::P99), Some(99));
        assert_eq!(s.at(Percentile::P50), Some(50));
        let text = s.describe(&[Percentile::P50, Percentile::P99], 1.0, "ms", 0);
        assert_eq!(
            text,
            "p50 50 ms, p99 not measured, max 99 ms (99 samples; too few to tell some percentiles from the max)"
        );
        let s = Samples::new((1..=100).collect());
        assert_eq!(s.at(Percentile::P99), Some(99));
    }
}
