//! Replay-based backfill (Kappa): recompute a time range of a layer from
//! the log, through the layer's current SQL, and swap it into the live
//! table in one atomic commit while the live pipeline keeps running.
//!
//! # Why it is shaped this way
//!
//! A backfill is the dataflow itself, run a second time on a bounded slice
//! of the past: the same planner, operators, lookups and watermarks, so the
//! rows it computes are the rows the live pipeline would compute with the
//! same SQL. Three things differ:
//!
//! - **Sources replay** a range ([`crate::dataflow::replay`]): from Kafka
//!   when retention still holds it, else from the ODS Delta table, which
//!   keeps every decoded record with its Kafka position. They end with a
//!   watermark that closes every window.
//! - **Everything is staged**: the run writes its tables and checkpoints
//!   under `<root>/_strata/backfill/<layer>-<run>/`, never into the live
//!   tables. A kill at any point, or Ctrl-C, leaves the live table as it
//!   was; a re-run starts afresh (and removes what a killed run left).
//! - **The swap** (`swap`) is the one write to the live table: a Delta
//!   `replaceWhere` of exactly the range, so a reader sees all-old or
//!   all-new rows, and re-running the same backfill writes the same rows.
//!
//! Layers upstream of the target run too (their rows feed the target) but
//! only the targets' tables are replaced. Nothing is published to Kafka: a
//! topic is an append-only log, and the live pipeline already published.

mod kafka_range;
mod range;
mod selection;
mod staging;
mod swap;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use datafusion::functions_aggregate::expr_fn::min;
use datafusion::logical_expr::col;
use tracing::{info, warn};

pub use kafka_range::{KafkaRange, resolve as resolve_kafka_range};
pub use range::{RowTime, TimeRange, log_span_ms, lookback_us, replay_span, row_time};
pub use selection::{Selection, select_layers};
pub use swap::{Swapped, replace_range};

use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::layer_plan::{PlannedLayer, plan_layers};
use crate::dataflow::replay::{Replay, ReplayFrom, ReplayProgress};
use crate::dataflow::run::without_metadata;
use crate::dataflow::run_dataflow;
use crate::dataflow::spec::{DataflowSpec, InputFrom, SourceSpec};
use crate::dataflow::table_source::ods_range;
use crate::delta::table::open_or_create;
use crate::error::{EngineError, Result};
use crate::failpoint::{self, Point};
use crate::kafka::offsets::TopicPartition;
use crate::ods::{EVENT_DATE, KAFKA_PARTITION, KAFKA_TIMESTAMP, KAFKA_TOPIC};
use crate::shutdown::Shutdown;
use crate::sql::planner::StreamingPlanner;
use crate::storage::TableLocation;
use kafka_range::millis_text;

/// Slack on both sides of the Kafka time span a replay reads, beyond the
/// watermark delays and the future skew.
const LOG_SLACK: Duration = Duration::from_secs(60);

/// Where a replay reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplaySource {
    /// Kafka while retention holds the range, else the ODS table.
    #[default]
    Auto,
    /// Kafka only (an error when it no longer holds the range).
    Kafka,
    /// The ODS tables only.
    Ods,
}

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillRequest {
    /// The layer whose range is replaced.
    pub layer: String,
    /// The range.
    pub range: TimeRange,
    /// Also replace the layers downstream of it.
    pub cascade: bool,
    /// Event time read before the range (default: the windows' sizes).
    pub lookback: Option<Duration>,
    /// Where to read.
    pub source: ReplaySource,
    /// Start offsets instead of offsets-for-times (Kafka replays).
    pub from_offsets: Vec<(TopicPartition, i64)>,
    /// Progress counters, read by the caller.
    pub progress: Arc<ReplayProgress>,
}

/// What a finished backfill did.
#[derive(Debug, Clone, Default)]
pub struct BackfillReport {
    /// Per source: where it was replayed from, and why.
    pub sources: Vec<(String, String)>,
    /// Per replaced table: its name and the commit.
    pub tables: Vec<(String, Swapped)>,
    /// Records (or ODS rows) read.
    pub replayed: u64,
}

/// How a backfill ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every range was replaced.
    Done(BackfillReport),
    /// Stopped before the swap: no live table was changed.
    Interrupted,
}

/// Runs a backfill of `spec` (the whole warehouse, as planned from its
/// file) until done or `shutdown`.
pub async fn run_backfill(
    spec: DataflowSpec,
    request: BackfillRequest,
    shutdown: Shutdown,
) -> Result<Outcome> {
    let refuse = |reason: String| EngineError::Pipeline {
        pipeline: format!("backfill of {}", request.layer),
        reason,
    };
    let range = request.range;
    if range.from_us >= range.to_us {
        return Err(refuse(format!(
            "--from {} is not before --to {}",
            millis_text(range.from_us / 1000),
            millis_text(range.to_us / 1000)
        )));
    }
    let selection = select_layers(&spec.layers, &request.layer, request.cascade).map_err(refuse)?;
    // Held until the run ends: a second backfill of the layer would remove
    // this one's staging as abandoned.
    let _lock = staging::lock_layer(&spec.storage, &request.layer).map_err(refuse)?;
    let mut staged = subset(&spec, &selection);
    let planner = StreamingPlanner::new(spec.udfs.clone());
    let planned = plan_layers(&staged, &planner).await?;
    let mut targets: Vec<(&PlannedLayer, RowTime)> = Vec::new();
    for name in &selection.targets {
        let layer = planned
            .iter()
            .find(|p| p.spec.name == *name)
            .ok_or_else(|| refuse(format!("layer `{name}` was not planned")))?;
        let event_time = event_time_of(&staged, layer);
        let time = row_time(layer, event_time.as_deref()).map_err(|why| {
            refuse(format!(
                "`{name}` cannot be backfilled by time range: {why}"
            ))
        })?;
        targets.push((layer, time));
    }
    let lookback = match request.lookback {
        Some(l) => l.as_micros() as i64,
        None => {
            let mut total = 0;
            for layer in &planned {
                total += lookback_us(layer).map_err(|why| {
                    refuse(format!(
                        "layer `{}`: {why}; give --lookback with how much event time before --from its first rows need",
                        layer.spec.name
                    ))
                })?;
            }
            total
        }
    };
    check_live_closed(&spec, &selection.targets, range).await?;
    let span = replay_span(range, lookback);
    info!(
        layer = %request.layer,
        targets = ?selection.targets,
        runs = ?selection.run,
        from = %millis_text(range.from_us / 1000),
        to = %millis_text(range.to_us / 1000),
        replay_from = %millis_text(span.0 / 1000),
        lookback_s = lookback / 1_000_000,
        "backfill planned"
    );

    let mut report = BackfillReport::default();
    let layer_delays: Duration = staged.layers.iter().map(|l| l.delay).sum();
    // A row-by-row layer keeps a straggler of the range however late it
    // arrived, so its replay reads the log to its end; a windowed one had
    // routed such a record to its late table.
    let to_the_end = targets.iter().any(|(_, t)| matches!(t, RowTime::Event(_)));
    for source in &mut staged.sources {
        let (from, why) = replay_from(
            &spec,
            source,
            &selection,
            span,
            layer_delays,
            to_the_end,
            &request,
        )
        .await?;
        info!(source = %source.id, from = from_label(&from), why = %why, "replay source");
        report
            .sources
            .push((source.id.clone(), format!("{}: {why}", from_label(&from))));
        source.replay = Some(Replay {
            start_us: span.0,
            end_us: span.1,
            from,
            progress: request.progress.clone(),
        });
    }

    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let staging_dir = format!("{}/{}-{}", staging::DIR, request.layer, &run_id[..12]);
    staging::remove_abandoned(&spec.storage, &request.layer);
    staged.storage = spec.storage.child(&staging_dir)?;
    staged.id = format!("{}.backfill", spec.id);
    staged.bounded = true;
    info!(staging = %staged.storage.url(), "replaying into staging tables");
    run_dataflow(staged.clone(), shutdown.clone()).await?;
    if shutdown.is_triggered() || !request.progress.finished.load(Ordering::SeqCst) {
        warn!(staging = %staged.storage.url(), "backfill stopped before its swap: no live table was changed");
        return Ok(Outcome::Interrupted);
    }
    report.replayed = request.progress.read.load(Ordering::Relaxed);

    let from_text = millis_text(range.from_us / 1000);
    let to_text = millis_text(range.to_us / 1000);
    let sources_text: Vec<String> = report
        .sources
        .iter()
        .map(|(s, f)| format!("{s} <- {f}"))
        .collect();
    for (n, (layer, time)) in targets.iter().enumerate() {
        failpoint::hit(Point::BeforeSwap, n as u64 + 1);
        let name = &layer.spec.name;
        let live = spec.storage.table(&layer.spec.kind, name)?;
        let partitions: Vec<&str> = if layer.query.is_none() {
            vec![EVENT_DATE]
        } else {
            Vec::new()
        };
        // A layer never run live has no table yet.
        open_or_create(&live, &without_metadata(&layer.output), &partitions).await?;
        let swapped = replace_range(
            &staged.storage.table(&layer.spec.kind, name)?,
            &live,
            time.predicate(range),
            swap::note(name, &from_text, &to_text, &sources_text.join("; ")),
        )
        .await?;
        info!(table = %name, version = swapped.version, rows = swapped.rows, "range replaced");
        report.tables.push((name.clone(), swapped));
    }
    staging::remove_staging(&staged.storage);
    Ok(Outcome::Done(report))
}

/// The dataflow restricted to the selection, publishing nothing.
fn subset(spec: &DataflowSpec, selection: &Selection) -> DataflowSpec {
    let mut out = spec.clone();
    out.layers.retain(|l| selection.run.contains(&l.name));
    for layer in &mut out.layers {
        layer.publish = None;
        layer.side_topics.clear();
    }
    let used: Vec<String> = out
        .layers
        .iter()
        .flat_map(|l| l.inputs.iter())
        .filter_map(|i| match &i.from {
            InputFrom::Source(id) => Some(id.clone()),
            InputFrom::Layer(_) => None,
        })
        .collect();
    out.sources.retain(|s| used.contains(&s.id));
    out
}

/// The event-time field of an ODS layer's source.
fn event_time_of(spec: &DataflowSpec, layer: &PlannedLayer) -> Option<String> {
    layer.spec.inputs.iter().find_map(|i| match &i.from {
        InputFrom::Source(id) => spec
            .sources
            .iter()
            .find(|s| s.id == *id)
            .and_then(|s| s.schema.event_time.clone()),
        InputFrom::Layer(_) => None,
    })
}

/// How far the live pipeline has closed `layer` (its watermark at the
/// newest checkpoint, microseconds): the default end of a backfill.
pub async fn live_watermark(spec: &DataflowSpec, layer: &str) -> Result<Option<i64>> {
    let store = CheckpointStore::open(&spec.storage, &spec.id)?;
    Ok(store
        .latest()
        .await?
        .and_then(|m| m.layers.into_iter().find(|l| l.name == layer))
        .and_then(|l| l.watermark))
}

/// A live layer that has not closed the whole range yet would write rows
/// of the range again, from the old query, after the swap.
async fn check_live_closed(
    spec: &DataflowSpec,
    targets: &[String],
    range: TimeRange,
) -> Result<()> {
    let store = CheckpointStore::open(&spec.storage, &spec.id)?;
    let Some(manifest) = store.latest().await? else {
        return Ok(());
    };
    for name in targets {
        let Some(live) = manifest.layers.iter().find(|l| l.name == *name) else {
            continue;
        };
        let closed = live.watermark.unwrap_or(i64::MIN);
        if closed < range.to_us {
            return Err(EngineError::Pipeline {
                pipeline: format!("backfill of {name}"),
                reason: format!(
                    "the live pipeline has closed `{name}` only up to {} (its watermark at checkpoint {}), before --to {}: it would still write rows of the range with the old query. Give --to {} or earlier, or wait",
                    if closed == i64::MIN {
                        "nothing".to_string()
                    } else {
                        millis_text(closed / 1000)
                    },
                    manifest.epoch,
                    millis_text(range.to_us / 1000),
                    if closed == i64::MIN {
                        "a time it has closed".to_string()
                    } else {
                        millis_text(closed / 1000)
                    },
                ),
            });
        }
    }
    Ok(())
}

/// Where `source` is replayed from, and why.
async fn replay_from(
    spec: &DataflowSpec,
    source: &SourceSpec,
    selection: &Selection,
    span: (i64, i64),
    layer_delays: Duration,
    to_the_end: bool,
    request: &BackfillRequest,
) -> Result<(ReplayFrom, String)> {
    let refuse = |reason: String| EngineError::Pipeline {
        pipeline: format!("backfill of {}", request.layer),
        reason,
    };
    // The ODS table of the layer this source feeds, unless that layer is
    // being replaced itself.
    let ods: Option<TableLocation> = spec
        .layers
        .iter()
        .find(|l| l.name == source.layer && l.sql.is_none() && !selection.targets.contains(&l.name))
        .map(|l| spec.storage.table(&l.kind, &l.name))
        .transpose()?;
    let time = source.schema.event_time.clone().unwrap_or_default();
    if request.source == ReplaySource::Ods {
        let Some(location) = ods else {
            return Err(refuse(format!(
                "source `{}` has no ODS table to replay from (it feeds `{}`, which is not an ODS layer or is being backfilled)",
                source.id, source.layer
            )));
        };
        return Ok((
            ReplayFrom::Table { location },
            "asked for (--replay-from ods)".into(),
        ));
    }
    let late = source.watermark.delay + layer_delays + LOG_SLACK;
    let early = source.future_skew.unwrap_or_default() + LOG_SLACK;
    let mut log_span = log_span_ms(span, late.as_micros() as i64, early.as_micros() as i64);
    if to_the_end {
        log_span.1 = i64::MAX;
    }
    let needed = match &ods {
        Some(location) => oldest_logged(location, &time, span).await?,
        None => None,
    };
    let kafka = source.kafka.clone();
    let topics = source.topics.clone();
    let resolved = tokio::task::spawn_blocking(move || {
        kafka_range::resolve(&kafka, &topics, log_span, needed.as_ref())
    })
    .await
    .map_err(|e| refuse(format!("the Kafka look-up failed: {e}")))??;
    match resolved {
        KafkaRange::Held(mut ranges) => {
            for (tp, offset) in &request.from_offsets {
                match ranges.iter_mut().find(|(t, _, _)| t == tp) {
                    Some(r) => r.1 = (*offset).min(r.2),
                    None if source.topics.contains(&tp.topic) => {
                        return Err(refuse(format!(
                            "--from-offsets names {}/{}, which does not exist",
                            tp.topic, tp.partition
                        )));
                    }
                    None => {}
                }
            }
            let records: i64 = ranges.iter().map(|(_, a, b)| b - a).sum();
            Ok((
                ReplayFrom::Kafka { ranges },
                format!(
                    "Kafka holds the range (records logged {} .. {}: {records} records)",
                    millis_text(log_span.0),
                    if log_span.1 == i64::MAX {
                        "the partition's end".to_string()
                    } else {
                        millis_text(log_span.1)
                    }
                ),
            ))
        }
        KafkaRange::Gone(why) if request.source == ReplaySource::Kafka => Err(refuse(format!(
            "Kafka no longer holds the range of source `{}`: {why}; replay from the ODS table (--replay-from ods) instead",
            source.id
        ))),
        KafkaRange::Gone(why) => match ods {
            Some(location) => Ok((
                ReplayFrom::Table { location },
                format!(
                    "Kafka no longer holds the range ({why}); the ODS table keeps every record"
                ),
            )),
            None => Err(refuse(format!(
                "Kafka no longer holds the range of source `{}` ({why}), and it feeds no ODS layer whose table could replay it",
                source.id
            ))),
        },
    }
}

/// The oldest Kafka timestamp among the ODS rows of `span`, per partition:
/// what Kafka must still hold to replay the span. `None` when the table
/// does not exist yet.
async fn oldest_logged(
    location: &TableLocation,
    time: &str,
    span: (i64, i64),
) -> Result<Option<HashMap<TopicPartition, i64>>> {
    let url = location.url.to_string();
    let frame = match ods_range(location, time, span.0, span.1).await {
        Ok(f) => f,
        Err(EngineError::Delta { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let batches = frame
        .aggregate(
            vec![col(KAFKA_TOPIC), col(KAFKA_PARTITION)],
            vec![min(col(KAFKA_TIMESTAMP)).alias("oldest")],
        )
        .map_err(EngineError::datafusion(&url, "finding the range's records"))?
        .collect()
        .await
        .map_err(EngineError::datafusion(&url, "finding the range's records"))?;
    let mut oldest = HashMap::new();
    for batch in batches {
        let column = |i: usize, to: &DataType| {
            cast(batch.column(i), to)
                .map_err(EngineError::arrow("reading the range's Kafka positions"))
        };
        let (topics, partitions, times) = (
            column(0, &DataType::Utf8)?,
            column(1, &DataType::Int32)?,
            column(2, &DataType::Int64)?,
        );
        let (Some(topics), Some(partitions), Some(times)) = (
            topics.as_string_opt::<i32>(),
            partitions.as_primitive_opt::<Int32Type>(),
            times.as_primitive_opt::<Int64Type>(),
        ) else {
            return Err(EngineError::Config(format!(
                "{url}: the ODS table's Kafka columns have unexpected types"
            )));
        };
        for i in 0..batch.num_rows() {
            if times.is_null(i) || topics.is_null(i) || partitions.is_null(i) {
                continue;
            }
            oldest.insert(
                TopicPartition {
                    topic: topics.value(i).to_string(),
                    partition: partitions.value(i),
                },
                times.value(i).div_euclid(1000),
            );
        }
    }
    Ok(Some(oldest))
}

fn from_label(from: &ReplayFrom) -> &'static str {
    match from {
        ReplayFrom::Kafka { .. } => "kafka",
        ReplayFrom::Table { .. } => "ods table",
    }
}
