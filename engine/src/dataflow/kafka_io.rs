//! The real sources: a thread per Kafka source (see `dataflow::source`),
//! or, for a backfill replaying the ODS table, a task reading it.

use std::sync::mpsc as std_mpsc;

use rdkafka::consumer::BaseConsumer;

use crate::dataflow::io::{SourceContext, SourceStarter, StartedSource};
use crate::dataflow::replay::{Replay, ReplayFrom};
use crate::dataflow::source::{SourceTask, spawn_broker_probe};
use crate::dataflow::spec::SourceSpec;
use crate::dataflow::table_source::TableSource;
use crate::error::{EngineError, Result};

/// Starts Kafka sources (and ODS-table replays).
pub struct KafkaSources;

impl SourceStarter for KafkaSources {
    fn start(&self, source: &SourceSpec, cx: SourceContext) -> Result<StartedSource> {
        if let Some(Replay {
            from: ReplayFrom::Table { location },
            ..
        }) = &source.replay
        {
            let (committed, _) = std_mpsc::channel();
            let task = TableSource {
                spec: source.clone(),
                location: location.clone(),
                out: cx.out,
                control: cx.control,
                status: cx.status,
                emitted_epoch: cx.emitted_epoch,
            };
            return Ok(StartedSource {
                committed,
                run: Box::pin(task.run()),
            });
        }
        let consumer: BaseConsumer = source
            .kafka
            .consumer(&source.group_id)
            .create()
            .map_err(EngineError::kafka("creating the consumer"))?;
        let (committed, committed_rx) = std_mpsc::channel();
        // A bounded run or a replay reads to a known end: no health to
        // report (and a probe's ListOffsets stalled replays on the sqlite
        // broker).
        let probe = if cx.bounded || source.replay.is_some() {
            None
        } else {
            let client: BaseConsumer = source
                .kafka
                .consumer(&source.group_id)
                .create()
                .map_err(EngineError::kafka("creating the broker probe's client"))?;
            let topic = source.topics.first().cloned().unwrap_or_default();
            Some(
                spawn_broker_probe(
                    &source.id,
                    client,
                    topic,
                    cx.status.clone(),
                    cx.metrics.clone(),
                )
                .map_err(EngineError::io("cannot start a broker probe thread"))?,
            )
        };
        let task = SourceTask::new(source.clone(), consumer, cx, committed_rx)?;
        // librdkafka's poll blocks: the source runs on a thread of its own,
        // joined off the async workers.
        let thread = std::thread::Builder::new()
            .name(format!("source-{}", source.id))
            .spawn(move || task.run())
            .map_err(EngineError::io("cannot start a source thread"))?;
        let run = async move {
            // The probe stops with the source (or when this is dropped).
            let _probe = probe;
            tokio::task::spawn_blocking(move || {
                thread.join().unwrap_or_else(|_| {
                    Err(EngineError::internal("a source thread", "it panicked"))
                })
            })
            .await
            .map_err(|e| EngineError::internal("a source thread", e))?
        };
        Ok(StartedSource {
            committed,
            run: Box::pin(run),
        })
    }
}
