//! The dataflow's I/O, behind small traits: where records come from, where
//! an epoch's rows are written and committed, where checkpoints live, and
//! where a crash can be injected.
//!
//! A running warehouse uses the real parts (Kafka sources, Delta tables,
//! manifests in the object store: `dataflow::delta_io`,
//! `dataflow::kafka_io`); the engine's own tests run whole dataflows on
//! in-memory ones, with a paused clock, so barrier alignment, epoch commits
//! and recovery are tested in-process, hundreds of crash points a second.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::checkpoint::manifest::{PendingCommit, SourceCheckpoint};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::edge::EdgeSender;
use crate::dataflow::plan::TablePlan;
use crate::dataflow::source::{EpochControl, SourceStatus};
use crate::dataflow::spec::SourceSpec;
use crate::delta::table_committer::CommitOutcome;
use crate::error::Result;
use crate::failpoint::Point;
use crate::fence::Fence;
use crate::kafka::offsets::SourceOffsets;
use crate::metrics::Metrics;

/// Phase one of a table: an epoch's rows written, not yet committed.
#[async_trait]
pub trait TableSink: Send {
    /// Adds rows to the epoch.
    async fn write(&mut self, batch: RecordBatch) -> Result<()>;
    /// Finishes the epoch's work and returns it, to go in the manifest.
    async fn pre_commit(&mut self) -> Result<PendingCommit>;
}

/// Phase two of a table: an epoch committed once, whatever happens.
#[async_trait]
pub trait TableCommit: Send {
    /// The table's URL (what manifests name it by).
    fn url(&self) -> &str;
    /// The layer committing.
    fn app_id(&self) -> &str;
    /// The highest epoch the table holds for the layer.
    fn committed_epoch(&self) -> Option<u64>;
    /// Commits `pending` as `epoch`, unless the table already holds it.
    async fn commit(&mut self, epoch: u64, pending: &PendingCommit) -> Result<CommitOutcome>;
    /// The warehouse version (sha256) the epochs committed next ran, for
    /// the commits' info.
    fn set_version(&mut self, _version: Option<&str>) {}
    /// The rows `epoch` added (to publish a lost epoch again).
    async fn epoch_rows(&mut self, epoch: u64) -> Result<Vec<RecordBatch>>;
}

/// A table, opened.
pub struct OpenedTable {
    /// Where the layer writes.
    pub sink: Box<dyn TableSink>,
    /// What the coordinator commits.
    pub commit: Box<dyn TableCommit>,
}

/// Opens (creating if needed) the tables a plan names.
#[async_trait]
pub trait TableOpener: Send + Sync {
    /// Opens `table` for the layer `app_id`.
    async fn open(&self, table: &TablePlan, app_id: &str) -> Result<OpenedTable>;
}

/// What a source is started with.
pub struct SourceContext {
    /// Where it resumes (offsets, event times), from the checkpoint.
    pub resume: SourceCheckpoint,
    /// The last epoch already committed (its barrier is not sent again).
    pub emitted_epoch: u64,
    /// Stop once caught up with the end as of the start.
    pub bounded: bool,
    /// Its layer's channel.
    pub out: EdgeSender,
    /// The coordinator's requests.
    pub control: Arc<EpochControl>,
    /// What it tells the coordinator.
    pub status: Arc<SourceStatus>,
    /// Where it reports lag and broker contact.
    pub metrics: Metrics,
}

/// A started source.
pub struct StartedSource {
    /// Where the coordinator sends offsets made durable (for the consumer
    /// group, monitoring only).
    pub committed: std_mpsc::Sender<SourceOffsets>,
    /// Runs the source to its end.
    pub run: Pin<Box<dyn Future<Output = Result<()>> + Send>>,
}

/// Starts the sources a plan names.
pub trait SourceStarter: Send + Sync {
    /// Starts `source`.
    fn start(&self, source: &SourceSpec, cx: SourceContext) -> Result<StartedSource>;
}

/// Where an injected crash happens.
pub trait Failpoints: Send + Sync {
    /// Reached `point` of `epoch`: crash here if asked to (an error, or
    /// for a real process, an abort).
    fn hit(&self, point: Point, epoch: u64) -> Result<()>;
}

/// Everything a dataflow reads and writes.
#[derive(Clone)]
pub struct DataflowIo {
    /// Its tables.
    pub tables: Arc<dyn TableOpener>,
    /// Its sources.
    pub sources: Arc<dyn SourceStarter>,
    /// Its checkpoints.
    pub checkpoints: Arc<CheckpointStore>,
    /// Where crashes are injected.
    pub failpoints: Arc<dyn Failpoints>,
    /// Where it reports what it does.
    pub metrics: Metrics,
    /// Checked before every commit point: open while this run surely holds
    /// the warehouse's lease.
    pub fence: Fence,
}
