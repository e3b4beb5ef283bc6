//! What a window aggregate keeps per open window: the state batches
//! checkpoints took of it, and DataFusion's groups of the rows since (see
//! [`WindowAggregate`](super::WindowAggregate)'s module docs on frozen
//! parts).

use std::collections::BTreeMap;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take;
use datafusion::error::Result;
use datafusion::logical_expr::GroupsAccumulator;
use datafusion::physical_plan::aggregates::group_values::GroupValues;

/// Groups and accumulators of one window.
pub(super) struct Groups {
    pub(super) values: Box<dyn GroupValues>,
    pub(super) accumulators: Vec<Box<dyn GroupsAccumulator>>,
}

/// A state batch a checkpoint took of a window: one partial state of its
/// groups.
pub(super) struct Part {
    /// Its id, for the checkpoints that name it.
    pub(super) id: i64,
    pub(super) state: RecordBatch,
    /// Whether an incremental snapshot has handed it over yet.
    pub(super) taken: bool,
}

/// One open window (or slice): its parts (a group may have rows in
/// several, merged when the window is read), and the groups of the rows
/// that arrived since the last checkpoint.
#[derive(Default)]
pub(super) struct Window {
    pub(super) parts: Vec<Part>,
    pub(super) live: Option<Groups>,
}

impl Window {
    /// Groups held (a group in several parts counts once in each).
    pub(super) fn groups(&self) -> usize {
        let frozen: usize = self.parts.iter().map(|p| p.state.num_rows()).sum();
        frozen + self.live.as_ref().map_or(0, |g| g.values.len())
    }
}

/// A state batch split by window (its `window_end` key at `end_index`).
pub(super) fn split_by_window(
    batch: &RecordBatch,
    end_index: usize,
) -> Result<Vec<(i64, RecordBatch)>> {
    let ends = super::timestamps(batch.column(end_index))?;
    let mut by_window: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (row, end) in ends.values().iter().enumerate() {
        by_window.entry(*end).or_default().push(row as u32);
    }
    by_window
        .into_iter()
        .map(|(end, rows)| {
            let rows = UInt32Array::from(rows);
            let columns = batch
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &rows, None))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok((end, RecordBatch::try_new(batch.schema(), columns)?))
        })
        .collect()
}
