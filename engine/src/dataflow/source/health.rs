//! What a source tells operators: how far behind each partition is, and
//! whether its broker answers.
//!
//! Lag is measured where the source already looks every flush (its
//! position against the high watermark of its last fetch, no round trip).
//! Broker contact needs a round trip, so it is probed every
//! [`PROBE_EVERY`]: an idle source cannot otherwise tell a quiet topic from
//! an unreachable broker, and the dataflow's heartbeat (and readiness)
//! depend on that difference. The probe runs on a thread and a client of
//! its own: a ListOffsets on the source's consumer would hold up its poll
//! loop for as long as the broker takes to answer, and queues behind the
//! consumer's own fetches.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::{SourceStatus, SourceTask, now_micros};
use crate::kafka::fetched_end::fetched_end;
use crate::kafka::offsets::{TopicPartition, listed_offset};
use crate::metrics::Metrics;

/// How often the broker is asked whether it is there.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// How long a probe waits for the broker's answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct SourceHealth {
    metrics: Metrics,
    /// The newest event time read from each partition, microseconds.
    newest: HashMap<TopicPartition, i64>,
    /// The position each partition had at the last report.
    reported: HashMap<TopicPartition, i64>,
}

impl SourceHealth {
    pub(super) fn new(metrics: Metrics) -> Self {
        SourceHealth {
            metrics,
            newest: HashMap::new(),
            reported: HashMap::new(),
        }
    }

    /// A partition is read from `offset` on: records read are counted
    /// from there (the first lag report may come after a whole backlog).
    pub(super) fn reading_from(&mut self, tp: &TopicPartition, offset: i64) {
        self.reported.insert(tp.clone(), offset);
    }

    pub(super) fn newest_event(&mut self, tp: &TopicPartition, micros: i64) {
        match self.newest.get_mut(tp) {
            Some(t) => *t = (*t).max(micros),
            None => {
                self.newest.insert(tp.clone(), micros);
            }
        }
    }
}

impl SourceTask {
    /// Reports every partition's lag (records and seconds) and the records
    /// read since the last report.
    pub(super) fn report_lag(&mut self, assignment: &TopicPartitionList) {
        let now = now_micros();
        for tp in &self.partitions {
            let ours = self.positions.get(&tp.topic, tp.partition).unwrap_or(0);
            let theirs = listed_offset(assignment, &tp.topic, tp.partition).unwrap_or(0);
            let read_up_to = ours.max(theirs);
            let lag = fetched_end(&self.consumer, &tp.topic, tp.partition)
                .map_or(0, |high| (high - read_up_to).max(0));
            let lag_seconds = match self.health.newest.get(tp) {
                Some(t) if lag > 0 => ((now - t) as f64 / 1e6).max(0.0),
                _ => 0.0,
            };
            let before = self.health.reported.insert(tp.clone(), ours);
            let read = before.map_or(0, |b| (ours - b).max(0)) as u64;
            self.health.metrics.partition(
                &self.spec.id,
                &tp.topic,
                tp.partition,
                read,
                lag,
                lag_seconds,
            );
        }
    }
}

/// Probes the broker on a thread of its own with `client` until the
/// returned sender is dropped: every [`PROBE_EVERY`], one ListOffsets for
/// partition 0 of `topic`, recording contact in `status` and `metrics`.
pub(crate) fn spawn_broker_probe(
    source: &str,
    client: BaseConsumer,
    topic: String,
    status: Arc<SourceStatus>,
    metrics: Metrics,
) -> std::io::Result<std_mpsc::Sender<()>> {
    let (stop, stopped) = std_mpsc::channel::<()>();
    let id = source.to_string();
    std::thread::Builder::new()
        .name(format!("probe-{source}"))
        .spawn(move || {
            loop {
                let reached = client.fetch_watermarks(&topic, 0, PROBE_TIMEOUT).is_ok();
                if reached {
                    status
                        .last_contact_ms
                        .store(now_micros() / 1000, Ordering::SeqCst);
                }
                metrics.broker_contact(&id, reached);
                match stopped.recv_timeout(PROBE_EVERY) {
                    Err(std_mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        })?;
    Ok(stop)
}
