//! Strata's streaming core: the Kafka source, epochs and checkpoints, and
//! two-phase Delta sinks.
//!
//! # Exactly-once
//!
//! A pipeline runs in epochs. The source injects a barrier every checkpoint
//! interval; on a barrier each Delta sink finishes the epoch's Parquet files
//! without committing them (phase one), then the checkpoint manifest is
//! written atomically with the source offsets and those files: the epoch is
//! now decided. Finally each sink the epoch added rows to commits its
//! files with a Delta `txn` action `(appId = pipeline, version = epoch)`
//! (phase two; a table the epoch left empty gets no commit). Recovery loads
//! the newest manifest, replays its phase two (skipped by any table that
//! already holds the epoch), and seeks the source to the manifest's offsets.
//! A crash at any point therefore neither loses nor doubles a record, and the
//! guarantee needs nothing from the broker but offsets.
//!
//! See `ods::run_ods` for the pipeline that lands a topic in a table.

#![warn(missing_docs)]

pub mod backfill;
pub mod checkpoint;
pub mod dataflow;
pub mod delta;
mod error;
pub mod event_time;
pub mod evolution;
pub mod failpoint;
pub mod fence;
pub mod kafka;
pub mod lease;
pub mod lookup;
pub mod maintenance;
pub mod metrics;
pub mod ods;
pub mod operators;
mod predicate;
mod shutdown;
pub mod sql;
pub mod storage;
pub mod versions;

#[cfg(test)]
mod architecture_tests;
#[cfg(test)]
mod testing;

pub use dataflow::watermark::WatermarkSpec;
pub use error::{EngineError, ErrorKind, Result};
pub use kafka::client_config::KafkaConfig;
pub use kafka::offsets::{SourceOffsets, TopicPartition};
pub use kafka::start_position::StartPosition;
pub use metrics::{Metrics, Readiness};
pub use shutdown::Shutdown;
pub use storage::{StorageRoot, TableLocation};
