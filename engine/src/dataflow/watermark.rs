//! Event-time watermarks at a source: per partition, the latest event time
//! seen minus the allowed delay; for the source, the minimum over partitions
//! that are not idle.
//!
//! A watermark W says "rows with event time below W are late": windows that
//! end at or before W are complete. Each partition is ordered on its own, so
//! the source can only be as far as its slowest partition, except that a
//! partition with no rows for `idle_timeout` stops holding the others back
//! (otherwise one quiet partition would stop every window from closing).
//! When every partition is idle, the source takes the most advanced one.
//!
//! Unlike Flink's `withIdleness`, "no rows" is not enough: the source keeps
//! a partition with unread records active ([`PartitionWatermarks::keep_active`]),
//! so a partition that is merely slow to fetch never has its rows made late.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::checkpoint::manifest::PartitionTime;
use crate::kafka::offsets::TopicPartition;

/// Watermark settings of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkSpec {
    /// Allowed out-of-orderness: how far behind the latest event a row may
    /// still be on time.
    pub delay: Duration,
    /// A partition with no rows for this long no longer holds time back.
    pub idle_timeout: Duration,
}

impl Default for WatermarkSpec {
    fn default() -> Self {
        WatermarkSpec {
            delay: Duration::ZERO,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Partition {
    max_event_time: i64,
    last_active: Instant,
}

/// Tracks a source's watermark.
///
/// ```
/// use std::time::{Duration, Instant};
/// use strata_engine::dataflow::watermark::{PartitionWatermarks, WatermarkSpec};
/// use strata_engine::TopicPartition;
///
/// let spec = WatermarkSpec { delay: Duration::from_micros(10), idle_timeout: Duration::from_secs(5) };
/// let mut w = PartitionWatermarks::new(spec);
/// let (p0, p1) = (TopicPartition { topic: "t".into(), partition: 0 }, TopicPartition { topic: "t".into(), partition: 1 });
/// let now = Instant::now();
/// w.assign(&p0, now);
/// w.assign(&p1, now);
/// w.observe(&p0, 100, now);
/// assert_eq!(w.watermark(now), None); // p1 has seen nothing and is not idle yet
/// w.observe(&p1, 50, now);
/// assert_eq!(w.watermark(now), Some(40)); // the slower partition, minus the delay
/// assert_eq!(w.watermark(now + Duration::from_secs(6)), Some(90)); // all idle: the furthest
/// ```
#[derive(Debug, Clone)]
pub struct PartitionWatermarks {
    spec: WatermarkSpec,
    partitions: BTreeMap<TopicPartition, Partition>,
}

impl PartitionWatermarks {
    /// A tracker with `spec`.
    pub fn new(spec: WatermarkSpec) -> Self {
        PartitionWatermarks {
            spec,
            partitions: BTreeMap::new(),
        }
    }

    /// Starts tracking a partition (with nothing seen yet).
    pub fn assign(&mut self, tp: &TopicPartition, now: Instant) {
        self.partitions.entry(tp.clone()).or_insert(Partition {
            max_event_time: i64::MIN,
            last_active: now,
        });
    }

    /// Restores a partition's latest event time from a checkpoint.
    pub fn restore(&mut self, time: &PartitionTime, now: Instant) {
        let tp = TopicPartition {
            topic: time.topic.clone(),
            partition: time.partition,
        };
        let p = self.partitions.entry(tp).or_insert(Partition {
            max_event_time: i64::MIN,
            last_active: now,
        });
        p.max_event_time = p.max_event_time.max(time.max_event_time);
    }

    /// A row of `tp` with `event_time` (microseconds) was read.
    pub fn observe(&mut self, tp: &TopicPartition, event_time: i64, now: Instant) {
        let p = self.partitions.entry(tp.clone()).or_insert(Partition {
            max_event_time: i64::MIN,
            last_active: now,
        });
        p.max_event_time = p.max_event_time.max(event_time);
        p.last_active = now;
    }

    /// A partition with records still to read is not idle, however long
    /// the broker or the catch-up leaves them unread.
    pub fn keep_active(&mut self, tp: &TopicPartition, now: Instant) {
        if let Some(p) = self.partitions.get_mut(tp) {
            p.last_active = now;
        }
    }

    /// A replayed partition read to its end no longer holds time back.
    pub fn retire(&mut self, tp: &TopicPartition) {
        self.partitions.remove(tp);
    }

    /// The source's watermark at `now`, in microseconds; `None` while a
    /// partition that is not idle has seen nothing.
    pub fn watermark(&self, now: Instant) -> Option<i64> {
        let delay = self.spec.delay.as_micros() as i64;
        let active: Vec<&Partition> = self
            .partitions
            .values()
            .filter(|p| now.saturating_duration_since(p.last_active) < self.spec.idle_timeout)
            .collect();
        let time = if active.is_empty() {
            self.partitions.values().map(|p| p.max_event_time).max()?
        } else {
            active.iter().map(|p| p.max_event_time).min()?
        };
        (time != i64::MIN).then(|| time.saturating_sub(delay))
    }

    /// Every partition's latest event time, for a checkpoint.
    pub fn snapshot(&self) -> Vec<PartitionTime> {
        self.partitions
            .iter()
            .filter(|(_, p)| p.max_event_time != i64::MIN)
            .map(|(tp, p)| PartitionTime {
                topic: tp.topic.clone(),
                partition: tp.partition,
                max_event_time: p.max_event_time,
            })
            .collect()
    }
}
