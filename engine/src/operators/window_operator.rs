//! TUMBLE, HOP and CUMULATE aggregations: rows are grouped into their
//! windows as they come; a window is emitted, once, when the watermark
//! passes its end (see [`WindowAggregate`]).

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::operator::{Operator, StateParts};
use crate::operators::slicing::Slicing;
use crate::operators::window_aggregate::WindowAggregate;
use crate::sql::program::{AGGREGATE_SLOT, AggregateNode};
use crate::sql::segment::Segment;
use crate::sql::window_tvf::WindowTvf;

/// A windowed aggregation.
pub struct WindowOperator {
    below: Segment,
    aggregate: WindowAggregate,
    above: Segment,
    ctx: Arc<TaskContext>,
}

impl WindowOperator {
    /// `below` assigns rows their windows (HOP, CUMULATE: their slices),
    /// `aggregate` groups them, `above` runs on each emitted window
    /// (HAVING, projections, Top-N).
    pub fn new(
        below: Segment,
        aggregate: &AggregateNode,
        above: Segment,
        window: &WindowTvf,
        ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(WindowOperator {
            below,
            aggregate: WindowAggregate::from_exec(aggregate.exec(), Some("window_end"))?
                .sliced(Slicing::of(window)),
            above,
            ctx,
        })
    }
}

#[async_trait]
impl Operator for WindowOperator {
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>> {
        for rows in self.below.run(input, vec![rows], &self.ctx).await? {
            self.aggregate.process(&rows)?;
        }
        Ok(Vec::new())
    }

    async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        match self.aggregate.close_until(watermark)? {
            Some(closed) => {
                self.above
                    .run(AGGREGATE_SLOT, vec![closed], &self.ctx)
                    .await
            }
            None => Ok(Vec::new()),
        }
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.aggregate.snapshot()
    }

    fn snapshot_parts(&mut self, every_part: bool) -> Result<Option<StateParts>> {
        self.aggregate.snapshot_parts(every_part).map(Some)
    }

    fn restore(&mut self, state: Option<RecordBatch>, watermark: Option<i64>) -> Result<()> {
        if let Some(w) = watermark {
            self.aggregate.closed_until(w);
        }
        match state {
            Some(state) => self.aggregate.restore(&state),
            None => Ok(()),
        }
    }

    fn restore_carried(
        &mut self,
        state: Option<RecordBatch>,
        watermark: Option<i64>,
    ) -> Result<()> {
        let state = state.map(|s| self.aggregate.carried(&s)).transpose()?;
        self.restore(state, watermark)
    }
}
