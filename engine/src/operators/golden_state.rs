//! A golden layer's checkpoints as one run of the dataflow keeps them, in
//! memory: whole, or by parts (see `checkpoint::state_log`): the run's
//! first checkpoint and every third take every part (each window's merged
//! into one), the others only the parts new since the last one, and the
//! state a restore reads is every part still held. This is a reference of its own, not the engine's
//! bookkeeping, so a `checkpoint` directive checks what an operator says is
//! new, whatever keeps the files.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;

use crate::operators::layer_query::LayerQuery;

#[derive(Default)]
pub(super) struct KeptState {
    /// Checkpoints taken.
    taken: usize,
    /// The parts held, by id.
    parts: BTreeMap<i64, RecordBatch>,
}

impl KeptState {
    /// Takes `query`'s state as at a barrier; returns what a restore reads.
    pub(super) fn checkpoint(&mut self, query: &mut LayerQuery) -> Option<RecordBatch> {
        let every_part = self.taken.is_multiple_of(3);
        self.taken += 1;
        let Some(parts) = query.snapshot_parts(every_part).expect("a snapshot") else {
            return query.snapshot().expect("a snapshot");
        };
        if every_part {
            self.parts.clear();
        }
        self.parts.extend(parts.changed);
        self.parts.retain(|key, _| parts.held.contains(key));
        let first = self.parts.values().next()?;
        Some(concat_batches(&first.schema(), self.parts.values()).expect("state parts"))
    }
}
