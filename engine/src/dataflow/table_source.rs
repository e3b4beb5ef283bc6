//! A replay source reading an ODS Delta table instead of Kafka.
//!
//! When retention has deleted part of a range from Kafka, the ODS table
//! still holds every record its layer decoded, with the record's Kafka
//! topic, partition, offset and timestamp. This source reads the rows of
//! the replay range from it in log order (by Kafka timestamp, then
//! position), so the layers downstream see the records as the live
//! pipeline did, and stands in for the Kafka source in the dataflow:
//! same rows, watermarks and barriers on the same channel.
//!
//! Log order needs a sort; DataFusion's external sort does it in bounded
//! memory ([`SORT_MEMORY`]), spilling to the temporary directory.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch, TimestampMicrosecondArray};
use arrow::compute::max;
use datafusion::execution::context::{SessionConfig, SessionContext};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{Expr, col, lit};
use datafusion::prelude::DataFrame;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use strata_schemas::TIMESTAMP_TZ;
use tracing::info;

use crate::dataflow::edge::EdgeSender;
use crate::dataflow::message::Message;
use crate::dataflow::replay::{END_OF_INPUT, kept_rows};
use crate::dataflow::source::{EpochControl, SourceStatus};
use crate::dataflow::spec::SourceSpec;
use crate::dataflow::watermark::PartitionWatermarks;
use crate::delta::storable::conform;
use crate::delta::table::read_existing;
use crate::error::{EngineError, Result};
use crate::kafka::offsets::TopicPartition;
use crate::ods::{
    EVENT_DATE, KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TIMESTAMP, KAFKA_TOPIC, StagedBatches,
    ods_schema,
};
use crate::storage::TableLocation;

/// Memory the log-order sort may hold before it spills to disk.
const SORT_MEMORY: usize = 512 * 1024 * 1024;
/// Of which this is kept for merging the spilled runs.
const SORT_MERGE_RESERVATION: usize = 128 * 1024 * 1024;
/// How often a source whose input has ended checks for barriers.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// A replay of an ODS table, running as a task of the dataflow.
pub(crate) struct TableSource {
    pub(crate) spec: SourceSpec,
    pub(crate) location: TableLocation,
    pub(crate) out: EdgeSender,
    pub(crate) control: Arc<EpochControl>,
    pub(crate) status: Arc<SourceStatus>,
    pub(crate) emitted_epoch: u64,
}

impl TableSource {
    /// Reads the range, then serves barriers until the coordinator ends
    /// the run.
    pub(crate) async fn run(mut self) -> Result<()> {
        let Some(replay) = self.spec.replay.clone() else {
            return Err(EngineError::Config(format!(
                "source `{}` has no replay range",
                self.spec.id
            )));
        };
        let rows_schema = ods_schema(&self.spec.schema.to_arrow());
        let time = self.spec.schema.event_time.clone().ok_or_else(|| {
            EngineError::Config(format!(
                "source `{}`: a replay needs the schema's event-time field",
                self.spec.id
            ))
        })?;
        let time_index = rows_schema
            .index_of(&time)
            .map_err(|e| EngineError::Config(format!("source `{}`: {e}", self.spec.id)))?;
        let url = self.location.url.to_string();
        let names: Vec<&str> = rows_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let frame = ods_range(&self.location, &time, replay.start_us, replay.end_us)
            .await?
            .select_columns(&names)
            .map_err(|e| {
                EngineError::datafusion(
                    &url,
                    "selecting the source's columns (is it the ODS table?)",
                )(e)
            })?;
        let total = frame
            .clone()
            .count()
            .await
            .map_err(|e| EngineError::datafusion(&url, "counting the range")(e))?;
        replay.progress.add_total(total as u64);
        info!(source = %self.spec.id, table = %url, rows = total, "replaying from the ODS table");
        let ordered = frame
            .sort(
                [KAFKA_TIMESTAMP, KAFKA_TOPIC, KAFKA_PARTITION, KAFKA_OFFSET]
                    .into_iter()
                    .map(|c| col(c).sort(true, false))
                    .collect(),
            )
            .map_err(|e| EngineError::datafusion(&url, "ordering the range")(e))?;
        let mut stream = ordered
            .execute_stream()
            .await
            .map_err(|e| EngineError::datafusion(&url, "reading the range")(e))?;
        // One stream in log order: one watermark, as a single partition.
        let whole = TopicPartition {
            topic: url.clone(),
            partition: 0,
        };
        let mut watermarks = PartitionWatermarks::new(self.spec.watermark);
        let mut last_watermark = None;
        loop {
            if self.control.stop_now.load(Ordering::SeqCst) {
                return Ok(());
            }
            if !self.barrier_if_requested().await? {
                return Ok(());
            }
            let Some(batch) = stream.next().await else {
                break;
            };
            let batch = batch.map_err(|e| EngineError::datafusion(&url, "reading the range")(e))?;
            let batch = conform(batch, &rows_schema)
                .map_err(EngineError::arrow("reading ODS rows as source rows"))?;
            replay.progress.add_read(batch.num_rows() as u64);
            let kept = kept_rows(&batch, time_index, replay.start_us, replay.end_us, None)?;
            replay
                .progress
                .note_reads(&self.spec.id, &batch, kept.as_ref(), time_index)?;
            let Some(rows) = kept else {
                continue;
            };
            let latest = latest_time(&rows, time_index);
            let staged = StagedBatches {
                rows: Some(rows),
                dead_letters: None,
                future: None,
                event_times: latest.map(|t| (whole.clone(), t)).into_iter().collect(),
            };
            if self.out.send(Message::Source(staged)).await.is_err() {
                return Ok(());
            }
            self.status.progress.store(true, Ordering::SeqCst);
            let now = Instant::now();
            if let Some(t) = latest {
                watermarks.observe(&whole, t, now);
            }
            let watermark = watermarks.watermark(now);
            if watermark > last_watermark
                && let Some(w) = watermark
            {
                last_watermark = watermark;
                replay.progress.at(w);
                if self.out.send(Message::Watermark(w)).await.is_err() {
                    return Ok(());
                }
            }
        }
        info!(source = %self.spec.id, "replay read its whole range; closing every window");
        replay.progress.finished.store(true, Ordering::SeqCst);
        self.status.progress.store(true, Ordering::SeqCst);
        if self
            .out
            .send(Message::Watermark(END_OF_INPUT))
            .await
            .is_err()
        {
            return Ok(());
        }
        self.status.done.store(true, Ordering::SeqCst);
        loop {
            if self.control.stop_now.load(Ordering::SeqCst) || !self.barrier_if_requested().await? {
                return Ok(());
            }
            let last = self.control.last_epoch.load(Ordering::SeqCst);
            if last != 0 && self.emitted_epoch >= last {
                return Ok(());
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }

    /// Sends the barrier the coordinator asks for, if any; `false` if the
    /// layer has gone away.
    async fn barrier_if_requested(&mut self) -> Result<bool> {
        let requested = self.control.requested.load(Ordering::SeqCst);
        if requested <= self.emitted_epoch {
            return Ok(true);
        }
        self.emitted_epoch = requested;
        let checkpoint = crate::checkpoint::manifest::SourceCheckpoint {
            id: self.spec.id.clone(),
            ..Default::default()
        };
        Ok(self
            .out
            .send(Message::Barrier {
                epoch: requested,
                source: Some(checkpoint),
            })
            .await
            .is_ok())
    }
}

/// The rows of the ODS table at `location` with `time` in
/// `[start_us, end_us)` (whole event dates skipped first).
pub(crate) async fn ods_range(
    location: &TableLocation,
    time: &str,
    start_us: i64,
    end_us: i64,
) -> Result<DataFrame> {
    let url = location.url.to_string();
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit(SORT_MEMORY, 1.0)
        .build_arc()
        .map_err(|e| EngineError::datafusion(&url, "setting up the sort")(e))?;
    // One sorter with the whole budget, and room reserved up front for
    // merging its spilled runs: with the defaults (a sorter per core, 10 MiB
    // for the merge) a few million rows fail with "Resources exhausted".
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_sort_spill_reservation_bytes(SORT_MERGE_RESERVATION);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    read_existing(location, &ctx)
        .await?
        .filter(range_filter(time, start_us, end_us))
        .map_err(|e| EngineError::datafusion(&url, "selecting the range (is it the ODS table?)")(e))
}

/// `time` in `[start_us, end_us)`, with the date partitions of that span
/// named too, so whole days of files are skipped.
fn range_filter(time: &str, start_us: i64, end_us: i64) -> Expr {
    let instant = |us: i64| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(us),
            Some(TIMESTAMP_TZ.into()),
        ))
    };
    let day = |us: i64| {
        lit(ScalarValue::Date32(Some(
            us.div_euclid(86_400_000_000) as i32
        )))
    };
    col(EVENT_DATE)
        .between(day(start_us), day(end_us.saturating_sub(1)))
        .and(col(time).gt_eq(instant(start_us)))
        .and(col(time).lt(instant(end_us)))
}

fn latest_time(rows: &RecordBatch, column: usize) -> Option<i64> {
    rows.column(column)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .and_then(|t| {
            if t.null_count() == t.len() {
                None
            } else {
                max(t)
            }
        })
}
