//! A layer's operator state at a checkpoint: written whole, or, for an
//! operator that keeps it as parts (a window aggregate), only the parts new
//! since the last checkpoint (see [`StateLog`]).

use arrow::compute::concat_batches;
use arrow::record_batch::RecordBatch;

use crate::checkpoint::state_log::{StateLog, StateSlice, Written};
use crate::checkpoint::store::CheckpointStore;
use crate::error::{EngineError, Result};
use crate::operators::layer_query::LayerQuery;

/// How many files a layer's checkpoint may name before its next one
/// writes every part again: what a restore reads at most, per layer.
const MAX_STATE_FILES: usize = 32;

/// What a checkpoint records of a layer's state.
#[derive(Debug, Default)]
pub(crate) struct SavedState {
    /// The state file, when written whole.
    pub(crate) whole: Option<String>,
    /// The rows that hold its parts, when kept by parts.
    pub(crate) slices: Vec<StateSlice>,
    /// Bytes the layer holds (for metrics).
    pub(crate) bytes: u64,
    /// Rows the layer holds.
    pub(crate) rows: u64,
}

/// A layer's state across its checkpoints.
#[derive(Debug)]
pub(crate) struct LayerState {
    log: StateLog,
}

impl Default for LayerState {
    fn default() -> Self {
        LayerState {
            log: StateLog::new(MAX_STATE_FILES),
        }
    }
}

impl LayerState {
    /// Snapshots `query` and writes what the checkpoint of `epoch` needs.
    pub(crate) async fn checkpoint(
        &mut self,
        query: &mut LayerQuery,
        store: &CheckpointStore,
        epoch: u64,
        layer: &str,
    ) -> Result<SavedState> {
        let every_part = self.log.wants_every_part();
        let Some(parts) = query
            .snapshot_parts(every_part)
            .map_err(EngineError::datafusion(layer, "snapshotting state"))?
        else {
            let Some(state) = query
                .snapshot()
                .map_err(EngineError::datafusion(layer, "snapshotting state"))?
            else {
                return Ok(SavedState::default());
            };
            let (name, bytes) = store.write_state(epoch, layer, &state).await?;
            return Ok(SavedState {
                whole: Some(name),
                slices: Vec::new(),
                bytes,
                rows: state.num_rows() as u64,
            });
        };
        let keys: Vec<(i64, u64)> = parts
            .changed
            .iter()
            .map(|(key, rows)| (*key, rows.num_rows() as u64))
            .collect();
        let written = match parts.changed.first() {
            Some((_, first)) => {
                let batches: Vec<&RecordBatch> = parts.changed.iter().map(|(_, b)| b).collect();
                let state = concat_batches(&first.schema(), batches)
                    .map_err(EngineError::arrow("gathering new operator state"))?;
                Some(store.write_state(epoch, layer, &state).await?)
            }
            None => None,
        };
        self.log.record(
            written.as_ref().map(|(file, bytes)| Written {
                file,
                bytes: *bytes,
                parts: &keys,
            }),
            &parts.held,
            every_part,
        );
        Ok(SavedState {
            whole: None,
            slices: self.log.slices(),
            bytes: self.log.bytes(),
            rows: self.log.rows(),
        })
    }
}
