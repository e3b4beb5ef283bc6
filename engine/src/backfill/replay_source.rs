//! Where each source of a backfill is replayed from, and why.
//!
//! Kafka when it still holds the range's records, else the ODS table. In
//! Kafka, the range is placed by its records' positions, which the ODS
//! table keeps ([`super::ods_positions`]); only a source with no ODS table
//! (or none of whose records are in the range) falls back to
//! offsets-for-times, with the Kafka time span widened by the lag between
//! Kafka and event time that the live pipeline last saw. The reason for
//! each choice goes into the log and the summary.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tracing::info;

use super::kafka_range::{self, KafkaRange, PartitionRange, Placement, millis_text};
use super::ods_positions::{HeldRecords, held_records};
use super::range::log_span_ms;
use super::{BackfillRequest, ReplaySource};
use crate::checkpoint::manifest::Manifest;
use crate::dataflow::replay::ReplayFrom;
use crate::dataflow::spec::{DataflowSpec, SourceSpec};
use crate::error::{EngineError, Result};
use crate::kafka::offsets::TopicPartition;
use crate::storage::TableLocation;

/// Slack on both sides of a Kafka time span placed by offsets-for-times,
/// beyond the watermark delays, the future skew and the observed lag.
const LOG_SLACK: Duration = Duration::from_secs(60);

/// How one source is replayed.
#[derive(Debug, Clone)]
pub(crate) struct SourcePlan {
    /// Where from.
    pub from: ReplayFrom,
    /// Why, for the log and the summary.
    pub why: String,
    /// What the ODS table holds of the range, when it was read.
    pub held: Option<BTreeMap<TopicPartition, HeldRecords>>,
    /// A Kafka replay's partitions.
    pub planned: Vec<PartitionRange>,
    /// The source's ODS table could replay the range instead.
    pub ods_replayable: bool,
}

/// What a source's planning needs to know of the backfill.
pub(crate) struct Context<'a> {
    pub spec: &'a DataflowSpec,
    pub request: &'a BackfillRequest,
    /// The replay's event times, µs.
    pub span: (i64, i64),
    /// The sum of the delays of the layers run.
    pub layer_delays: Duration,
    /// Read every partition to its end (row-by-row targets keep
    /// stragglers however late).
    pub to_the_end: bool,
    /// The live pipeline's newest checkpoint.
    pub live: Option<&'a Manifest>,
    /// The layers whose tables are replaced.
    pub targets: &'a [String],
}

/// Plans the replay of `source`.
pub(crate) async fn plan_source(cx: &Context<'_>, source: &SourceSpec) -> Result<SourcePlan> {
    let request = cx.request;
    let refuse = |reason: String| EngineError::Pipeline {
        pipeline: format!("backfill of {}", request.layer),
        reason,
    };
    // The ODS table of the layer this source feeds: it replays the range
    // when Kafka cannot, unless it is being replaced itself; and it knows
    // where the range's records are in Kafka either way.
    let ods_layer = cx
        .spec
        .layers
        .iter()
        .find(|l| l.name == source.layer && l.sql.is_none());
    let ods: Option<TableLocation> = ods_layer
        .map(|l| cx.spec.storage.table(&l.kind, &l.name))
        .transpose()?;
    let replayable = ods
        .clone()
        .filter(|_| ods_layer.is_some_and(|l| !cx.targets.contains(&l.name)));
    let time = source.schema.event_time.clone().unwrap_or_default();
    if request.source == ReplaySource::Ods {
        let Some(location) = replayable else {
            return Err(refuse(format!(
                "source `{}` has no ODS table to replay from (it feeds `{}`, which is not an ODS layer or is being backfilled)",
                source.id, source.layer
            )));
        };
        return Ok(table_plan(location, "asked for (--replay-from ods)".into()));
    }
    let early = source.future_skew.unwrap_or_default();
    let delays = source.watermark.delay + cx.layer_delays;
    let held = match &ods {
        Some(location) => {
            let past = cx.span.1.saturating_add(delays.as_micros() as i64);
            held_records(location, &time, cx.span, early.as_micros() as i64, past).await?
        }
        None => None,
    };
    let positioned = held
        .as_ref()
        .is_some_and(|h| h.values().any(|r| !r.offsets.is_empty()));
    let landed = landed(cx.live, &source.id);
    let (placement_why, resolved) = if positioned {
        let held_ref = held.as_ref().map_or(&EMPTY, |h| h);
        let why = positions_text(held_ref);
        let kafka = source.kafka.clone();
        let topics = source.topics.clone();
        let (held_copy, landed_copy, to_the_end) =
            (held_ref.clone(), landed.clone(), cx.to_the_end);
        let resolved = blocking(move || {
            let placement = Placement::Positions {
                held: &held_copy,
                landed: &landed_copy,
            };
            kafka_range::resolve(&kafka, &topics, placement, to_the_end)
        })
        .await?;
        (why, resolved)
    } else {
        let lag = observed_lag(cx.live, source).await?;
        let late = delays + LOG_SLACK + Duration::from_millis(lag.unwrap_or(0).max(0) as u64);
        let early = early + LOG_SLACK + Duration::from_millis((-lag.unwrap_or(0)).max(0) as u64);
        let (from_ms, until_ms) =
            log_span_ms(cx.span, late.as_micros() as i64, early.as_micros() as i64);
        let why = format!(
            "offsets-for-times over records logged {} .. {} ({}; margin for the lag between Kafka and event time: {})",
            millis_text(from_ms),
            if cx.to_the_end {
                "the partition's end".to_string()
            } else {
                millis_text(until_ms)
            },
            match (&ods, &held) {
                (None, _) => "the source feeds no ODS table to find positions in".to_string(),
                (Some(_), None) => "the ODS table does not exist yet".to_string(),
                (Some(_), Some(_)) => "the ODS table holds no record of the range".to_string(),
            },
            lag.map_or("none observed".to_string(), |l| format!(
                "{} s, as the live pipeline last saw it",
                l / 1000
            )),
        );
        let kafka = source.kafka.clone();
        let topics = source.topics.clone();
        let to_the_end = cx.to_the_end;
        let resolved = blocking(move || {
            let placement = Placement::Times { from_ms, until_ms };
            kafka_range::resolve(&kafka, &topics, placement, to_the_end)
        })
        .await?;
        (why, resolved)
    };
    match resolved {
        KafkaRange::Held(mut planned) => {
            for (tp, offset) in &request.from_offsets {
                match planned.iter_mut().find(|r| r.tp == *tp) {
                    Some(r) => r.first = (*offset).min(r.end),
                    None if source.topics.contains(&tp.topic) => {
                        return Err(refuse(format!(
                            "--from-offsets names {}/{}, which does not exist",
                            tp.topic, tp.partition
                        )));
                    }
                    None => {}
                }
            }
            let records: i64 = planned.iter().map(|r| r.end - r.first).sum();
            let given = if request.from_offsets.is_empty() {
                String::new()
            } else {
                " (start offsets from --from-offsets)".to_string()
            };
            let why =
                format!("Kafka holds the range: {placement_why}; {records} records to read{given}");
            Ok(SourcePlan {
                from: ReplayFrom::Kafka {
                    ranges: planned
                        .iter()
                        .map(|r| (r.tp.clone(), r.first, r.end))
                        .collect(),
                },
                why,
                held,
                planned,
                ods_replayable: replayable.is_some(),
            })
        }
        KafkaRange::Gone(why) if request.source == ReplaySource::Kafka => Err(refuse(format!(
            "Kafka no longer holds the range of source `{}`: {why}; replay from the ODS table (--replay-from ods) instead",
            source.id
        ))),
        KafkaRange::Gone(why) => match replayable {
            Some(location) => Ok(table_plan(
                location,
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

static EMPTY: BTreeMap<TopicPartition, HeldRecords> = BTreeMap::new();

fn table_plan(location: TableLocation, why: String) -> SourcePlan {
    SourcePlan {
        from: ReplayFrom::Table { location },
        why,
        held: None,
        planned: Vec::new(),
        ods_replayable: true,
    }
}

/// "offsets from the ODS table: ..." for the summary.
fn positions_text(held: &BTreeMap<TopicPartition, HeldRecords>) -> String {
    let records: u64 = held.values().map(|h| h.offsets.len()).sum();
    let partitions = held.values().filter(|h| !h.offsets.is_empty()).count();
    let lag = held
        .values()
        .filter_map(|h| h.lag_ms)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    format!(
        "offsets from the ODS table, which holds {records} records of the range in {partitions} partition(s){}",
        lag.map_or(String::new(), |(lo, hi)| format!(
            ", logged {} to {} after their event time",
            seconds(lo),
            seconds(hi)
        ))
    )
}

fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// The live pipeline's next offsets for `source`.
fn landed(live: Option<&Manifest>, source: &str) -> HashMap<TopicPartition, i64> {
    live.and_then(|m| m.sources.iter().find(|s| s.id == source))
        .map(|s| {
            s.offsets
                .iter()
                .map(|(tp, next)| (tp.clone(), next))
                .collect()
        })
        .unwrap_or_default()
}

/// The lag between Kafka and event time at the live pipeline's newest
/// checkpoint, ms.
async fn observed_lag(live: Option<&Manifest>, source: &SourceSpec) -> Result<Option<i64>> {
    let Some(checkpoint) = live.and_then(|m| m.sources.iter().find(|s| s.id == source.id)) else {
        return Ok(None);
    };
    let positions: Vec<(TopicPartition, i64, i64)> = checkpoint
        .event_times
        .iter()
        .filter_map(|t| {
            let tp = TopicPartition {
                topic: t.topic.clone(),
                partition: t.partition,
            };
            let next = checkpoint.offsets.get(&t.topic, t.partition)?;
            Some((tp, next, t.max_event_time))
        })
        .collect();
    let kafka = source.kafka.clone();
    let lag = blocking(move || kafka_range::observed_lag_ms(&kafka, &positions)).await?;
    if let Some(l) = lag {
        info!(source = %source.id, lag_ms = l, "lag between Kafka and event time at the live checkpoint");
    }
    Ok(lag)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::internal("a Kafka look-up", e))?
}

/// "kafka" or "ods table", as the summary says.
pub(crate) fn from_label(from: &ReplayFrom) -> &'static str {
    match from {
        ReplayFrom::Kafka { .. } => "kafka",
        ReplayFrom::Table { .. } => "ods table",
    }
}
