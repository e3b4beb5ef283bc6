//! A golden layer's checkpoints as the dataflow keeps them, in memory:
//! whole, or by parts (see `checkpoint::state_log`): each checkpoint takes
//! only the windows changed since the last one, and the state restored is
//! the newest taken of every window still held. This is a reference of
//! its own, not the engine's bookkeeping, so a `checkpoint` directive
//! checks what an operator says changed, whatever keeps the files.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;

use crate::operators::layer_query::LayerQuery;

#[derive(Default)]
pub(super) struct KeptState {
    /// Whether a checkpoint took every part.
    whole_taken: bool,
    /// The newest state taken of each window held.
    parts: BTreeMap<i64, RecordBatch>,
}

impl KeptState {
    /// Takes `query`'s state as at a barrier; returns what a restore reads.
    pub(super) fn checkpoint(&mut self, query: &mut LayerQuery) -> Option<RecordBatch> {
        let every_part = !self.whole_taken;
        let Some(parts) = query.snapshot_parts(every_part).expect("a snapshot") else {
            return query.snapshot().expect("a snapshot");
        };
        self.whole_taken = true;
        self.parts.extend(parts.changed);
        self.parts.retain(|key, _| parts.held.contains(key));
        let first = self.parts.values().next()?;
        Some(concat_batches(&first.schema(), self.parts.values()).expect("state parts"))
    }
}
