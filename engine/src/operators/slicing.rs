//! Slices of overlapping windows (Flink's slicing window aggregation).
//!
//! A HOP or CUMULATE window overlaps its neighbours: a row of a one-day
//! CUMULATE by one minute belongs to up to 1,440 windows. Copying each row
//! into every window it belongs to (what a plain `unnest` of the window TVF
//! does) multiplies the work and the state by that much, and a live
//! pipeline falls behind. Instead each row is aggregated once, into its
//! *slice* (a TUMBLE of the slide or the step), and a window is merged from
//! its slices' intermediate states when it closes. A slice is kept until
//! the last window that needs it has closed.
//!
//! This module is the window arithmetic only; the aggregation that uses it
//! is [`WindowAggregate`](crate::operators::window_aggregate::WindowAggregate).

use std::collections::BTreeSet;

use crate::sql::window_tvf::{WindowKind, WindowTvf};
use crate::sql::window_udfs::window_start;

/// How a HOP or CUMULATE window is cut into slices. Windows start at
/// multiples of the slide (HOP) or of the period (CUMULATE), as the window
/// TVFs assign them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    kind: WindowKind,
    /// HOP: the window size; CUMULATE: the period (max size).
    size_us: i64,
    /// HOP: the slide; CUMULATE: the step. Also the slice's length (the
    /// size is a whole multiple of it, as the TVF parser requires).
    slice_us: i64,
}

impl Slicing {
    /// The slicing of `window`, if it is a HOP or a CUMULATE.
    pub fn of(window: &WindowTvf) -> Option<Slicing> {
        match window.kind {
            WindowKind::Hop | WindowKind::Cumulate => Some(Slicing {
                kind: window.kind,
                size_us: window.size_us,
                slice_us: window.step_us.unwrap_or(window.size_us).max(1),
            }),
            WindowKind::Tumble | WindowKind::Session => None,
        }
    }

    /// The length of a slice, microseconds.
    pub fn slice_us(&self) -> i64 {
        self.slice_us
    }

    /// The end of the last window that holds the slice ending at
    /// `slice_end`: the slice can be forgotten once it has closed.
    ///
    /// ```
    /// use strata_engine::operators::slicing::Slicing;
    /// use strata_engine::sql::window_tvf::rewrite;
    /// let w = rewrite("SELECT * FROM TABLE(CUMULATE(TABLE t, DESCRIPTOR(ts), INTERVAL '20' SECOND, INTERVAL '1' MINUTE))").unwrap().windows[0].clone();
    /// let s = Slicing::of(&w).unwrap();
    /// assert_eq!(s.last_end(20_000_000), 60_000_000);
    /// ```
    pub fn last_end(&self, slice_end: i64) -> i64 {
        let slice_start = slice_end - self.slice_us;
        match self.kind {
            WindowKind::Cumulate => window_start(slice_start, self.size_us, 0) + self.size_us,
            _ => window_start(slice_start, self.slice_us, 0) + self.size_us,
        }
    }

    /// Adds to `ends` the ends of the windows holding the slice ending at
    /// `slice_end` that fall in `(after, up_to]`.
    pub fn window_ends(&self, slice_end: i64, after: i64, up_to: i64, ends: &mut BTreeSet<i64>) {
        // The first window holding a slice ends with it (a CUMULATE step,
        // or the HOP window starting size - slide before it).
        let first = slice_end;
        let last = self.last_end(slice_end).min(up_to);
        // Window ends are first + k * slice; the first one past `after`.
        let mut end = if after < first {
            first
        } else {
            first + ((after - first) / self.slice_us + 1) * self.slice_us
        };
        while end <= last {
            ends.insert(end);
            end += self.slice_us;
        }
    }

    /// The start of the window ending at `end`.
    pub fn start_of(&self, end: i64) -> i64 {
        match self.kind {
            WindowKind::Cumulate => window_start(end - 1, self.size_us, 0),
            _ => end - self.size_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slicing(kind: WindowKind, size_us: i64, slice_us: i64) -> Slicing {
        Slicing {
            kind,
            size_us,
            slice_us,
        }
    }

    fn ends(s: &Slicing, slice_end: i64, after: i64, up_to: i64) -> Vec<i64> {
        let mut out = BTreeSet::new();
        s.window_ends(slice_end, after, up_to, &mut out);
        out.into_iter().collect()
    }

    #[test]
    fn cumulate_slices_belong_to_every_later_step_of_their_period() {
        // CUMULATE by 20 up to 60: the slice [20, 40) is in [0, 40) and [0, 60).
        let s = slicing(WindowKind::Cumulate, 60, 20);
        assert_eq!(ends(&s, 40, i64::MIN, 1000), vec![40, 60]);
        assert_eq!(ends(&s, 40, 40, 1000), vec![60]);
        assert_eq!(ends(&s, 40, 60, 1000), Vec::<i64>::new());
        assert_eq!(ends(&s, 80, i64::MIN, 1000), vec![80, 100, 120]);
        assert_eq!(s.last_end(80), 120);
        assert_eq!(
            (s.start_of(60), s.start_of(80), s.start_of(120)),
            (0, 60, 60)
        );
    }

    #[test]
    fn hop_slices_belong_to_size_over_slide_windows() {
        // HOP of 60 every 20: the slice [20, 40) is in [-20, 40), [0, 60), [20, 80).
        let s = slicing(WindowKind::Hop, 60, 20);
        assert_eq!(ends(&s, 40, i64::MIN, 1000), vec![40, 60, 80]);
        assert_eq!(ends(&s, 40, 50, 70), vec![60]);
        assert_eq!(s.last_end(40), 80);
        assert_eq!(s.start_of(80), 20);
    }

    #[test]
    fn negative_times_slice_the_same_way() {
        let s = slicing(WindowKind::Cumulate, 60, 20);
        assert_eq!(ends(&s, -20, i64::MIN, 1000), vec![-20, 0]);
        assert_eq!(s.start_of(0), -60);
    }
}
