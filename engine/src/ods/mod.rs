//! The ODS pipeline: a Kafka topic of JSON records landed in a Delta table,
//! exactly once, with a dead-letter table for records that do not decode.

mod columns;
mod committer;
mod pipeline;
mod record_stage;
mod source_loop;

pub use columns::{
    DEAD_LETTER_SUFFIX, EVENT_DATE, INGEST_TIME, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TIMESTAMP,
    KAFKA_TOPIC, dead_letter_schema, ods_schema, reserved_column,
};
pub use pipeline::{OdsReport, OdsSpec, run_ods};
pub use record_stage::{RecordStage, SourceRecord, StagedBatches};
