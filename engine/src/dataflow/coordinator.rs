//! The checkpoint coordinator: ends epochs, and commits them.
//!
//! Every checkpoint interval in which anything happened (rows read, a
//! watermark moved), it asks every source for the next epoch's barrier. Once
//! every layer has aligned the barrier and acked (state written, files
//! finished), it writes the epoch's manifest, the commit point, and then
//! commits every table, each idempotently, then the Kafka transactions of
//! layers that publish exactly-once. One epoch is in flight at a time.
//!
//! On a stop it ends one last epoch, so a clean stop loses nothing and a
//! restart reads nothing twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::checkpoint::manifest::{MANIFEST_FORMAT, Manifest};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::io::{Failpoints, TableCommit};
use crate::dataflow::message::Ack;
use crate::dataflow::source::{EpochControl, SourceStatus};
use crate::delta::table_committer::CommitOutcome;
use crate::error::{EngineError, Result};
use crate::failpoint::Point;
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
}

impl Coordinator {
    pub(crate) async fn run(mut self) -> Result<DataflowReport> {
        let mut report = DataflowReport::default();
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop_requested = self.shutdown.wait();
        tokio::pin!(stop_requested);
        let mut stopping = false;
        let mut in_flight: Option<(u64, Vec<Ack>)> = None;
        let mut progress = Progress::new();
        let mut epoch_started = Instant::now();
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
                        Some(epoch) => {
                            in_flight = Some((epoch, Vec::new()));
                            epoch_started = Instant::now();
                        }
                        None if stopping => return Ok(report),
                        None => self.idle_heartbeat(),
                    }
                }
                _ = &mut stop_requested, if !stopping => {
                    stopping = true;
                    // With an epoch in flight, the last one starts when it completes.
                    if in_flight.is_none() {
                        match self.trigger(true) {
                            Some(epoch) => in_flight = Some((epoch, Vec::new())),
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
                    let Some((epoch, acks)) = &mut in_flight else {
                        return Err(EngineError::internal(
                            format!("checkpoint coordinator of `{}`", self.dataflow),
                            format!("layer `{}` acked epoch {} that was not started", ack.layer.name, ack.epoch),
                        ));
                    };
                    acks.push(ack);
                    if acks.len() == self.layers {
                        let epoch = *epoch;
                        let acks = std::mem::take(acks);
                        in_flight = None;
                        let rows = self.complete(epoch, acks, epoch_started).await?;
                        report.epochs += 1;
                        report.rows += rows;
                        progress.tick(&self.dataflow, epoch, &report);
                        self.next_epoch = epoch + 1;
                        if self.control.last_epoch.load(Ordering::SeqCst) == epoch {
                            return Ok(report);
                        }
                        if stopping {
                            epoch_started = Instant::now();
                            match self.trigger(true) {
                                Some(epoch) => in_flight = Some((epoch, Vec::new())),
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
        };
        for ack in acks {
            manifest.sources.extend(ack.sources);
            manifest.layers.push(ack.layer);
            manifest.sinks.extend(ack.sinks);
        }
        self.failpoints.hit(Point::BeforeManifest, epoch)?;
        self.store.write(&manifest).await?;
        self.failpoints.hit(Point::AfterManifest, epoch)?;
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
pub(crate) async fn commit_all(
    committers: &mut HashMap<String, Box<dyn TableCommit>>,
    epoch: u64,
    manifest: &Manifest,
    failpoints: &dyn Failpoints,
    metrics: &Metrics,
) -> Result<()> {
    for (i, pending) in manifest.sinks.iter().enumerate() {
        if i == 1 {
            failpoints.hit(Point::BetweenTableCommits, epoch)?;
        }
        match committers.get_mut(&pending.table) {
            Some(committer) => {
                let outcome = committer.commit(epoch, pending).await?;
                if let CommitOutcome::Committed { version } = outcome {
                    let bytes = pending.adds.iter().map(|a| a.size.max(0) as u64).sum();
                    metrics.table_committed(
                        table_name(&pending.table),
                        version,
                        pending.rows,
                        pending.adds.len() as u64,
                        bytes,
                    );
                }
                debug!(table = %pending.table, epoch, ?outcome, "table commit");
            }
            None => {
                warn!(table = %pending.table, epoch, "the checkpoint names a table no layer writes any more; skipping it");
            }
        }
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
            layer,
        }
    }

    fn report(&self, metrics: &Metrics) {
        metrics.layer_epoch(&self.layer, self.rows_in, self.rows_out, self.watermark);
        for (kind, table, rows) in &self.sides {
            metrics.side_rows(&self.layer, kind, table, *rows);
        }
        metrics.lookups(&self.layer, &self.lookups);
    }
}

/// Periodic progress lines with rates, so a long catch-up shows it moves.
struct Progress {
    last: Instant,
    last_rows: u64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Instant::now(),
            last_rows: 0,
        }
    }

    fn tick(&mut self, dataflow: &str, epoch: u64, report: &DataflowReport) {
        let elapsed = self.last.elapsed();
        if elapsed < PROGRESS_EVERY {
            return;
        }
        let rate = (report.rows - self.last_rows) as f64 / elapsed.as_secs_f64();
        info!(
            dataflow,
            epoch,
            rows = report.rows,
            rows_per_s = rate.round() as u64,
            "progress"
        );
        self.last = Instant::now();
        self.last_rows = report.rows;
    }
}
