//! Side outputs: rows a layer does not pass on, kept in tables of their own
//! so that every row is accounted for.
//!
//! - `<layer>_late`: rows behind the layer's watermark (their window already
//!   closed);
//! - `<layer>_future`: rows dated further ahead of the wall clock than the
//!   source allows (they would otherwise drag event time forward);
//! - `<layer>_rejected`: rows the layer's `filter:` rejects, when the layer
//!   keeps them;
//! - `<layer>_dead_letter`: records that could not be decoded (see
//!   `ods::dead_letter_schema`).
//!
//! A side table has the rows' own columns, then why and when they were set
//! aside.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use strata_schemas::TIMESTAMP_TZ;

use crate::error::{EngineError, Result};

/// Why a row was set aside.
pub const REASON: &str = "_strata_reason";
/// When.
pub const ROUTED_AT: &str = "_strata_routed_at";
/// The watermark at that moment (late rows).
pub const WATERMARK: &str = "_strata_watermark";

/// The kinds of side table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Behind the watermark.
    Late,
    /// Ahead of the clock.
    Future,
    /// Rejected by the layer's filter.
    Rejected,
}

impl Side {
    /// The table name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Side::Late => "_late",
            Side::Future => "_future",
            Side::Rejected => "_rejected",
        }
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(TIMESTAMP_TZ)))
}

/// The side table schema for rows of `rows`.
pub fn side_schema(rows: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = rows.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(REASON, DataType::Utf8, false));
    fields.push(Field::new(ROUTED_AT, timestamp(), false));
    fields.push(Field::new(WATERMARK, timestamp(), true));
    Arc::new(Schema::new(fields))
}

/// `rows` with the side columns added.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{Int64Array, RecordBatch};
/// use arrow::datatypes::{DataType, Field, Schema};
/// use strata_engine::dataflow::side_output::annotate;
/// let rows = RecordBatch::try_new(
///     Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)])),
///     vec![Arc::new(Int64Array::from(vec![1, 2]))],
/// ).unwrap();
/// let side = annotate(&rows, "late", 10, Some(5)).unwrap();
/// assert_eq!(side.num_columns(), 4);
/// ```
pub fn annotate(
    rows: &RecordBatch,
    reason: &str,
    now: i64,
    watermark: Option<i64>,
) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![reason; n])));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![now; n]).with_timezone(TIMESTAMP_TZ),
    ));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![watermark; n]).with_timezone(TIMESTAMP_TZ),
    ));
    RecordBatch::try_new(side_schema(&rows.schema()), columns)
        .map_err(EngineError::arrow("building side-output rows"))
}
