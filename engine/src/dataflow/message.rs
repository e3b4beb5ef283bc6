//! What flows between a dataflow's tasks: rows, watermarks and barriers,
//! in order on each channel.

use arrow::record_batch::RecordBatch;

use crate::checkpoint::manifest::{LayerCheckpoint, PendingCommit, SourceCheckpoint};
use crate::ods::StagedBatches;

/// A message on a channel into a layer.
#[derive(Debug)]
pub enum Message {
    /// Rows from an upstream layer.
    Rows(RecordBatch),
    /// What a source decoded: rows, dead letters, future-dated rows.
    Source(StagedBatches),
    /// No row with an event time below this (microseconds) will follow.
    Watermark(i64),
    /// Everything before belongs to `epoch`. From a source, it carries the
    /// source's position.
    Barrier {
        /// The epoch that ends.
        epoch: u64,
        /// The source's position, when the barrier comes from a source.
        source: Option<SourceCheckpoint>,
    },
}

/// A layer's part of an epoch's checkpoint, sent to the coordinator once
/// the layer has aligned the epoch's barriers.
#[derive(Debug)]
pub struct Ack {
    /// The epoch.
    pub epoch: u64,
    /// The layer's time and state.
    pub layer: LayerCheckpoint,
    /// Positions of the sources the layer reads.
    pub sources: Vec<SourceCheckpoint>,
    /// The layer's tables' work for the epoch.
    pub sinks: Vec<PendingCommit>,
    /// Rows the layer wrote in the epoch (for progress logs).
    pub rows: u64,
    /// Rows the layer received in the epoch (for metrics).
    pub rows_in: u64,
    /// Size of the layer's state snapshot for the epoch, bytes (for metrics).
    pub state_bytes: u64,
    /// Rows of that snapshot.
    pub state_rows: u64,
}
