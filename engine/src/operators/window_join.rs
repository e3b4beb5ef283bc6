//! Window joins: each side's rows wait, per window, until the watermark
//! passes the window's end; then the window's rows of both sides are joined
//! at once, so `JOIN`, `LEFT`, `RIGHT` and `FULL JOIN` mean what they mean
//! in SQL. A HOP or CUMULATE row's copy for a window that has already been
//! joined is dropped (the row still joins in its open windows).

use std::sync::Arc;

use arrow::array::{Array, TimestampMicrosecondArray};
use arrow::compute::filter_record_batch;
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;

use crate::event_time::after;
use crate::operators::operator::Operator;
use crate::operators::stream_join::{JoinBuffers, Side};
use crate::predicate::null_is_false;
use crate::sql::stream_join_plan::{JOIN_LEFT_SLOT, JOIN_RIGHT_SLOT, StreamJoin};

/// The column each side's rows carry their window's end in.
const WINDOW_END: &str = "window_end";

/// A window join of two streams.
pub struct WindowJoinOperator {
    join: StreamJoin,
    buffers: JoinBuffers,
    /// Windows ending at or before this have been joined.
    joined_through: Option<i64>,
    ctx: Arc<TaskContext>,
}

impl WindowJoinOperator {
    /// Joins `join`'s two sides by window.
    pub fn new(join: StreamJoin, ctx: Arc<TaskContext>) -> Self {
        WindowJoinOperator {
            buffers: JoinBuffers::new(join.left.schema(), join.right.schema()),
            join,
            joined_through: None,
            ctx,
        }
    }

    /// `rows` without those of windows already joined.
    fn open_windows(&self, rows: RecordBatch) -> Result<Option<RecordBatch>> {
        let Some(through) = self.joined_through else {
            return Ok(Some(rows));
        };
        let index = rows.schema().index_of(WINDOW_END)?;
        let ends = rows
            .column(index)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .ok_or_else(|| DataFusionError::Internal("window_end is not a timestamp".into()))?;
        let open = null_is_false(&after(ends, through)?);
        if open.true_count() == rows.num_rows() {
            return Ok(Some(rows));
        }
        let kept = filter_record_batch(&rows, &open)?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }
}

#[async_trait]
impl Operator for WindowJoinOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        // A self-join reads the input on both sides.
        for side in [Side::Left, Side::Right] {
            let (segment, name) = match side {
                Side::Left => (&self.join.left, &self.join.left_input),
                Side::Right => (&self.join.right, &self.join.right_input),
            };
            if name != input {
                continue;
            }
            let mut kept = Vec::new();
            for batch in segment.run(input, vec![rows.clone()], &self.ctx).await? {
                kept.extend(self.open_windows(batch)?);
            }
            self.buffers.push(side, kept);
        }
        Ok(Vec::new())
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        self.joined_through = Some(self.joined_through.map_or(watermark, |w| w.max(watermark)));
        // Windows with end <= watermark are complete on both sides.
        let limit = watermark.saturating_add(1);
        let left = self.buffers.take_before(Side::Left, WINDOW_END, limit)?;
        let right = self.buffers.take_before(Side::Right, WINDOW_END, limit)?;
        if left.is_none() && right.is_none() {
            return Ok(Vec::new());
        }
        self.join
            .joined
            .run_slots(
                vec![
                    (JOIN_LEFT_SLOT, left.into_iter().collect()),
                    (JOIN_RIGHT_SLOT, right.into_iter().collect()),
                ],
                &self.ctx,
            )
            .await
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.buffers.snapshot()
    }

    fn restore(&mut self, state: Option<RecordBatch>, watermark: Option<i64>) -> Result<()> {
        self.joined_through = watermark;
        match state {
            Some(state) => self.buffers.restore(&state),
            None => Ok(()),
        }
    }
}
