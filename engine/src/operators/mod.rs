//! Streaming operators: what runs a layer's query on a stream.
//!
//! Every kind of query runs behind one [`Operator`](operator::Operator)
//! interface; [`LayerQuery`](layer_query::LayerQuery) wraps the operator
//! with the late check of its kind, its lookups and the watermark it
//! forwards.

#[cfg(test)]
mod function_tests;
#[cfg(test)]
mod golden_tests;
pub mod interval_join;
pub mod layer_query;
pub mod operator;
pub mod over_operator;
pub mod over_window;
pub mod session_operator;
pub mod session_window;
pub mod slicing;
pub mod state_ttl;
#[cfg(test)]
mod state_ttl_tests;
pub mod stateless;
pub mod stream_join;
pub mod updating_aggregate;
pub mod window_aggregate;
pub mod window_join;
pub mod window_operator;
