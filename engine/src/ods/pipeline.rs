//! Running an ODS layer: recover, then read, write and commit epoch by epoch.

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use strata_schemas::Schema;
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::error::{EngineError, Result};
use crate::kafka::client_config::KafkaConfig;
use crate::kafka::start_position::StartPosition;
use crate::ods::committer::EpochCommitter;
use crate::ods::record_stage::RecordStage;
use crate::ods::source_loop::{SourceEvent, SourceLoop, SourceSettings};
use crate::shutdown::Shutdown;
use crate::storage::StorageRoot;

/// Batches in flight between the source thread and the sink task.
const CHANNEL_DEPTH: usize = 16;
/// How often a running pipeline logs its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Everything an ODS pipeline needs, as planned from the warehouse file.
#[derive(Debug, Clone)]
pub struct OdsSpec {
    /// The layer name: pipeline id, table name and Delta `txn` appId.
    pub layer: String,
    /// The cluster.
    pub kafka: KafkaConfig,
    /// Consumer group for offset commits (monitoring, `start: group`).
    pub group_id: String,
    /// Topics landed in the table.
    pub topics: Vec<String>,
    /// Where to start without a checkpoint.
    pub start: StartPosition,
    /// Record schema, with an event-time field.
    pub schema: Schema,
    /// Storage root of the warehouse.
    pub storage: StorageRoot,
    /// Time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Manifests kept.
    pub checkpoint_retain: usize,
    /// Stop once caught up with the topics' end offsets as of the start.
    pub bounded: bool,
}

/// Totals of one run of an ODS pipeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OdsReport {
    /// Epochs committed by this run.
    pub epochs: u64,
    /// Records read.
    pub records: u64,
    /// Rows written to the table.
    pub rows: u64,
    /// Records sent to the dead-letter table.
    pub dead_letters: u64,
}

/// Runs the ODS layer `spec` until `shutdown` (or, for a bounded run, until
/// caught up), committing a last epoch on the way out.
pub async fn run_ods(spec: OdsSpec, shutdown: Shutdown) -> Result<OdsReport> {
    let pipeline = spec.layer.clone();
    let stage = RecordStage::new(&pipeline, &spec.schema)?;
    let mut committer = EpochCommitter::open(
        &pipeline,
        &spec.storage,
        stage.schema().clone(),
        spec.checkpoint_retain,
    )
    .await?;
    let resume = committer.recover().await?;

    let consumer: BaseConsumer = spec
        .kafka
        .consumer(&spec.group_id)
        .create()
        .map_err(EngineError::kafka("creating the consumer"))?;
    let (tx, mut rx) = mpsc::channel(CHANNEL_DEPTH);
    let (committed_tx, committed_rx) = std_mpsc::channel();
    let source = SourceLoop::new(
        SourceSettings {
            pipeline: pipeline.clone(),
            topics: spec.topics.clone(),
            start: spec.start,
            interval: spec.checkpoint_interval,
            bounded: spec.bounded,
        },
        consumer,
        stage,
        resume.offsets,
        resume.epoch + 1,
        tx,
        committed_rx,
        shutdown.clone(),
    );
    let source_thread = std::thread::Builder::new()
        .name(format!("source-{pipeline}"))
        .spawn(move || source.run())
        .map_err(|e| EngineError::Pipeline {
            pipeline: pipeline.clone(),
            reason: format!("cannot start the source thread: {e}"),
        })?;

    let mut report = OdsReport::default();
    let mut progress = Progress::new();
    let sink_result: Result<()> = async {
        while let Some(event) = rx.recv().await {
            match event {
                SourceEvent::Data(staged) => committer.write(staged).await?,
                SourceEvent::Barrier {
                    epoch,
                    offsets,
                    records,
                } => {
                    let started = Instant::now();
                    let manifest = committer.commit_epoch(epoch, offsets).await?;
                    // The source commits these to the consumer group (advisory).
                    let _ = committed_tx.send(manifest.offsets);
                    let (rows, dead) = (manifest.sinks[0].rows, manifest.sinks[1].rows);
                    report.epochs += 1;
                    report.records += records;
                    report.rows += rows;
                    report.dead_letters += dead;
                    debug!(pipeline = %pipeline, epoch, records, rows, dead_letters = dead, commit_ms = started.elapsed().as_millis() as u64, "epoch committed");
                    progress.tick(&pipeline, epoch, &report);
                }
            }
        }
        Ok(())
    }
    .await;

    if sink_result.is_err() {
        // Unblock and stop the source; the sink's error is the one to report.
        shutdown.trigger();
        drop(rx);
    }
    let source_result = tokio::task::spawn_blocking(move || source_thread.join())
        .await
        .map_err(|e| EngineError::Pipeline {
            pipeline: pipeline.clone(),
            reason: format!("the source thread could not be joined: {e}"),
        })?
        .map_err(|_| EngineError::Pipeline {
            pipeline: pipeline.clone(),
            reason: "the source thread panicked".into(),
        })?;
    sink_result?;
    source_result?;
    info!(pipeline = %pipeline, epochs = report.epochs, records = report.records, rows = report.rows, dead_letters = report.dead_letters, "stopped");
    Ok(report)
}

/// Periodic progress lines with rates, so a long catch-up shows it moves.
struct Progress {
    last: Instant,
    last_records: u64,
}

impl Progress {
    fn new() -> Self {
        Progress {
            last: Instant::now(),
            last_records: 0,
        }
    }

    fn tick(&mut self, pipeline: &str, epoch: u64, report: &OdsReport) {
        let elapsed = self.last.elapsed();
        if elapsed < PROGRESS_EVERY {
            return;
        }
        let rate = (report.records - self.last_records) as f64 / elapsed.as_secs_f64();
        info!(
            pipeline,
            epoch,
            records = report.records,
            rows = report.rows,
            dead_letters = report.dead_letters,
            records_per_s = rate.round() as u64,
            "progress"
        );
        self.last = Instant::now();
        self.last_records = report.records;
    }
}
