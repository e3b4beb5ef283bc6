//! Rates over the last minute, computed when scraped: rows/s per layer,
//! per side table and per source partition, for `strata status` and the
//! console, which read one scrape and have no Prometheus to take `rate()`
//! over the `_total` counters. Prometheus users should prefer `rate()`.
//!
//! A rate keeps the cumulative count at each update within the window,
//! plus the newest one before it as the baseline; a stalled pipeline's
//! rate falls to zero as the window passes its last update.

use std::collections::VecDeque;

/// The window rates are taken over, seconds.
pub const WINDOW_SECONDS: f64 = 60.0;

/// One counter's recent history.
#[derive(Debug, Clone)]
pub(crate) struct Rate {
    /// (wall-clock seconds, cumulative count), oldest first.
    samples: VecDeque<(f64, u64)>,
    total: u64,
}

impl Rate {
    /// A counter at zero since `since` (when the process started counting).
    pub(crate) fn since(since: f64) -> Self {
        Rate {
            samples: VecDeque::from([(since, 0)]),
            total: 0,
        }
    }

    /// `n` more at `now`.
    pub(crate) fn add(&mut self, now: f64, n: u64) {
        self.total += n;
        self.samples.push_back((now, self.total));
        self.prune(now);
    }

    /// Drops samples older than the baseline the window needs.
    fn prune(&mut self, now: f64) {
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| *t <= now - WINDOW_SECONDS)
        {
            self.samples.pop_front();
        }
    }

    /// Per second over the window ending `now` (or since the start, in the
    /// first minute).
    pub(crate) fn per_second(&self, now: f64) -> f64 {
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| *t <= now - WINDOW_SECONDS)
            .or(self.samples.front());
        match base {
            Some((t, n)) if now > *t => (self.total - n) as f64 / (now - t),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_taken_over_the_last_minute_and_falls_to_zero_when_stalled() {
        let mut r = Rate::since(0.0);
        assert_eq!(r.per_second(10.0), 0.0);
        r.add(10.0, 100);
        assert_eq!(r.per_second(20.0), 5.0);
        for t in 1..=10 {
            r.add(10.0 + 10.0 * f64::from(t), 100);
        }
        // At 110 s: 1100 rows; the baseline at 50 s held 500.
        assert_eq!(r.per_second(110.0), 10.0);
        // Nothing since 110 s: a minute later the rate is zero.
        assert_eq!(r.per_second(170.0), 0.0);
        assert!(r.samples.len() <= 8, "{:?}", r.samples);
    }
}
