//! A layer's query, running, without I/O: rows in, late rows set aside by
//! the rule of the query's operator, results out when the watermark says
//! so, state in and out of checkpoints, and the watermark it forwards.
//!
//! The dataflow's layer task (`dataflow::layer_task`) wraps it with
//! channels and tables; the golden tests drive it directly.

use std::sync::Arc;

use arrow::array::{Array, BooleanArray, TimestampMicrosecondArray};
use arrow::compute::{filter_record_batch, is_null, not, or};
use arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;

use crate::lookup::{Dimension, LookupStats};
use crate::operators::operator::{Operator, StateParts, build};
use crate::predicate::null_is_false;
use crate::sql::lookup_join::LookupHandling;
use crate::sql::planner::PlannedQuery;
use crate::sql::program::{LateInput, Program};

/// Why a row without an event time is set aside.
pub const NO_EVENT_TIME: &str = "no event time: the row cannot be placed in a window";

/// Rows of one input set aside as late.
#[derive(Debug)]
pub struct LateRows {
    /// The input they came from.
    pub input: String,
    /// The rows, as they arrived.
    pub rows: RecordBatch,
    /// Why.
    pub reason: &'static str,
}

/// What a batch of input produced.
#[derive(Debug, Default)]
pub struct Emitted {
    /// Result rows, for the layer's table and the layers downstream.
    pub rows: Vec<RecordBatch>,
    /// Input rows set aside as late.
    pub late: Vec<LateRows>,
}

/// A layer's query, running.
pub struct LayerQuery {
    operator: Box<dyn Operator>,
    late: Vec<LateInput>,
    output_lag_us: i64,
    updating: bool,
    description: String,
    /// The watermark last reached: what late rows are judged against.
    watermark: Option<i64>,
    dimensions: Vec<Arc<Dimension>>,
    lookup_handling: Option<Arc<LookupHandling>>,
}

impl LayerQuery {
    /// Starts `planned`, running its segments in `ctx`.
    pub fn new(planned: PlannedQuery, ctx: Arc<TaskContext>) -> Result<Self> {
        let output_lag_us = planned.program.output_lag_us();
        let updating = matches!(planned.program, Program::Updating { .. });
        let description = planned.program.describe();
        Ok(LayerQuery {
            operator: build(planned.program, ctx)?,
            late: planned.late_inputs,
            output_lag_us,
            updating,
            description,
            watermark: None,
            dimensions: planned.dimensions,
            lookup_handling: planned.lookup_handling,
        })
    }

    /// What kind of operator runs the query.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Rows whose lookup failed, for the dead-letter table (in its schema),
    /// since the last call.
    pub fn take_dead_letters(&self) -> Vec<RecordBatch> {
        self.lookup_handling
            .as_ref()
            .map(|h| h.take_dead_letters())
            .unwrap_or_default()
    }

    /// The lookup counters of the dimensions the query joins.
    pub fn lookup_stats(&self) -> Vec<LookupStats> {
        self.dimensions.iter().map(|d| d.stats()).collect()
    }

    /// The watermark to pass downstream when the layer's own is
    /// `watermark`: held back by how far behind it the query's rows can be
    /// dated (see `sql::program`).
    pub fn output_watermark(&self, watermark: i64) -> i64 {
        watermark.saturating_sub(self.output_lag_us)
    }

    /// Whether results are updates of earlier rows (a plain `GROUP BY`),
    /// rather than rows to append.
    pub fn is_updating(&self) -> bool {
        self.updating
    }

    /// Processes a batch of `input`: its late rows are set aside, the rest
    /// go to the operator; returns what that produced at once (only
    /// row-by-row queries and interval joins produce rows before a
    /// watermark).
    pub async fn on_batch(&mut self, input: &str, batch: RecordBatch) -> Result<Emitted> {
        let mut emitted = Emitted::default();
        let mut rows = Some(batch);
        for check in self.late.iter().filter(|c| c.input == input) {
            let Some(batch) = rows.take() else { break };
            let (on_time, late) = split_late(check, batch, self.watermark)?;
            emitted.late.extend(late);
            rows = on_time;
        }
        if let Some(rows) = rows {
            emitted.rows = self.operator.on_batch(input, rows).await?;
        }
        Ok(emitted)
    }

    /// The watermark reached `watermark`: returns the rows of every window
    /// (or session, frame, join) it completed.
    pub async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        if self.watermark.is_some_and(|w| w >= watermark) {
            return Ok(Vec::new());
        }
        self.watermark = Some(watermark);
        self.operator.on_watermark(watermark).await
    }

    /// At a checkpoint: the updated results of a plain `GROUP BY` (rows to
    /// upsert); nothing for other queries.
    pub async fn on_checkpoint(&mut self) -> Result<Vec<RecordBatch>> {
        self.operator.on_checkpoint().await
    }

    /// The query's state, for a checkpoint.
    pub fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.operator.snapshot()
    }

    /// The query's state as parts, for an incremental checkpoint
    /// (`None`: its state is one whole; see
    /// [`Operator::snapshot_parts`]).
    pub fn snapshot_parts(&mut self, every_part: bool) -> Result<Option<StateParts>> {
        self.operator.snapshot_parts(every_part)
    }

    /// Loads a checkpoint: the query's state, if it had any, and the
    /// layer's watermark then.
    pub fn restore(&mut self, state: Option<RecordBatch>, watermark: Option<i64>) -> Result<()> {
        self.watermark = watermark;
        self.operator.restore(state, watermark)
    }

    /// Loads a checkpoint written by an earlier version of the layer's SQL
    /// whose state layout was found compatible (same operator, window and
    /// keys): aggregates are matched by expression, new ones start empty.
    pub fn restore_carried(
        &mut self,
        state: Option<RecordBatch>,
        watermark: Option<i64>,
    ) -> Result<()> {
        self.watermark = watermark;
        self.operator.restore_carried(state, watermark)
    }
}

/// Splits `rows` of `check`'s input into the rows on time and the late
/// ones (without an event time, or late by the check's rule at
/// `watermark`).
fn split_late(
    check: &LateInput,
    rows: RecordBatch,
    watermark: Option<i64>,
) -> Result<(Option<RecordBatch>, Vec<LateRows>)> {
    let index = rows.schema().index_of(&check.time_column)?;
    let times = rows
        .column(index)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| {
            DataFusionError::Plan(format!(
                "`{}`'s event-time column `{}` is not a timestamp",
                check.input, check.time_column
            ))
        })?;
    let no_time = is_null(times)?;
    let behind = match watermark {
        Some(w) => null_is_false(&BooleanArray::from_unary(times, |t| {
            check.rule.late_from(t) <= w
        })),
        None => BooleanArray::from(vec![false; rows.num_rows()]),
    };
    let mut late = Vec::new();
    for (mask, reason) in [(&no_time, NO_EVENT_TIME), (&behind, check.rule.reason())] {
        if mask.true_count() > 0 {
            late.push(LateRows {
                input: check.input.clone(),
                rows: filter_record_batch(&rows, mask)?,
                reason,
            });
        }
    }
    if late.is_empty() {
        return Ok((Some(rows), late));
    }
    let on_time = not(&or(&no_time, &behind)?)?;
    let kept = filter_record_batch(&rows, &on_time)?;
    Ok(((kept.num_rows() > 0).then_some(kept), late))
}

#[cfg(test)]
#[path = "layer_query_tests.rs"]
mod tests;
