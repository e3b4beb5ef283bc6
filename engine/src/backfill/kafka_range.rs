//! Where a range lies in a source's Kafka topics, and whether Kafka still
//! holds it.
//!
//! Kafka holds a range when every partition's oldest retained record was
//! logged at or before the range's start: then nothing the range needs has
//! been deleted by retention, and the topic is not younger than the range
//! (a re-created topic starts empty). Otherwise the replay must come from
//! the ODS table. The first and last offsets come from offsets-for-times,
//! except where the range ends after the newest record: then the end is
//! the partition's end (a lookup past the end is answered differently by
//! different brokers).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::{debug, info, warn};

use crate::error::{EngineError, Result};
use crate::kafka::client_config::KafkaConfig;
use crate::kafka::offsets::{TopicPartition, listed_offset};

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the record at an offset. A loaded broker can take
/// seconds to serve a fetch from the start of a partition.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A look-up slower than this is logged.
const SLOW_READ: Duration = Duration::from_secs(1);

/// A source's topics for a range of Kafka time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaRange {
    /// Kafka holds it: `(partition, first, end)` for every partition.
    Held(Vec<(TopicPartition, i64, i64)>),
    /// Kafka no longer holds (all of) it: why.
    Gone(String),
}

/// Where the log span `[from_ms, until_ms)` (Kafka timestamps) lies in
/// `topics`. `needed`, when the ODS table can tell, is the oldest Kafka
/// timestamp of the range's records per partition: Kafka must still hold
/// those. Without it, a partition must hold a record at or before
/// `from_ms`, or never have lost one (its first offset is 0). Blocking:
/// call it off the async workers.
pub fn resolve(
    kafka: &KafkaConfig,
    topics: &[String],
    (from_ms, until_ms): (i64, i64),
    needed: Option<&HashMap<TopicPartition, i64>>,
) -> Result<KafkaRange> {
    let consumer: BaseConsumer = kafka
        .consumer("strata-backfill-lookups")
        // A look-up needs one record: small fetches and no prefetch keep
        // the broker from reading megabytes of a partition for it.
        .set("max.partition.fetch.bytes", "1024")
        .set("queued.min.messages", "1")
        .create()
        .map_err(EngineError::kafka("creating the look-up consumer"))?;
    if let Some(elsewhere) = needed
        .into_iter()
        .flat_map(|n| n.keys())
        .find(|tp| !topics.contains(&tp.topic))
    {
        return Ok(KafkaRange::Gone(format!(
            "the range's records came from {}/{}, which the source no longer reads",
            elsewhere.topic, elsewhere.partition
        )));
    }
    let mut ranges = Vec::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
            .map_err(EngineError::kafka(format!("metadata of {topic}")))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        if partitions == 0 {
            return Ok(KafkaRange::Gone(format!("topic {topic} does not exist")));
        }
        for partition in 0..partitions {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, LOOKUP_TIMEOUT)
                .map_err(EngineError::kafka(format!(
                    "offsets of {topic}/{partition}"
                )))?;
            let tp = TopicPartition {
                topic: topic.clone(),
                partition,
            };
            let must_hold = match needed {
                Some(needed) => needed.get(&tp).copied(),
                None if low == 0 => None,
                None => Some(from_ms),
            };
            if let Some(need) = must_hold {
                if low >= high {
                    return Ok(KafkaRange::Gone(format!(
                        "{topic}/{partition} holds no record (offsets {low}..{high}): retention deleted what the range needs there"
                    )));
                }
                match logged_at(&consumer, &tp, low, high)? {
                    Logged::At(t) if t <= need => {}
                    Logged::At(t) => {
                        return Ok(KafkaRange::Gone(format!(
                            "the oldest record {topic}/{partition} holds (offset {low}) was logged at {}, after {} (the range's first record there)",
                            millis_text(t),
                            millis_text(need)
                        )));
                    }
                    Logged::Unstamped => {
                        return Ok(KafkaRange::Gone(format!(
                            "the oldest record {topic}/{partition} holds (offset {low}) has no timestamp, so offsets-for-times cannot place the range"
                        )));
                    }
                    Logged::Nothing => {
                        return Ok(KafkaRange::Gone(format!(
                            "{topic}/{partition} holds only transaction markers (offsets {low}..{high}): retention deleted what the range needs there"
                        )));
                    }
                }
            }
            let first = offset_for_time(&consumer, &tp, from_ms)?
                .unwrap_or(high)
                .clamp(low, high);
            if low >= high {
                ranges.push((tp, high, high));
                continue;
            }
            // The last offset may be a transaction marker: then the newest
            // record's time is unknown here, and offsets-for-times decides.
            // It does too if the read fails: this look-up only spares
            // brokers a question past their end.
            let newest = match logged_at(&consumer, &tp, high - 1, high) {
                Ok(Logged::At(t)) => Some(t),
                Ok(_) => None,
                Err(e) => {
                    warn!(partition = %format!("{topic}/{partition}"), error = %e,
                          "could not read the newest record; offsets-for-times places the range's end");
                    None
                }
            };
            let end = match newest {
                Some(t) if t < until_ms => high,
                _ => offset_for_time(&consumer, &tp, until_ms)?.unwrap_or(high),
            };
            ranges.push((tp, first, end.clamp(first, high)));
        }
    }
    Ok(KafkaRange::Held(ranges))
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
