//! A `GROUP BY` without windows: one never-closing bucket whose changed
//! groups are emitted at every checkpoint, to be upserted by their keys;
//! with a `state_ttl`, groups not updated for that long are forgotten
//! (see `state_ttl`).

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::operator::Operator;
use crate::operators::state_ttl::{Clock, GroupTtl, split_touched, wall_clock};
use crate::operators::window_aggregate::WindowAggregate;
use crate::sql::program::{AGGREGATE_SLOT, AggregateNode};
use crate::sql::segment::Segment;

/// An updating aggregation.
pub struct UpdatingOperator {
    below: Segment,
    aggregate: WindowAggregate,
    above: Segment,
    ctx: Arc<TaskContext>,
    /// When groups were last updated, if they expire.
    ttl: Option<GroupTtl>,
}

impl UpdatingOperator {
    /// `below` feeds `aggregate`; `above` runs on its changed results;
    /// groups not updated for `state_ttl` are forgotten.
    pub fn new(
        below: Segment,
        aggregate: &AggregateNode,
        above: Segment,
        state_ttl: Option<Duration>,
        ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        Self::with_clock(below, aggregate, above, state_ttl, wall_clock(), ctx)
    }

    /// As [`new`](Self::new), telling time by `clock`.
    pub fn with_clock(
        below: Segment,
        aggregate: &AggregateNode,
        above: Segment,
        state_ttl: Option<Duration>,
        clock: Clock,
        ctx: Arc<TaskContext>,
    ) -> Result<Self> {
        Ok(UpdatingOperator {
            below,
            aggregate: WindowAggregate::from_exec(aggregate.exec(), None)?,
            above,
            ctx,
            ttl: state_ttl.map(|ttl| GroupTtl::new(ttl, clock)),
        })
    }

    /// Forgets the groups whose time to live passed.
    fn expire(&mut self) -> Result<()> {
        let Some(ttl) = &mut self.ttl else {
            return Ok(());
        };
        if let Some(keep) = ttl.expire(self.aggregate.groups()) {
            let expired = keep.len() - keep.true_count();
            self.aggregate.retain_groups(&keep)?;
            tracing::debug!(
                expired,
                kept = keep.true_count(),
                "state_ttl: groups expired"
            );
        }
        Ok(())
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
        if let Some(ttl) = &mut self.ttl {
            ttl.touch(self.aggregate.changed_flags());
        }
        let out = match self.aggregate.take_changed()? {
            Some(rows) => {
                self.above
                    .run(AGGREGATE_SLOT, vec![rows], &self.ctx)
                    .await?
            }
            None => Vec::new(),
        };
        self.expire()?;
        Ok(out)
    }

    fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let snapshot = self.aggregate.snapshot()?;
        match (&mut self.ttl, snapshot) {
            (Some(ttl), Some(snapshot)) => Ok(Some(ttl.attach(snapshot)?)),
            (_, snapshot) => Ok(snapshot),
        }
    }

    fn restore(&mut self, state: Option<RecordBatch>, _watermark: Option<i64>) -> Result<()> {
        let Some(state) = state else {
            return Ok(());
        };
        // State with times restores without a time to live too (it was
        // removed from the layer): the times are dropped.
        let state = match &mut self.ttl {
            Some(ttl) => ttl.detach(state),
            None => split_touched(state).0,
        };
        self.aggregate.restore(&state)
    }

    fn restore_carried(
        &mut self,
        state: Option<RecordBatch>,
        _watermark: Option<i64>,
    ) -> Result<()> {
        let Some(state) = state else {
            return Ok(());
        };
        let state = match &mut self.ttl {
            Some(ttl) => ttl.detach(state),
            None => split_touched(state).0,
        };
        let carried = self.aggregate.carried(&state)?;
        self.aggregate.restore(&carried)
    }
}
