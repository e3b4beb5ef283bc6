//! Dimension rows that arrive as text (PostgreSQL `::text`, Redis hash
//! fields and JSON values) into Arrow columns of the dimension's schema.
//!
//! Going through text keeps one conversion for both sources and every type
//! Arrow can cast from a string; a value that does not convert is an error
//! naming the column, never a silent null.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, SchemaRef};

/// Rows of text values, one `Vec` per row in schema order.
pub(crate) fn text_rows_to_batch(
    schema: &SchemaRef,
    rows: &[Vec<Option<String>>],
) -> Result<RecordBatch, String> {
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let text = StringArray::from_iter(rows.iter().map(|r| r.get(i).cloned().flatten()));
        let column = match field.data_type() {
            DataType::Utf8 => Arc::new(text) as ArrayRef,
            // PostgreSQL sends timestamps as microseconds since the epoch;
            // Redis holds RFC 3339 text. Both are accepted.
            DataType::Timestamp(_, _) if all_integers(&text) => {
                let micros: Int64Array = text
                    .iter()
                    .map(|v| v.and_then(|s| s.trim().parse::<i64>().ok()))
                    .collect();
                cast_with_options(&micros, field.data_type(), &strict)
                    .map_err(|e| format!("column `{}`: {e}", field.name()))?
            }
            DataType::Boolean => {
                // PostgreSQL writes booleans as `t` / `f`.
                let spelled: StringArray = text
                    .iter()
                    .map(|v| {
                        v.map(|s| match s {
                            "t" => "true",
                            "f" => "false",
                            other => other,
                        })
                    })
                    .collect();
                cast_with_options(&spelled, field.data_type(), &strict)
                    .map_err(|e| format!("column `{}`: {e}", field.name()))?
            }
            other => cast_with_options(&text, other, &strict)
                .map_err(|e| format!("column `{}` ({other}): {e}", field.name()))?,
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(format!(
                "column `{}` is null in the dimension but not nullable in its schema",
                field.name()
            ));
        }
        columns.push(column);
    }
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
}

fn all_integers(text: &StringArray) -> bool {
    text.iter()
        .flatten()
        .all(|s| s.trim().parse::<i64>().is_ok())
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};

    use super::*;

    #[test]
    fn text_becomes_typed_columns() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("active", DataType::Boolean, true),
            Field::new(
                "since",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let t = |s: &str| Some(s.to_string());
        let rows = vec![
            vec![t("7"), t("Ann"), t("t"), t("1700000000000000")],
            vec![t("8"), None, t("false"), None],
        ];
        let batch = text_rows_to_batch(&schema, &rows).unwrap();
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(1), 8);
        assert!(batch.column(1).is_null(1));
        assert!(!batch.column(2).as_boolean().value(1));
        let since = batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(since.value(0), 1_700_000_000_000_000);
    }

    #[test]
    fn bad_values_name_their_column() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let err = text_rows_to_batch(&schema, &[vec![Some("seven".into())]]).unwrap_err();
        assert!(err.contains("`id`"), "{err}");
    }
}
