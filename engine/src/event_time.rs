//! Comparing a timestamp column with an instant.
//!
//! Arrow compares timestamps only within one time zone, and columns carry
//! theirs (`UTC` for Strata's own), so the instant takes the column's zone.

use arrow::array::{BooleanArray, Scalar, TimestampMicrosecondArray};
use arrow::compute::kernels::cmp::{gt, gt_eq, lt};
use arrow::error::ArrowError;

fn bound(times: &TimestampMicrosecondArray, at: i64) -> Scalar<TimestampMicrosecondArray> {
    // Arrow compares timestamps only within one time zone.
    Scalar::new(TimestampMicrosecondArray::from(vec![at]).with_timezone_opt(times.timezone()))
}

/// Which `times` are before `at` (microseconds): late rows, for a watermark.
pub fn before(times: &TimestampMicrosecondArray, at: i64) -> Result<BooleanArray, ArrowError> {
    lt(times, &bound(times, at))
}

/// Which `times` are after `at` (microseconds): future-dated rows.
///
/// ```
/// use arrow::array::TimestampMicrosecondArray;
/// use strata_engine::event_time::{after, before, not_before};
/// let t = TimestampMicrosecondArray::from(vec![1, 5, 9]).with_timezone("UTC");
/// assert_eq!(after(&t, 5).unwrap(), vec![false, false, true].into());
/// assert_eq!(before(&t, 5).unwrap(), vec![true, false, false].into());
/// assert_eq!(not_before(&t, 5).unwrap(), vec![false, true, true].into());
/// ```
pub fn after(times: &TimestampMicrosecondArray, at: i64) -> Result<BooleanArray, ArrowError> {
    gt(times, &bound(times, at))
}

/// Which `times` are at or after `at` (microseconds).
pub fn not_before(times: &TimestampMicrosecondArray, at: i64) -> Result<BooleanArray, ArrowError> {
    gt_eq(times, &bound(times, at))
}
