//! A source replaying a bounded range of the past, for a backfill.
//!
//! A live source follows its topics from a checkpoint and never ends. A
//! replaying source reads a fixed slice of the log, either from Kafka
//! (offsets resolved from times before the run) or from the ODS Delta table
//! that landed the same records, keeps the records whose event time is in
//! the replay range, and ends: it then sends an end-of-input watermark, so
//! every window still open closes, as a bounded Flink source does.
//!
//! The future check cannot use the wall clock here (a replayed record is
//! old by design): a record is future-dated when its event time is further
//! ahead of its Kafka timestamp, the time it reached the log, than the
//! source allows. That is the decision the live source made when it read
//! the record, as near as the log can tell.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, DurationMicrosecondArray, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::kernels::cmp::gt;
use arrow::compute::kernels::numeric::add;
use arrow::compute::{and, filter_record_batch, not};

use crate::dataflow::replay_reads::ReplayReads;
use crate::error::{EngineError, Result};
use crate::event_time::{before, not_before};
use crate::kafka::offsets::TopicPartition;
use crate::ods::KAFKA_TIMESTAMP;
use crate::predicate::null_is_false;
use crate::storage::TableLocation;

/// The watermark a replaying source sends once its input has ended: every
/// window closes (Flink's `MAX_WATERMARK` at the end of a bounded source).
pub const END_OF_INPUT: i64 = i64::MAX;

/// How a source replays a range.
#[derive(Debug, Clone)]
pub struct Replay {
    /// Event times kept: `[start_us, end_us)`, microseconds.
    pub start_us: i64,
    /// End of the kept event times (exclusive).
    pub end_us: i64,
    /// Where the records are read from.
    pub from: ReplayFrom,
    /// Counters the caller shows progress from.
    pub progress: Arc<ReplayProgress>,
    /// Send the end-of-input watermark at the end, closing every window
    /// (backfills); a state reset keeps the open windows' state instead.
    pub close_at_end: bool,
}

/// Where a replay reads.
#[derive(Debug, Clone)]
pub enum ReplayFrom {
    /// Kafka: each partition from its first offset (inclusive) to its end
    /// offset (exclusive).
    Kafka {
        /// `(partition, first, end)` for every partition of the topics.
        ranges: Vec<(TopicPartition, i64, i64)>,
    },
    /// The ODS layer's Delta table, which holds every record the layer
    /// decoded, with its Kafka position.
    Table {
        /// The ODS table.
        location: TableLocation,
    },
}

impl ReplayFrom {
    /// Records the replay will read, when known before it starts.
    pub fn records(&self) -> Option<u64> {
        match self {
            ReplayFrom::Kafka { ranges } => Some(
                ranges
                    .iter()
                    .map(|(_, first, end)| (end - first).max(0) as u64)
                    .sum(),
            ),
            ReplayFrom::Table { .. } => None,
        }
    }
}

/// Progress of a replay, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct ReplayProgress {
    /// Records (Kafka) or rows (table) to read; 0 until known.
    pub total: AtomicU64,
    /// Records or rows read so far.
    pub read: AtomicU64,
    /// The replay's watermark so far, microseconds (`i64::MIN`: none).
    pub event_time_us: AtomicI64,
    /// Set once every record has been read.
    pub finished: std::sync::atomic::AtomicBool,
    /// What each source read, per partition (see [`ReplayReads`]).
    pub reads: Mutex<HashMap<String, ReplayReads>>,
}

impl ReplayProgress {
    /// A fresh counter set.
    pub fn new() -> Arc<Self> {
        let p = ReplayProgress::default();
        p.event_time_us.store(i64::MIN, Ordering::Relaxed);
        Arc::new(p)
    }

    /// Adds to the total to read.
    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` more read.
    pub fn add_read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    /// Notes the replay's watermark.
    pub fn at(&self, watermark: i64) {
        self.event_time_us.fetch_max(watermark, Ordering::Relaxed);
    }

    /// Notes rows `source` read and the ones of them kept (see
    /// [`ReplayReads::note`]).
    pub fn note_reads(
        &self,
        source: &str,
        read: &RecordBatch,
        kept: Option<&RecordBatch>,
        time: usize,
    ) -> Result<()> {
        let mut reads = self
            .reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match reads.get_mut(source) {
            Some(r) => r.note(read, kept, time),
            None => reads
                .entry(source.to_string())
                .or_default()
                .note(read, kept, time),
        }
    }

    /// What `source` read so far.
    pub fn reads(&self, source: &str) -> ReplayReads {
        self.reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(source)
            .cloned()
            .unwrap_or_default()
    }
}

/// The rows of `rows` (ODS rows) a replay keeps: event time (column
/// `time_column`) in `[start_us, end_us)` and, with a `future_skew`, not
/// further ahead of the record's Kafka timestamp than that (see the module
/// docs). `None` when no row is kept.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::{RecordBatch, TimestampMicrosecondArray};
/// use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
/// use strata_engine::dataflow::replay::kept_rows;
///
/// let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
/// let schema = Arc::new(Schema::new(vec![
///     Field::new("t", ts.clone(), true),
///     Field::new("_kafka_timestamp", ts, true),
/// ]));
/// let rows = RecordBatch::try_new(schema, vec![
///     Arc::new(TimestampMicrosecondArray::from(vec![5, 10, 20, 30]).with_timezone("UTC")),
///     Arc::new(TimestampMicrosecondArray::from(vec![5, 10, 1, 30]).with_timezone("UTC")),
/// ]).unwrap();
/// // [10, 40) keeps 10, 20, 30; 20 was 19 µs ahead of its Kafka time.
/// let kept = kept_rows(&rows, 0, 10, 40, Some(5)).unwrap().unwrap();
/// assert_eq!(kept.num_rows(), 2);
/// ```
pub fn kept_rows(
    rows: &RecordBatch,
    time_column: usize,
    start_us: i64,
    end_us: i64,
    future_skew_us: Option<i64>,
) -> Result<Option<RecordBatch>> {
    let times = timestamps(rows, time_column)?;
    let arrow = |what: &str| EngineError::arrow(format!("replay: {what}"));
    let mut keep = null_is_false(
        &and(
            &not_before(times, start_us).map_err(arrow("range start"))?,
            &before(times, end_us).map_err(arrow("range end"))?,
        )
        .map_err(arrow("range"))?,
    );
    if let (Some(skew), Ok(index)) = (future_skew_us, rows.schema().index_of(KAFKA_TIMESTAMP)) {
        let logged = timestamps(rows, index)?;
        let skew = DurationMicrosecondArray::new_scalar(skew);
        let limit = add(logged, &skew).map_err(arrow("kafka time + skew"))?;
        let future = null_is_false(&gt(times, &limit).map_err(arrow("future check"))?);
        keep = and(&keep, &not(&future).map_err(arrow("future check"))?)
            .map_err(arrow("future check"))?;
    }
    match keep.true_count() {
        0 => Ok(None),
        n if n == rows.num_rows() => Ok(Some(rows.clone())),
        _ => filter_record_batch(rows, &keep)
            .map(Some)
            .map_err(arrow("keeping the range")),
    }
}

fn timestamps(rows: &RecordBatch, column: usize) -> Result<&TimestampMicrosecondArray> {
    rows.column(column)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| {
            EngineError::Config(format!(
                "replay: column `{}` is not a microsecond timestamp",
                rows.schema().field(column).name()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn rows(times: Vec<Option<i64>>, logged: Vec<Option<i64>>) -> RecordBatch {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let schema = Arc::new(Schema::new(vec![
            Field::new("t", ts.clone(), true),
            Field::new(KAFKA_TIMESTAMP, ts, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(TimestampMicrosecondArray::from(logged).with_timezone("UTC")),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_without_event_time_are_not_replayed() {
        let r = rows(vec![None, Some(15)], vec![Some(1), Some(15)]);
        assert_eq!(
            kept_rows(&r, 0, 10, 20, None).unwrap().unwrap().num_rows(),
            1
        );
    }

    #[test]
    fn a_record_without_kafka_time_is_never_future() {
        let r = rows(vec![Some(15)], vec![None]);
        assert!(kept_rows(&r, 0, 10, 20, Some(0)).unwrap().is_some());
    }

    #[test]
    fn nothing_kept_is_none() {
        let r = rows(vec![Some(25)], vec![Some(25)]);
        assert!(kept_rows(&r, 0, 10, 20, None).unwrap().is_none());
    }
}
