//! SESSION aggregations: rows wait per key in a [`SessionBuffer`] until
//! the watermark closes their session, then the closed sessions' rows go
//! through DataFusion's aggregate (and whatever the query does above it).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::operator::Operator;
use crate::operators::session_window::SessionBuffer;
use crate::sql::program::SESSION_SLOT;
use crate::sql::segment::Segment;

/// A session-window aggregation.
pub struct SessionOperator {
    below: Segment,
    closed: Segment,
    buffer: SessionBuffer,
    ctx: Arc<TaskContext>,
}

impl SessionOperator {
    /// `below` feeds the buffer (sessions per `keys`, split by `gap_us` of
    /// inactivity); `closed` aggregates closed sessions.
    pub fn new(
        below: Segment,
        closed: Segment,
        gap_us: i64,
        keys: &[String],
        ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(SessionOperator {
            buffer: SessionBuffer::new(below.schema(), keys, gap_us)?,
            below,
            closed,
            ctx,
        })
    }
}

#[async_trait]
impl Operator for SessionOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        for rows in self.below.run(input, vec![rows], &self.ctx).await? {
            self.buffer.push(rows)?;
        }
        Ok(Vec::new())
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        match self.buffer.close_until(watermark)? {
            Some(rows) => self.closed.run(SESSION_SLOT, vec![rows], &self.ctx).await,
            None => Ok(Vec::new()),
        }
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.buffer.snapshot()
    }

    fn restore(&mut self, state: Option<RecordBatch>, _watermark: Option<i64>) -> Result<()> {
        match state {
            Some(rows) => self.buffer.restore(rows),
            None => Ok(()),
        }
    }
}
