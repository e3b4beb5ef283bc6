//! A window aggregate's state at a checkpoint and back: every open
//! window's intermediate state (whole, or by parts for an incremental
//! checkpoint), and restoring it. Taking the state freezes each window's
//! live groups into one more part (see [`WindowAggregate`]'s module docs).

use arrow::array::RecordBatch;
use datafusion::error::{DataFusionError, Result};

use super::groups::{Window, split_by_window};
use super::{NO_WINDOW, WindowAggregate, concat, timestamps};
use crate::operators::operator::StateParts;

impl WindowAggregate {
    /// The state of every open window, for a checkpoint: group keys, then
    /// each accumulator's intermediate state (a group may have rows in
    /// several parts of its window). The operator keeps its state: every
    /// window's live groups are frozen into a part (see the module's docs).
    pub fn snapshot(&mut self) -> Result<Option<RecordBatch>> {
        let mut windows = std::mem::take(&mut self.windows);
        let mut parts = Vec::with_capacity(windows.len());
        for window in windows.values_mut() {
            self.freeze(window)?;
            parts.extend(window.parts.iter().map(|p| p.state.clone()));
        }
        self.windows = windows;
        concat(&self.state_schema, parts)
    }

    /// The state of every open window as parts, for an incremental
    /// checkpoint: the parts frozen since the last call (the groups rows
    /// arrived in; every part when `every_part`, each window's parts then
    /// merged into one first), and the ids of all.
    pub fn snapshot_parts(&mut self, every_part: bool) -> Result<StateParts> {
        let mut windows = std::mem::take(&mut self.windows);
        for window in windows.values_mut() {
            self.freeze(window)?;
            if every_part && window.parts.len() > 1 {
                let merged = self.state_of(window)?;
                let groups = self.groups_from(&merged)?;
                let state = self.state_from(groups)?;
                window.parts = vec![self.new_part(state)];
            }
        }
        let mut parts = StateParts::default();
        for window in windows.values_mut() {
            for part in &mut window.parts {
                parts.held.push(part.id);
                if every_part || !part.taken {
                    parts.changed.push((part.id, part.state.clone()));
                }
                part.taken = true;
            }
        }
        self.windows = windows;
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
        for (end, state) in windows {
            let part = self.new_part(state);
            self.windows.insert(
                end,
                Window {
                    parts: vec![part],
                    live: None,
                },
            );
        }
        Ok(())
    }
}
