//! One writer per warehouse: an exclusive lease in the storage root.
//!
//! Two `strata run` on one warehouse (a rolling deploy, a second operator)
//! would interleave epochs and overwrite each other's state. So a run first
//! takes the warehouse's lease, and keeps it by heartbeat.
//!
//! The lease is a sequence of small objects, `<root>/_strata/lease/<n>.json`
//! (n zero-padded, so names sort), each written with a create-only put, the
//! one conditional write every object store has (a local link, an S3
//! `If-None-Match`). The newest object is the lease; writing the next
//! number is a compare-and-swap on it: of two writers of `n + 1`, exactly
//! one succeeds. The holder renews by writing `n + 1` (then deletes `n`);
//! if that write fails because the object exists, someone else took the
//! lease, and the holder stops.
//!
//! A waiter never trusts another machine's clock: it takes over only once
//! it has itself seen the same newest object, unrenewed, for a whole time
//! to live (as Kubernetes' leader election does). A clean stop writes a
//! released lease, which the next run takes at once; so is a lease whose
//! holder ran on this host and whose process is gone (a crash, a SIGKILL).

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{EngineError, Result};
use crate::fence::Fence;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::storage::{StorageRoot, numbered_objects};

/// How long a lease lives without renewal before another run may take it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);

/// Who holds a lease, as written in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// A random id of the run.
    pub run: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When the lease was written, ms since the Unix epoch (for people:
    /// expiry is judged on the waiter's own clock).
    pub renewed_at_ms: i64,
    /// How long the lease lives without renewal, ms.
    pub ttl_ms: u64,
    /// Written on a clean stop: the next run takes the lease at once.
    #[serde(default)]
    pub released: bool,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} on {} (run {})", self.pid, self.host, self.run)
    }
}

/// What a run does when another holds the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenHeld {
    /// Wait until it is released or expires.
    Wait,
    /// Fail at once, naming the holder.
    Fail,
}

/// The lease objects of one warehouse.
#[derive(Clone)]
pub struct LeaseStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    location: String,
    ttl: Duration,
}

/// The newest lease object.
struct Current {
    n: u64,
    holder: Option<Holder>,
}

impl LeaseStore {
    /// The lease of the warehouse stored under `root`.
    pub fn open(root: &StorageRoot, ttl: Duration) -> Result<Self> {
        let sub = "_strata/lease/";
        let (store, prefix) = root.object_store(sub)?;
        Ok(Self::new(
            store,
            prefix,
            &format!("{}{sub}", root.url()),
            ttl,
        ))
    }

    /// A lease in `store` under `prefix` (`location` names it in errors).
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, location: &str, ttl: Duration) -> Self {
        LeaseStore {
            store,
            prefix,
            location: location.to_string(),
            ttl,
        }
    }

    fn err(&self, context: &str) -> impl FnOnce(object_store::Error) -> EngineError {
        EngineError::object_store(&self.location, context)
    }

    fn path(&self, n: u64) -> Path {
        self.prefix.clone().join(format!("{n:020}.json"))
    }

    /// Every lease object's number, oldest first.
    async fn numbers(&self) -> Result<Vec<u64>> {
        numbered_objects(self.store.as_ref(), &self.prefix, |name| {
            name.strip_suffix(".json")?.parse().ok()
        })
        .await
        .map_err(self.err("listing the lease"))
    }

    async fn current(&self) -> Result<Option<Current>> {
        let Some(&n) = self.numbers().await?.last() else {
            return Ok(None);
        };
        let holder = match self.store.get(&self.path(n)).await {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(self.err("reading the lease"))?;
                // An unreadable lease is still a lease: it expires as any other.
                serde_json::from_slice(&bytes).ok()
            }
            // Renewed (and the old one deleted) since the listing.
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.err("reading the lease")(e)),
        };
        Ok(Some(Current { n, holder }))
    }

    /// Writes lease object `n` if nobody has; false if someone has.
    async fn create(&self, n: u64, holder: &Holder) -> Result<bool> {
        let body = serde_json::to_vec_pretty(holder)
            .map_err(|e| EngineError::Config(format!("encoding the lease: {e}")))?;
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.path(n), PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("writing the lease")(e)),
        }
    }

    /// Deletes lease objects older than `n` (best effort: a leftover only
    /// costs a listing entry).
    async fn delete_before(&self, n: u64) {
        let Ok(numbers) = self.numbers().await else {
            return;
        };
        for old in numbers.into_iter().filter(|o| *o < n) {
            if let Err(e) = self.store.delete(&self.path(old)).await {
                warn!(lease = %self.location, error = %e, "could not delete an old lease object");
            }
        }
    }

    /// Takes the lease for `me`: at once if it is free or released;
    /// otherwise, with [`WhenHeld::Wait`], once its holder has not renewed
    /// it for a whole time to live, logging who holds it; with
    /// [`WhenHeld::Fail`], an error naming the holder. A `shutdown` while
    /// waiting gives up.
    pub async fn acquire(
        &self,
        me: &Holder,
        when_held: WhenHeld,
        shutdown: &Shutdown,
    ) -> Result<Lease> {
        // The newest object seen, and since when (on this clock).
        let mut seen: Option<(u64, Instant)> = None;
        let mut told = false;
        loop {
            let current = self.current().await?;
            let next = current.as_ref().map_or(1, |c| c.n + 1);
            let free = match &current {
                None => true,
                Some(c) if c.holder.as_ref().is_some_and(|h| h.released) => true,
                Some(c) if c.holder.as_ref().is_some_and(|h| died_here(h, me)) => true,
                Some(c) => match seen {
                    Some((n, since)) if n == c.n => since.elapsed() >= self.ttl,
                    _ => {
                        seen = Some((c.n, Instant::now()));
                        false
                    }
                },
            };
            if free {
                if let Some(lease) = self.take(next, me, current.as_ref()).await? {
                    return Ok(lease);
                }
                // Someone else wrote it first: look again.
                seen = None;
                continue;
            }
            let who = current
                .as_ref()
                .and_then(|c| c.holder.as_ref())
                .map_or_else(|| "an unknown run".to_string(), Holder::to_string);
            if when_held == WhenHeld::Fail {
                return Err(EngineError::Config(format!(
                    "the warehouse is being written by {who} (lease {}); stop that run first, or start this one without --no-wait to wait for it",
                    self.location
                )));
            }
            if !told {
                warn!(lease = %self.location, holder = %who, ttl_s = self.ttl.as_secs(),
                      "another run holds the warehouse's lease; waiting until it stops, or until it goes unrenewed for the lease's time to live");
                told = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(self.ttl / 5) => {}
                _ = shutdown.wait() => {
                    return Err(EngineError::Config(format!(
                        "stopped while waiting for the warehouse's lease, held by {who}"
                    )));
                }
            }
        }
    }

    /// Takes the lease for `me` if it is free or released, or its holder
    /// ran on this host and is gone; otherwise names who holds it, without
    /// waiting. For work that only the warehouse's writer may do and that
    /// can be left to it: compaction by `strata maintain` while a run
    /// compacts in the background.
    pub async fn try_acquire(&self, me: &Holder) -> Result<std::result::Result<Lease, String>> {
        loop {
            let current = self.current().await?;
            let next = current.as_ref().map_or(1, |c| c.n + 1);
            let holder = current.as_ref().map(|c| c.holder.as_ref());
            let held_by = match holder {
                None => None,
                Some(Some(h)) if h.released || died_here(h, me) => None,
                Some(Some(h)) => Some(h.to_string()),
                Some(None) => Some("an unknown run".to_string()),
            };
            if let Some(who) = held_by {
                return Ok(Err(who));
            }
            if let Some(lease) = self.take(next, me, current.as_ref()).await? {
                return Ok(Ok(lease));
            }
            // Someone else wrote it first: look again.
        }
    }

    /// Writes lease object `next` for `me`, after `current`; `None` if
    /// someone else wrote it first.
    async fn take(
        &self,
        next: u64,
        me: &Holder,
        current: Option<&Current>,
    ) -> Result<Option<Lease>> {
        let mut holder = me.clone();
        holder.renewed_at_ms = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        if !self.create(next, &holder).await? {
            return Ok(None);
        }
        if let Some(Current {
            holder: Some(h), ..
        }) = current
            && !h.released
        {
            warn!(lease = %self.location, previous = %h, "took over a lease its holder stopped renewing");
        }
        self.delete_before(next).await;
        info!(lease = %self.location, n = next, "holding the warehouse's lease");
        Ok(Some(Lease {
            store: self.clone(),
            holder,
            n: next,
            fence: Fence::held(self.ttl, started),
        }))
    }
}

/// A lease held: renew it with [`Lease::keep`], give it back with
/// [`Lease::release`].
pub struct Lease {
    store: LeaseStore,
    holder: Holder,
    n: u64,
    fence: Fence,
}

impl Lease {
    /// The fence commits check: open while this lease is surely held.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Renews the lease every third of its time to live. If the lease is
    /// lost (another run took it: this one was stalled past the time to
    /// live) or cannot be renewed for a whole time to live, it triggers
    /// `shutdown`, so this run stops writing; the task's result says why.
    /// `metrics` is told of every renewal and of the loss (the lease-lost
    /// alert reads it).
    pub fn keep(mut self, shutdown: Shutdown, metrics: Metrics) -> KeptLease {
        let stop = shutdown.clone();
        // Released without the run's shutdown (a run that fails before its
        // layers start): the heartbeat stops on this one.
        let released = Shutdown::new();
        let release = released.clone();
        metrics.lease_renewed();
        let task = tokio::spawn(async move {
            let every = self.store.ttl / 3;
            let mut last_ok = Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.wait() => return Ok(self),
                    _ = released.wait() => return Ok(self),
                }
                match self.renew().await {
                    Ok(true) => {
                        last_ok = Instant::now();
                        metrics.lease_renewed();
                    }
                    Ok(false) => {
                        metrics.lease_lost();
                        shutdown.trigger();
                        return Err(EngineError::Config(format!(
                            "lost the warehouse's lease ({}): another run took it after this one went {} s without renewing it; this run stops",
                            self.store.location,
                            self.store.ttl.as_secs()
                        )));
                    }
                    Err(e) if last_ok.elapsed() >= self.store.ttl => {
                        metrics.lease_lost();
                        shutdown.trigger();
                        return Err(EngineError::Config(format!(
                            "could not renew the warehouse's lease for its whole time to live; this run stops so another can take over: {e}"
                        )));
                    }
                    Err(e) => {
                        warn!(error = %e, "could not renew the warehouse's lease; trying again")
                    }
                }
            }
        });
        KeptLease { task, release }
    }

    async fn renew(&mut self) -> Result<bool> {
        self.holder.renewed_at_ms = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        if !self.store.create(self.n + 1, &self.holder).await? {
            return Ok(false);
        }
        self.fence.renewed(started);
        self.n += 1;
        self.store.delete_before(self.n).await;
        Ok(true)
    }

    /// Gives the lease back: the next run takes it at once.
    pub async fn release(mut self) -> Result<()> {
        self.holder.released = true;
        if self.renew().await? {
            info!(lease = %self.store.location, "released the warehouse's lease");
        }
        Ok(())
    }
}

/// A lease being renewed in the background.
pub struct KeptLease {
    task: JoinHandle<Result<Lease>>,
    /// Stops the heartbeat when the lease is released.
    release: Shutdown,
}

impl KeptLease {
    /// Stops renewing and releases the lease; an error if it was lost or
    /// could not be renewed. It need not wait for the run's `shutdown`: a
    /// run that fails before its layers start (a refused state reset)
    /// releases its lease and exits.
    pub async fn release(self) -> Result<()> {
        self.release.trigger();
        let lease = self
            .task
            .await
            .map_err(|e| EngineError::Config(format!("the lease's heartbeat failed: {e}")))??;
        lease.release().await
    }
}

/// Whether `holder` ran on this host and its process is gone (a crash or
/// a SIGKILL on the same machine: no need to wait for its lease to expire).
/// Where that cannot be told (no `/proc`), it is taken to be alive.
fn died_here(holder: &Holder, me: &Holder) -> bool {
    let proc = std::path::Path::new("/proc");
    holder.host == me.host
        && holder.pid != me.pid
        && proc.join("self").exists()
        && !proc.join(holder.pid.to_string()).exists()
}

/// This process, as a lease names it.
pub fn this_process(ttl: Duration) -> Holder {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into());
    Holder {
        run: uuid::Uuid::new_v4().to_string(),
        host,
        pid: std::process::id(),
        renewed_at_ms: 0,
        ttl_ms: ttl.as_millis() as u64,
        released: false,
    }
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
