//! A window aggregate's state at a checkpoint and back: every open
//! window's intermediate state (whole, or by window for an incremental
//! checkpoint), and restoring it. Taking the state leaves each window
//! frozen (see [`WindowAggregate`]'s module docs).

use arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};

use super::groups::{Window, split_by_window};
use super::{NO_WINDOW, WindowAggregate, concat, timestamps};
use crate::operators::operator::StateParts;

impl WindowAggregate {
    /// The state of every open window, for a checkpoint: group keys, then
    /// each accumulator's intermediate state. The operator keeps its state:
    /// every window is left frozen (see the module's docs).
    pub fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        self.dirty.clear();
        let mut parts = Vec::with_capacity(self.windows.len());
        for (end, window) in std::mem::take(&mut self.windows) {
            let state = self.state_of(window)?;
            parts.push(state.clone());
            self.windows.insert(end, Window::Frozen(state));
        }
        concat(&self.state_schema, parts)
    }

    /// The state of every open window as parts by window end, for an
    /// incremental checkpoint: the windows rows arrived in since the last
    /// snapshot (every window when `every_part`), and the ends of all. As
    /// [`snapshot`](Self::snapshot), every window is left frozen; a window
    /// no row reached is neither thawed nor copied.
    pub fn snapshot_parts(&mut self, every_part: bool) -> Result<StateParts> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut parts = StateParts::default();
        for (end, window) in std::mem::take(&mut self.windows) {
            let changed = every_part || matches!(window, Window::Live(_)) || dirty.contains(&end);
            let state = self.state_of(window)?;
            parts.held.push(end);
            if changed {
                parts.changed.push((end, state.clone()));
            }
            self.windows.insert(end, Window::Frozen(state));
        }
        Ok(parts)
    }

    /// Loads the state a [`snapshot`](Self::snapshot) returned.
    pub fn restore(&mut self, snapshot: &RecordBatch) -> Result<()> {
        if snapshot.schema().fields() != self.state_schema.fields() {
            return Err(DataFusionError::Execution(
                "the checkpointed state does not match this query (was the layer's SQL changed? backfill it instead)".into(),
            ));
        }
        let windows: Vec<(i64, RecordBatch)> = match self.window_end {
            None => vec![(NO_WINDOW, snapshot.clone())],
            Some(i) => split_by_window(snapshot, i)?,
        };
        if let (Some(slicing), Some(start)) = (self.slicing, self.window_start) {
            // State of an earlier Strata held HOP/CUMULATE rows per window,
            // not per slice: merging it as slices would count rows twice.
            for (end, part) in &windows {
                let starts = timestamps(part.column(start))?;
                if starts
                    .values()
                    .iter()
                    .any(|s| end - s != slicing.slice_us())
                {
                    return Err(DataFusionError::Execution(
                        "the checkpointed state holds whole HOP/CUMULATE windows (written by an earlier Strata); this one keeps slices: backfill the layer, or move its checkpoints aside and replay it".into(),
                    ));
                }
            }
        }
        for (end, part) in windows {
            self.windows.insert(end, Window::Frozen(part));
        }
        Ok(())
    }
}
