//! Results with plain `Utf8` / `Binary` columns instead of the view types
//! (`Utf8View`, `BinaryView`) DataFusion produces by default: pyarrow's
//! `sort_by` / `take` and many JDBC and ODBC stacks cannot read the views.
//! `serve: {string_view: true}` keeps them for clients that can.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use arrow::error::ArrowError;

/// `schema` with its view types replaced, or `None` when it has none.
pub(crate) fn plain_schema(schema: &Schema) -> Option<SchemaRef> {
    let fields: Vec<FieldRef> = schema.fields().iter().map(plain_field).collect();
    if fields.iter().zip(schema.fields()).all(|(a, b)| a == b) {
        return None;
    }
    Some(Arc::new(Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    )))
}

fn plain_field(field: &FieldRef) -> FieldRef {
    let plain = plain_type(field.data_type());
    if &plain == field.data_type() {
        field.clone()
    } else {
        Arc::new(Field::clone(field).with_data_type(plain))
    }
}

fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::List(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        DataType::Dictionary(k, v) => DataType::Dictionary(k.clone(), Box::new(plain_type(v))),
        other => other.clone(),
    }
}

/// `batch` cast to `schema` (its plain form).
pub(crate) fn to_plain(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringViewArray};

    use super::*;

    #[test]
    fn views_become_plain_strings_and_other_columns_stay() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("city", DataType::Utf8View, true),
            Field::new("n", DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringViewArray::from(vec![
                    "beijing",
                    "a much longer city name",
                ])),
                Arc::new(Int64Array::from(vec![1, 2])),
            ],
        )
        .unwrap();
        let plain = plain_schema(&schema).unwrap();
        assert_eq!(plain.field(0).data_type(), &DataType::Utf8);
        let out = to_plain(batch, &plain).unwrap();
        assert_eq!(out.column(0).data_type(), &DataType::Utf8);
        assert_eq!(out.num_rows(), 2);
        assert!(plain_schema(&plain).is_none());
    }
}
