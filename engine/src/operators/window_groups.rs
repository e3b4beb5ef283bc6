//! What a window aggregate keeps per open window: DataFusion's groups while
//! rows arrive, or the state batch a checkpoint took from them (see
//! [`WindowAggregate`](super::WindowAggregate)'s module docs on frozen
//! windows).

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

/// One open window (or slice): its groups while rows arrive, its state
/// batch once a checkpoint took it and no row has arrived since.
pub(super) enum Window {
    Live(Groups),
    Frozen(RecordBatch),
}

impl Window {
    pub(super) fn groups(&self) -> usize {
        match self {
            Window::Live(g) => g.values.len(),
            Window::Frozen(state) => state.num_rows(),
        }
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
