//! Parsing the date and timestamp spellings found in event streams.
//!
//! Timestamps without an offset are taken as UTC: the warehouse stores
//! instants, and a producer that wants another zone writes the offset.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

const MICROS_PER_MILLI: i64 = 1_000;

/// Epoch milliseconds -> epoch microseconds, or `None` when out of range.
///
/// ```
/// use strata_schemas::timestamp_from_epoch_millis;
/// assert_eq!(timestamp_from_epoch_millis(1_500), Some(1_500_000));
/// assert_eq!(timestamp_from_epoch_millis(i64::MAX), None);
/// ```
pub fn timestamp_from_epoch_millis(millis: i64) -> Option<i64> {
    millis.checked_mul(MICROS_PER_MILLI)
}

/// Parses a timestamp into microseconds since the Unix epoch (UTC).
///
/// Accepts RFC 3339 (`2026-11-21T08:00:00Z`, `2026-11-21 16:00:00.5+08:00`),
/// and, taken as UTC, `YYYY-MM-DD HH:MM:SS[.fraction]` (with a space or `T`)
/// and a bare `YYYY-MM-DD`.
///
/// ```
/// use strata_schemas::parse_timestamp_micros;
/// let utc = parse_timestamp_micros("2026-11-21T08:00:00Z").unwrap();
/// assert_eq!(parse_timestamp_micros("2026-11-21 16:00:00+08:00"), Some(utc));
/// assert_eq!(parse_timestamp_micros("2026-11-21 08:00:00"), Some(utc));
/// assert_eq!(parse_timestamp_micros("yesterday"), None);
/// ```
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_micros());
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_micros());
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

/// Parses `YYYY-MM-DD` into days since the Unix epoch.
///
/// ```
/// use strata_schemas::parse_date;
/// assert_eq!(parse_date("1970-01-02"), Some(1));
/// assert_eq!(parse_date("1970-13-01"), None);
/// ```
pub fn parse_date(text: &str) -> Option<i32> {
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(date.signed_duration_since(epoch).num_days()).ok()
}

/// The UTC calendar day (days since the epoch) of a timestamp in microseconds.
///
/// ```
/// use strata_schemas::day_of_timestamp_micros;
/// assert_eq!(day_of_timestamp_micros(0), 0);
/// assert_eq!(day_of_timestamp_micros(-1), -1);
/// assert_eq!(day_of_timestamp_micros(86_400_000_000), 1);
/// ```
pub fn day_of_timestamp_micros(micros: i64) -> i32 {
    const MICROS_PER_DAY: i64 = 86_400_000_000;
    // The quotient of an i64 by a day's micros always fits an i32.
    micros.div_euclid(MICROS_PER_DAY) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_and_offsets() {
        assert_eq!(
            parse_timestamp_micros("1970-01-01T00:00:00.000123Z"),
            Some(123)
        );
        assert_eq!(
            parse_timestamp_micros("1970-01-01 00:00:01.5"),
            Some(1_500_000)
        );
        assert_eq!(parse_timestamp_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_timestamp_micros("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_timestamp_micros(""), None);
        assert_eq!(parse_timestamp_micros("2026-02-30 00:00:00"), None);
    }
}
