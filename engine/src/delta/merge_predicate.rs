//! The join predicate of an upsert's MERGE, written so that its commit
//! names the keys it read.
//!
//! delta-rs derives a MERGE's read set from its predicate: an equality
//! between a target and a source column becomes "target key between the
//! source's smallest and largest", recorded in the commit and used to
//! decide whether a concurrent commit conflicts. `IS NOT DISTINCT FROM`
//! (which a key holding NULL needs) yields no such bound, and the MERGE
//! then counts as having read the whole table: any concurrent writer, a
//! compaction say, would conflict with it. So each key column compares
//! with `=` whenever the epoch's rows have no NULL in it (the two agree
//! then), and with `IS NOT DISTINCT FROM` only where they do.

use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Operator, binary_expr};
use datafusion::prelude::{Expr, col};

/// `target.k = source.k AND ...` over `keys`, for merging `rows`; `None`
/// without keys.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::StringArray;
/// use arrow::datatypes::{DataType, Field, Schema};
/// use arrow::record_batch::RecordBatch;
/// use strata_engine::delta::merge_predicate::merge_predicate;
///
/// let schema = Arc::new(Schema::new(vec![Field::new("city", DataType::Utf8, true)]));
/// let rows = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
/// let p = merge_predicate(&[rows], &["city".into()], "s", "t").unwrap();
/// assert_eq!(p.to_string(), "t.city = s.city");
/// ```
pub fn merge_predicate(
    rows: &[RecordBatch],
    keys: &[String],
    source: &str,
    target: &str,
) -> Option<Expr> {
    keys.iter()
        .map(|k| {
            let has_null = rows.iter().any(|b| {
                b.column_by_name(k)
                    // A key the rows lack: the MERGE reports it.
                    .is_none_or(|c| c.null_count() > 0)
            });
            let op = if has_null {
                Operator::IsNotDistinctFrom
            } else {
                Operator::Eq
            };
            binary_expr(
                col(format!("{target}.{k}")),
                op,
                col(format!("{source}.{k}")),
            )
        })
        .reduce(Expr::and)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn rows(cities: Vec<Option<&str>>, days: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("city", DataType::Utf8, true),
            Field::new("day", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(cities)),
                Arc::new(Int64Array::from(days)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn keys_without_nulls_compare_with_equality() {
        let batch = rows(vec![Some("a"), Some("b")], vec![Some(1), Some(2)]);
        let keys = ["day".to_string(), "city".to_string()];
        let p = merge_predicate(&[batch], &keys, "source", "target").unwrap();
        assert_eq!(
            p.to_string(),
            "target.day = source.day AND target.city = source.city"
        );
    }

    #[test]
    fn a_key_with_a_null_in_any_batch_keeps_null_safe_equality() {
        let clean = rows(vec![Some("a")], vec![Some(1)]);
        let null_city = rows(vec![None], vec![Some(2)]);
        let keys = ["day".to_string(), "city".to_string()];
        let p = merge_predicate(&[clean, null_city], &keys, "s", "t")
            .unwrap()
            .to_string();
        assert!(p.contains("t.day = s.day"), "{p}");
        assert!(p.contains("t.city IS NOT DISTINCT FROM s.city"), "{p}");
    }

    #[test]
    fn no_keys_is_no_predicate() {
        assert!(merge_predicate(&[], &[], "s", "t").is_none());
    }
}
