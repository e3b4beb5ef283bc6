//! Memory for queries: each query has its own pool of
//! `serve.limits.query_memory`, DataFusion's `FairSpillPool`: sorts, joins
//! and grouped aggregations spill to disk when they reach their share, and
//! what cannot spill fails with RESOURCE_EXHAUSTED.
//!
//! The serving budget (`serve.limits.memory`) is kept by admission: at most
//! `memory / query_memory` queries hold a slot at once (`admission`), so
//! the pools together never exceed it and a query never fails because
//! others took the memory; a query that would not fit waits for a slot.
//! The pools report what they hold, for `strata.query_status`; dropping a
//! query (finished, failed, timed out, abandoned) drops its reservations
//! and returns its bytes at once.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    FairSpillPool, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// How many queries may run at once within `memory`.
pub(crate) fn queries_within(memory: usize, query_memory: usize, concurrent: usize) -> usize {
    concurrent.min(memory / query_memory.max(1)).max(1)
}

/// Bytes all query pools hold now.
#[derive(Debug, Default)]
pub(crate) struct MemoryInUse(AtomicUsize);

impl MemoryInUse {
    pub(crate) fn bytes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }

    fn sub(&self, n: usize) {
        // Never below zero, whatever a pool reports.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// One query's memory pool.
pub(crate) struct QueryPool {
    pool: FairSpillPool,
    limit: usize,
    in_use: Arc<MemoryInUse>,
}

impl QueryPool {
    pub(crate) fn new(limit: usize, in_use: Arc<MemoryInUse>) -> Self {
        QueryPool {
            pool: FairSpillPool::new(limit),
            limit,
            in_use,
        }
    }
}

impl fmt::Debug for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueryPool({} bytes)", self.limit)
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "strata-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.pool.register(consumer);
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.pool.unregister(consumer);
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.pool.grow(reservation, additional);
        self.in_use.add(additional);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.pool.shrink(reservation, shrink);
        self.in_use.sub(shrink);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.pool.try_grow(reservation, additional).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "the query needs more than the {} MiB one query may use (serve.limits.query_memory), even spilling to disk: {}",
                self.limit >> 20,
                e.find_root()
            ))
        })?;
        self.in_use.add(additional);
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.pool.reserved()
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_held_to_its_limit_and_gives_everything_back() {
        let in_use = Arc::new(MemoryInUse::default());
        let a: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(60, in_use.clone()));
        let b: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(60, in_use.clone()));
        let ra = MemoryConsumer::new("a").register(&a);
        let rb = MemoryConsumer::new("b").register(&b);
        ra.try_grow(50).unwrap();
        let e = ra.try_grow(20).unwrap_err();
        assert!(matches!(e, DataFusionError::ResourcesExhausted(_)), "{e}");
        assert!(e.to_string().contains("query_memory"), "{e}");
        // Another query's pool is its own.
        rb.try_grow(60).unwrap();
        assert_eq!(in_use.bytes(), 110);
        drop(ra);
        assert_eq!(in_use.bytes(), 60);
        drop(rb);
        assert_eq!(in_use.bytes(), 0);
    }

    #[test]
    fn the_budget_bounds_how_many_queries_run() {
        assert_eq!(queries_within(1 << 30, 256 << 20, 8), 4);
        assert_eq!(queries_within(1 << 30, 64 << 20, 8), 8);
        assert_eq!(queries_within(100, 200, 8), 1);
    }
}
