//! OVER aggregations on a raw stream: rows wait in an [`OverBuffer`] until
//! the watermark passes them; then DataFusion's window operator runs over
//! them and the history their frames reach, and only their results are
//! emitted (once, in append mode, as Flink does).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::operator::Operator;
use crate::operators::over_window::OverBuffer;
use crate::sql::over_plan::{OVER_INPUT_SLOT, OVER_RESULTS_SLOT};
use crate::sql::program::OverFrame;
use crate::sql::segment::Segment;

/// An OVER aggregation.
pub struct OverOperator {
    below: Segment,
    window: Segment,
    above: Segment,
    buffer: OverBuffer,
    ctx: Arc<TaskContext>,
}

impl OverOperator {
    /// `below` feeds the buffer; `window` is the window node run on ready
    /// rows plus history; `above` runs on the new results.
    pub fn new(
        below: Segment,
        window: Segment,
        above: Segment,
        time_column: &str,
        keys: &[String],
        frame: OverFrame,
        ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(OverOperator {
            buffer: OverBuffer::new(below.schema(), time_column, keys, frame)?,
            below,
            window,
            above,
            ctx,
        })
    }
}

#[async_trait]
impl Operator for OverOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        for rows in self.below.run(input, vec![rows], &self.ctx).await? {
            self.buffer.push(rows);
        }
        Ok(Vec::new())
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        let Some(ready) = self.buffer.take_ready(watermark)? else {
            return Ok(Vec::new());
        };
        let mut results = Vec::new();
        for out in self
            .window
            .run(OVER_INPUT_SLOT, vec![ready.rows], &self.ctx)
            .await?
        {
            results.push(self.buffer.new_results(&out, ready.emit_from)?);
        }
        self.above.run(OVER_RESULTS_SLOT, results, &self.ctx).await
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.buffer.snapshot()
    }

    fn restore(&mut self, state: Option<RecordBatch>, _watermark: Option<i64>) -> Result<()> {
        match state {
            Some(state) => self.buffer.restore(state),
            None => Ok(()),
        }
    }
}
