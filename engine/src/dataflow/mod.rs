//! A dataflow: the layers one process runs, as one graph with one
//! checkpoint epoch.
//!
//! Sources (threads polling Kafka) feed layers (async tasks running each
//! layer's query); layers feed the layers downstream and write their own
//! Delta tables. A coordinator ends an epoch by asking every source for a
//! barrier; once every layer has aligned it, snapshotted its state and
//! finished its files, the coordinator writes the epoch's manifest and
//! commits every table. See `checkpoint::manifest` for why that makes the
//! whole graph exactly-once.

pub(crate) mod build;
pub mod coordinator;
pub mod delta_io;
pub mod edge;
mod edge_budget;
pub mod io;
pub mod kafka_io;
pub mod layer_plan;
mod layer_state;
mod layer_task;
pub mod message;
pub mod plan;
pub mod replay;
pub mod replay_reads;
pub(crate) mod run;
pub mod side_output;
pub(crate) mod side_sink;
pub mod source;
pub mod spec;
pub(crate) mod table_source;
pub mod watermark;

pub use coordinator::DataflowReport;
pub use run::{run_dataflow, run_dataflow_observed, run_dataflow_with};
pub use spec::{DataflowSpec, Delivery, InputFrom, LayerInput, LayerSpec, PublishSpec, SourceSpec};
pub use watermark::WatermarkSpec;
