//! One interface for every kind of streaming operator (as Arroyo's
//! `ArrowOperator` or Flink's `StreamOperator`): rows in, watermarks in,
//! rows out; state out at a checkpoint and back in on restore.
//!
//! Each kind owns its buffers: a window aggregate its open windows, a
//! session operator the rows of open sessions, an OVER operator its
//! waiting rows and frame history, a stream join each side's kept rows.
//! The layer around it (see [`LayerQuery`](crate::operators::layer_query::LayerQuery))
//! sets late rows aside before they reach the operator, by the rule of the
//! operator's kind ([`Lateness`](crate::sql::program::Lateness)); what an
//! operator still sees of a closed window (a HOP row's copy for a window
//! already emitted) it drops itself.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::operators::interval_join::IntervalJoinOperator;
use crate::operators::over_operator::OverOperator;
use crate::operators::session_operator::SessionOperator;
use crate::operators::stateless::StatelessOperator;
use crate::operators::updating_aggregate::UpdatingOperator;
use crate::operators::window_join::WindowJoinOperator;
use crate::operators::window_operator::WindowOperator;
use crate::sql::program::Program;
use crate::sql::stream_join_plan::StreamJoinKind;

/// An operator's state as parts (see [`Operator::snapshot_parts`]).
#[derive(Debug, Default)]
pub struct StateParts {
    /// The parts new since the last snapshot, by id, each a state batch.
    pub changed: Vec<(i64, RecordBatch)>,
    /// The ids of every part held, new or not.
    pub held: Vec<i64>,
}

/// A streaming operator: the stateful heart of a layer's query.
#[async_trait]
pub trait Operator: Send {
    /// Processes rows of `input` (none of them late); returns the rows it
    /// produces at once (row-by-row operators and interval joins).
    async fn on_batch(&mut self, input: &str, rows: RecordBatch) -> Result<Vec<RecordBatch>>;

    /// The watermark reached `watermark`: returns the rows of every window,
    /// session, frame or join it completed.
    async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>>;

    /// At a checkpoint: the updated results of an updating aggregate (rows
    /// to upsert); nothing for other operators.
    async fn on_checkpoint(&mut self) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }

    /// The operator's state, for a checkpoint (`None`: nothing to keep).
    fn snapshot(&mut self) -> Result<Option<RecordBatch>>;

    /// The operator's state as parts, for an incremental checkpoint (see
    /// [`StateLog`](crate::checkpoint::state_log::StateLog)): the parts new
    /// since the last call (every part when `every_part`), and the ids of
    /// all it holds. `None` (the default): the operator's state is one
    /// whole, from [`snapshot`](Self::snapshot). The parts' rows,
    /// concatenated in any order, are a state [`restore`](Self::restore)
    /// reads.
    fn snapshot_parts(&mut self, every_part: bool) -> Result<Option<StateParts>> {
        let _ = every_part;
        Ok(None)
    }

    /// Loads a checkpoint: its state, if it had one, and the watermark the
    /// layer had reached (what was emitted up to then is not emitted again).
    fn restore(&mut self, state: Option<RecordBatch>, watermark: Option<i64>) -> Result<()>;

    /// Loads a checkpoint of an earlier, compatible version of the query
    /// (see `evolution::compare`): aggregates are matched by expression,
    /// new ones start empty. Operators keeping rows take only their own.
    fn restore_carried(
        &mut self,
        state: Option<RecordBatch>,
        watermark: Option<i64>,
    ) -> Result<()> {
        self.restore(state, watermark)
    }
}

/// The operator that runs `program`.
pub fn build(program: Program, ctx: Arc<TaskContext>) -> Result<Box<dyn Operator>> {
    Ok(match program {
        Program::Stateless(segment) => Box::new(StatelessOperator::new(segment, ctx)),
        Program::Window {
            below,
            aggregate,
            above,
            window,
        } => Box::new(WindowOperator::new(below, &aggregate, above, &window, ctx)?),
        Program::Updating {
            below,
            aggregate,
            above,
            state_ttl,
            ..
        } => Box::new(UpdatingOperator::new(
            below, &aggregate, above, state_ttl, ctx,
        )?),
        Program::Session {
            below,
            closed,
            gap_us,
            keys,
        } => Box::new(SessionOperator::new(below, closed, gap_us, &keys, ctx)?),
        Program::Over {
            below,
            window,
            above,
            time_column,
            keys,
            frame,
        } => Box::new(OverOperator::new(
            below,
            window,
            above,
            &time_column,
            &keys,
            frame,
            ctx,
        )?),
        Program::Join(join) => match join.kind {
            StreamJoinKind::Window { .. } => Box::new(WindowJoinOperator::new(*join, ctx)),
            StreamJoinKind::Interval { .. } => Box::new(IntervalJoinOperator::new(*join, ctx)?),
        },
    })
}
