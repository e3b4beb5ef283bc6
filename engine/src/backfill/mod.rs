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

mod coverage;
mod kafka_range;
mod ods_positions;
mod range;
mod replay_source;
mod reset;
mod selection;
mod staging;
mod swap;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use datafusion::logical_expr::Expr;
use tracing::{info, warn};

pub use coverage::{Evidence, covered};
pub use kafka_range::{KafkaRange, PartitionRange, Placement, resolve as resolve_kafka_range};
pub use ods_positions::{HeldRecords, held_records};
pub use range::{RowTime, TimeRange, log_span_ms, lookback_us, replay_span, row_time};
pub use reset::{ResetReport, ResetRequest, reset_state};
pub use selection::{Selection, select_layers};
pub use staging::running;
pub use swap::{Swapped, replace_range, staged_rows};

use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::layer_plan::{PlannedLayer, plan_layers};
use crate::dataflow::replay::{Replay, ReplayFrom, ReplayProgress};
use crate::dataflow::run::without_metadata;
use crate::dataflow::run_dataflow;
use crate::dataflow::spec::{DataflowSpec, InputFrom};
use crate::delta::table::open_or_create;
use crate::error::{EngineError, Result};
use crate::failpoint::{self, Point};
use crate::kafka::offsets::TopicPartition;
use crate::ods::EVENT_DATE;
use crate::shutdown::Shutdown;
use crate::sql::planner::StreamingPlanner;
use crate::storage::TableLocation;
use kafka_range::millis_text;
use replay_source::{Context, SourcePlan, from_label, plan_source};

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
    /// Start offsets instead of the ones found (Kafka replays).
    pub from_offsets: Vec<(TopicPartition, i64)>,
    /// Swap in an empty result (otherwise refused: an empty replay is
    /// far likelier a replay that missed its records than an empty range).
    pub allow_empty: bool,
    /// Progress counters, read by the caller.
    pub progress: Arc<ReplayProgress>,
}

/// What a finished backfill did.
#[derive(Debug, Clone, Default)]
pub struct BackfillReport {
    /// Per source: where it was replayed from, and why.
    pub sources: Vec<(String, String)>,
    /// Per source: what its replay was shown to have covered.
    pub coverage: Vec<(String, String)>,
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
    let live = CheckpointStore::open(&spec.storage, &spec.id)?
        .latest()
        .await?;
    check_live_closed(live.as_ref(), &selection.targets, range)?;
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
    // A row-by-row layer keeps a straggler of the range however late it
    // arrived, so its replay reads the log to its end; a windowed one had
    // routed such a record to its late table.
    let cx = Context {
        spec: &spec,
        request: &request,
        span,
        layer_delays: staged.layers.iter().map(|l| l.delay).sum(),
        to_the_end: targets.iter().any(|(_, t)| matches!(t, RowTime::Event(_))),
        live: live.as_ref(),
        targets: &selection.targets,
    };
    let mut plans: Vec<(String, SourcePlan)> = Vec::new();
    for source in &mut staged.sources {
        let plan = plan_source(&cx, source).await?;
        info!(source = %source.id, from = from_label(&plan.from), why = %plan.why, "replay source");
        report.sources.push((
            source.id.clone(),
            format!("{}: {}", from_label(&plan.from), plan.why),
        ));
        source.replay = Some(Replay {
            start_us: span.0,
            end_us: span.1,
            from: plan.from.clone(),
            progress: request.progress.clone(),
            close_at_end: true,
        });
        plans.push((source.id.clone(), plan));
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

    // Nothing is swapped before the replay is shown to have covered the
    // range, and every target to have rows for it.
    let refused = |reason: String| EngineError::Pipeline {
        pipeline: format!("backfill of {}", request.layer),
        reason: format!("{reason}. Nothing was swapped: every live table is as it was"),
    };
    let proven: Result<()> = async {
        for (id, plan) in &plans {
            let reads = request.progress.reads(id);
            let shown = match &plan.from {
                ReplayFrom::Table { .. } => format!(
                    "replayed the ODS table itself ({} rows of the replay span)",
                    reads.partitions.values().map(|r| r.kept.len()).sum::<u64>()
                ),
                ReplayFrom::Kafka { .. } => covered(&Evidence {
                    held: plan.held.as_ref(),
                    planned: &plan.planned,
                    reads: &reads,
                    span,
                    to_us: range.to_us,
                })
                .map_err(|gaps| {
                    let instead = match (plan.ods_replayable, request.from_offsets.is_empty()) {
                        (true, true) => "Replay from the ODS table instead (--replay-from ods)",
                        (true, false) => "Replay from the ODS table instead (--replay-from ods), or give --from-offsets at or before the range's first records",
                        (false, _) => "Give --from-offsets at or before the range's first records in each partition (the source feeds no ODS table to replay from)",
                    };
                    refused(format!(
                        "the Kafka replay of source `{id}` did not cover the range: {}. {instead}",
                        gaps.join("; "),
                    ))
                })?,
            };
            info!(source = %id, coverage = %shown, "replay covered the range");
            report.coverage.push((id.clone(), shown));
        }
        for (layer, time) in &targets {
            let staged_table = staged.storage.table(&layer.spec.kind, &layer.spec.name)?;
            let rows = staged_rows(&staged_table, time.predicate(range)).await?;
            if rows == 0 && !request.allow_empty {
                let live_table = spec.storage.table(&layer.spec.kind, &layer.spec.name)?;
                return Err(refused(format!(
                    "the replay computed no row of `{}` for the range {} to {} ({} records read{}): {}",
                    layer.spec.name,
                    millis_text(range.from_us / 1000),
                    millis_text(range.to_us / 1000),
                    report.replayed,
                    match time {
                        RowTime::WindowEnd(_) => {
                            "; a window's row counts when its end is in the range"
                        }
                        RowTime::Event(_) => "",
                    },
                    empty_result_refusal(live_rows(&live_table, time.predicate(range)).await),
                )));
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = proven {
        staging::remove_staging(&staged.storage).await;
        return Err(e);
    }

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
    staging::remove_staging(&staged.storage).await;
    Ok(Outcome::Done(report))
}

/// How many rows of the live table `live` match `range`; `None` when it
/// cannot be read (a layer never run live has no table).
async fn live_rows(live: &TableLocation, range: Expr) -> Option<u64> {
    match staged_rows(live, range).await {
        Ok(n) => Some(n),
        Err(e) => {
            info!(table = %live.url, error = %e, "could not count the live table's rows of the range");
            None
        }
    }
}

/// What refusing an empty replay result protects, by the rows the live
/// table has in the range (`None`: unknown). With none there either, the
/// range itself is the likelier mistake, not the replay.
fn empty_result_refusal(live_rows: Option<u64>) -> String {
    let allow = "If the range is meant to be empty, run again with --allow-empty";
    match live_rows {
        Some(0) => format!(
            "the live table has no row there either, so neither the live pipeline nor the replay found anything in the range: check --from and --to (for a windowed layer, a --to before the end of the first window holding records leaves the range empty). {allow}"
        ),
        Some(n) => format!("a swap would delete the {n} rows the live table has there. {allow}"),
        None => format!("a swap would delete every row the live table has there. {allow}"),
    }
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
fn check_live_closed(
    manifest: Option<&Manifest>,
    targets: &[String],
    range: TimeRange,
) -> Result<()> {
    let Some(manifest) = manifest else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_result_over_an_empty_live_range_points_at_the_range() {
        let text = empty_result_refusal(Some(0));
        assert!(text.contains("no row there either"), "{text}");
        assert!(text.contains("check --from and --to"), "{text}");
        assert!(text.contains("--allow-empty"), "{text}");
        assert!(!text.contains("would delete"), "{text}");
    }

    #[test]
    fn an_empty_result_over_live_rows_says_how_many_a_swap_would_delete() {
        let text = empty_result_refusal(Some(12));
        assert!(text.contains("would delete the 12 rows"), "{text}");
        assert!(text.contains("--allow-empty"), "{text}");
        let unknown = empty_result_refusal(None);
        assert!(unknown.contains("would delete every row"), "{unknown}");
    }
}
