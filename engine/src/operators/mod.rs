//! Streaming operators: what runs a layer's query on a stream.

pub mod layer_query;
pub mod over_window;
pub mod session_window;
pub mod stream_join;
pub mod window_aggregate;
