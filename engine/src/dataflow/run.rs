//! Starting a dataflow: plan every layer, open its tables, recover from the
//! newest checkpoint, connect sources, layers and the coordinator, run.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::info;

use crate::checkpoint::manifest::{Manifest, SourceCheckpoint};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::build::{BuildContext, BuiltLayer, Channels, build_layer};
use crate::dataflow::coordinator::{Coordinator, DataflowReport, SourceHandle, commit_all};
use crate::dataflow::delta_io::DeltaTables;
use crate::dataflow::io::{DataflowIo, SourceContext, TableCommit};
use crate::dataflow::kafka_io::KafkaSources;
use crate::dataflow::plan::DataflowPlan;
pub(crate) use crate::dataflow::plan::without_metadata;
use crate::dataflow::source::{EpochControl, SourceStatus};
use crate::dataflow::spec::DataflowSpec;
use crate::error::{EngineError, Result};
use crate::evolution::carry_over;
use crate::evolution::redeploy::check_state;
use crate::failpoint::ProcessFailpoints;
use crate::fence::Fence;
use crate::kafka::publisher::PublishCommitter;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sql::planner::StreamingPlanner;
use crate::versions::VersionStore;

/// Runs `spec` until `shutdown` (or, when bounded, until every source caught
/// up), committing a last epoch on the way out: Kafka sources, Delta
/// tables, checkpoints under the storage root.
pub async fn run_dataflow(spec: DataflowSpec, shutdown: Shutdown) -> Result<DataflowReport> {
    run_dataflow_observed(spec, shutdown, Metrics::new(), Fence::unfenced()).await
}

/// Runs `spec` as [`run_dataflow`] does, reporting to `metrics`, and
/// committing only while `fence` (the warehouse's lease) is open.
pub async fn run_dataflow_observed(
    spec: DataflowSpec,
    shutdown: Shutdown,
    metrics: Metrics,
    fence: Fence,
) -> Result<DataflowReport> {
    let io = DataflowIo {
        tables: Arc::new(DeltaTables),
        sources: Arc::new(KafkaSources),
        checkpoints: Arc::new(CheckpointStore::open(&spec.storage, &spec.id)?),
        failpoints: Arc::new(ProcessFailpoints),
        metrics,
        fence,
    };
    run_dataflow_with(spec, io, shutdown).await
}

/// Runs `spec` as [`run_dataflow`] does, on `io`.
pub async fn run_dataflow_with(
    spec: DataflowSpec,
    io: DataflowIo,
    shutdown: Shutdown,
) -> Result<DataflowReport> {
    // State files are named per run: this run never overwrites another's.
    let mut io = io;
    io.checkpoints = Arc::new(io.checkpoints.for_run());
    let planner = StreamingPlanner::new(spec.udfs.clone());
    // Every layer's SQL and tables are planned before anything is opened.
    let plan = DataflowPlan::new(&spec, &planner).await?;
    let store = io.checkpoints.clone();
    let manifest = store.latest().await?;
    if let Some(m) = &manifest {
        check_state(&plan, m, &spec.reset_state)?;
    }
    let (ack_tx, ack_rx) = mpsc::channel(spec.layers.len() * 2 + 2);
    let mut channels = Channels::new(&plan, spec.checkpoint_interval);
    let cx = BuildContext {
        dataflow: &spec.id,
        planner: &planner,
        io: &io,
        acks: &ack_tx,
        first_epoch: manifest.as_ref().map_or(1, |m| m.epoch + 1),
    };
    let mut built: Vec<BuiltLayer> = Vec::new();
    for layer in plan.layers {
        built.push(build_layer(layer, &mut channels, &cx).await?);
    }
    let mut source_senders = channels.sources;

    let mut committers: HashMap<String, Box<dyn TableCommit>> = HashMap::new();
    let mut publishers = Vec::new();
    for layer in &mut built {
        for c in layer.committers.drain(..) {
            committers.insert(c.url().to_string(), c);
        }
        publishers.append(&mut layer.publishers);
    }
    info!(dataflow = %spec.id, layers = built.len(), tables = committers.len(), "layers planned and their tables opened");
    check_checkpoint_covers_tables(&spec, manifest.as_ref(), &committers)?;
    let next_epoch = match &manifest {
        Some(m) => {
            io.fence.check(&spec.id, m.epoch)?;
            commit_all(
                &mut committers,
                m.epoch,
                m,
                io.failpoints.as_ref(),
                &io.metrics,
            )
            .await?;
            recover_publishers(&publishers, &mut committers, m).await?;
            restore_layers(&mut built, m, &store, &spec.reset_state).await?;
            info!(dataflow = %spec.id, epoch = m.epoch, "resuming from checkpoint");
            m.epoch + 1
        }
        None => {
            info!(dataflow = %spec.id, "no checkpoint yet; sources start from their configured positions");
            1
        }
    };
    if let Some(version) = &spec.version {
        VersionStore::open(&spec.storage, &spec.id)?
            .record(version, next_epoch)
            .await?;
        info!(dataflow = %spec.id, version = %version.short(), first_epoch = next_epoch, "warehouse version recorded");
    }

    let control = Arc::new(EpochControl::default());
    // A source that fails must fail the dataflow at once (its layer only
    // sees its channel end).
    let mut sources: JoinSet<Result<()>> = JoinSet::new();
    let mut handles = Vec::new();
    for source in &spec.sources {
        let out = source_senders
            .remove(&source.id)
            .ok_or_else(|| EngineError::Config(format!("source `{}` feeds no layer", source.id)))?;
        let status = Arc::new(SourceStatus::default());
        let resume = manifest
            .as_ref()
            .and_then(|m| m.sources.iter().find(|s| s.id == source.id).cloned())
            .unwrap_or_else(|| SourceCheckpoint {
                id: source.id.clone(),
                ..Default::default()
            });
        let started = io.sources.start(
            source,
            SourceContext {
                resume,
                emitted_epoch: next_epoch - 1,
                bounded: spec.bounded,
                out,
                control: control.clone(),
                status: status.clone(),
                metrics: io.metrics.clone(),
            },
        )?;
        handles.push(SourceHandle {
            id: source.id.clone(),
            status,
            committed: started.committed,
        });
        sources.spawn(started.run);
    }

    let mut tasks = JoinSet::new();
    let layers = built.len();
    for layer in built {
        tasks.spawn(layer.task.run());
    }
    drop(ack_tx);

    let coordinator = Coordinator {
        dataflow: spec.id.clone(),
        store: store.clone(),
        committers,
        failpoints: io.failpoints.clone(),
        publishers: publishers.into_iter().map(|(p, _)| p).collect(),
        layers,
        control: control.clone(),
        sources: handles,
        acks: ack_rx,
        interval: spec.checkpoint_interval,
        retain: spec.checkpoint_retain,
        next_epoch,
        bounded: spec.bounded,
        shutdown: shutdown.clone(),
        metrics: io.metrics.clone(),
        version: spec.version.as_ref().map(|v| v.hash.clone()),
        fence: io.fence.clone(),
    };
    io.metrics
        .dataflow_running(&spec.id, true, spec.checkpoint_interval);
    let _stopped = Stopped(&io.metrics, &spec.id);
    // Aborted if this future is dropped (a test "kills" the dataflow so),
    // as the tasks and sources in their join sets are.
    let mut coordinator = AbortOnDrop(tokio::spawn(coordinator.run()));
    // A task's or source's own error is the cause; the coordinator's ("every
    // layer stopped") is often only its consequence, and may come first.
    let mut failure: Option<EngineError> = None;
    let mut coordinator_failure: Option<EngineError> = None;
    let mut report = DataflowReport::default();
    loop {
        tokio::select! {
            done = &mut coordinator.0 => {
                match done {
                    Ok(Ok(r)) => report = r,
                    Ok(Err(e)) => coordinator_failure = Some(e),
                    Err(e) => coordinator_failure = Some(EngineError::internal("the checkpoint coordinator", e)),
                }
                break;
            }
            Some(joined) = tasks.join_next() => {
                let Some(error) = ended_badly(joined, "a layer task") else { continue };
                failure = Some(error);
                coordinator.0.abort();
                break;
            }
            Some(joined) = sources.join_next() => {
                let Some(error) = ended_badly(joined, "a source thread") else { continue };
                failure = Some(error);
                coordinator.0.abort();
                break;
            }
        }
    }
    // Whatever happened, sources stop now; what they read after the last
    // committed epoch is read again on the next start.
    control
        .stop_now
        .store(true, std::sync::atomic::Ordering::SeqCst);
    if failure.is_some() || coordinator_failure.is_some() {
        shutdown.trigger();
        tasks.abort_all();
    }
    // Tasks aborted above end cancelled: only their own errors count.
    for set in [&mut tasks, &mut sources] {
        while let Some(joined) = set.join_next().await {
            // A part that stopped because another failed is replaced by
            // that other's error.
            if let Ok(Err(e)) = joined
                && failure
                    .as_ref()
                    .is_none_or(|f| matches!(f, EngineError::Stopped { .. }))
            {
                failure = Some(e);
            }
        }
    }
    let failure = failure.or(coordinator_failure);
    match failure {
        Some(e) => Err(e),
        None => {
            info!(dataflow = %spec.id, epochs = report.epochs, rows = report.rows, "stopped");
            Ok(report)
        }
    }
}

/// Marks the dataflow stopped in the metrics however the run ends.
struct Stopped<'a>(&'a Metrics, &'a str);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0
            .dataflow_running(self.1, false, std::time::Duration::ZERO);
    }
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The error a task or source thread ended with, if it did not end well.
fn ended_badly(
    joined: std::result::Result<Result<()>, tokio::task::JoinError>,
    what: &str,
) -> Option<EngineError> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(EngineError::internal(what, e)),
    }
}

/// After a crash between a checkpoint and its Kafka commits, publishes the
/// checkpoint's epoch again, from the tables, where Kafka lacks it.
async fn recover_publishers(
    publishers: &[(PublishCommitter, String)],
    committers: &mut HashMap<String, Box<dyn TableCommit>>,
    manifest: &Manifest,
) -> Result<()> {
    for (publisher, url) in publishers {
        let published = manifest
            .layers
            .iter()
            .find_map(|l| l.published.get(publisher.table()).copied());
        let committer = committers
            .get_mut(url)
            .ok_or_else(|| EngineError::Config(format!("no committer for the table {url}")))?;
        let epoch = manifest.epoch;
        publisher
            .recover(epoch, published, async || committer.epoch_rows(epoch).await)
            .await?;
    }
    Ok(())
}

/// A table that holds epochs the checkpoint does not know means the
/// checkpoints were removed, or another configuration of the dataflow wrote
/// it: resuming would read its rows again.
fn check_checkpoint_covers_tables(
    spec: &DataflowSpec,
    manifest: Option<&Manifest>,
    committers: &HashMap<String, Box<dyn TableCommit>>,
) -> Result<()> {
    let epoch = manifest.map_or(0, |m| m.epoch);
    for c in committers.values() {
        let Some(held) = c.committed_epoch() else {
            continue;
        };
        let app = c.url();
        let covered = manifest.is_some_and(|m| m.layers.iter().any(|l| l.name == c.app_id()));
        if held > epoch || (manifest.is_some() && !covered) {
            return Err(EngineError::Pipeline {
                pipeline: spec.id.clone(),
                reason: format!(
                    "table {app} holds epoch {held}, but the newest checkpoint of `{}` ({}) does not cover it: the checkpoints under _strata/checkpoints/ were removed, or the table was written by a run with other layers. Restore the checkpoints, run the same layers as before, or move the table aside to rebuild it",
                    spec.id,
                    if epoch == 0 {
                        "none".to_string()
                    } else {
                        format!("epoch {epoch}")
                    }
                ),
            });
        }
    }
    Ok(())
}

async fn restore_layers(
    built: &mut [BuiltLayer],
    manifest: &Manifest,
    store: &CheckpointStore,
    reset: &[String],
) -> Result<()> {
    for layer in built {
        let Some(saved) = manifest.layers.iter().find(|l| l.name == layer.task.name) else {
            continue;
        };
        layer.task.watermark = saved.watermark;
        let Some(query) = &mut layer.task.query else {
            continue;
        };
        let name = &layer.task.name;
        if reset.contains(name) {
            query
                .restore(None, saved.watermark)
                .map_err(EngineError::datafusion(name, "restoring state"))?;
            info!(layer = %name, "state reset: the checkpointed state was not restored");
            continue;
        }
        let state = store.read_layer_state(saved).await?;
        // Both layouts recorded and compatible (`check_state` refused the
        // rest): aggregates are carried over by expression.
        let carry = match (
            saved.shape.as_ref().and_then(|s| s.state.as_ref()),
            layer.task.shape.state.as_ref(),
        ) {
            (Some(old), Some(new)) if old != new => carry_over(old, new).ok(),
            _ => None,
        };
        match carry {
            Some(carry) => {
                query
                    .restore_carried(state, saved.watermark)
                    .map_err(EngineError::datafusion(name, "restoring state"))?;
                info!(
                    layer = %name,
                    kept = %carry.kept.join(", "),
                    new = %carry.fresh.join(", "),
                    dropped = %carry.dropped.join(", "),
                    "the layer's SQL changed: state of its kept aggregates restored; new aggregates start empty (windows open at this restart count them only from rows read from now on, later windows are complete); dropped aggregates' state forgotten"
                );
            }
            None => query
                .restore(state, saved.watermark)
                .map_err(EngineError::datafusion(name, "restoring state"))?,
        }
    }
    Ok(())
}
