//! `strata run --reset-state LAYER --from TIME`: a layer whose new SQL
//! cannot take its checkpointed state (another window size, other keys) is
//! rebuilt from the log, and the run then goes on from the checkpoint.
//!
//! # How
//!
//! The layer and the layers upstream of it run once more, staged (as a
//! backfill runs, `super`), on the layer's inputs replayed from Kafka: from
//! where `TIME` minus the lookback places each partition, up to exactly the
//! offsets of the newest checkpoint, with the file's (new) SQL. Windows the
//! replay closes are its rows; windows still open at the checkpoint's
//! offsets are its state, which is what the live layer would hold had it
//! always run the new SQL. Then, in this order (so that running it again
//! after a crash repairs what a first attempt left):
//! 1. the layer's table: rows from `TIME` on (windows ending after it) are
//!    replaced by the replay's, in one Delta commit (`replaceWhere`);
//! 2. a new checkpoint (the next epoch, create-only) is written: the
//!    newest one's positions and other layers' state as they were, the
//!    layer's state from the replay, and the new SQL's shape.
//!
//! Windows the replay left open whose end the live watermark has passed
//! are emitted by the live run when its watermark next moves.
//!
//! Limits: the replay reads Kafka only (the range must still be held);
//! the layer's side tables, and layers downstream of it, are not rebuilt
//! (backfill them); a checkpoint whose epoch is not in every table yet (a
//! crash) must be recovered by a run of the previous file first.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::info;

use super::kafka_range::millis_text;
use super::range::{TimeRange, lookback_us, replay_span, row_time};
use super::replay_source::{Context, plan_source};
use super::selection::select_layers;
use super::swap::{note, replace_range};
use super::{BackfillRequest, ReplaySource, event_time_of, staging, subset};
use crate::checkpoint::manifest::{Manifest, PendingCommit};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::layer_plan::plan_layers;
use crate::dataflow::plan::DataflowPlan;
use crate::dataflow::replay::{Replay, ReplayFrom, ReplayProgress};
use crate::dataflow::run::without_metadata;
use crate::dataflow::run_dataflow;
use crate::dataflow::spec::DataflowSpec;
use crate::delta::table::{open_existing, open_or_create};
use crate::error::{EngineError, Result};
use crate::evolution::redeploy::shape_of;
use crate::ods::EVENT_DATE;
use crate::shutdown::Shutdown;
use crate::sql::planner::StreamingPlanner;

/// Windows ending after `--from` and before this are replaced: far enough
/// to cover every row a table can hold (2100-01-01).
const FAR_FUTURE_US: i64 = 4_102_444_800_000_000;

/// What to reset.
#[derive(Debug, Clone)]
pub struct ResetRequest {
    /// The layer.
    pub layer: String,
    /// Where its replay starts (event time, µs): its table's rows from
    /// then on are recomputed.
    pub from_us: i64,
    /// Progress counters.
    pub progress: Arc<ReplayProgress>,
}

/// What a reset did.
#[derive(Debug, Clone)]
pub struct ResetReport {
    /// Records replayed.
    pub replayed: u64,
    /// Rows put into the layer's table.
    pub rows: u64,
    /// The checkpoint written.
    pub epoch: u64,
}

/// Rebuilds `request.layer`'s state and recent rows from the log (see the
/// module doc). `spec` is the whole warehouse as the new file plans it.
pub async fn reset_state(
    spec: DataflowSpec,
    request: ResetRequest,
    shutdown: Shutdown,
) -> Result<Option<ResetReport>> {
    let layer = request.layer.clone();
    let refuse = |reason: String| EngineError::Pipeline {
        pipeline: format!("state reset of {layer}"),
        reason: format!("{reason}. Nothing was changed"),
    };
    let live_store = CheckpointStore::open(&spec.storage, &spec.id)?;
    let Some(live) = live_store.latest().await? else {
        return Err(refuse(
            "the warehouse has no checkpoint yet: there is no state to reset (run without --reset-state)"
                .into(),
        ));
    };
    let Some(saved) = live.layers.iter().find(|l| l.name == layer) else {
        return Err(refuse(format!(
            "the newest checkpoint (epoch {}) has no layer `{layer}`: it starts empty anyway (run without --reset-state)",
            live.epoch
        )));
    };
    let watermark = saved.watermark;
    check_committed(&spec, &live).await.map_err(refuse)?;

    let selection = select_layers(&spec.layers, &layer, false).map_err(refuse)?;
    let _lock = staging::lock_layer(&spec.storage, &layer).map_err(refuse)?;
    let mut staged = subset(&spec, &selection);
    let planner = StreamingPlanner::new(spec.udfs.clone());
    let planned = plan_layers(&staged, &planner).await?;
    let target = planned
        .iter()
        .find(|p| p.spec.name == layer)
        .ok_or_else(|| refuse(format!("layer `{layer}` was not planned")))?;
    let time = row_time(target, event_time_of(&staged, target).as_deref())
        .map_err(|why| refuse(format!("`{layer}` cannot be reset by time: {why}")))?;
    let mut lookback = 0;
    for p in &planned {
        lookback +=
            lookback_us(p).map_err(|why| refuse(format!("layer `{}`: {why}", p.spec.name)))?;
    }
    let range = TimeRange {
        from_us: request.from_us,
        to_us: watermark
            .unwrap_or(request.from_us)
            .max(request.from_us + 1),
    };
    let span = replay_span(range, lookback);
    let backfill = BackfillRequest {
        layer: layer.clone(),
        range,
        cascade: false,
        lookback: None,
        source: ReplaySource::Kafka,
        from_offsets: Vec::new(),
        allow_empty: true,
        progress: request.progress.clone(),
    };
    let cx = Context {
        spec: &spec,
        request: &backfill,
        span,
        layer_delays: staged.layers.iter().map(|l| l.delay).sum(),
        to_the_end: true,
        live: Some(&live),
        targets: std::slice::from_ref(&layer),
    };
    for source in &mut staged.sources {
        let plan = plan_source(&cx, source).await?;
        let ReplayFrom::Kafka { ranges } = plan.from else {
            return Err(refuse(format!(
                "source `{}` can only be replayed from its ODS table ({}); a state reset replays Kafka up to the checkpoint's offsets",
                source.id, plan.why
            )));
        };
        let offsets = live
            .sources
            .iter()
            .find(|s| s.id == source.id)
            .map(|s| s.offsets.clone())
            .unwrap_or_default();
        // Up to exactly where the checkpoint is: what the layer had read.
        let ranges = ranges
            .into_iter()
            .map(|(tp, first, _)| {
                let end = offsets.get(&tp.topic, tp.partition).unwrap_or(first);
                (tp, first.min(end), end)
            })
            .collect();
        info!(source = %source.id, why = %plan.why, "state reset: replaying Kafka up to the checkpoint's offsets");
        source.replay = Some(Replay {
            start_us: span.0,
            end_us: i64::MAX,
            from: ReplayFrom::Kafka { ranges },
            progress: request.progress.clone(),
            close_at_end: false,
        });
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let staging_dir = format!("{}/{layer}-reset-{}", staging::DIR, &run_id[..12]);
    staging::remove_abandoned(&spec.storage, &layer);
    staged.storage = spec.storage.child(&staging_dir)?;
    staged.id = format!("{}.reset", spec.id);
    staged.bounded = true;
    staged.version = None;
    info!(layer = %layer, from = %millis_text(request.from_us / 1000), replay_from = %millis_text(span.0 / 1000), checkpoint = live.epoch, "state reset: replaying the layer from the log into staging");
    run_dataflow(staged.clone(), shutdown.clone()).await?;
    if shutdown.is_triggered() || !request.progress.finished.load(Ordering::SeqCst) {
        staging::remove_staging(&staged.storage).await;
        return Ok(None);
    }
    let replayed = request.progress.read.load(Ordering::Relaxed);
    let staged_store = CheckpointStore::open(&staged.storage, &staged.id)?;
    let state = match staged_store
        .latest()
        .await?
        .and_then(|m| m.layers.into_iter().find(|l| l.name == layer))
    {
        Some(saved) => staged_store.read_layer_state(&saved).await?,
        None => None,
    };

    // 1. The table's rows from --from on.
    let kind = &target.spec.kind;
    let live_table = spec.storage.table(kind, &layer)?;
    let partitions: Vec<&str> = if target.query.is_none() {
        vec![EVENT_DATE]
    } else {
        Vec::new()
    };
    open_or_create(&live_table, &without_metadata(&target.output), &partitions).await?;
    let swap_range = TimeRange {
        from_us: request.from_us,
        to_us: FAR_FUTURE_US,
    };
    let swapped = replace_range(
        &staged.storage.table(kind, &layer)?,
        &live_table,
        time.predicate(swap_range),
        note(
            &layer,
            &millis_text(request.from_us / 1000),
            "end (state reset)",
            "kafka, up to the checkpoint's offsets",
        ),
    )
    .await;
    let swapped = match swapped {
        Ok(s) => s,
        Err(e) => {
            staging::remove_staging(&staged.storage).await;
            return Err(e);
        }
    };

    // 2. The checkpoint.
    let plan = DataflowPlan::new(&spec, &planner).await?;
    let shape = plan.layers.iter().find(|l| l.name() == layer).map(shape_of);
    let epoch = live.epoch + 1;
    let mut next = live.clone();
    next.epoch = epoch;
    next.created_at_ms = chrono::Utc::now().timestamp_millis();
    next.sinks = live.sinks.iter().map(nothing_pending).collect();
    for l in &mut next.layers {
        l.published.clear();
        let batch = if l.name == layer {
            l.shape = shape.clone();
            state.clone()
        } else {
            live_store.read_layer_state(l).await?
        };
        l.state_slices.clear();
        l.state = match batch {
            Some(b) => Some(live_store.write_state(epoch, &l.name, &b).await?.0),
            None => None,
        };
    }
    live_store.write(&next).await?;
    staging::remove_staging(&staged.storage).await;
    info!(layer = %layer, epoch, replayed, rows = swapped.rows, version = swapped.version, "state reset: the layer's table and state rebuilt from the log; the run goes on from checkpoint {epoch}");
    Ok(Some(ResetReport {
        replayed,
        rows: swapped.rows,
        epoch,
    }))
}

/// The checkpoint's pending work must be in its tables: the new
/// checkpoint names none (its epoch adds nothing).
async fn check_committed(spec: &DataflowSpec, live: &Manifest) -> std::result::Result<(), String> {
    for sink in live.sinks.iter().filter(|s| !s.is_empty()) {
        let url = url::Url::parse(&sink.table).map_err(|e| e.to_string())?;
        let location = crate::storage::TableLocation {
            url,
            options: spec.storage.options().clone(),
        };
        let table = open_existing(&location).await.map_err(|e| e.to_string())?;
        let held = table
            .snapshot()
            .map_err(|e| e.to_string())?
            .transaction_version(table.log_store().as_ref(), &sink.app_id)
            .await
            .map_err(|e| e.to_string())?
            .and_then(|v| u64::try_from(v).ok());
        if held.is_none_or(|h| h < live.epoch) {
            return Err(format!(
                "checkpoint {} is not committed to table {} yet (the last run crashed): run the previous version of the file once and stop it (it recovers the epoch), then reset",
                live.epoch, sink.table
            ));
        }
    }
    Ok(())
}

/// `sink` with nothing left to commit.
fn nothing_pending(sink: &PendingCommit) -> PendingCommit {
    PendingCommit {
        table: sink.table.clone(),
        app_id: sink.app_id.clone(),
        adds: Vec::new(),
        rows: 0,
        upsert: sink
            .upsert
            .as_ref()
            .map(|u| crate::checkpoint::manifest::Upsert {
                keys: u.keys.clone(),
                staging: None,
            }),
    }
}
