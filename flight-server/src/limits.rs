//! What queries may use (the warehouse file's `serve.limits`, whose reader
//! sets the defaults and checks the values).

use std::time::Duration;

/// Limits on queries, so that no request can stop the server or starve
/// the pipelines running in the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryLimits {
    /// Worker threads running queries.
    pub query_threads: usize,
    /// Queries running at once.
    pub concurrent_queries: usize,
    /// Queries waiting for a slot.
    pub queued_queries: usize,
    /// How long a query waits for a slot.
    pub queue_timeout: Duration,
    /// How long a query may run, streaming its result included.
    pub query_timeout: Duration,
    /// Memory one query may hold before it spills, then fails.
    pub query_memory: usize,
    /// Memory all queries together may hold.
    pub memory: usize,
    /// Disk all queries together may fill with spill files (0: no spilling).
    pub spill: u64,
    /// Values `generate_series` / `range` may produce in one call.
    pub generated_rows: u64,
    /// Deepest expression accepted (see `sql_shape`).
    pub expression_depth: usize,
    /// Longest SQL text, in bytes.
    pub sql_bytes: usize,
    /// Largest set of bound parameters, in bytes of Arrow IPC.
    pub parameter_bytes: usize,
    /// Parameter sets kept per user for clients reusing a first handle.
    pub prepared_per_user: usize,
    /// How long such a set is kept after its last use.
    pub prepared_ttl: Duration,
}

impl QueryLimits {
    /// The largest statement handle the server issues: the SQL, the
    /// parameters (re-encoded, so with some slack) and the handle's header.
    pub(crate) fn handle_bytes(&self) -> usize {
        self.sql_bytes + self.parameter_bytes + self.parameter_bytes / 8 + 4096
    }
}

#[cfg(test)]
pub(crate) fn for_tests() -> QueryLimits {
    QueryLimits {
        query_threads: 2,
        concurrent_queries: 4,
        queued_queries: 8,
        queue_timeout: Duration::from_secs(5),
        query_timeout: Duration::from_secs(60),
        query_memory: 64 << 20,
        memory: 128 << 20,
        spill: 1 << 30,
        generated_rows: 1_000_000,
        expression_depth: 1_000,
        sql_bytes: 1 << 20,
        parameter_bytes: 1 << 20,
        prepared_per_user: 8,
        prepared_ttl: Duration::from_secs(60),
    }
}
