//! Where a range lies in a source's Kafka topics, and whether Kafka still
//! holds it.
//!
//! The ODS table knows where the range's records are
//! ([`super::ods_positions`]): then each partition is read from the
//! range's first record to where its event time passed the range, after
//! checking that Kafka still holds that first record (retention has not
//! deleted it, and the topic was not re-created: the record there was
//! logged when the ODS table says). Without positions (no ODS table, or
//! none of its records in the range), offsets-for-times places the range
//! in Kafka time, with the span widened by the lag seen between Kafka and
//! event time; a partition must then hold a record at or before the span,
//! or never have lost one. Where the range ends after the newest record,
//! the end is the partition's end (a look-up past the end is answered
//! differently by different brokers).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::{debug, info, warn};

use super::ods_positions::HeldRecords;
use crate::error::{EngineError, Result};
use crate::kafka::client_config::KafkaConfig;
use crate::kafka::offsets::{TopicPartition, listed_offset};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the record at an offset. A loaded broker can take
/// seconds to serve a fetch from the start of a partition.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A look-up slower than this is logged.
const SLOW_READ: Duration = Duration::from_secs(1);

/// One partition's part of a replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    /// The partition.
    pub tp: TopicPartition,
    /// The first offset to read.
    pub first: i64,
    /// The offset to stop before.
    pub end: i64,
    /// The partition's first offset when the range was placed.
    pub log_start: i64,
    /// The partition's end offset when the range was placed.
    pub log_end: i64,
}

/// A source's topics for a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaRange {
    /// Kafka holds it: every partition's part.
    Held(Vec<PartitionRange>),
    /// Kafka no longer holds (all of) it: why.
    Gone(String),
}

/// How to place the range in the topics.
#[derive(Debug, Clone, Copy)]
pub enum Placement<'a> {
    /// By the positions of its records in the ODS table; partitions with
    /// none start at `landed` (the live pipeline's next offsets) when read
    /// to the end, else are not read.
    Positions {
        /// Per partition, the range's records.
        held: &'a BTreeMap<TopicPartition, HeldRecords>,
        /// Per partition, the next offset the live pipeline reads.
        landed: &'a HashMap<TopicPartition, i64>,
    },
    /// By offsets-for-times over the Kafka time span `[from_ms, until_ms)`.
    Times {
        /// Start, ms.
        from_ms: i64,
        /// End, ms.
        until_ms: i64,
    },
}

/// Where the range lies in `topics`; with `to_the_end`, every partition
/// is read to its end. Blocking: call it off the async workers.
pub fn resolve(
    kafka: &KafkaConfig,
    topics: &[String],
    placement: Placement<'_>,
    to_the_end: bool,
) -> Result<KafkaRange> {
    let consumer = lookup_consumer(kafka)?;
    if let Placement::Positions { held, .. } = placement
        && let Some(elsewhere) = held
            .iter()
            .find(|(tp, h)| !h.offsets.is_empty() && !topics.contains(&tp.topic))
            .map(|(tp, _)| tp)
    {
        return Ok(KafkaRange::Gone(format!(
            "the range's records came from {}/{}, which the source no longer reads",
            elsewhere.topic, elsewhere.partition
        )));
    }
    let mut ranges = Vec::new();
    for topic in topics {
        let Some(partitions) = partition_count(&consumer, topic)? else {
            return Ok(KafkaRange::Gone(format!("topic {topic} does not exist")));
        };
        for partition in 0..partitions {
            let tp = TopicPartition {
                topic: topic.clone(),
                partition,
            };
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
                .map_err(EngineError::kafka(format!(
                    "offsets of {topic}/{partition}"
                )))?;
            let placed = match placement {
                Placement::Positions { held, landed } => by_position(
                    &consumer,
                    &tp,
                    (low, high),
                    held.get(&tp),
                    landed,
                    to_the_end,
                )?,
                Placement::Times { from_ms, until_ms } => {
                    let until_ms = if to_the_end { i64::MAX } else { until_ms };
                    by_time(&consumer, &tp, (low, high), (from_ms, until_ms))?
                }
            };
            match placed {
                Ok((first, end)) => ranges.push(PartitionRange {
                    tp,
                    first,
                    end,
                    log_start: low,
                    log_end: high,
                }),
                Err(why) => return Ok(KafkaRange::Gone(why)),
            }
        }
    }
    Ok(KafkaRange::Held(ranges))
}

/// A consumer for look-ups.
fn lookup_consumer(kafka: &KafkaConfig) -> Result<BaseConsumer> {
    kafka
        .consumer("strata-backfill-lookups")
        // A look-up needs one record: small fetches and no prefetch keep
        // the broker from reading megabytes of a partition for it.
        .set("max.partition.fetch.bytes", "1024")
        .set("queued.min.messages", "1")
        .create()
        .map_err(EngineError::kafka("creating the look-up consumer"))
}

fn partition_count(consumer: &BaseConsumer, topic: &str) -> Result<Option<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .map_err(EngineError::kafka(format!("metadata of {topic}")))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    Ok((partitions > 0).then_some(partitions))
}

/// `[first, end)` of a partition from the ODS table's positions, or why
/// Kafka no longer holds them.
fn by_position(
    consumer: &BaseConsumer,
    tp: &TopicPartition,
    (low, high): (i64, i64),
    held: Option<&HeldRecords>,
    landed: &HashMap<TopicPartition, i64>,
    to_the_end: bool,
) -> Result<std::result::Result<(i64, i64), String>> {
    let name = format!("{}/{}", tp.topic, tp.partition);
    let Some((held, first)) = held.and_then(|h| h.first.map(|f| (h, f))) else {
        // No record of the range here: nothing to read, unless stragglers
        // the live pipeline has not landed yet count (read to the end).
        let start = match to_the_end {
            true => landed.get(tp).copied().unwrap_or(high).clamp(low, high),
            false => high,
        };
        return Ok(Ok((start, high)));
    };
    let last = held.offsets.last().unwrap_or(first);
    if first < low {
        return Ok(Err(format!(
            "retention deleted {name} up to offset {low}, and the range's records there start at offset {first} (as the ODS table says)"
        )));
    }
    if high <= last {
        return Ok(Err(format!(
            "{name} ends at offset {high}, but the range's records there run to offset {last} (as the ODS table says): the topic was re-created or truncated since"
        )));
    }
    let logged = logged_at(consumer, tp, first, high)?;
    let same = match (&logged, held.first_logged_ms) {
        (Logged::At(t), Some(ods)) => *t == ods,
        (Logged::Unstamped, None) => true,
        _ => false,
    };
    if !same {
        return Ok(Err(format!(
            "the record at offset {first} of {name} {}, but the ODS table's record there was logged at {}: the topic was re-created since",
            match logged {
                Logged::At(t) => format!("was logged at {}", millis_text(t)),
                Logged::Unstamped => "has no timestamp".to_string(),
                Logged::Nothing => "is gone (only transaction markers are left)".to_string(),
            },
            held.first_logged_ms
                .map_or("(no time)".to_string(), millis_text),
        )));
    }
    let end = match (to_the_end, held.past) {
        (true, _) | (false, None) => high,
        (false, Some(past)) => (past + 1).max(last + 1).min(high),
    };
    Ok(Ok((first, end)))
}

/// `[first, end)` of a partition by offsets-for-times over Kafka time
/// `[from_ms, until_ms)`, or why Kafka no longer holds it: a partition
/// must hold a record logged at or before `from_ms`, or never have lost
/// one (its first offset is 0).
fn by_time(
    consumer: &BaseConsumer,
    tp: &TopicPartition,
    (low, high): (i64, i64),
    (from_ms, until_ms): (i64, i64),
) -> Result<std::result::Result<(i64, i64), String>> {
    let name = format!("{}/{}", tp.topic, tp.partition);
    if low > 0 {
        if low >= high {
            return Ok(Err(format!(
                "{name} holds no record (offsets {low}..{high}): retention deleted what the range needs there"
            )));
        }
        match logged_at(consumer, tp, low, high)? {
            Logged::At(t) if t <= from_ms => {}
            Logged::At(t) => {
                return Ok(Err(format!(
                    "the oldest record {name} holds (offset {low}) was logged at {}, after {} (where the range's records may start)",
                    millis_text(t),
                    millis_text(from_ms)
                )));
            }
            Logged::Unstamped => {
                return Ok(Err(format!(
                    "the oldest record {name} holds (offset {low}) has no timestamp, so offsets-for-times cannot place the range"
                )));
            }
            Logged::Nothing => {
                return Ok(Err(format!(
                    "{name} holds only transaction markers (offsets {low}..{high}): retention deleted what the range needs there"
                )));
            }
        }
    }
    let first = offset_for_time(consumer, tp, from_ms)?
        .unwrap_or(high)
        .clamp(low, high);
    if low >= high {
        return Ok(Ok((high, high)));
    }
    if until_ms == i64::MAX {
        return Ok(Ok((first, high)));
    }
    // The last offset may be a transaction marker: then the newest
    // record's time is unknown here, and offsets-for-times decides. It
    // does too if the read fails: this look-up only spares brokers a
    // question past their end.
    let newest = match logged_at(consumer, tp, high - 1, high) {
        Ok(Logged::At(t)) => Some(t),
        Ok(_) => None,
        Err(e) => {
            warn!(partition = %name, error = %e,
                  "could not read the newest record; offsets-for-times places the range's end");
            None
        }
    };
    let end = match newest {
        Some(t) if t < until_ms => high,
        _ => offset_for_time(consumer, tp, until_ms)?.unwrap_or(high),
    };
    Ok(Ok((first, end.clamp(first, high))))
}

/// The lag (ms) between Kafka time and event time the live pipeline last
/// saw: per partition, when the last record it read was logged, minus the
/// latest event time it had seen there. `positions` are `(partition, next
/// offset, latest event time µs)` from its checkpoint. The largest, or
/// `None` when no record could be read. Blocking.
pub fn observed_lag_ms(
    kafka: &KafkaConfig,
    positions: &[(TopicPartition, i64, i64)],
) -> Result<Option<i64>> {
    let consumer = lookup_consumer(kafka)?;
    let mut lag: Option<i64> = None;
    for (tp, next, event_us) in positions {
        if *next <= 0 {
            continue;
        }
        let Ok((low, high)) = consumer.fetch_watermarks(&tp.topic, tp.partition, LOOKUP_TIMEOUT)
        else {
            continue;
        };
        if *next <= low || *next > high {
            continue;
        }
        if let Ok(Logged::At(t)) = logged_at(&consumer, tp, next - 1, high) {
            let seen = t - event_us.div_euclid(1000);
            lag = Some(lag.map_or(seen, |l| l.max(seen)));
        }
    }
    Ok(lag)
}

/// When the first record at or after an offset was logged.
enum Logged {
    /// At this Kafka timestamp (milliseconds).
    At(i64),
    /// The record has no timestamp.
    Unstamped,
    /// There is none before the end: only transaction markers are left.
    Nothing,
}

/// When the first record in `[offset, high)` was logged. The broker's
/// offsets say something is there, so a record that does not arrive in
/// [`READ_TIMEOUT`] (and a position that does not pass `high`) is an
/// error, never "no record".
fn logged_at(
    consumer: &BaseConsumer,
    tp: &TopicPartition,
    offset: i64,
    high: i64,
) -> Result<Logged> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))
        .map_err(EngineError::kafka("assigning a look-up"))?;
    consumer
        .assign(&tpl)
        .map_err(EngineError::kafka("assigning a look-up"))?;
    let started = Instant::now();
    let mut last_error = None;
    while started.elapsed() < READ_TIMEOUT {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) if m.topic() == tp.topic && m.partition() == tp.partition => {
                if started.elapsed() > SLOW_READ {
                    info!(partition = %format!("{}/{}", tp.topic, tp.partition), offset,
                          waited_ms = started.elapsed().as_millis() as u64, "slow Kafka look-up");
                }
                return Ok(match m.timestamp() {
                    Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Logged::At(t),
                    Timestamp::NotAvailable => Logged::Unstamped,
                });
            }
            Some(Err(e)) => {
                debug!(partition = %format!("{}/{}", tp.topic, tp.partition), offset, error = %e,
                       "look-up read failed; retrying");
                last_error = Some(e);
            }
            // The consumer moves its position past the transaction markers
            // it reads without handing them out.
            _ if position(consumer, tp).is_some_and(|p| p >= high) => return Ok(Logged::Nothing),
            _ => {}
        }
    }
    Err(EngineError::Kafka {
        context: format!(
            "reading the record at offset {offset} of {}/{} to learn when it was logged: none arrived in {} s (the consumer stands at {}), though the broker's offsets say there are records up to {high}. Check the broker, then re-run (or pass --replay-from ods)",
            tp.topic,
            tp.partition,
            READ_TIMEOUT.as_secs(),
            position(consumer, tp).map_or("no offset yet".to_string(), |p| format!("offset {p}")),
        ),
        source: last_error.unwrap_or(KafkaError::MessageConsumption(
            RDKafkaErrorCode::OperationTimedOut,
        )),
    })
}

/// The consumer's position in `tp`, once it has one.
fn position(consumer: &BaseConsumer, tp: &TopicPartition) -> Option<i64> {
    listed_offset(&consumer.position().ok()?, &tp.topic, tp.partition)
}

/// The first offset logged at or after `millis`; `None` if every record
/// was logged before it.
fn offset_for_time(
    consumer: &BaseConsumer,
    tp: &TopicPartition,
    millis: i64,
) -> Result<Option<i64>> {
    let context = || format!("offsets-for-times of {}/{}", tp.topic, tp.partition);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(millis))
        .map_err(EngineError::kafka("offsets-for-times request"))?;
    let answer = consumer
        .offsets_for_times(tpl, LOOKUP_TIMEOUT)
        .map_err(EngineError::kafka(context()))?;
    let Some(entry) = answer.find_partition(&tp.topic, tp.partition) else {
        return Err(EngineError::Kafka {
            context: format!("{}: the broker's answer left the partition out", context()),
            source: KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition),
        });
    };
    entry.error().map_err(EngineError::kafka(context()))?;
    match entry.offset() {
        Offset::Offset(o) => Ok(Some(o)),
        Offset::End => Ok(None),
        other => Err(EngineError::Kafka {
            context: format!("{}: the broker answered {other:?}", context()),
            source: KafkaError::OffsetFetch(RDKafkaErrorCode::InvalidArgument),
        }),
    }
}

/// Milliseconds as RFC 3339, for messages.
pub(crate) fn millis_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}
