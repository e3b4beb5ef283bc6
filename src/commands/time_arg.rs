//! Times on the command line: RFC 3339, or a date or date-time in UTC.

use chrono::{NaiveDate, NaiveDateTime};

/// Microseconds since the epoch of `text`: `2026-11-20T10:00:00Z` (any
/// offset), `2026-11-20T10:00[:00]` or `2026-11-20 10:00[:00]` (UTC), or
/// `2026-11-20` (midnight UTC).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc().timestamp_micros());
    }
    Err(format!(
        "`{text}` is not a time; write e.g. 2026-11-20T10:00:00Z, 2026-11-20 10:00 (UTC) or 2026-11-20"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_reads_as_utc() {
        let z = parse_time("2026-11-20T10:00:00Z").unwrap();
        assert_eq!(parse_time("2026-11-20T12:00:00+02:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-20 10:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-20T10:00").unwrap(), z);
        assert_eq!(parse_time("2026-11-20").unwrap() + 10 * 3_600_000_000, z);
    }

    #[test]
    fn a_bad_time_shows_the_forms() {
        assert!(
            parse_time("yesterday")
                .unwrap_err()
                .contains("2026-11-20T10:00:00Z")
        );
    }
}
