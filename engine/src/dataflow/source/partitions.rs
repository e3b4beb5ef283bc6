//! A source's partitions: assigned at their resume (or start) offsets,
//! partitions added later picked up, whether a partition still has records
//! to read (a partition with a backlog is slow, not idle), and whether a
//! bounded run has caught up.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::{info, warn};

use super::{LOOKUP_TIMEOUT, SourceTask};
use crate::error::{EngineError, Result};
use crate::kafka::fetched_end::fetched_end;
use crate::kafka::offsets::{TopicPartition, listed_offset};
use crate::kafka::start_position::StartPosition;

impl SourceTask {
    /// Assigns every partition of the topics at its resume offset; `false`
    /// if stopped first.
    pub(super) fn assign_partitions(&mut self) -> Result<bool> {
        let mut tpl = TopicPartitionList::new();
        let now = Instant::now();
        for topic in self.spec.topics.clone() {
            let Some(count) = self.wait_for_topic(&topic) else {
                return Ok(false);
            };
            for partition in 0..count {
                let tp = TopicPartition {
                    topic: topic.clone(),
                    partition,
                };
                let offset = match self.positions.get(&topic, partition) {
                    Some(offset) => {
                        self.expected_first.insert(tp.clone(), offset);
                        offset
                    }
                    None => self.start_offset(&topic, partition)?,
                };
                self.positions.set_at_least(&topic, partition, offset);
                self.health.reading_from(&tp, offset);
                tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .map_err(EngineError::kafka(format!("assigning {topic}/{partition}")))?;
                if self.bounded && self.spec.replay.is_none() {
                    let (_, high) = self
                        .consumer
                        .fetch_watermarks(&topic, partition, LOOKUP_TIMEOUT)
                        .map_err(EngineError::kafka(format!(
                            "end offset of {topic}/{partition}"
                        )))?;
                    self.end_offsets.insert(tp.clone(), high);
                }
                self.watermarks.assign(&tp, now);
                self.partitions.insert(tp);
            }
            info!(source = %self.spec.id, topic = %topic, partitions = count, "assigned");
        }
        // A partition resolved from the start position (not the checkpoint)
        // changes `positions`: the first epoch then pins it even if no
        // record arrives, so a restart resumes exactly there.
        if self.positions != self.barrier_positions {
            self.status.progress.store(true, Ordering::SeqCst);
        }
        self.consumer
            .assign(&tpl)
            .map_err(EngineError::kafka("assigning partitions"))?;
        Ok(true)
    }

    /// The partition count of `topic`, waiting while it does not exist;
    /// `None` when stopped.
    fn wait_for_topic(&self, topic: &str) -> Option<i32> {
        let mut warned = false;
        loop {
            match self.consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT) {
                Ok(md) => {
                    if let Some(t) = md.topics().iter().find(|t| t.name() == topic)
                        && t.error().is_none()
                        && !t.partitions().is_empty()
                    {
                        return Some(t.partitions().len() as i32);
                    }
                    if !warned {
                        warn!(source = %self.spec.id, topic, "topic does not exist yet; waiting for it to be created");
                        warned = true;
                    }
                }
                Err(e) => {
                    warn!(source = %self.spec.id, topic, error = %e, "cannot reach the broker for topic metadata; retrying");
                }
            }
            for _ in 0..20 {
                if self.control.stop_now.load(Ordering::SeqCst)
                    || self.control.last_epoch.load(Ordering::SeqCst) != 0
                {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Resolves the start position of a partition with no checkpoint to a
    /// concrete offset, so the first checkpoint pins it.
    fn start_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
            .map_err(EngineError::kafka(format!(
                "watermarks of {topic}/{partition}"
            )))?;
        let mut tpl = TopicPartitionList::new();
        let found = |list: &TopicPartitionList| listed_offset(list, topic, partition);
        let resolved = match self.spec.start {
            StartPosition::Earliest => low,
            StartPosition::Latest => high,
            StartPosition::Group => {
                tpl.add_partition(topic, partition);
                let committed = self
                    .consumer
                    .committed_offsets(tpl, LOOKUP_TIMEOUT)
                    .map_err(EngineError::kafka(format!(
                        "group offset of {topic}/{partition}"
                    )))?;
                found(&committed).unwrap_or(low)
            }
            StartPosition::Timestamp { millis } => {
                tpl.add_partition_offset(topic, partition, Offset::Offset(millis))
                    .map_err(EngineError::kafka("offsets-for-times request"))?;
                let answer = self
                    .consumer
                    .offsets_for_times(tpl, LOOKUP_TIMEOUT)
                    .map_err(EngineError::kafka(format!(
                        "offsets-for-times of {topic}/{partition}"
                    )))?;
                // No record at or after the time: start at the end.
                found(&answer).unwrap_or(high)
            }
        };
        Ok(resolved.clamp(low, high))
    }

    /// Starts reading partitions added to the topics since the start, from
    /// their first offset.
    pub(super) fn add_new_partitions(&mut self) {
        let mut added = TopicPartitionList::new();
        let now = Instant::now();
        for topic in self.spec.topics.clone() {
            let Ok(md) = self.consumer.fetch_metadata(Some(&topic), LOOKUP_TIMEOUT) else {
                continue;
            };
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                continue;
            };
            for p in t.partitions() {
                let tp = TopicPartition {
                    topic: topic.clone(),
                    partition: p.id(),
                };
                if self.partitions.contains(&tp) {
                    continue;
                }
                let Ok((low, _)) = self
                    .consumer
                    .fetch_watermarks(&topic, p.id(), LOOKUP_TIMEOUT)
                else {
                    continue;
                };
                if added
                    .add_partition_offset(&topic, p.id(), Offset::Offset(low))
                    .is_ok()
                {
                    info!(source = %self.spec.id, topic = %topic, partition = p.id(), "new partition; reading it from its first offset");
                    self.positions.set_at_least(&topic, p.id(), low);
                    self.health.reading_from(&tp, low);
                    self.watermarks.assign(&tp, now);
                    self.partitions.insert(tp);
                }
            }
        }
        if added.count() > 0
            && let Err(e) = self.consumer.incremental_assign(&added)
        {
            warn!(source = %self.spec.id, error = %e, "could not assign new partitions; will retry");
            for e in added.elements() {
                self.partitions.remove(&TopicPartition {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                });
            }
        }
    }

    /// Whether every partition has been read up to its end offset as of the
    /// start.
    pub(super) fn caught_up(&self) -> bool {
        let Ok(assignment) = self.consumer.position() else {
            return false;
        };
        self.end_offsets
            .iter()
            .all(|(tp, end)| self.read_up_to(&assignment, tp) >= *end)
    }

    /// The next offset of `tp` to read. Positions past transaction markers
    /// come from the consumer.
    fn read_up_to(&self, assignment: &TopicPartitionList, tp: &TopicPartition) -> i64 {
        let ours = self.positions.get(&tp.topic, tp.partition).unwrap_or(0);
        let theirs = listed_offset(assignment, &tp.topic, tp.partition).unwrap_or(0);
        ours.max(theirs)
    }

    /// Idleness is wall-clock time, but a partition with records still
    /// unread is slow, not idle: a broker that takes seconds to serve one
    /// partition's first fetch while another's streams in would otherwise
    /// let the watermark pass the slow partition's rows, and route them
    /// late. So a partition is kept active while it has a backlog: below
    /// its replay end offset, or (live) below the high watermark of its last
    /// fetch, or with no fetch answered yet. A replayed partition read to
    /// its end no longer holds time back at all.
    pub(super) fn mark_backlogged_active(&mut self, now: Instant) {
        let Ok(assignment) = self.consumer.position() else {
            return;
        };
        for tp in &self.partitions {
            let read = self.read_up_to(&assignment, tp);
            if self.replay_time_column.is_some() {
                match self.end_offsets.get(tp) {
                    Some(end) if read < *end => self.watermarks.keep_active(tp, now),
                    _ => self.watermarks.retire(tp),
                }
                continue;
            }
            let backlog = match fetched_end(&self.consumer, &tp.topic, tp.partition) {
                Some(high) => read < high,
                // No fetch answered yet: whether it holds records is unknown.
                None => true,
            };
            if backlog {
                self.watermarks.keep_active(tp, now);
            }
        }
        self.report_lag(&assignment);
    }
}
