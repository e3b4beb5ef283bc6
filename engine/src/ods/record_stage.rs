//! One epoch's worth of Kafka records turned into ODS rows and dead letters.
//!
//! This is the part of the ODS pipeline with no I/O: it sees a record's bytes
//! and position and decides where the record goes. Every record ends up in
//! exactly one of the two batches, so counts reconcile: rows + dead letters =
//! records read.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::array::{AsArray, TimestampMicrosecondArray};
use arrow::compute::{cast, filter_record_batch, not};
use arrow::datatypes::{DataType, Int32Type, SchemaRef};
use arrow::record_batch::RecordBatch;
use strata_schemas::{JsonDecoder, Schema, TIMESTAMP_TZ};

use crate::error::{EngineError, Result};
use crate::event_time::after;
use crate::kafka::offsets::TopicPartition;
use crate::ods::columns::{dead_letter_schema, ods_schema};

/// A Kafka record as the stage sees it.
#[derive(Debug, Clone, Copy)]
pub struct SourceRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Kafka timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Key bytes.
    pub key: Option<&'a [u8]>,
    /// Value bytes (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
}

/// Batches produced by [`RecordStage::take`].
#[derive(Debug, Default)]
pub struct StagedBatches {
    /// Decoded rows in the ODS table schema.
    pub rows: Option<RecordBatch>,
    /// Rejected records in the dead-letter schema.
    pub dead_letters: Option<RecordBatch>,
    /// Decoded rows dated further in the future than the source allows, in
    /// the ODS table schema.
    pub future: Option<RecordBatch>,
    /// The latest event time of the (not future) rows, per partition.
    pub event_times: Vec<(TopicPartition, i64)>,
}

/// Decodes records of one layer into ODS rows, and rejects into dead letters.
///
/// ```
/// use strata_engine::ods::{RecordStage, SourceRecord};
/// use strata_schemas::{Field, FieldType, Schema};
///
/// let schema = Schema::new("e", vec![
///     Field::new("id", FieldType::Int64).required(),
///     Field::new("ts", FieldType::Timestamp).required(),
/// ]).with_event_time("ts");
/// let mut stage = RecordStage::new("ods_e", &schema).unwrap();
/// let record = |offset, payload: &'static [u8]| SourceRecord {
///     topic: "e", partition: 0, offset, timestamp_ms: None, key: None, payload: Some(payload),
/// };
/// stage.push(&record(0, br#"{"id":1,"ts":0}"#), 0);
/// stage.push(&record(1, b"oops"), 0);
/// let out = stage.take(None).unwrap();
/// assert_eq!(out.rows.unwrap().num_rows(), 1);
/// assert_eq!(out.dead_letters.unwrap().num_rows(), 1);
/// ```
pub struct RecordStage {
    layer: String,
    decoder: JsonDecoder,
    event_time_index: usize,
    schema: SchemaRef,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    kafka_ts: TimestampMicrosecondBuilder,
    ingest: TimestampMicrosecondBuilder,
    dead: DeadLetters,
}

impl RecordStage {
    /// A stage for `layer`, decoding records of `schema` (which must have an
    /// event-time field).
    pub fn new(layer: &str, schema: &Schema) -> Result<Self> {
        let event_time_index = schema.event_time_index().ok_or_else(|| {
            EngineError::Config(format!(
                "schema `{}` has no event-time field; ods layers need one",
                schema.name
            ))
        })?;
        let decoder = JsonDecoder::new(schema);
        let schema = ods_schema(decoder.schema());
        Ok(RecordStage {
            layer: layer.to_string(),
            decoder,
            event_time_index,
            schema,
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            kafka_ts: TimestampMicrosecondBuilder::new().with_timezone(TIMESTAMP_TZ),
            ingest: TimestampMicrosecondBuilder::new().with_timezone(TIMESTAMP_TZ),
            dead: DeadLetters::new(),
        })
    }

    /// The schema of the rows batches.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Routes one record: decoded into a row, or into a dead letter.
    /// `now_micros` is the ingestion time.
    pub fn push(&mut self, record: &SourceRecord<'_>, now_micros: i64) {
        let kafka_ts = record.timestamp_ms.and_then(|ms| ms.checked_mul(1_000));
        let Some(payload) = record.payload else {
            self.dead.push(
                &self.layer,
                record,
                kafka_ts,
                "the record has no value (a tombstone)",
                now_micros,
            );
            return;
        };
        match self.decoder.decode(payload) {
            Ok(()) => {
                self.topic.append_value(record.topic);
                self.partition.append_value(record.partition);
                self.offset.append_value(record.offset);
                self.kafka_ts.append_option(kafka_ts);
                self.ingest.append_value(now_micros);
            }
            Err(e) => self
                .dead
                .push(&self.layer, record, kafka_ts, &e.reason, now_micros),
        }
    }

    /// Decoded rows waiting in the stage.
    pub fn pending_rows(&self) -> usize {
        self.decoder.len()
    }

    /// Dead letters waiting in the stage.
    pub fn pending_dead_letters(&self) -> usize {
        self.dead.len
    }

    /// Takes what the stage holds as batches; the stage starts empty again.
    /// Rows with an event time after `future_cutoff` (microseconds) are
    /// split off as future-dated.
    pub fn take(&mut self, future_cutoff: Option<i64>) -> Result<StagedBatches> {
        let rows = if self.decoder.is_empty() {
            None
        } else {
            let decoded = self
                .decoder
                .finish()
                .map_err(EngineError::arrow("finishing decoded rows"))?;
            let event_date = cast(decoded.column(self.event_time_index), &DataType::Date32)
                .map_err(EngineError::arrow("deriving event_date"))?;
            let mut columns: Vec<ArrayRef> = decoded.columns().to_vec();
            columns.push(Arc::new(self.topic.finish()));
            columns.push(Arc::new(self.partition.finish()));
            columns.push(Arc::new(self.offset.finish()));
            columns.push(Arc::new(self.kafka_ts.finish()));
            columns.push(Arc::new(self.ingest.finish()));
            columns.push(event_date);
            Some(
                RecordBatch::try_new(self.schema.clone(), columns)
                    .map_err(EngineError::arrow("assembling ods rows"))?,
            )
        };
        let dead_letters = self.dead.take()?;
        let (rows, future) = match (rows, future_cutoff) {
            (Some(rows), Some(cutoff)) => self.split_future(rows, cutoff)?,
            (rows, _) => (rows, None),
        };
        let event_times = match &rows {
            Some(rows) => self.event_times(rows)?,
            None => Vec::new(),
        };
        Ok(StagedBatches {
            rows,
            dead_letters,
            future,
            event_times,
        })
    }

    fn event_time_column<'a>(
        &self,
        rows: &'a RecordBatch,
    ) -> Result<&'a TimestampMicrosecondArray> {
        rows.column(self.event_time_index)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| EngineError::Config("the event-time column is not a timestamp".into()))
    }

    fn split_future(
        &self,
        rows: RecordBatch,
        cutoff: i64,
    ) -> Result<(Option<RecordBatch>, Option<RecordBatch>)> {
        let times = self.event_time_column(&rows)?;
        let future =
            after(times, cutoff).map_err(EngineError::arrow("finding future-dated rows"))?;
        if future.true_count() == 0 {
            return Ok((Some(rows), None));
        }
        let keep = not(&future).map_err(EngineError::arrow("finding future-dated rows"))?;
        let split = |mask| {
            filter_record_batch(&rows, mask)
                .map(|b| (b.num_rows() > 0).then_some(b))
                .map_err(EngineError::arrow("splitting future-dated rows"))
        };
        Ok((split(&keep)?, split(&future)?))
    }

    /// The latest event time per partition in `rows` (a batch spans few
    /// partitions, so a short list beats a map).
    fn event_times(&self, rows: &RecordBatch) -> Result<Vec<(TopicPartition, i64)>> {
        let times = self.event_time_column(rows)?;
        let width = self.schema.fields().len();
        // The metadata columns follow the record's fields: topic, partition, ...
        let topics = rows.column(width - 6).as_string::<i32>();
        let partitions = rows.column(width - 5).as_primitive::<Int32Type>();
        let mut out: Vec<(TopicPartition, i64)> = Vec::new();
        for i in 0..rows.num_rows() {
            let (topic, partition, time) = (topics.value(i), partitions.value(i), times.value(i));
            match out
                .iter_mut()
                .find(|(tp, _)| tp.partition == partition && tp.topic == topic)
            {
                Some((_, max)) => *max = (*max).max(time),
                None => out.push((
                    TopicPartition {
                        topic: topic.to_string(),
                        partition,
                    },
                    time,
                )),
            }
        }
        Ok(out)
    }
}

/// Builders for the dead-letter table's columns.
struct DeadLetters {
    len: usize,
    layer: StringBuilder,
    topic: StringBuilder,
    partition: Int32Builder,
    offset: Int64Builder,
    kafka_ts: TimestampMicrosecondBuilder,
    key: BinaryBuilder,
    raw: BinaryBuilder,
    reason: StringBuilder,
    failed_at: TimestampMicrosecondBuilder,
}

impl DeadLetters {
    fn new() -> Self {
        DeadLetters {
            len: 0,
            layer: StringBuilder::new(),
            topic: StringBuilder::new(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            kafka_ts: TimestampMicrosecondBuilder::new().with_timezone(TIMESTAMP_TZ),
            key: BinaryBuilder::new(),
            raw: BinaryBuilder::new(),
            reason: StringBuilder::new(),
            failed_at: TimestampMicrosecondBuilder::new().with_timezone(TIMESTAMP_TZ),
        }
    }

    fn push(
        &mut self,
        layer: &str,
        record: &SourceRecord<'_>,
        kafka_ts: Option<i64>,
        reason: &str,
        now_micros: i64,
    ) {
        self.len += 1;
        self.layer.append_value(layer);
        self.topic.append_value(record.topic);
        self.partition.append_value(record.partition);
        self.offset.append_value(record.offset);
        self.kafka_ts.append_option(kafka_ts);
        self.key.append_option(record.key);
        self.raw.append_option(record.payload);
        self.reason.append_value(reason);
        self.failed_at.append_value(now_micros);
    }

    fn take(&mut self) -> Result<Option<RecordBatch>> {
        if self.len == 0 {
            return Ok(None);
        }
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.layer.finish()),
            Arc::new(self.topic.finish()),
            Arc::new(self.partition.finish()),
            Arc::new(self.offset.finish()),
            Arc::new(self.kafka_ts.finish()),
            Arc::new(self.key.finish()),
            Arc::new(self.raw.finish()),
            Arc::new(self.reason.finish()),
            Arc::new(self.failed_at.finish()),
        ];
        RecordBatch::try_new(dead_letter_schema(), columns)
            .map(Some)
            .map_err(EngineError::arrow("assembling dead letters"))
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Date32Array};
    use strata_schemas::{Field, FieldType};

    use super::*;

    fn schema() -> Schema {
        Schema::new(
            "deal",
            vec![
                Field::new("id", FieldType::String).required(),
                Field::new("ts", FieldType::Timestamp).required(),
            ],
        )
        .with_event_time("ts")
    }

    fn record<'a>(offset: i64, payload: Option<&'a [u8]>) -> SourceRecord<'a> {
        SourceRecord {
            topic: "deals",
            partition: 2,
            offset,
            timestamp_ms: Some(5),
            key: Some(b"k"),
            payload,
        }
    }

    #[test]
    fn every_record_lands_in_exactly_one_batch() {
        let mut stage = RecordStage::new("ods_deals", &schema()).unwrap();
        stage.push(
            &record(10, Some(br#"{"id":"a","ts":"2026-11-21T23:59:59Z"}"#)),
            1,
        );
        stage.push(&record(11, Some(b"{bad")), 2);
        stage.push(&record(12, None), 3);
        stage.push(&record(13, Some(br#"{"id":"b"}"#)), 4);
        stage.push(&record(14, Some(br#"{"id":"c","ts":86400000}"#)), 5);
        assert_eq!((stage.pending_rows(), stage.pending_dead_letters()), (2, 3));
        let out = stage.take(None).unwrap();
        let rows = out.rows.unwrap();
        assert_eq!(rows.num_rows(), 2);
        let offsets = rows
            .column_by_name("_kafka_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(offsets.values(), &[10, 14]);
        let dates = rows
            .column_by_name("event_date")
            .unwrap()
            .as_any()
            .downcast_ref::<Date32Array>()
            .unwrap();
        assert_eq!(dates.values(), &[20_778, 1]);
        let dead = out.dead_letters.unwrap();
        let reasons = dead.column_by_name("reason").unwrap().as_string::<i32>();
        assert!(reasons.value(0).starts_with("not valid JSON"));
        assert!(reasons.value(1).contains("tombstone"));
        assert_eq!(reasons.value(2), "required field `ts` is missing");
        let raw = dead.column_by_name("raw").unwrap().as_binary::<i32>();
        assert_eq!(raw.value(0), b"{bad");
        assert!(stage.take(None).unwrap().rows.is_none());
    }

    #[test]
    fn future_rows_are_split_off_and_do_not_count_for_event_time() {
        let mut stage = RecordStage::new("ods_deals", &schema()).unwrap();
        stage.push(&record(1, Some(br#"{"id":"now","ts":1000}"#)), 0);
        stage.push(&record(2, Some(br#"{"id":"later","ts":9000000}"#)), 0);
        let out = stage.take(Some(5_000_000_000)).unwrap();
        assert_eq!(out.rows.unwrap().num_rows(), 1);
        assert_eq!(out.future.unwrap().num_rows(), 1);
        assert_eq!(out.event_times.len(), 1);
        assert_eq!(out.event_times[0].1, 1_000_000);
    }
}
