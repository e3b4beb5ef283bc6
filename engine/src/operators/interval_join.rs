//! Interval joins: each new batch of one side is joined at once with the
//! other side's kept rows, and kept itself; a kept row is dropped once the
//! watermark shows no on-time row of the other side can still fall in its
//! interval. Inner joins only (see `sql::stream_join_plan`).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;

use crate::operators::operator::Operator;
use crate::operators::stream_join::{JoinBuffers, Side};
use crate::sql::stream_join_plan::{JOIN_LEFT_SLOT, JOIN_RIGHT_SLOT, StreamJoin, StreamJoinKind};

/// An interval join of two streams.
pub struct IntervalJoinOperator {
    join: StreamJoin,
    buffers: JoinBuffers,
    left_time: String,
    right_time: String,
    /// Least `right.time - left.time`, microseconds.
    lower_us: i64,
    /// Greatest.
    upper_us: i64,
    ctx: Arc<TaskContext>,
}

impl IntervalJoinOperator {
    /// Joins `join`'s two sides within its interval.
    pub fn new(join: StreamJoin, ctx: Arc<TaskContext>) -> Result<Self> {
        let StreamJoinKind::Interval {
            left_time,
            right_time,
            lower_us,
            upper_us,
        } = join.kind.clone()
        else {
            return Err(DataFusionError::Internal(
                "an interval join operator for a window join".into(),
            ));
        };
        Ok(IntervalJoinOperator {
            buffers: JoinBuffers::new(join.left.schema(), join.right.schema()),
            join,
            left_time,
            right_time,
            lower_us,
            upper_us,
            ctx,
        })
    }
}

#[async_trait]
impl Operator for IntervalJoinOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        // A self-join reads the input on both sides.
        for side in [Side::Left, Side::Right] {
            let (segment, name, mine, theirs, other) = match side {
                Side::Left => (
                    &self.join.left,
                    &self.join.left_input,
                    JOIN_LEFT_SLOT,
                    JOIN_RIGHT_SLOT,
                    Side::Right,
                ),
                Side::Right => (
                    &self.join.right,
                    &self.join.right_input,
                    JOIN_RIGHT_SLOT,
                    JOIN_LEFT_SLOT,
                    Side::Left,
                ),
            };
            if name != input {
                continue;
            }
            let new = segment.run(input, vec![rows.clone()], &self.ctx).await?;
            // New rows meet the other side's kept rows now.
            if !new.is_empty() && self.buffers.len(other) > 0 {
                out.extend(
                    self.join
                        .joined
                        .run_slots(
                            vec![
                                (mine, new.clone()),
                                (theirs, self.buffers.rows(other).to_vec()),
                            ],
                            &self.ctx,
                        )
                        .await?,
                );
            }
            self.buffers.push(side, new);
        }
        Ok(out)
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        // Rows no future (on-time) row of the other side can match.
        self.buffers.take_before(
            Side::Left,
            &self.left_time,
            watermark.saturating_sub(self.upper_us),
        )?;
        self.buffers.take_before(
            Side::Right,
            &self.right_time,
            watermark.saturating_add(self.lower_us),
        )?;
        Ok(Vec::new())
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.buffers.snapshot()
    }

    fn restore(&mut self, state: Option<RecordBatch>, _watermark: Option<i64>) -> Result<()> {
        match state {
            Some(state) => self.buffers.restore(&state),
            None => Ok(()),
        }
    }
}
