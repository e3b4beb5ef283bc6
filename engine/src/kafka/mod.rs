//! Kafka: client configuration, start positions and source offsets.

pub mod client_config;
pub mod fetched_end;
pub mod offset_runs;
pub mod offsets;
pub mod publisher;
pub mod start_position;
