//! Query results as the page wants them: column names, and rows of values:
//! integers and floats as JSON numbers, everything else as display text.
//! Decimals stay text (`"1234.50"`): their digits exact, not rounded
//! through a float on the way to the page.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use serde_json::Value;

/// The columns of `batches` and their rows, in order.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch, StringArray};
/// use arrow::datatypes::{DataType, Field, Schema};
///
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("city", DataType::Utf8, false),
///     Field::new("deals", DataType::Int64, true),
/// ]));
/// let batch = RecordBatch::try_new(schema, vec![
///     Arc::new(StringArray::from(vec!["Beijing"])),
///     Arc::new(Int64Array::from(vec![Some(3)])),
/// ]).unwrap();
/// let (columns, rows) = strata_dashboard::batches_to_rows(&[batch]).unwrap();
/// assert_eq!(columns, vec!["city", "deals"]);
/// assert_eq!(rows, vec![vec![serde_json::json!("Beijing"), serde_json::json!(3)]]);
/// ```
pub fn batches_to_rows(
    batches: &[RecordBatch],
) -> Result<(Vec<String>, Vec<Vec<Value>>), ArrowError> {
    let Some(first) = batches.first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let columns = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(column, format)| {
                    if column.is_null(row) {
                        return Value::Null;
                    }
                    let text = format.value(row).to_string();
                    if is_number(column.data_type()) {
                        serde_json::from_str::<serde_json::Number>(&text)
                            .map(Value::Number)
                            .unwrap_or(Value::String(text))
                    } else {
                        Value::String(text)
                    }
                })
                .collect();
            rows.push(values);
        }
    }
    Ok((columns, rows))
}

fn is_number(t: &DataType) -> bool {
    t.is_integer() || t.is_floating()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Decimal128Array, Float64Array};
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn decimals_keep_their_digits_and_nulls_are_null() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("gmv", DataType::Decimal128(28, 2), true),
            Field::new("share", DataType::Float64, true),
        ]));
        let gmv = Decimal128Array::from(vec![Some(123_456_789_012_345_678i128), None])
            .with_precision_and_scale(28, 2)
            .unwrap();
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(gmv),
                Arc::new(Float64Array::from(vec![Some(0.25), Some(f64::NAN)])),
            ],
        )
        .unwrap();
        let (_, rows) = batches_to_rows(&[batch]).unwrap();
        assert_eq!(rows[0][0], serde_json::json!("1234567890123456.78"));
        assert_eq!(rows[0][1], serde_json::json!(0.25));
        assert_eq!(rows[1][0], Value::Null);
        // Not a JSON number: kept as its text rather than lost.
        assert_eq!(rows[1][1], serde_json::json!("NaN"));
    }
}
