//! Row by row: filters, projections, functions and lookup joins, run on
//! each batch as it comes. Nothing waits for the watermark, so nothing is
//! kept.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::operator::Operator;
use crate::sql::segment::Segment;

/// A stateless query.
pub struct StatelessOperator {
    segment: Segment,
    ctx: Arc<TaskContext>,
}

impl StatelessOperator {
    /// Runs `segment` on every batch.
    pub fn new(segment: Segment, ctx: Arc<TaskContext>) -> Self {
        StatelessOperator { segment, ctx }
    }
}

#[async_trait]
impl Operator for StatelessOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        self.segment.run(input, vec![rows], &self.ctx).await
    }

    async fn on_watermark(&mut self, _watermark: i64) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        Ok(None)
    }

    fn restore(&mut self, _state: Option<RecordBatch>, _watermark: Option<i64>) -> Result<()> {
        Ok(())
    }
}
