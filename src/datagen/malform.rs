//! Breaking a well-formed JSON record the ways real feeds break: cut off
//! mid-write, a number that is not one, a required field missing, the wrong
//! JSON type at the top. Every kind must land in the dead-letter table.

use rand::Rng;
use rand::rngs::StdRng;

/// `record` (a JSON object on one line) broken in one of four ways, picked
/// by `rng`: truncated, `number_field`'s value replaced by `"n/a"`,
/// `time_field` removed, or the object wrapped in an array.
pub fn malform(rng: &mut StdRng, record: &str, number_field: &str, time_field: &str) -> String {
    match rng.random_range(0..4) {
        0 => record[..record.len() / 2].to_string(),
        1 => replace_value(record, number_field, r#""n/a""#),
        2 => remove_field(record, time_field),
        _ => format!("[{record}]"),
    }
}

/// The byte range of `"field":value` in `record` (value up to the next `,`
/// or `}`, which holds for the generators' flat records).
fn field_span(record: &str, field: &str) -> Option<(usize, usize, usize)> {
    let key = format!(r#""{field}":"#);
    let start = record.find(&key)?;
    let value = start + key.len();
    let end = record[value..]
        .find([',', '}'])
        .map_or(record.len(), |i| value + i);
    Some((start, value, end))
}

fn replace_value(record: &str, field: &str, value: &str) -> String {
    match field_span(record, field) {
        Some((_, from, to)) => format!("{}{value}{}", &record[..from], &record[to..]),
        None => format!("[{record}]"),
    }
}

fn remove_field(record: &str, field: &str) -> String {
    match field_span(record, field) {
        // Take the comma before the field with it (fields are never first).
        Some((start, _, end)) if start > 1 => format!("{}{}", &record[..start - 1], &record[end..]),
        _ => format!("[{record}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const RECORD: &str = r#"{"id":"x1","amount":"12.50","event_time":"2026-11-21T10:00:00Z"}"#;

    #[test]
    fn every_kind_stops_being_a_valid_record() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let broken = malform(&mut rng, RECORD, "amount", "event_time");
            let valid = serde_json::from_str::<serde_json::Value>(&broken)
                .ok()
                .and_then(|v| v.as_object().cloned())
                .filter(|o| o.contains_key("event_time"))
                .and_then(|o| o["amount"].as_str().map(|a| a.parse::<f64>().is_ok()))
                .unwrap_or(false);
            assert!(!valid, "{broken} still decodes");
            seen.insert(broken);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn fields_are_replaced_and_removed_in_place() {
        assert_eq!(
            replace_value(RECORD, "amount", r#""n/a""#),
            r#"{"id":"x1","amount":"n/a","event_time":"2026-11-21T10:00:00Z"}"#
        );
        assert_eq!(
            remove_field(RECORD, "event_time"),
            r#"{"id":"x1","amount":"12.50"}"#
        );
    }
}
