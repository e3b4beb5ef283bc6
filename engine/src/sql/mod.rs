//! Streaming SQL: Flink-style layer queries planned with DataFusion and run
//! by Strata's streaming operators.

pub mod aggregate_plan;
pub mod batch_slot;
pub mod lookup_join;
pub mod lookup_plan;
pub mod over_plan;
mod plan_nodes;
pub mod planner;
pub mod program;
pub mod segment;
pub mod stream_join_plan;
pub mod stream_table;
pub mod system_time;
pub mod window_tvf;
pub mod window_udfs;
