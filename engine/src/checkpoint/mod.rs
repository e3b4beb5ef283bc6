//! Checkpoints: the manifests that make each epoch's commit atomic across a
//! pipeline's sources and sinks.

pub mod format;
pub mod manifest;
pub mod state_log;
pub mod store;
