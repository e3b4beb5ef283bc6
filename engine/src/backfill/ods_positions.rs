//! Where a range's records are in Kafka, as the ODS table knows it.
//!
//! Kafka timestamps are when a record reached the log (the producer's
//! clock by default, or the broker's), not its event time: a day-old event
//! sent now is logged now. So offsets-for-times on event times finds the
//! wrong records, and a replay built on it read nothing of the range (and
//! its swap deleted the range). The ODS table knows better: every record
//! it landed carries its event time and its Kafka position. Per partition
//! this reads:
//!
//! - the offsets of the range's records (event time in the replay span):
//!   where the replay starts, and what it must read, all of it
//!   ([`crate::backfill::coverage`] checks that afterwards);
//! - the first record whose event time is past the range end plus the
//!   watermark delays: where the partition's watermark passed the range,
//!   so where the replay can stop;
//! - the Kafka timestamp of the range's first record, to tell that Kafka
//!   still holds that very record (a re-created topic reuses offsets);
//! - the lag between event time and Kafka time, for the summary.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::col;
use futures::StreamExt;

use crate::dataflow::table_source::ods_range;
use crate::error::{EngineError, Result};
use crate::kafka::offset_runs::OffsetRuns;
use crate::kafka::offsets::TopicPartition;
use crate::ods::{KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TIMESTAMP, KAFKA_TOPIC};
use crate::storage::TableLocation;

/// How far past the range the first later record is looked for; a
/// partition with none that close is read to its end.
const PAST_SEARCH_US: i64 = 24 * 3_600 * 1_000_000;

/// One partition's records of a range, as the ODS table holds them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldRecords {
    /// Offsets of the records whose event time is in the replay span.
    pub offsets: OffsetRuns,
    /// The first offset to read: the smallest of a record whose event time
    /// is at or after the span's start minus the future skew.
    pub first: Option<i64>,
    /// The Kafka timestamp (ms) of the record at `first`.
    pub first_logged_ms: Option<i64>,
    /// The first record whose event time is past the range's end plus the
    /// watermark delays (within a day of it).
    pub past: Option<i64>,
    /// Smallest and largest Kafka time minus event time (ms) over the
    /// range's records.
    pub lag_ms: Option<(i64, i64)>,
}

/// What the ODS table holds of a range, by partition; `None` when the
/// table does not exist.
///
/// `span` is the replay's event times `[start, end)`; records from
/// `span.0 - early_us` count for where to start; `past_us` is the event
/// time after which a partition has passed the range.
pub async fn held_records(
    location: &TableLocation,
    time: &str,
    span: (i64, i64),
    early_us: i64,
    past_us: i64,
) -> Result<Option<BTreeMap<TopicPartition, HeldRecords>>> {
    let url = location.url.to_string();
    let from = span.0.saturating_sub(early_us);
    let frame = match ods_range(location, time, from, span.1).await {
        Ok(f) => f,
        Err(EngineError::Delta { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let failed = |what: &'static str| {
        let url = url.clone();
        move |e| EngineError::datafusion(&url, what)(e)
    };
    // Read in any order (`note_batch` keeps per-partition minima and sets):
    // a sort of a range of millions of rows ran out of its memory budget
    // merging its spills, for nothing.
    let mut stream = frame
        .select_columns(&[
            KAFKA_TOPIC,
            KAFKA_PARTITION,
            KAFKA_OFFSET,
            KAFKA_TIMESTAMP,
            time,
        ])
        .map_err(failed(
            "reading the range's Kafka positions (is it the ODS table?)",
        ))?
        .execute_stream()
        .await
        .map_err(failed("reading the range's Kafka positions"))?;
    let mut held: BTreeMap<TopicPartition, HeldRecords> = BTreeMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(failed("reading the range's Kafka positions"))?;
        note_batch(&mut held, &batch, span.0)?;
    }
    for (tp, past) in first_past(location, time, past_us).await? {
        held.entry(tp).or_default().past = Some(past);
    }
    Ok(Some(held))
}

/// Adds a batch of `(topic, partition, offset, kafka time, event time)`
/// rows, in any order.
fn note_batch(
    held: &mut BTreeMap<TopicPartition, HeldRecords>,
    batch: &RecordBatch,
    span_start: i64,
) -> Result<()> {
    let column = |i: usize, to: &DataType| {
        cast(batch.column(i), to).map_err(EngineError::arrow("reading the range's Kafka positions"))
    };
    let (topics, partitions, offsets, logged, times) = (
        column(0, &DataType::Utf8)?,
        column(1, &DataType::Int32)?,
        column(2, &DataType::Int64)?,
        column(3, &DataType::Int64)?,
        column(4, &DataType::Int64)?,
    );
    let (Some(topics), Some(partitions), Some(offsets), Some(logged), Some(times)) = (
        topics.as_string_opt::<i32>(),
        partitions.as_primitive_opt::<Int32Type>(),
        offsets.as_primitive_opt::<Int64Type>(),
        logged.as_primitive_opt::<Int64Type>(),
        times.as_primitive_opt::<Int64Type>(),
    ) else {
        return Err(EngineError::Config(
            "the ODS table's Kafka columns have unexpected types".into(),
        ));
    };
    let mut current: Option<(TopicPartition, HeldRecords)> = None;
    for i in 0..batch.num_rows() {
        if topics.is_null(i) || partitions.is_null(i) || offsets.is_null(i) {
            continue;
        }
        let (topic, partition) = (topics.value(i), partitions.value(i));
        if current
            .as_ref()
            .is_none_or(|(tp, _)| tp.topic != topic || tp.partition != partition)
        {
            if let Some((tp, records)) = current.take() {
                held.insert(tp, records);
            }
            let tp = TopicPartition {
                topic: topic.to_string(),
                partition,
            };
            let records = held.remove(&tp).unwrap_or_default();
            current = Some((tp, records));
        }
        let Some((_, records)) = current.as_mut() else {
            continue;
        };
        let offset = offsets.value(i);
        let logged_ms = logged.is_valid(i).then(|| logged.value(i).div_euclid(1000));
        if records.first.is_none_or(|f| offset < f) {
            records.first = Some(offset);
            records.first_logged_ms = logged_ms;
        }
        if times.is_valid(i) && times.value(i) >= span_start {
            records.offsets.insert(offset);
            if let Some(logged) = logged_ms {
                let lag = logged - times.value(i).div_euclid(1000);
                records.lag_ms = Some(
                    records
                        .lag_ms
                        .map_or((lag, lag), |(lo, hi)| (lo.min(lag), hi.max(lag))),
                );
            }
        }
    }
    if let Some((tp, records)) = current {
        held.insert(tp, records);
    }
    Ok(())
}

/// Per partition, the first offset of a record with event time in
/// `[past_us, past_us + a day)`.
async fn first_past(
    location: &TableLocation,
    time: &str,
    past_us: i64,
) -> Result<Vec<(TopicPartition, i64)>> {
    let url = location.url.to_string();
    let failed =
        |e| EngineError::datafusion(&url, "finding where each partition passed the range")(e);
    let batches = ods_range(
        location,
        time,
        past_us,
        past_us.saturating_add(PAST_SEARCH_US),
    )
    .await?
    .aggregate(
        vec![col(KAFKA_TOPIC), col(KAFKA_PARTITION)],
        vec![min(col(KAFKA_OFFSET)).alias("past")],
    )
    .map_err(failed)?
    .collect()
    .await
    .map_err(failed)?;
    let mut out = Vec::new();
    for batch in batches {
        let column = |i: usize, to: &DataType| {
            cast(batch.column(i), to).map_err(EngineError::arrow(
                "reading where partitions passed the range",
            ))
        };
        let (topics, partitions, offsets) = (
            column(0, &DataType::Utf8)?,
            column(1, &DataType::Int32)?,
            column(2, &DataType::Int64)?,
        );
        let (Some(topics), Some(partitions), Some(offsets)) = (
            topics.as_string_opt::<i32>(),
            partitions.as_primitive_opt::<Int32Type>(),
            offsets.as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(EngineError::Config(format!(
                "{url}: the ODS table's Kafka columns have unexpected types"
            )));
        };
        for i in 0..batch.num_rows() {
            if topics.is_valid(i) && partitions.is_valid(i) && offsets.is_valid(i) {
                out.push((
                    TopicPartition {
                        topic: topics.value(i).to_string(),
                        partition: partitions.value(i),
                    },
                    offsets.value(i),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;

    fn batch(rows: &[(i32, i64, i64, i64)]) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new(KAFKA_TOPIC, DataType::Utf8, false),
            Field::new(KAFKA_PARTITION, DataType::Int32, false),
            Field::new(KAFKA_OFFSET, DataType::Int64, false),
            Field::new(KAFKA_TIMESTAMP, ts.clone(), true),
            Field::new("t", ts, true),
        ]));
        let col = |f: fn(&(i32, i64, i64, i64)) -> i64| rows.iter().map(f).collect::<Vec<_>>();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["deals"; rows.len()])),
                Arc::new(Int32Array::from(
                    rows.iter().map(|r| r.0).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(col(|r| r.1))),
                Arc::new(TimestampMicrosecondArray::from(col(|r| r.2)).with_timezone("UTC")),
                Arc::new(TimestampMicrosecondArray::from(col(|r| r.3)).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition {
            topic: "deals".into(),
            partition,
        }
    }

    #[test]
    fn positions_per_partition_across_batches() {
        let mut held = BTreeMap::new();
        // (partition, offset, kafka time µs, event time µs); the span starts at 1000.
        note_batch(
            &mut held,
            &batch(&[
                (0, 5, 900_000, 990),
                (0, 6, 2_000_000, 1_000),
                (1, 3, 3_000_000, 1_500),
            ]),
            1_000,
        )
        .unwrap();
        note_batch(&mut held, &batch(&[(1, 4, 4_000_000, 2_000)]), 1_000).unwrap();
        let p0 = &held[&tp(0)];
        assert_eq!(
            p0.first,
            Some(5),
            "the record before the span still places the start"
        );
        assert_eq!(p0.first_logged_ms, Some(900));
        assert_eq!(p0.offsets.runs(), &[(6, 7)]);
        assert_eq!(p0.lag_ms, Some((1_999, 1_999)));
        let p1 = &held[&tp(1)];
        assert_eq!((p1.first, p1.offsets.len()), (Some(3), 2));
        assert_eq!(p1.lag_ms, Some((2_999, 3_998)));
    }
}
