//! How many queries run at once: `serve.limits.concurrent_queries` slots,
//! and no more than `memory / query_memory` (each running query may fill
//! its own memory pool, so the pools together stay within the serving
//! budget); a query that finds none free waits its turn (first come, first served)
//! in a queue of `queued_queries`, for at most `queue_timeout`. A full queue
//! or a wait that runs out is UNAVAILABLE, which clients retry.
//!
//! A slot is held by the task doing the query's work, not by the request:
//! it is free again only when that work has stopped, so the counts that
//! `strata.active_queries` reports are the queries still using the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// The slots and the queue.
pub(crate) struct Admission {
    slots: Arc<Semaphore>,
    concurrent: usize,
    max_queued: usize,
    queue_timeout: Duration,
    queued: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

/// A query's slot; freed when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    running: Arc<AtomicUsize>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a waiting query until it stops waiting.
struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Admission {
    pub(crate) fn new(concurrent: usize, max_queued: usize, queue_timeout: Duration) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(concurrent.max(1))),
            concurrent: concurrent.max(1),
            max_queued,
            queue_timeout,
            queued: Arc::new(AtomicUsize::new(0)),
            running: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queries holding a slot.
    pub(crate) fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    /// Queries waiting for one.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// A slot, now or after waiting in the queue.
    pub(crate) async fn enter(&self) -> Result<Slot, Status> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self.wait().await?,
        };
        self.running.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            _permit: permit,
            running: self.running.clone(),
        })
    }

    async fn wait(&self) -> Result<OwnedSemaphorePermit, Status> {
        let ahead = self.queued.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(self.queued.clone());
        if ahead >= self.max_queued {
            return Err(Status::unavailable(format!(
                "the server is busy: {} queries are running and {ahead} are waiting \
                 (serve.limits.concurrent_queries, memory / query_memory, queued_queries); retry later",
                self.concurrent
            )));
        }
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(Status::unavailable("the server is shutting down")),
            Err(_) => Err(Status::unavailable(format!(
                "the server is busy: no query slot came free within {:?} \
                 (serve.limits.concurrent_queries, queue_timeout); retry later",
                self.queue_timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_queue_then_are_refused() {
        let admission = Arc::new(Admission::new(1, 1, Duration::from_millis(200)));
        let first = admission.enter().await.unwrap();
        assert_eq!(admission.running(), 1);
        // The second waits for the first's slot...
        let waiter = {
            let admission = admission.clone();
            tokio::spawn(async move { admission.enter().await.map(|_| ()) })
        };
        while admission.queued() == 0 {
            tokio::task::yield_now().await;
        }
        // ... the third finds the queue full.
        let e = admission.enter().await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("1 are waiting"), "{}", e.message());
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!((admission.running(), admission.queued()), (0, 0));
        // A wait that runs out is refused too.
        let _held = admission.enter().await.unwrap();
        let e = admission.enter().await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("within"), "{}", e.message());
        assert_eq!(admission.queued(), 0);
    }
}
