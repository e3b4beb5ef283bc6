//! Arrow types a Delta table can hold.
//!
//! DataFusion's results use Arrow types Delta has no counterpart for
//! (`APPROX_DISTINCT` is a `UInt64`, string functions may return views).
//! A layer's output is therefore mapped to the nearest Delta type once, when
//! it is planned, and every batch it emits is cast to that schema: the table,
//! downstream layers and anything reading either see the same columns.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The type a Delta table stores `t` as (`t` itself when Delta has it).
///
/// ```
/// use arrow::datatypes::DataType;
/// use strata_engine::delta::storable::storable_type;
///
/// assert_eq!(storable_type(&DataType::UInt64), DataType::Int64);
/// assert_eq!(storable_type(&DataType::Utf8View), DataType::Utf8);
/// assert_eq!(storable_type(&DataType::Int32), DataType::Int32);
/// ```
pub fn storable_type(t: &DataType) -> DataType {
    match t {
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 | DataType::UInt64 => DataType::Int64,
        DataType::Float16 => DataType::Float32,
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        DataType::BinaryView | DataType::LargeBinary => DataType::Binary,
        DataType::Date64 => DataType::Date32,
        DataType::Timestamp(unit, tz) if *unit != TimeUnit::Microsecond => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.clone())
        }
        DataType::Dictionary(_, values) => storable_type(values),
        DataType::List(item) | DataType::LargeList(item) | DataType::ListView(item) => {
            DataType::List(Arc::new(storable_field(item)))
        }
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| storable_field(f)).collect())
        }
        other => other.clone(),
    }
}

fn storable_field(f: &Field) -> Field {
    f.clone().with_data_type(storable_type(f.data_type()))
}

/// `schema` with every column of a type Delta can store; metadata kept.
pub fn storable_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema.fields().iter().map(|f| storable_field(f)).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// `batch` with its columns cast to `schema`'s types (same names, same
/// order); the batch itself when nothing changes.
pub fn conform(batch: RecordBatch, schema: &SchemaRef) -> arrow::error::Result<RecordBatch> {
    let same = batch
        .schema()
        .fields()
        .iter()
        .zip(schema.fields())
        .all(|(a, b)| a.data_type() == b.data_type());
    if same {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        // Not "safe": a value the stored type cannot hold (a UInt64 above
        // i64::MAX) is an error, not a NULL.
        .map(|(c, f)| {
            cast_with_options(
                c,
                f.data_type(),
                &CastOptions {
                    safe: false,
                    ..Default::default()
                },
            )
        })
        .collect::<arrow::error::Result<Vec<_>>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}
