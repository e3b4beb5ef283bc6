//! The checkpoint coordinator: ends epochs, and commits them.
//!
//! Every checkpoint interval in which anything happened (rows read, a
//! watermark moved), it asks every source for the next epoch's barrier. Once
//! every layer has aligned the barrier and acked (state written, files
//! finished), it writes the epoch's manifest, the commit point, and then
//! commits every table the epoch added rows to, concurrently and each
//! idempotently, then the Kafka transactions of layers that publish
//! exactly-once. One epoch is in flight at a time.
//!
//! On a stop it ends one last epoch, so a clean stop loses nothing and a
//! restart reads nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::checkpoint::manifest::{MANIFEST_FORMAT, Manifest, PendingCommit};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::io::{Failpoints, TableCommit};
use crate::dataflow::message::Ack;
use crate::dataflow::source::{EpochControl, SourceStatus};
use crate::delta::table_committer::CommitOutcome;
use crate::error::{EngineError, Result};
use crate::failpoint::Point;
use crate::fence::Fence;
use crate::kafka::offsets::SourceOffsets;
use crate::kafka::publisher::PublishCommitter;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// How often a running dataflow logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);
/// How recent a source's broker contact must be for an idle dataflow to
/// count as alive (sources probe every 2 s).
const IDLE_CONTACT: Duration = Duration::from_secs(5);

/// Totals of one run of a dataflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataflowReport {
    /// Epochs committed by this run.
    pub epochs: u64,
    /// Rows written to layer tables (all layers).
    pub rows: u64,
}

/// A source as the coordinator sees it.
pub(crate) struct SourceHandle {
    pub(crate) id: String,
    pub(crate) status: Arc<SourceStatus>,
    pub(crate) committed: std_mpsc::Sender<SourceOffsets>,
}

pub(crate) struct Coordinator {
    pub(crate) dataflow: String,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) committers: HashMap<String, Box<dyn TableCommit>>,
    pub(crate) failpoints: Arc<dyn Failpoints>,
    /// Kafka topics layers publish, committed after the tables.
    pub(crate) publishers: Vec<PublishCommitter>,
    pub(crate) layers: usize,
    pub(crate) control: Arc<EpochControl>,
    pub(crate) sources: Vec<SourceHandle>,
    pub(crate) acks: mpsc::Receiver<Ack>,
    pub(crate) interval: Duration,
    pub(crate) retain: usize,
    pub(crate) next_epoch: u64,
    pub(crate) bounded: bool,
    pub(crate) shutdown: Shutdown,
    pub(crate) metrics: Metrics,
    /// The hash of the warehouse file the manifests name.
    pub(crate) version: Option<String>,
    /// Checked at each commit point: a run that may have lost its lease
    /// stops instead of committing.
    pub(crate) fence: Fence,
}

impl Coordinator {
    pub(crate) async fn run(mut self) -> Result<DataflowReport> {
        let mut report = DataflowReport::default();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop_requested = self.shutdown.wait();
        tokio::pin!(stop_requested);
        let mut stopping = false;
        // The epoch started, its acks so far, and when it started.
        let mut in_flight: Option<(u64, Vec<Ack>, Instant)> = None;
        let mut progress = Progress::new();
        loop {
            tokio::select! {
                _ = ticker.tick(), if in_flight.is_none() => {
                    if self.bounded && !self.sources.is_empty()
                        && self.sources.iter().all(|s| s.status.done.load(Ordering::SeqCst))
                    {
                        info!(dataflow = %self.dataflow, "every source caught up; stopping (bounded run)");
                        stopping = true;
                    }
                    match self.trigger(stopping) {
                        Some(epoch) => in_flight = Some((epoch, Vec::new(), Instant::now())),
                        None if stopping => return Ok(report),
                        None => self.idle_heartbeat(),
                    }
                }
                _ = &mut stop_requested, if !stopping => {
                    stopping = true;
                    // With an epoch in flight, the last one starts when it completes.
                    if in_flight.is_none() {
                        match self.trigger(true) {
                            Some(epoch) => in_flight = Some((epoch, Vec::new(), Instant::now())),
                            None => return Ok(report),
                        }
                    }
                }
                ack = self.acks.recv() => {
                    let Some(ack) = ack else {
                        return Err(EngineError::Stopped {
                            pipeline: self.dataflow.clone(),
                            what: "every layer".into(),
                        });
                    };
                    let Some((epoch, acks, started)) = &mut in_flight else {
                        return Err(EngineError::internal(
                            format!("checkpoint coordinator of `{}`", self.dataflow),
                            format!("layer `{}` acked epoch {} that was not started", ack.layer.name, ack.epoch),
                        ));
                    };
                    acks.push(ack);
                    if acks.len() == self.layers {
                        let epoch = *epoch;
                        let started = *started;
                        let acks = std::mem::take(acks);
                        in_flight = None;
                        let slowest = acks.iter().filter_map(|a| a.layer.watermark).min();
                        let rows = self.complete(epoch, acks, started).await?;
                        report.epochs += 1;
                        report.rows += rows;
                        progress.tick(&self.dataflow, epoch, &report, started.elapsed(), slowest);
                        self.next_epoch = epoch + 1;
                        if self.control.last_epoch.load(Ordering::SeqCst) == epoch {
                            return Ok(report);
                        }
                        if stopping {
                            match self.trigger(true) {
                                Some(epoch) => in_flight = Some((epoch, Vec::new(), Instant::now())),
                                None => return Ok(report),
                            }
                        }
                    }
                }
            }
        }
    }

    /// Starts the next epoch if anything happened since the last; when
    /// `stopping`, it is the last (or, with nothing to commit, sources stop
    /// now). Returns the epoch started.
    fn trigger(&mut self, stopping: bool) -> Option<u64> {
        let progress = self.sources.iter().fold(false, |any, s| {
            s.status.progress.swap(false, Ordering::SeqCst) | any
        });
        if !progress {
            if stopping {
                self.control.stop_now.store(true, Ordering::SeqCst);
            }
            return None;
        }
        let epoch = self.next_epoch;
        if stopping {
            self.control.last_epoch.store(epoch, Ordering::SeqCst);
        }
        self.control.requested.store(epoch, Ordering::SeqCst);
        debug!(dataflow = %self.dataflow, epoch, "barrier requested");
        Some(epoch)
    }

    /// With nothing to commit, the dataflow is alive if every source
    /// reached its broker lately (a quiet topic, not a lost broker).
    fn idle_heartbeat(&self) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let fresh = (self.interval * 3).max(IDLE_CONTACT).as_millis() as i64;
        let reached = self
            .sources
            .iter()
            .all(|s| now_ms - s.status.last_contact_ms.load(Ordering::SeqCst) <= fresh);
        if reached {
            self.metrics.heartbeat(&self.dataflow);
        }
    }

    /// Writes the manifest and commits every table; returns the rows the
    /// layers wrote in the epoch.
    async fn complete(
        &mut self,
        epoch: u64,
        acks: Vec<Ack>,
        epoch_started: Instant,
    ) -> Result<u64> {
        let started = Instant::now();
        let rows = acks.iter().map(|a| a.rows).sum();
        let observed: Vec<EpochCounts> = acks.iter().map(EpochCounts::of).collect();
        let mut manifest = Manifest {
            format: MANIFEST_FORMAT,
            dataflow: self.dataflow.clone(),
            epoch,
            created_at_ms: chrono::Utc::now().timestamp_millis(),
            sources: Vec::new(),
            layers: Vec::new(),
            sinks: Vec::new(),
            version: self.version.clone(),
        };
        for ack in acks {
            manifest.sources.extend(ack.sources);
            manifest.layers.push(ack.layer);
            manifest.sinks.extend(ack.sinks);
        }
        self.failpoints.hit(Point::BeforeManifest, epoch)?;
        if rows > 0 {
            self.failpoints.hit(Point::BeforeManifestWithRows, epoch)?;
        }
        self.fence.check(&self.dataflow, epoch)?;
        self.store.write(&manifest).await?;
        self.failpoints.hit(Point::AfterManifest, epoch)?;
        // The manifest write may have been slow: the tables are a commit
        // point of their own.
        self.fence.check(&self.dataflow, epoch)?;
        commit_all(
            &mut self.committers,
            epoch,
            &manifest,
            self.failpoints.as_ref(),
            &self.metrics,
        )
        .await?;
        if manifest
            .layers
            .iter()
            .any(|l| l.published.values().any(|n| *n > 0))
        {
            self.failpoints.hit(Point::BeforePublishCommit, epoch)?;
        }
        for publisher in &self.publishers {
            publisher.commit(epoch).await?;
        }
        for source in &manifest.sources {
            if let Some(handle) = self.sources.iter().find(|h| h.id == source.id) {
                // The group commit is advisory; the source does it.
                let _ = handle.committed.send(source.offsets.clone());
            }
        }
        if let Err(e) = self.store.prune(self.retain).await {
            warn!(dataflow = %self.dataflow, error = %e, "could not prune old checkpoints");
        }
        let commit = started.elapsed();
        for counts in &observed {
            counts.report(&self.metrics);
        }
        self.metrics
            .epoch_committed(&self.dataflow, epoch, epoch_started.elapsed(), commit);
        debug!(dataflow = %self.dataflow, epoch, rows, commit_ms = commit.as_millis() as u64, "epoch committed");
        Ok(rows)
    }
}

/// Commits every table's work of `manifest` (also used by recovery, which
/// replays the newest manifest's commits).
///
/// A table the epoch added nothing to gets no commit: its `txn` version
/// stays at the last epoch that added rows. Recovery still knows which
/// epochs a table holds, because epochs commit in order: a table holds an
/// epoch with rows for it exactly when its `txn` version is at or above
/// it. The tables commit concurrently (each is its own Delta log); the
/// `BetweenTableCommits` crash point is reached once the first has
/// committed, with the others in flight.
pub(crate) async fn commit_all(
    committers: &mut HashMap<String, Box<dyn TableCommit>>,
    epoch: u64,
    manifest: &Manifest,
    failpoints: &dyn Failpoints,
    metrics: &Metrics,
) -> Result<()> {
    let mut work: HashMap<&str, (usize, &PendingCommit)> = HashMap::new();
    let mut empty = Vec::new();
    for (i, pending) in manifest.sinks.iter().enumerate() {
        if pending.is_empty() {
            empty.push(i);
        } else if !committers.contains_key(&pending.table) {
            warn!(table = %pending.table, epoch, "the checkpoint names a table no layer writes any more; skipping it");
        } else {
            work.insert(pending.table.as_str(), (i, pending));
        }
    }
    let mut commits: FuturesUnordered<_> = committers
        .iter_mut()
        .filter_map(|(url, committer)| {
            let (i, pending) = *work.get(url.as_str())?;
            committer.set_version(manifest.version.as_deref());
            Some(async move {
                let outcome = committer.commit(epoch, pending).await;
                (i, pending.table.as_str(), outcome)
            })
        })
        .collect();
    let mut done = 0;
    while let Some((i, table, outcome)) = commits.next().await {
        let outcome = outcome?;
        debug!(table, epoch, ?outcome, "table commit");
        done += 1;
        if done == 1 {
            failpoints.hit(Point::BetweenTableCommits, epoch)?;
        }
        if let CommitOutcome::Committed { version } = outcome
            && let Some((_, pending)) = work.get(table)
        {
            let bytes = pending.adds.iter().map(|a| a.size.max(0) as u64).sum();
            metrics.table_committed(
                table_name(table),
                version,
                pending.rows,
                pending.adds.len() as u64,
                bytes,
            );
        }
        failpoints.hit(Point::AfterTableCommit(i + 1), epoch)?;
    }
    // A table the epoch left empty is "committed" once the others are.
    for i in empty {
        failpoints.hit(Point::AfterTableCommit(i + 1), epoch)?;
    }
    Ok(())
}

/// A table's name: the last segment of its URL.
pub(crate) fn table_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// What one layer did in an epoch, kept from its ack for the metrics
/// (reported once the epoch is committed).
struct EpochCounts {
    layer: String,
    rows_in: u64,
    rows_out: u64,
    watermark: Option<i64>,
    /// (side kind, table, rows).
    sides: Vec<(&'static str, String, u64)>,
    lookups: Vec<crate::lookup::metrics::LookupStats>,
    state_bytes: u64,
    state_rows: u64,
}

impl EpochCounts {
    fn of(ack: &Ack) -> Self {
        let layer = ack.layer.name.clone();
        let sides = ack
            .sinks
            .iter()
            .filter_map(|p| {
                let table = table_name(&p.table);
                let rest = table.strip_prefix(layer.as_str())?;
                let kind = ["late", "future", "rejected", "dead_letter"]
                    .into_iter()
                    .find(|k| rest.ends_with(&format!("_{k}")))?;
                Some((kind, table.to_string(), p.rows))
            })
            .collect();
        EpochCounts {
            rows_in: ack.rows_in,
            rows_out: ack.rows,
            watermark: ack.layer.watermark,
            sides,
            lookups: ack.layer.lookups.clone(),
            state_bytes: ack.state_bytes,
            state_rows: ack.state_rows,
            layer,
        }
    }

    fn report(&self, metrics: &Metrics) {
        metrics.layer_epoch(&self.layer, self.rows_in, self.rows_out, self.watermark);
        for (kind, table, rows) in &self.sides {
            metrics.side_rows(&self.layer, kind, table, *rows);
        }
        metrics.lookups(&self.layer, &self.lookups);
        metrics.layer_state(&self.layer, self.state_bytes, self.state_rows);
    }
}

/// Periodic progress lines, so a long catch-up shows it moves and a slow
/// machine shows why: rows/s, epoch durations against the interval, and how
/// far behind the clock the slowest layer's watermark is.
struct Progress {
    last: Instant,
    last_rows: u64,
    epochs: u32,
    epoch_total: Duration,
    epoch_max: Duration,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Instant::now(),
            last_rows: 0,
            epochs: 0,
            epoch_total: Duration::ZERO,
            epoch_max: Duration::ZERO,
        }
    }

    /// An epoch completed after `took`; `slowest` is the smallest layer
    /// watermark (microseconds) it committed.
    fn tick(
        &mut self,
        dataflow: &str,
        epoch: u64,
        report: &DataflowReport,
        took: Duration,
        slowest: Option<i64>,
    ) {
        self.epochs += 1;
        self.epoch_total += took;
        self.epoch_max = self.epoch_max.max(took);
        let elapsed = self.last.elapsed();
        if elapsed < PROGRESS_EVERY {
            return;
        }
        let rate = (report.rows - self.last_rows) as f64 / elapsed.as_secs_f64();
        let behind_s = slowest.map(|w| {
            let now = chrono::Utc::now().timestamp_micros();
            ((now - w).max(0) as f64 / 1e6 * 10.0).round() / 10.0
        });
        info!(
            dataflow,
            epoch,
            rows = report.rows,
            rows_per_s = rate.round() as u64,
            epoch_ms_avg = (self.epoch_total / self.epochs.max(1)).as_millis() as u64,
            epoch_ms_max = self.epoch_max.as_millis() as u64,
            watermark_behind_s = behind_s,
            "progress"
        );
        *self = Progress {
            last_rows: report.rows,
            ..Progress::new()
        };
    }
}
