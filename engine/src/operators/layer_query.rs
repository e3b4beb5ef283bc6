//! Running a planned layer query on a stream: batches in, windows out when
//! the watermark passes them, state in and out of checkpoints.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::TaskContext;

use crate::lookup::{Dimension, LookupStats};
use crate::operators::over_window::OverBuffer;
use crate::operators::session_window::SessionBuffer;
use crate::operators::stream_join::{JoinBuffers, Side};
use crate::sql::lookup_join::LookupHandling;
use crate::sql::over_plan::{OVER_INPUT_SLOT, OVER_RESULTS_SLOT};
use crate::sql::planner::{AGGREGATE_SLOT, PlannedQuery, Program, SESSION_SLOT};
use crate::sql::stream_join_plan::{JOIN_LEFT_SLOT, JOIN_RIGHT_SLOT, StreamJoinKind};

/// A layer's query, running.
pub struct LayerQuery {
    program: Program,
    ctx: Arc<TaskContext>,
    session: Option<SessionBuffer>,
    over: Option<OverBuffer>,
    join: Option<JoinBuffers>,
    dimensions: Vec<Arc<Dimension>>,
    lookup_handling: Option<Arc<LookupHandling>>,
}

impl LayerQuery {
    /// Starts `planned`, running its segments in `ctx`.
    pub fn new(planned: PlannedQuery, ctx: Arc<TaskContext>) -> Result<Self> {
        let session = match &planned.program {
            Program::Session {
                below,
                gap_us,
                keys,
                ..
            } => Some(SessionBuffer::new(below.schema(), keys, *gap_us)?),
            _ => None,
        };
        let over = match &planned.program {
            Program::Over {
                below,
                time_column,
                keys,
                frame,
                ..
            } => Some(OverBuffer::new(below.schema(), time_column, keys, *frame)?),
            _ => None,
        };
        let join = match &planned.program {
            Program::Join(j) => Some(JoinBuffers::new(j.left.schema(), j.right.schema())),
            _ => None,
        };
        Ok(LayerQuery {
            program: planned.program,
            ctx,
            session,
            over,
            join,
            dimensions: planned.dimensions,
            lookup_handling: planned.lookup_handling,
        })
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
    /// `watermark`: an interval join emits rows up to its interval behind
    /// the watermark, so it holds the downstream watermark back that far.
    pub fn output_watermark(&self, watermark: i64) -> i64 {
        match &self.program {
            Program::Join(j) => match j.kind {
                StreamJoinKind::Interval {
                    lower_us, upper_us, ..
                } => watermark.saturating_sub(upper_us.max(-lower_us).max(0)),
                StreamJoinKind::Window => watermark,
            },
            _ => watermark,
        }
    }

    /// Whether results are updates of earlier rows (a plain `GROUP BY`),
    /// rather than rows to append.
    pub fn is_updating(&self) -> bool {
        matches!(self.program, Program::Updating { .. })
    }

    /// Processes a batch of `input`; returns the rows it produces at once
    /// (only stateless queries produce rows before a watermark).
    pub async fn on_batch(&mut self, input: &str, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        match &mut self.program {
            Program::Stateless(segment) => segment.run(input, vec![batch], &self.ctx).await,
            Program::Window {
                below, aggregate, ..
            }
            | Program::Updating {
                below, aggregate, ..
            } => {
                for rows in below.run(input, vec![batch], &self.ctx).await? {
                    aggregate.process(&rows)?;
                }
                Ok(Vec::new())
            }
            Program::Session { below, .. } => {
                let rows = below.run(input, vec![batch], &self.ctx).await?;
                if let Some(buffer) = &mut self.session {
                    for rows in rows {
                        buffer.push(rows)?;
                    }
                }
                Ok(Vec::new())
            }
            Program::Over { below, .. } => {
                let rows = below.run(input, vec![batch], &self.ctx).await?;
                if let Some(buffer) = &mut self.over {
                    for rows in rows {
                        buffer.push(rows);
                    }
                }
                Ok(Vec::new())
            }
            Program::Join(j) => {
                let Some(buffers) = &mut self.join else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                // A self-join reads the input on both sides.
                for (side, segment, name) in [
                    (Side::Left, &j.left, &j.left_input),
                    (Side::Right, &j.right, &j.right_input),
                ] {
                    if name != input {
                        continue;
                    }
                    let rows = segment.run(input, vec![batch.clone()], &self.ctx).await?;
                    if let StreamJoinKind::Interval { .. } = j.kind {
                        // New rows meet the other side's kept rows now.
                        let (mine, theirs) = match side {
                            Side::Left => (JOIN_LEFT_SLOT, JOIN_RIGHT_SLOT),
                            Side::Right => (JOIN_RIGHT_SLOT, JOIN_LEFT_SLOT),
                        };
                        let other = match side {
                            Side::Left => Side::Right,
                            Side::Right => Side::Left,
                        };
                        if !rows.is_empty() && buffers.len(other) > 0 {
                            out.extend(
                                j.joined
                                    .run_slots(
                                        vec![
                                            (mine, rows.clone()),
                                            (theirs, buffers.rows(other).to_vec()),
                                        ],
                                        &self.ctx,
                                    )
                                    .await?,
                            );
                        }
                    }
                    buffers.push(side, rows);
                }
                Ok(out)
            }
        }
    }

    /// The watermark reached `watermark`: returns the rows of every window
    /// (or session) that it closed.
    pub async fn on_watermark(&mut self, watermark: i64) -> Result<Vec<RecordBatch>> {
        match &mut self.program {
            Program::Window {
                aggregate, above, ..
            } => match aggregate.close_until(watermark)? {
                Some(closed) => above.run(AGGREGATE_SLOT, vec![closed], &self.ctx).await,
                None => Ok(Vec::new()),
            },
            Program::Session { closed, .. } => {
                let Some(buffer) = &mut self.session else {
                    return Ok(Vec::new());
                };
                match buffer.close_until(watermark)? {
                    Some(rows) => closed.run(SESSION_SLOT, vec![rows], &self.ctx).await,
                    None => Ok(Vec::new()),
                }
            }
            Program::Over { window, above, .. } => {
                let Some(buffer) = &mut self.over else {
                    return Ok(Vec::new());
                };
                let Some(ready) = buffer.take_ready(watermark)? else {
                    return Ok(Vec::new());
                };
                let mut results = Vec::new();
                for out in window
                    .run(OVER_INPUT_SLOT, vec![ready.rows], &self.ctx)
                    .await?
                {
                    results.push(buffer.new_results(&out, ready.emit_from)?);
                }
                above.run(OVER_RESULTS_SLOT, results, &self.ctx).await
            }
            Program::Join(j) => {
                let Some(buffers) = &mut self.join else {
                    return Ok(Vec::new());
                };
                match &j.kind {
                    StreamJoinKind::Window => {
                        // Windows with end <= watermark are complete on both sides.
                        let limit = watermark.saturating_add(1);
                        let left = buffers.take_before(Side::Left, "window_end", limit)?;
                        let right = buffers.take_before(Side::Right, "window_end", limit)?;
                        if left.is_none() && right.is_none() {
                            return Ok(Vec::new());
                        }
                        j.joined
                            .run_slots(
                                vec![
                                    (JOIN_LEFT_SLOT, left.into_iter().collect()),
                                    (JOIN_RIGHT_SLOT, right.into_iter().collect()),
                                ],
                                &self.ctx,
                            )
                            .await
                    }
                    StreamJoinKind::Interval {
                        left_time,
                        right_time,
                        lower_us,
                        upper_us,
                    } => {
                        // Rows no future (on-time) row of the other side can match.
                        buffers.take_before(
                            Side::Left,
                            left_time,
                            watermark.saturating_sub(*upper_us),
                        )?;
                        buffers.take_before(
                            Side::Right,
                            right_time,
                            watermark.saturating_add(*lower_us),
                        )?;
                        Ok(Vec::new())
                    }
                }
            }
            Program::Stateless(_) | Program::Updating { .. } => Ok(Vec::new()),
        }
    }

    /// At a checkpoint: the updated results of a plain `GROUP BY` (rows to
    /// upsert); nothing for other queries.
    pub async fn on_checkpoint(&mut self) -> Result<Vec<RecordBatch>> {
        match &mut self.program {
            Program::Updating {
                aggregate, above, ..
            } => match aggregate.take_changed()? {
                Some(rows) => above.run(AGGREGATE_SLOT, vec![rows], &self.ctx).await,
                None => Ok(Vec::new()),
            },
            _ => Ok(Vec::new()),
        }
    }

    /// The query's state, for a checkpoint.
    pub fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        match &mut self.program {
            Program::Window { aggregate, .. } | Program::Updating { aggregate, .. } => {
                aggregate.snapshot()
            }
            Program::Session { .. } => match &self.session {
                Some(buffer) => buffer.snapshot(),
                None => Ok(None),
            },
            Program::Over { .. } => match &self.over {
                Some(buffer) => buffer.snapshot(),
                None => Ok(None),
            },
            Program::Join(_) => match &self.join {
                Some(buffers) => buffers.snapshot(),
                None => Ok(None),
            },
            Program::Stateless(_) => Ok(None),
        }
    }

    /// Loads state from a checkpoint.
    pub fn restore(&mut self, state: RecordBatch) -> Result<()> {
        match &mut self.program {
            Program::Window { aggregate, .. } | Program::Updating { aggregate, .. } => {
                aggregate.restore(&state)
            }
            Program::Session { .. } => match &mut self.session {
                Some(buffer) => buffer.restore(state),
                None => Ok(()),
            },
            Program::Over { .. } => match &mut self.over {
                Some(buffer) => buffer.restore(state),
                None => Ok(()),
            },
            Program::Join(_) => match &mut self.join {
                Some(buffers) => buffers.restore(&state),
                None => Ok(()),
            },
            Program::Stateless(_) => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "layer_query_tests.rs"]
mod tests;
