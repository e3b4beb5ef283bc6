//! The ODS layer's pieces: Kafka records decoded into rows (with the
//! columns Strata adds) and dead letters.

mod columns;
mod record_stage;

pub use columns::{
    DEAD_LETTER_SUFFIX, EVENT_DATE, INGEST_TIME, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TIMESTAMP,
    KAFKA_TOPIC, dead_letter_schema, ods_schema, reserved_column,
};
pub use record_stage::{RecordStage, SourceRecord, StagedBatches};
