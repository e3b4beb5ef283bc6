//! What a replay read, per partition: the evidence a backfill checks before
//! it swaps anything.
//!
//! A replay that read too little (offsets placed after the range's
//! records, retention that deleted them, a topic re-created) computes a
//! range with rows missing, and its swap would delete good rows. So both
//! replay sources note, per source and Kafka partition, the offsets of the
//! records they kept (event time in the replay range), the latest event
//! time they read, and their first record; the backfill compares that with
//! what the ODS table holds for the range (`strata_engine::backfill`).

use std::collections::{BTreeMap, HashMap};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};

use crate::error::{EngineError, Result};
use crate::kafka::offset_runs::OffsetRuns;
use crate::kafka::offsets::TopicPartition;
use crate::ods::{KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC};

/// One partition's reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReads {
    /// Offsets of the records kept (in the replay range).
    pub kept: OffsetRuns,
    /// The latest event time read, microseconds (any record, kept or not).
    pub latest_event_us: Option<i64>,
    /// The first record read: its offset and event time.
    pub first: Option<(i64, Option<i64>)>,
}

/// Every partition's reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReads {
    /// By partition.
    pub partitions: BTreeMap<TopicPartition, PartitionReads>,
}

impl ReplayReads {
    /// Notes `read`, decoded source rows (ODS columns), of which `kept`
    /// are the ones in the replay range; `time` is the event-time column.
    pub fn note(
        &mut self,
        read: &RecordBatch,
        kept: Option<&RecordBatch>,
        time: usize,
    ) -> Result<()> {
        // Gathered per partition first, borrowing the batch's topic names,
        // then merged: no allocation per row.
        let mut batch: HashMap<(&str, i32), PartitionReads> = HashMap::new();
        let (topics, partitions, offsets) = positions(read)?;
        let times = read
            .column(time)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| bad("the event-time column is not a microsecond timestamp"))?;
        for i in 0..read.num_rows() {
            let reads = batch
                .entry((topics.value(i), partitions.value(i)))
                .or_default();
            let time = times.is_valid(i).then(|| times.value(i));
            note_time(reads, offsets.value(i), time);
        }
        if let Some(kept) = kept {
            let (topics, partitions, offsets) = positions(kept)?;
            for i in 0..kept.num_rows() {
                batch
                    .entry((topics.value(i), partitions.value(i)))
                    .or_default()
                    .kept
                    .insert(offsets.value(i));
            }
        }
        for ((topic, partition), seen) in batch {
            let key = TopicPartition {
                topic: topic.to_string(),
                partition,
            };
            let reads = self.partitions.entry(key).or_default();
            reads.kept.extend(&seen.kept);
            if let Some((offset, time)) = seen.first {
                note_time(reads, offset, time);
            }
            if let Some(t) = seen.latest_event_us {
                reads.latest_event_us = Some(reads.latest_event_us.map_or(t, |l| l.max(t)));
            }
        }
        Ok(())
    }
}

/// Notes a record read at `offset` with event time `time`.
fn note_time(reads: &mut PartitionReads, offset: i64, time: Option<i64>) {
    if let Some(t) = time {
        reads.latest_event_us = Some(reads.latest_event_us.map_or(t, |l| l.max(t)));
    }
    if reads.first.is_none_or(|(o, _)| offset < o) {
        reads.first = Some((offset, time));
    }
}

type Positions<'a> = (
    &'a arrow::array::StringArray,
    &'a arrow::array::Int32Array,
    &'a arrow::array::Int64Array,
);

fn positions(rows: &RecordBatch) -> Result<Positions<'_>> {
    let column = |name: &str| {
        rows.column_by_name(name)
            .ok_or_else(|| bad(&format!("the rows have no `{name}` column")))
    };
    let topics = column(KAFKA_TOPIC)?
        .as_string_opt::<i32>()
        .ok_or_else(|| bad("`_kafka_topic` is not a string"))?;
    let partitions = column(KAFKA_PARTITION)?
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| bad("`_kafka_partition` is not an int"))?;
    let offsets = column(KAFKA_OFFSET)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| bad("`_kafka_offset` is not a bigint"))?;
    Ok((topics, partitions, offsets))
}

fn bad(what: &str) -> EngineError {
    EngineError::Config(format!("replay: {what}"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int32Array, Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;

    fn rows(parts: Vec<i32>, offsets: Vec<i64>, times: Vec<Option<i64>>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new(KAFKA_TOPIC, DataType::Utf8, false),
            Field::new(KAFKA_PARTITION, DataType::Int32, false),
            Field::new(KAFKA_OFFSET, DataType::Int64, false),
        ]));
        let n = parts.len();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(StringArray::from(vec!["deals"; n])),
                Arc::new(Int32Array::from(parts)),
                Arc::new(Int64Array::from(offsets)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn kept_offsets_latest_times_and_first_records_per_partition() {
        let mut reads = ReplayReads::default();
        let read = rows(
            vec![0, 1, 0, 1],
            vec![10, 4, 11, 5],
            vec![Some(100), Some(50), None, Some(70)],
        );
        let kept = rows(vec![0, 1], vec![10, 5], vec![Some(100), Some(70)]);
        reads.note(&read, Some(&kept), 0).unwrap();
        reads
            .note(&rows(vec![0], vec![9], vec![Some(90)]), None, 0)
            .unwrap();
        let p0 = &reads.partitions[&TopicPartition {
            topic: "deals".into(),
            partition: 0,
        }];
        assert_eq!(p0.kept.runs(), &[(10, 11)]);
        assert_eq!(p0.latest_event_us, Some(100));
        assert_eq!(p0.first, Some((9, Some(90))));
        let p1 = &reads.partitions[&TopicPartition {
            topic: "deals".into(),
            partition: 1,
        }];
        assert_eq!(p1.kept.runs(), &[(5, 6)]);
        assert_eq!(p1.latest_event_us, Some(70));
        assert_eq!(p1.first, Some((4, Some(50))));
    }
}
