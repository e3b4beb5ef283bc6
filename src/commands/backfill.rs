//! `strata backfill FILE LAYER --from TIME [--to TIME]`: recompute a range
//! of a layer from the log with the file's (current) SQL, and swap it into
//! the live table in one commit. See `strata_engine::backfill`.

use serde_json::json;
use strata_engine::Shutdown;
use strata_engine::TopicPartition;
use strata_engine::backfill::{
    BackfillRequest, Outcome, ReplaySource, TimeRange, live_watermark, run_backfill,
};
use strata_engine::dataflow::replay::ReplayProgress;
use tokio::sync::watch;
use tracing::info;

use crate::cli::{BackfillArgs, ReplayFromArg};
use crate::commands::replay_progress;
use crate::commands::signals::stop_on_signals;
use crate::commands::time_arg::parse_time;
use crate::commands::{load_warehouse, plan_layers};
use crate::failure::{Failure, print};

pub async fn backfill(args: BackfillArgs) -> Result<(), Failure> {
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone());
    let (spec, request) = prepare(&args).await?;
    execute(spec, request, &args, shutdown).await
}

async fn prepare(
    args: &BackfillArgs,
) -> Result<(strata_engine::dataflow::DataflowSpec, BackfillRequest), Failure> {
    let warehouse = load_warehouse(&args.file)?;
    let plan = plan_layers(&warehouse, &[], true)?;
    let from_us = parse_time(&args.from).map_err(|e| Failure::config(format!("--from {e}")))?;
    let to_us = match &args.to {
        Some(text) => parse_time(text).map_err(|e| Failure::config(format!("--to {e}")))?,
        None => match live_watermark(&plan.dataflow, &args.layer).await? {
            Some(w) => {
                info!(to = %text_of(w), "no --to: up to what the live pipeline has closed");
                w
            }
            None => chrono::Utc::now().timestamp_micros(),
        },
    };
    let lookback = match &args.lookback {
        None => None,
        Some(text) => Some(strata_layers::parse_duration(text).ok_or_else(|| {
            Failure::config(format!(
                "--lookback {text}: not a duration; write e.g. 90s, 5m or 1h"
            ))
        })?),
    };
    let from_offsets = match &args.from_offsets {
        None => Vec::new(),
        Some(text) => parse_offsets(text).map_err(Failure::config)?,
    };
    Ok((
        plan.dataflow,
        BackfillRequest {
            layer: args.layer.clone(),
            range: TimeRange { from_us, to_us },
            cascade: args.cascade,
            lookback,
            source: match (args.replay_from, from_offsets.is_empty()) {
                (ReplayFromArg::Auto, false) => ReplaySource::Kafka,
                (ReplayFromArg::Auto, true) => ReplaySource::Auto,
                (ReplayFromArg::Kafka, _) => ReplaySource::Kafka,
                (ReplayFromArg::Ods, _) => ReplaySource::Ods,
            },
            from_offsets,
            allow_empty: args.allow_empty,
            progress: ReplayProgress::new(),
        },
    ))
}

async fn execute(
    spec: strata_engine::dataflow::DataflowSpec,
    request: BackfillRequest,
    args: &BackfillArgs,
    shutdown: Shutdown,
) -> Result<(), Failure> {
    let (done_tx, done_rx) = watch::channel(false);
    let reporter = tokio::spawn(replay_progress::report(request.progress.clone(), done_rx));
    let range = request.range;
    let outcome = run_backfill(spec, request, shutdown).await;
    let _ = done_tx.send(true);
    let _ = reporter.await;
    match outcome {
        Ok(Outcome::Done(report)) => {
            let summary = json!({
                "layer": args.layer,
                "from": text_of(range.from_us),
                "to": text_of(range.to_us),
                "replayed": report.replayed,
                "sources": report.sources.iter().map(|(s, how)| json!({
                    "source": s,
                    "from": how,
                    "coverage": report.coverage.iter().find(|(c, _)| c == s).map(|(_, shown)| shown),
                })).collect::<Vec<_>>(),
                "tables": report.tables.iter().map(|(t, s)| json!({"table": t, "version": s.version, "rows": s.rows})).collect::<Vec<_>>(),
            });
            print(summary)
        }
        Ok(Outcome::Interrupted) => Err(Failure::Interrupted(
            "backfill interrupted before its swap: no table was changed; run it again to start over"
                .into(),
        )),
        Err(e) => Err(Failure::Message(
            e.kind(),
            format!(
                "backfill failed: {e}; no table was changed unless a `range replaced` line says so"
            ),
        )),
    }
}

/// `deals:0:1200,deals:1:1180`.
fn parse_offsets(text: &str) -> Result<Vec<(TopicPartition, i64)>, String> {
    text.split(',')
        .map(|item| {
            let bad = || {
                format!(
                    "--from-offsets `{item}`: write topic:partition:offset, comma-separated, e.g. deals:0:1200,deals:1:1180"
                )
            };
            let mut parts = item.trim().rsplitn(3, ':');
            let offset = parts.next().and_then(|o| o.parse::<i64>().ok()).ok_or_else(bad)?;
            let partition = parts.next().and_then(|p| p.parse::<i32>().ok()).ok_or_else(bad)?;
            let topic = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
            Ok((
                TopicPartition {
                    topic: topic.to_string(),
                    partition,
                },
                offset,
            ))
        })
        .collect()
}

fn text_of(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| us.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_name_topic_partition_and_offset() {
        let o = parse_offsets("deals:0:1200, my:topic:1:7").unwrap();
        assert_eq!(o[0].0.topic, "deals");
        assert_eq!(o[0].1, 1200);
        assert_eq!(o[1].0.topic, "my:topic");
        assert_eq!(o[1].0.partition, 1);
    }

    #[test]
    fn a_bad_offset_says_how_to_write_one() {
        let e = parse_offsets("deals:x:1").unwrap_err();
        assert!(e.contains("topic:partition:offset"), "{e}");
    }
}
