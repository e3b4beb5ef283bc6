//! Fencing: a run commits only while its lease is surely still its own.
//!
//! The lease's heartbeat stops a run that lost its lease, but only when the
//! heartbeat next wakes. A process stalled past the lease's time to live
//! (stopped, swapped out, starved of CPU) wakes with an epoch in hand, and
//! its coordinator may reach the commit point before the heartbeat learns
//! that another run took over: two writers would commit the same epochs.
//!
//! A waiter takes a lease over only after it has seen the lease unrenewed
//! for a whole time to live on its own clock, a clock that starts after the
//! holder wrote the renewal. So the holder is safe while less than a time to
//! live has passed since it *started* writing its newest renewal. The fence
//! checks, at each commit point (the manifest, the table commits), that the
//! newest successful renewal started less than half a time to live ago,
//! leaving the other half for the commit itself. Renewals come every third
//! of a time to live, so a healthy run never trips it; a run that does
//! stops without committing, and its epoch is replayed by whoever holds the
//! lease. (Like every lease without a fencing token checked by the store
//! itself, this assumes the two machines' clocks run at similar rates and a
//! commit takes less than half a time to live.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{EngineError, Result};

/// Whether this run may still commit; cheap to clone and to check (no I/O).
#[derive(Clone, Default)]
pub struct Fence {
    lease: Option<Arc<Held>>,
}

struct Held {
    /// When the newest successful renewal was started.
    renewed: Mutex<Instant>,
    ttl: Duration,
}

impl Fence {
    /// No lease: commits are never fenced (tests, one-shot tools that hold
    /// no lease).
    pub fn unfenced() -> Self {
        Fence::default()
    }

    /// The fence of a lease with time to live `ttl`, whose newest write
    /// started at `started`.
    pub(crate) fn held(ttl: Duration, started: Instant) -> Self {
        Fence {
            lease: Some(Arc::new(Held {
                renewed: Mutex::new(started),
                ttl,
            })),
        }
    }

    /// Records a successful renewal whose write started at `started`.
    pub(crate) fn renewed(&self, started: Instant) {
        if let Some(held) = &self.lease {
            *held.renewed.lock().unwrap_or_else(|p| p.into_inner()) = started;
        }
    }

    /// Ok while the lease is surely this run's for long enough to commit
    /// epoch `epoch` of `pipeline`; otherwise an error saying why this run
    /// stops instead.
    pub fn check(&self, pipeline: &str, epoch: u64) -> Result<()> {
        let Some(held) = &self.lease else {
            return Ok(());
        };
        let age = held
            .renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if age < held.ttl / 2 {
            return Ok(());
        }
        Err(EngineError::Pipeline {
            pipeline: pipeline.to_string(),
            reason: format!(
                "epoch {epoch} was not committed: this run's lease was last renewed {:.1} s ago, and another run may take the warehouse over once it goes {} s unrenewed; this run stops rather than risk two writers (it was stalled, or could not reach the storage root). The epoch is replayed by the next run that holds the lease",
                age.as_secs_f64(),
                held.ttl.as_secs()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn commits_only_within_half_a_time_to_live_of_the_newest_renewal() {
        let ttl = Duration::from_secs(15);
        let fence = Fence::held(ttl, Instant::now());
        assert!(fence.check("p", 1).is_ok());
        tokio::time::advance(Duration::from_millis(7_400)).await;
        assert!(fence.check("p", 2).is_ok());
        tokio::time::advance(Duration::from_millis(200)).await;
        let err = fence.check("p", 3).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("epoch 3 was not committed"), "{err}");
        assert!(err.contains("last renewed 7.6 s ago"), "{err}");
        // A renewal started now opens the fence again.
        fence.renewed(Instant::now());
        assert!(fence.check("p", 3).is_ok());
        // Clones share the lease.
        let clone = fence.clone();
        tokio::time::advance(Duration::from_secs(8)).await;
        assert!(clone.check("p", 4).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_lease_nothing_is_fenced() {
        let fence = Fence::unfenced();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(fence.check("p", 1).is_ok());
    }
}
