//! Starting a dataflow: plan every layer, open its tables, recover from the
//! newest checkpoint, connect sources, layers and the coordinator, run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use arrow::datatypes::{Schema, SchemaRef};
use rdkafka::consumer::BaseConsumer;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::info;

use crate::checkpoint::manifest::{Manifest, SourceCheckpoint};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::coordinator::{Coordinator, DataflowReport, SourceHandle, commit_all};
use crate::dataflow::layer_plan::{PlannedLayer, config, plan_layers};
use crate::dataflow::layer_task::{InputChannel, LateSink, LayerSinks, LayerTask, MainWriter};
use crate::dataflow::message::{Ack, Message};
use crate::dataflow::replay::{Replay, ReplayFrom};
use crate::dataflow::side_output::{Side, side_schema};
use crate::dataflow::side_sink::SideSink;
use crate::dataflow::source::{EpochControl, SourceStatus, SourceTask};
use crate::dataflow::spec::{DataflowSpec, InputFrom};
use crate::dataflow::table_source::TableSource;
use crate::delta::table::open_or_create;
use crate::delta::table_committer::TableCommitter;
use crate::delta::table_writer::TableWriter;
use crate::delta::upsert_writer::UpsertWriter;
use crate::error::{EngineError, Result};
use crate::kafka::publisher::{PublishCommitter, open_publisher};
use crate::ods::{DEAD_LETTER_SUFFIX, EVENT_DATE, dead_letter_schema};
use crate::operators::layer_query::LayerQuery;
use crate::shutdown::Shutdown;
use crate::sql::planner::StreamingPlanner;
use crate::sql::program::Program;

/// Messages in flight on each channel between tasks.
const CHANNEL_DEPTH: usize = 16;

/// A layer, planned and with its tables open.
struct BuiltLayer {
    task: LayerTask,
    committers: Vec<TableCommitter>,
    /// The Kafka topics it publishes, each with its table's URL (where a
    /// lost epoch is published again from).
    publishers: Vec<(PublishCommitter, String)>,
}

/// Runs `spec` until `shutdown` (or, when bounded, until every source caught
/// up), committing a last epoch on the way out.
pub async fn run_dataflow(spec: DataflowSpec, shutdown: Shutdown) -> Result<DataflowReport> {
    let store = Arc::new(CheckpointStore::open(&spec.storage, &spec.id)?);
    let manifest = store.latest().await?;
    let planner = StreamingPlanner::new(spec.udfs.clone());
    let (ack_tx, ack_rx) = mpsc::channel(spec.layers.len() * 2 + 2);
    // Every layer's SQL is planned before any table is opened.
    let planned = plan_layers(&spec, &planner).await?;
    let mut built: Vec<BuiltLayer> = Vec::new();
    let mut receivers: Vec<Vec<mpsc::Receiver<Message>>> = Vec::new();
    let mut source_senders: HashMap<String, mpsc::Sender<Message>> = HashMap::new();
    let mut downstream: HashMap<String, Vec<mpsc::Sender<Message>>> = HashMap::new();
    for layer in planned {
        let mut rxs = Vec::new();
        for input in &layer.spec.inputs {
            let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
            rxs.push(rx);
            match &input.from {
                InputFrom::Source(id) => {
                    source_senders.insert(id.clone(), tx);
                }
                InputFrom::Layer(up) => downstream.entry(up.clone()).or_default().push(tx),
            }
        }
        let first_epoch = manifest.as_ref().map_or(1, |m| m.epoch + 1);
        built.push(open_layer(&spec, layer, &planner, &store, &ack_tx, first_epoch).await?);
        receivers.push(rxs);
    }

    let mut committers: HashMap<String, TableCommitter> = HashMap::new();
    let mut publishers = Vec::new();
    for layer in &mut built {
        for c in layer.committers.drain(..) {
            committers.insert(c.url().to_string(), c);
        }
        publishers.append(&mut layer.publishers);
    }
    check_checkpoint_covers_tables(&spec, manifest.as_ref(), &committers)?;
    let next_epoch = match &manifest {
        Some(m) => {
            commit_all(&mut committers, m.epoch, m).await?;
            recover_publishers(&publishers, &mut committers, m).await?;
            restore_layers(&mut built, m, &store).await?;
            info!(dataflow = %spec.id, epoch = m.epoch, "resuming from checkpoint");
            m.epoch + 1
        }
        None => {
            info!(dataflow = %spec.id, "no checkpoint yet; sources start from their configured positions");
            1
        }
    };

    let control = Arc::new(EpochControl::default());
    // Source threads, joined off the async workers: a source that fails
    // must fail the dataflow at once (its layer only sees its channel end).
    let mut sources: JoinSet<Result<()>> = JoinSet::new();
    let mut handles = Vec::new();
    for source in &spec.sources {
        let out = source_senders
            .remove(&source.id)
            .ok_or_else(|| EngineError::Config(format!("source `{}` feeds no layer", source.id)))?;
        let status = Arc::new(SourceStatus::default());
        if let Some(Replay {
            from: ReplayFrom::Table { location },
            ..
        }) = &source.replay
        {
            let (committed, _) = std_mpsc::channel();
            handles.push(SourceHandle {
                id: source.id.clone(),
                status: status.clone(),
                committed,
            });
            let task = TableSource {
                spec: source.clone(),
                location: location.clone(),
                out,
                control: control.clone(),
                status,
                emitted_epoch: next_epoch - 1,
            };
            sources.spawn(task.run());
            continue;
        }
        let consumer: BaseConsumer = source
            .kafka
            .consumer(&source.group_id)
            .create()
            .map_err(EngineError::kafka("creating the consumer"))?;
        let resume = manifest
            .as_ref()
            .and_then(|m| m.sources.iter().find(|s| s.id == source.id).cloned())
            .unwrap_or_else(|| SourceCheckpoint {
                id: source.id.clone(),
                ..Default::default()
            });
        let (committed_tx, committed_rx) = std_mpsc::channel();
        let task = SourceTask::new(
            source.clone(),
            consumer,
            resume,
            next_epoch - 1,
            spec.bounded,
            out,
            committed_rx,
            control.clone(),
            status.clone(),
        )?;
        handles.push(SourceHandle {
            id: source.id.clone(),
            status,
            committed: committed_tx,
        });
        let thread = std::thread::Builder::new()
            .name(format!("source-{}", source.id))
            .spawn(move || task.run())
            .map_err(|e| EngineError::Config(format!("cannot start a source thread: {e}")))?;
        sources.spawn_blocking(move || {
            thread
                .join()
                .unwrap_or_else(|_| Err(EngineError::Config("a source thread panicked".into())))
        });
    }

    let mut tasks = JoinSet::new();
    let layers = built.len();
    for ((mut layer, rxs), spec_layer) in built.into_iter().zip(receivers).zip(&spec.layers) {
        layer.task.inputs = spec_layer
            .inputs
            .iter()
            .zip(rxs)
            .map(|(input, rx)| InputChannel::new(&input.name, rx))
            .collect();
        layer.task.downstream = downstream.remove(&layer.task.name).unwrap_or_default();
        tasks.spawn(layer.task.run());
    }
    drop(ack_tx);

    let coordinator = Coordinator {
        dataflow: spec.id.clone(),
        store: store.clone(),
        committers,
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
    };
    let mut coordinator = tokio::spawn(coordinator.run());
    // A task's or source's own error is the cause; the coordinator's ("every
    // layer stopped") is often only its consequence, and may come first.
    let mut failure: Option<EngineError> = None;
    let mut coordinator_failure: Option<EngineError> = None;
    let mut report = DataflowReport::default();
    loop {
        tokio::select! {
            done = &mut coordinator => {
                match done {
                    Ok(Ok(r)) => report = r,
                    Ok(Err(e)) => coordinator_failure = Some(e),
                    Err(e) => coordinator_failure = Some(EngineError::Config(format!("the checkpoint coordinator panicked: {e}"))),
                }
                break;
            }
            Some(joined) = tasks.join_next() => {
                let Some(error) = ended_badly(joined, "a layer task") else { continue };
                failure = Some(error);
                coordinator.abort();
                break;
            }
            Some(joined) = sources.join_next() => {
                let Some(error) = ended_badly(joined, "a source thread") else { continue };
                failure = Some(error);
                coordinator.abort();
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
            if let Ok(Err(e)) = joined
                && failure.is_none()
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

/// The error a task or source thread ended with, if it did not end well.
fn ended_badly(
    joined: std::result::Result<Result<()>, tokio::task::JoinError>,
    what: &str,
) -> Option<EngineError> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(EngineError::Config(format!("{what} failed: {e}"))),
    }
}

/// `schema` without the metadata the planner reads (Delta tables keep none).
pub(crate) fn without_metadata(schema: &SchemaRef) -> SchemaRef {
    Arc::new(Schema::new(schema.fields().clone()))
}

/// After a crash between a checkpoint and its Kafka commits, publishes the
/// checkpoint's epoch again, from the tables, where Kafka lacks it.
async fn recover_publishers(
    publishers: &[(PublishCommitter, String)],
    committers: &mut HashMap<String, TableCommitter>,
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

/// Opens a planned layer's tables and makes its task.
async fn open_layer(
    spec: &DataflowSpec,
    layer: PlannedLayer,
    planner: &StreamingPlanner,
    store: &Arc<CheckpointStore>,
    acks: &mpsc::Sender<Ack>,
    first_epoch: u64,
) -> Result<BuiltLayer> {
    let name = layer.spec.name.clone();
    let kind = layer.spec.kind.clone();
    let partitions: Vec<&str> = if layer.query.is_none() {
        vec![EVENT_DATE]
    } else {
        Vec::new()
    };
    let mut committers = Vec::new();
    let main_table = open_or_create(
        &spec.storage.table(&kind, &name)?,
        &without_metadata(&layer.output),
        &partitions,
    )
    .await?;
    let main = match layer.query.as_ref().map(|p| &p.program) {
        Some(Program::Updating { keys, .. }) => {
            MainWriter::Upsert(UpsertWriter::new(&main_table, &name, keys.clone()))
        }
        _ => MainWriter::Append(Box::new(TableWriter::new(&main_table, &name)?)),
    };
    let main_url = main_table.table_url().to_string();
    committers.push(TableCommitter::open(main_table, &name).await?);
    let (mut publish, mut publishers) = (None, Vec::new());
    if let Some(p) = &layer.spec.publish {
        if layer.query.is_none() || layer.updating {
            return Err(config(
                &layer.spec,
                "publish: is for SQL layers whose rows are appended (windowed or row-by-row): an ods layer's topic is already in Kafka, and a GROUP BY without windows updates rows in place".into(),
            ));
        }
        let (w, c) = open_publisher(p, &spec.id, &name, first_epoch).await?;
        publish = Some(w);
        publishers.push((c, main_url));
    }

    // A side table, and its topic if `side_topics:` names one.
    let side = |suffix: &str, schema: SchemaRef| {
        let table_name = format!("{name}{suffix}");
        let location = spec.storage.table(&kind, &table_name);
        let topic = layer
            .spec
            .side_topics
            .iter()
            .find(|(s, _)| s == suffix)
            .map(|(_, p)| p.clone());
        let name = name.clone();
        async move {
            let table = open_or_create(&location?, &without_metadata(&schema), &[]).await?;
            let mut sink = SideSink::table(TableWriter::new(&table, &name)?);
            let mut publisher = None;
            if let Some(p) = topic {
                let (w, c) = open_publisher(&p, &spec.id, &table_name, first_epoch).await?;
                sink.topic = Some(w);
                publisher = Some((c, table.table_url().to_string()));
            }
            let committer = TableCommitter::open(table, &name).await?;
            Ok::<_, EngineError>((sink, committer, publisher))
        }
    };
    let (mut dead_letters, mut future, mut rejected) = (None, None, None);
    let mut late = Vec::new();
    // Undecodable records (a topic input) and rows whose lookup failed
    // (lookup joins) are dead letters.
    let looks_up = layer
        .query
        .as_ref()
        .is_some_and(|q| !q.dimensions.is_empty());
    if layer.source_rows.is_some() || looks_up {
        let (w, c, p) = side(DEAD_LETTER_SUFFIX, dead_letter_schema()).await?;
        dead_letters = Some(w);
        committers.push(c);
        publishers.extend(p);
    }
    if let Some(rows) = &layer.source_rows {
        let (w, c, p) = side(Side::Future.suffix(), side_schema(rows)).await?;
        future = Some(w);
        committers.push(c);
        publishers.extend(p);
    }
    let mut late_sinks = Vec::new();
    let mut late_inputs: Vec<(String, String)> = Vec::new();
    for late in layer.query.iter().flat_map(|q| q.late_inputs.iter()) {
        // A self-join checks its one input once.
        if !late_inputs.iter().any(|(i, _)| *i == late.input) {
            late_inputs.push((late.input.clone(), late.time_column.clone()));
        }
    }
    for (input, time_column) in &late_inputs {
        let schema = &layer
            .inputs
            .iter()
            .find(|(n, _)| n == input)
            .ok_or_else(|| config(&layer.spec, format!("no input `{input}`")))?
            .1;
        // One input: `<layer>_late`; a join's two: `<layer>_late_<input>`.
        let suffix = if late_inputs.len() == 1 {
            Side::Late.suffix().to_string()
        } else {
            format!("{}_{input}", Side::Late.suffix())
        };
        let (w, c, p) = side(&suffix, side_schema(schema)).await?;
        late.push(w);
        committers.push(c);
        publishers.extend(p);
        if schema.index_of(time_column).is_err() {
            return Err(config(
                &layer.spec,
                format!("no column `{time_column}` in `{input}`"),
            ));
        }
        late_sinks.push(LateSink {
            input: input.clone(),
            sink: late.len() - 1,
        });
    }
    if layer.filter.is_some() && layer.spec.keep_rejected {
        let (_, schema) = layer
            .inputs
            .first()
            .ok_or_else(|| config(&layer.spec, "a filter needs an input".into()))?;
        let (w, c, p) = side(Side::Rejected.suffix(), side_schema(schema)).await?;
        rejected = Some(w);
        committers.push(c);
        publishers.extend(p);
    }
    for (suffix, _) in &layer.spec.side_topics {
        if !publishers
            .iter()
            .any(|(c, _)| c.table() == format!("{name}{suffix}"))
        {
            return Err(config(
                &layer.spec,
                format!(
                    "side_topics names a topic for `{name}{suffix}`, but the layer has no such table (late rows need a window or OVER aggregation, and a join's late tables are `_late_<input>`, which take no topic; rejected rows a filter with keep_rejected, future and dead-letter rows a topic input)"
                ),
            ));
        }
    }
    let query = match layer.query {
        Some(p) => Some(
            LayerQuery::new(
                p,
                planner
                    .task_ctx()
                    .map_err(|e| config(&layer.spec, e.to_string()))?,
            )
            .map_err(|e| config(&layer.spec, e.to_string()))?,
        ),
        None => None,
    };
    let task = LayerTask {
        name,
        // Connected once every layer is built.
        inputs: Vec::new(),
        query,
        output_schema: without_metadata(&layer.output),
        filter: layer.filter,
        late: late_sinks,
        delay_us: layer.spec.delay.as_micros() as i64,
        watermark: None,
        sinks: LayerSinks {
            main,
            dead_letters,
            future,
            late,
            rejected,
            publish,
        },
        downstream: Vec::new(),
        store: store.clone(),
        acks: acks.clone(),
        sources: Vec::new(),
        rows_in_epoch: 0,
    };
    Ok(BuiltLayer {
        task,
        committers,
        publishers,
    })
}

/// A table that holds epochs the checkpoint does not know means the
/// checkpoints were removed, or another configuration of the dataflow wrote
/// it: resuming would read its rows again.
fn check_checkpoint_covers_tables(
    spec: &DataflowSpec,
    manifest: Option<&Manifest>,
    committers: &HashMap<String, TableCommitter>,
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
) -> Result<()> {
    for layer in built {
        let Some(saved) = manifest.layers.iter().find(|l| l.name == layer.task.name) else {
            continue;
        };
        layer.task.watermark = saved.watermark;
        if let Some(query) = &mut layer.task.query {
            let state = match &saved.state {
                Some(name) => Some(store.read_state(name).await?),
                None => None,
            };
            query
                .restore(state, saved.watermark)
                .map_err(|e| EngineError::Pipeline {
                    pipeline: layer.task.name.clone(),
                    reason: format!("restoring state: {}", e.find_root()),
                })?;
        }
    }
    Ok(())
}
