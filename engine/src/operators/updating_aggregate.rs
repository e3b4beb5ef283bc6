//! A `GROUP BY` without windows: one never-closing bucket whose changed
//! groups are emitted at every checkpoint, to be upserted by their keys.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::operator::Operator;
use crate::operators::window_aggregate::WindowAggregate;
use crate::sql::program::{AGGREGATE_SLOT, AggregateNode};
use crate::sql::segment::Segment;

/// An updating aggregation.
pub struct UpdatingOperator {
    below: Segment,
    aggregate: WindowAggregate,
    above: Segment,
    ctx: Arc<TaskContext>,
}

impl UpdatingOperator {
    /// `below` feeds `aggregate`; `above` runs on its changed results.
    pub fn new(
        below: Segment,
        aggregate: &AggregateNode,
        above: Segment,
        ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(UpdatingOperator {
            below,
            aggregate: WindowAggregate::from_exec(aggregate.exec(), None)?,
            above,
            ctx,
        })
    }
}

#[async_trait]
impl Operator for UpdatingOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        for rows in self.below.run(input, vec![rows], &self.ctx).await? {
            self.aggregate.process(&rows)?;
        }
        Ok(Vec::new())
    }

    async fn on_watermark(&mut self, _watermark: i64) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    async fn on_checkpoint(&mut self) -> Result<Vec<RecordBatch>> {
        match self.aggregate.take_changed()? {
            Some(rows) => self.above.run(AGGREGATE_SLOT, vec![rows], &self.ctx).await,
            None => Ok(Vec::new()),
        }
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.aggregate.snapshot()
    }

    fn restore(&mut self, state: Option<RecordBatch>, _watermark: Option<i64>) -> Result<()> {
        match state {
            Some(state) => self.aggregate.restore(&state),
            None => Ok(()),
        }
    }
}
