//! OVER aggregations on a raw stream (Flink's "over aggregation"):
//! `SUM(amount) OVER (PARTITION BY agent ORDER BY event_time RANGE BETWEEN
//! INTERVAL '1' HOUR PRECEDING AND CURRENT ROW)`, one result row per input
//! row.
//!
//! A row's frame holds rows up to its own time, so its result is final once
//! the watermark passes it: no later row can fall in its frame. Rows
//! therefore wait until then, and are emitted once, in append mode, as
//! Flink does. To compute them, DataFusion's own window operator runs over
//! the ready rows plus the *history* their frames can reach (rows already
//! emitted, kept only as far back as the frame: an interval for RANGE, the
//! last N rows per partition key for ROWS); only the ready rows' results are
//! kept. Memory is the rows waiting for the watermark plus one frame of
//! history per key.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{
    SortColumn, concat_batches, filter_record_batch, lexsort_to_indices, partition, take,
};
use arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};

use crate::event_time::{before, not_before};
use crate::sql::program::OverFrame;

/// Schema metadata carrying the watermark rows were emitted through, so a
/// snapshot restores it with the rows.
const EMITTED_THROUGH: &str = "strata.over.emitted_through";

/// Rows waiting for the watermark, and the history their frames reach.
pub struct OverBuffer {
    schema: SchemaRef,
    time: usize,
    keys: Vec<usize>,
    frame: OverFrame,
    pending: Vec<RecordBatch>,
    history: Option<RecordBatch>,
    /// Every row before this time has been emitted.
    emitted_through: Option<i64>,
}

/// Rows to run the window over, and from which time on results are new.
pub struct ReadyRows {
    /// History and ready rows.
    pub rows: RecordBatch,
    /// Results of rows at or after this time are emitted; earlier ones are
    /// history, emitted before.
    pub emit_from: i64,
}

impl OverBuffer {
    /// A buffer for rows of `schema`, ordered by `time_column`, partitioned
    /// by `keys`.
    pub fn new(
        schema: SchemaRef,
        time_column: &str,
        keys: &[String],
        frame: OverFrame,
    ) -> Result<Self> {
        let index = |name: &str| {
            schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!("OVER column `{name}` is not in the rows"))
            })
        };
        Ok(OverBuffer {
            time: index(time_column)?,
            keys: keys.iter().map(|k| index(k)).collect::<Result<_>>()?,
            frame,
            schema,
            pending: Vec::new(),
            history: None,
            emitted_through: None,
        })
    }

    /// Rows waiting for the watermark.
    pub fn pending_rows(&self) -> usize {
        self.pending.iter().map(RecordBatch::num_rows).sum()
    }

    /// Buffers rows (none of them before the watermark: the layer sends
    /// those to its late table first).
    pub fn push(&mut self, rows: RecordBatch) {
        if rows.num_rows() > 0 {
            self.pending.push(rows);
        }
    }

    fn times<'a>(&self, batch: &'a RecordBatch) -> Result<&'a TimestampMicrosecondArray> {
        batch
            .column(self.time)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| DataFusionError::Plan("the OVER time column is not a timestamp".into()))
    }

    /// The watermark reached `watermark`: the rows before it are ready.
    /// Returns them with their frames' history, or `None` if none is ready.
    pub fn take_ready(&mut self, watermark: i64) -> Result<Option<ReadyRows>> {
        if self.emitted_through.is_some_and(|e| e >= watermark) {
            return Ok(None);
        }
        let emit_from = self.emitted_through.unwrap_or(i64::MIN);
        self.emitted_through = Some(watermark);
        let pending = concat_batches(&self.schema, &std::mem::take(&mut self.pending))?;
        let is_ready = before(self.times(&pending)?, watermark)?;
        let ready = filter_record_batch(&pending, &is_ready)?;
        let waiting = filter_record_batch(&pending, &arrow::compute::not(&is_ready)?)?;
        if waiting.num_rows() > 0 {
            self.pending.push(waiting);
        }
        let mut parts: Vec<RecordBatch> = self.history.take().into_iter().collect();
        let has_ready = ready.num_rows() > 0;
        parts.push(ready);
        let rows = concat_batches(&self.schema, &parts)?;
        self.history = Some(self.prune(&rows, watermark)?);
        Ok(has_ready.then_some(ReadyRows { rows, emit_from }))
    }

    /// The rows later frames can still reach.
    fn prune(&self, rows: &RecordBatch, watermark: i64) -> Result<RecordBatch> {
        match self.frame {
            OverFrame::Range(reach) => {
                // Rows still to come are at or after the watermark.
                let from = watermark.saturating_sub(reach);
                Ok(filter_record_batch(
                    rows,
                    &not_before(self.times(rows)?, from)?,
                )?)
            }
            OverFrame::Rows(n) => {
                if rows.num_rows() == 0 {
                    return Ok(rows.clone());
                }
                let mut sort: Vec<SortColumn> = self
                    .keys
                    .iter()
                    .map(|&k| SortColumn {
                        values: rows.column(k).clone(),
                        options: None,
                    })
                    .collect();
                sort.push(SortColumn {
                    values: rows.column(self.time).clone(),
                    options: None,
                });
                let order = lexsort_to_indices(&sort, None)?;
                let keys: Vec<ArrayRef> = self
                    .keys
                    .iter()
                    .map(|&k| take(rows.column(k), &order, None))
                    .collect::<std::result::Result<_, _>>()?;
                let mut keep = Vec::new();
                let ranges = if keys.is_empty() {
                    std::iter::once(0..rows.num_rows()).collect()
                } else {
                    partition(&keys)?.ranges()
                };
                for range in ranges {
                    let start = range.end.saturating_sub(n).max(range.start);
                    keep.extend((start..range.end).map(|i| order.value(i)));
                }
                keep.sort_unstable();
                let keep = UInt32Array::from(keep);
                let columns = rows
                    .columns()
                    .iter()
                    .map(|c| take(c, &keep, None))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
            }
        }
    }

    /// Keeps, of the window operator's output over [`ReadyRows::rows`],
    /// the results of the ready rows (the time column keeps its position).
    pub fn new_results(&self, output: &RecordBatch, emit_from: i64) -> Result<RecordBatch> {
        Ok(filter_record_batch(
            output,
            &not_before(self.times(output)?, emit_from)?,
        )?)
    }

    /// Pending rows and history in one batch, with the emitted-through
    /// watermark in its metadata.
    pub fn snapshot(&self) -> Result<Option<RecordBatch>> {
        let Some(through) = self.emitted_through else {
            if self.pending.is_empty() {
                return Ok(None);
            }
            return Ok(Some(concat_batches(&self.schema, &self.pending)?));
        };
        let mut parts: Vec<RecordBatch> = self.history.iter().cloned().collect();
        parts.extend(self.pending.iter().cloned());
        let rows = concat_batches(&self.schema, &parts)?;
        let mut metadata = self.schema.metadata().clone();
        metadata.insert(EMITTED_THROUGH.into(), through.to_string());
        let schema = Arc::new(self.schema.as_ref().clone().with_metadata(metadata));
        Ok(Some(RecordBatch::try_new(schema, rows.columns().to_vec())?))
    }

    /// Loads a snapshot: rows before the emitted-through watermark are
    /// history, the rest wait.
    pub fn restore(&mut self, state: RecordBatch) -> Result<()> {
        let through = state
            .schema()
            .metadata()
            .get(EMITTED_THROUGH)
            .and_then(|t| t.parse::<i64>().ok());
        let rows = RecordBatch::try_new(self.schema.clone(), state.columns().to_vec())?;
        self.pending.clear();
        self.history = None;
        self.emitted_through = through;
        match through {
            None => self.push(rows),
            Some(t) => {
                let old = before(self.times(&rows)?, t)?;
                self.history = Some(filter_record_batch(&rows, &old)?);
                self.push(filter_record_batch(&rows, &arrow::compute::not(&old)?)?);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "over_window_tests.rs"]
mod tests;
