//! Source positions: for each topic partition, the next offset to read.

use std::collections::BTreeMap;

use rdkafka::Offset;
use rdkafka::topic_partition_list::TopicPartitionList;
use serde::{Deserialize, Serialize};

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// The offset `list` gives `topic`/`partition`, if it names one (not a
/// logical position such as "end" or "invalid").
pub fn listed_offset(list: &TopicPartitionList, topic: &str, partition: i32) -> Option<i64> {
    match list.find_partition(topic, partition)?.offset() {
        Offset::Offset(o) => Some(o),
        _ => None,
    }
}

/// The next offset to read in each partition. Offsets are "next", as Kafka
/// commits them: a partition whose last processed record was at offset 41
/// has position 42.
///
/// ```
/// use strata_engine::SourceOffsets;
/// let mut offsets = SourceOffsets::default();
/// offsets.advance("deals", 0, 41);
/// assert_eq!(offsets.get("deals", 0), Some(42));
/// offsets.advance("deals", 0, 7); // never moves back
/// assert_eq!(offsets.get("deals", 0), Some(42));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<PartitionOffset>", into = "Vec<PartitionOffset>")]
pub struct SourceOffsets(BTreeMap<TopicPartition, i64>);

/// One entry of [`SourceOffsets`] as stored in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The next offset to read.
    pub next_offset: i64,
}

impl SourceOffsets {
    /// Records that the record at `offset` was read.
    pub fn advance(&mut self, topic: &str, partition: i32, offset: i64) {
        self.set_at_least(topic, partition, offset + 1);
    }

    /// Moves the position to `next` unless it is already further.
    pub fn set_at_least(&mut self, topic: &str, partition: i32, next: i64) {
        let key = TopicPartition {
            topic: topic.to_string(),
            partition,
        };
        let slot = self.0.entry(key).or_insert(next);
        *slot = (*slot).max(next);
    }

    /// The next offset of a partition.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0
            .get(&TopicPartition {
                topic: topic.to_string(),
                partition,
            })
            .copied()
    }

    /// Every partition and its next offset.
    pub fn iter(&self) -> impl Iterator<Item = (&TopicPartition, i64)> {
        self.0.iter().map(|(tp, o)| (tp, *o))
    }

    /// Number of partitions tracked.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no partition is tracked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<PartitionOffset>> for SourceOffsets {
    fn from(entries: Vec<PartitionOffset>) -> Self {
        let mut offsets = SourceOffsets::default();
        for e in entries {
            offsets.set_at_least(&e.topic, e.partition, e.next_offset);
        }
        offsets
    }
}

impl From<SourceOffsets> for Vec<PartitionOffset> {
    fn from(offsets: SourceOffsets) -> Self {
        offsets
            .0
            .into_iter()
            .map(|(tp, next_offset)| PartitionOffset {
                topic: tp.topic,
                partition: tp.partition,
                next_offset,
            })
            .collect()
    }
}
