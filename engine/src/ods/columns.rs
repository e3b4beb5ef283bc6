//! The columns Strata adds to every ODS table, beside the schema's fields.
//!
//! They make each row traceable to its Kafka record (and so checkable for
//! exactly-once: no `(partition, offset)` twice), carry ingestion time for
//! latency accounting, and give the date partition.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use strata_schemas::TIMESTAMP_TZ;

/// The record's topic.
pub const KAFKA_TOPIC: &str = "_kafka_topic";
/// The record's partition.
pub const KAFKA_PARTITION: &str = "_kafka_partition";
/// The record's offset.
pub const KAFKA_OFFSET: &str = "_kafka_offset";
/// The record's Kafka timestamp (producer create time or broker append time).
pub const KAFKA_TIMESTAMP: &str = "_kafka_timestamp";
/// When Strata read the record.
pub const INGEST_TIME: &str = "_strata_ingest_time";
/// The UTC date of the event time: the table's partition column.
pub const EVENT_DATE: &str = "event_date";
/// Suffix of a layer's dead-letter table name.
pub const DEAD_LETTER_SUFFIX: &str = "_dead_letter";

/// Whether `name` is taken by a column Strata adds.
///
/// ```
/// use strata_engine::ods::reserved_column;
/// assert!(reserved_column("event_date"));
/// assert!(reserved_column("_kafka_key"));
/// assert!(!reserved_column("deal_id"));
/// ```
pub fn reserved_column(name: &str) -> bool {
    name == EVENT_DATE || name.starts_with("_kafka_") || name.starts_with("_strata_")
}

pub(crate) fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(TIMESTAMP_TZ)))
}

/// The ODS table schema: the record fields, then Strata's columns.
pub fn ods_schema(record: &Schema) -> SchemaRef {
    let mut fields: Vec<Field> = record.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend([
        Field::new(KAFKA_TOPIC, DataType::Utf8, false),
        Field::new(KAFKA_PARTITION, DataType::Int32, false),
        Field::new(KAFKA_OFFSET, DataType::Int64, false),
        Field::new(KAFKA_TIMESTAMP, timestamp_type(), true),
        Field::new(INGEST_TIME, timestamp_type(), false),
        Field::new(EVENT_DATE, DataType::Date32, false),
    ]);
    Arc::new(Schema::new(fields))
}

/// The dead-letter table schema: the raw record, where it came from, and why
/// it was rejected.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("layer", DataType::Utf8, false),
        Field::new("topic", DataType::Utf8, false),
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("kafka_timestamp", timestamp_type(), true),
        Field::new("key", DataType::Binary, true),
        Field::new("raw", DataType::Binary, true),
        Field::new("reason", DataType::Utf8, false),
        Field::new("failed_at", timestamp_type(), false),
    ]))
}
