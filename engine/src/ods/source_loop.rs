//! The Kafka side of an ODS pipeline: a thread that polls, decodes and
//! injects checkpoint barriers.
//!
//! It is a plain thread, not a task, because librdkafka's poll blocks and
//! decoding is CPU work: the thread decodes straight from the message bytes
//! librdkafka owns, with no copy, while the sink task encodes Parquet on
//! another core. Batches and barriers go down one bounded channel, so the
//! barrier for epoch n follows exactly the rows of epoch n (Flink's aligned
//! barriers, with a single input), and a slow sink slows the poll loop
//! instead of growing memory.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::topic_partition_list::TopicPartitionList;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::error::{EngineError, Result};
use crate::kafka::offsets::{SourceOffsets, TopicPartition};
use crate::kafka::start_position::StartPosition;
use crate::ods::record_stage::{RecordStage, SourceRecord, StagedBatches};
use crate::shutdown::Shutdown;

/// Rows per batch handed to the sink between barriers.
const BATCH_ROWS: usize = 8192;
/// Longest a poll waits, which bounds how late a barrier or a stop can be.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
/// Timeout of metadata and offset look-ups.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often topics are checked for added partitions.
const PARTITION_REFRESH: Duration = Duration::from_secs(30);

/// What the source hands the sink.
#[derive(Debug)]
pub(crate) enum SourceEvent {
    /// Rows and dead letters of the current epoch.
    Data(StagedBatches),
    /// The end of an epoch: everything before it belongs to `epoch`, and the
    /// source has read up to `offsets`.
    Barrier {
        epoch: u64,
        offsets: SourceOffsets,
        records: u64,
    },
}

/// Settings of the source loop.
pub(crate) struct SourceSettings {
    pub(crate) pipeline: String,
    pub(crate) topics: Vec<String>,
    pub(crate) start: StartPosition,
    pub(crate) interval: Duration,
    pub(crate) bounded: bool,
}

pub(crate) struct SourceLoop {
    settings: SourceSettings,
    consumer: BaseConsumer,
    stage: RecordStage,
    positions: SourceOffsets,
    barrier_positions: SourceOffsets,
    expected_first: HashMap<TopicPartition, i64>,
    partitions: HashSet<TopicPartition>,
    end_offsets: HashMap<TopicPartition, i64>,
    next_epoch: u64,
    records_in_epoch: u64,
    out: mpsc::Sender<SourceEvent>,
    committed: std_mpsc::Receiver<SourceOffsets>,
    shutdown: Shutdown,
}

impl SourceLoop {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        settings: SourceSettings,
        consumer: BaseConsumer,
        stage: RecordStage,
        resume_from: SourceOffsets,
        next_epoch: u64,
        out: mpsc::Sender<SourceEvent>,
        committed: std_mpsc::Receiver<SourceOffsets>,
        shutdown: Shutdown,
    ) -> Self {
        SourceLoop {
            settings,
            consumer,
            stage,
            barrier_positions: resume_from.clone(),
            positions: resume_from,
            expected_first: HashMap::new(),
            partitions: HashSet::new(),
            end_offsets: HashMap::new(),
            next_epoch,
            records_in_epoch: 0,
            out,
            committed,
            shutdown,
        }
    }

    /// Runs until shutdown (or, when bounded, until caught up), ending with a
    /// barrier for whatever was read since the last one.
    pub(crate) fn run(mut self) -> Result<()> {
        if !self.assign_partitions()? {
            return Ok(());
        }
        let mut next_barrier = Instant::now() + self.settings.interval;
        let mut next_refresh = Instant::now() + PARTITION_REFRESH;
        let mut last_error_log: Option<Instant> = None;
        let mut clock = Clock::new();
        loop {
            if self.shutdown.is_triggered() {
                break;
            }
            let idle = match self.consumer.poll(POLL_TIMEOUT) {
                Some(Ok(message)) => {
                    let record = SourceRecord {
                        topic: message.topic(),
                        partition: message.partition(),
                        offset: message.offset(),
                        timestamp_ms: match message.timestamp() {
                            Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => Some(t),
                            Timestamp::NotAvailable => None,
                        },
                        key: message.key(),
                        payload: message.payload(),
                    };
                    note_first(&mut self.expected_first, &self.settings.pipeline, &record);
                    self.stage.push(&record, clock.ingest_micros);
                    self.positions
                        .advance(record.topic, record.partition, record.offset);
                    self.records_in_epoch += 1;
                    false
                }
                Some(Err(e)) => {
                    // librdkafka reconnects by itself; say so at most every 10 s.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warn!(pipeline = %self.settings.pipeline, error = %e, "kafka consumer error; retrying");
                        last_error_log = Some(Instant::now());
                    }
                    true
                }
                None => true,
            };
            self.commit_group_offsets();
            if self.stage.pending_rows() + self.stage.pending_dead_letters() >= BATCH_ROWS
                && !self.send_data()?
            {
                return Ok(());
            }
            clock.tick(idle);
            let now = clock.instant;
            if now >= next_barrier {
                if !self.barrier()? {
                    return Ok(());
                }
                next_barrier = now + self.settings.interval;
            }
            if now >= next_refresh {
                self.add_new_partitions();
                next_refresh = now + PARTITION_REFRESH;
            }
            if self.settings.bounded && idle && self.caught_up() {
                info!(pipeline = %self.settings.pipeline, "caught up with the end of the input; stopping (bounded run)");
                break;
            }
        }
        self.barrier()?;
        Ok(())
    }

    /// Sends the staged batches; `false` if the sink has gone away.
    fn send_data(&mut self) -> Result<bool> {
        let staged = self.stage.take()?;
        if staged.rows.is_none() && staged.dead_letters.is_none() {
            return Ok(true);
        }
        Ok(self.out.blocking_send(SourceEvent::Data(staged)).is_ok())
    }

    /// Ends the epoch if anything was read in it; `false` if the sink has gone away.
    fn barrier(&mut self) -> Result<bool> {
        if self.positions == self.barrier_positions {
            return Ok(true);
        }
        if !self.send_data()? {
            return Ok(false);
        }
        let event = SourceEvent::Barrier {
            epoch: self.next_epoch,
            offsets: self.positions.clone(),
            records: std::mem::take(&mut self.records_in_epoch),
        };
        self.next_epoch += 1;
        self.barrier_positions = self.positions.clone();
        Ok(self.out.blocking_send(event).is_ok())
    }

    /// Commits offsets the sink has made durable to the consumer group, so
    /// lag tools see progress and `start: group` works for a new layer.
    /// Strata itself resumes from its checkpoints, never from these.
    fn commit_group_offsets(&mut self) {
        let Some(offsets) = self.committed.try_iter().last() else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for (tp, next) in offsets.iter() {
            if tpl
                .add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next))
                .is_err()
            {
                continue;
            }
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            warn!(pipeline = %self.settings.pipeline, error = %e, "could not commit offsets to the consumer group (monitoring only)");
        }
    }

    /// Assigns every partition of the topics at its resume offset; `false`
    /// if shutdown came first.
    fn assign_partitions(&mut self) -> Result<bool> {
        let mut tpl = TopicPartitionList::new();
        for topic in self.settings.topics.clone() {
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
                tpl.add_partition_offset(&topic, partition, Offset::Offset(offset))
                    .map_err(EngineError::kafka(format!("assigning {topic}/{partition}")))?;
                if self.settings.bounded {
                    let (_, high) = self
                        .consumer
                        .fetch_watermarks(&topic, partition, LOOKUP_TIMEOUT)
                        .map_err(EngineError::kafka(format!(
                            "end offset of {topic}/{partition}"
                        )))?;
                    self.end_offsets.insert(tp.clone(), high);
                }
                self.partitions.insert(tp);
            }
            info!(pipeline = %self.settings.pipeline, topic = %topic, partitions = count, "assigned");
        }
        // A partition resolved from the start position (not the checkpoint)
        // changes `positions`, so the first barrier checkpoints it even if
        // no record arrives: a restart then resumes exactly there.
        self.consumer
            .assign(&tpl)
            .map_err(EngineError::kafka("assigning partitions"))?;
        Ok(true)
    }

    /// The partition count of `topic`, waiting while it does not exist;
    /// `None` on shutdown.
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
                        warn!(pipeline = %self.settings.pipeline, topic, "topic does not exist yet; waiting for it to be created");
                        warned = true;
                    }
                }
                Err(e) => {
                    warn!(pipeline = %self.settings.pipeline, topic, error = %e, "cannot reach the broker for topic metadata; retrying");
                }
            }
            for _ in 0..20 {
                if self.shutdown.is_triggered() {
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
        let resolved = match self.settings.start {
            StartPosition::Earliest => Some(low),
            StartPosition::Latest => Some(high),
            StartPosition::Group => {
                tpl.add_partition(topic, partition);
                let committed = self
                    .consumer
                    .committed_offsets(tpl, LOOKUP_TIMEOUT)
                    .map_err(EngineError::kafka(format!(
                        "group offset of {topic}/{partition}"
                    )))?;
                committed
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .or(Some(low))
            }
            StartPosition::Timestamp { millis } => {
                tpl.add_partition_offset(topic, partition, Offset::Offset(millis))
                    .map_err(EngineError::kafka("offsets-for-times request"))?;
                let found = self
                    .consumer
                    .offsets_for_times(tpl, LOOKUP_TIMEOUT)
                    .map_err(EngineError::kafka(format!(
                        "offsets-for-times of {topic}/{partition}"
                    )))?;
                // No record at or after the time: start at the end.
                found
                    .find_partition(topic, partition)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .or(Some(high))
            }
        };
        Ok(resolved.unwrap_or(low).clamp(low, high))
    }

    /// Starts reading partitions added to the topics since the start, from
    /// their first offset.
    fn add_new_partitions(&mut self) {
        let mut added = TopicPartitionList::new();
        for topic in &self.settings.topics {
            let Ok(md) = self.consumer.fetch_metadata(Some(topic), LOOKUP_TIMEOUT) else {
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
                    .fetch_watermarks(topic, p.id(), LOOKUP_TIMEOUT)
                else {
                    continue;
                };
                if added
                    .add_partition_offset(topic, p.id(), Offset::Offset(low))
                    .is_ok()
                {
                    info!(pipeline = %self.settings.pipeline, topic = %topic, partition = p.id(), "new partition; reading it from its first offset");
                    self.positions.set_at_least(topic, p.id(), low);
                    self.partitions.insert(tp);
                }
            }
        }
        if added.count() > 0
            && let Err(e) = self.consumer.incremental_assign(&added)
        {
            warn!(pipeline = %self.settings.pipeline, error = %e, "could not assign new partitions; will retry");
            for e in added.elements() {
                self.partitions.remove(&TopicPartition {
                    topic: e.topic().to_string(),
                    partition: e.partition(),
                });
            }
        }
    }

    /// Whether every partition has been read up to its end offset as of the
    /// start. Positions past transaction markers come from the consumer.
    fn caught_up(&self) -> bool {
        let Ok(assignment) = self.consumer.position() else {
            return false;
        };
        self.end_offsets.iter().all(|(tp, end)| {
            let ours = self.positions.get(&tp.topic, tp.partition).unwrap_or(0);
            let theirs = assignment
                .find_partition(&tp.topic, tp.partition)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                })
                .unwrap_or(0);
            ours.max(theirs) >= *end
        })
    }
}

/// Logs when a partition resumes past where the checkpoint said: the
/// records in between were deleted by retention or compaction (or were
/// transaction markers, which take one offset each).
fn note_first(
    expected_first: &mut HashMap<TopicPartition, i64>,
    pipeline: &str,
    record: &SourceRecord<'_>,
) {
    if expected_first.is_empty() {
        return;
    }
    let key = TopicPartition {
        topic: record.topic.to_string(),
        partition: record.partition,
    };
    if let Some(expected) = expected_first.remove(&key)
        && record.offset > expected + 1
    {
        warn!(
            pipeline,
            topic = record.topic,
            partition = record.partition,
            expected,
            resumed_at = record.offset,
            "offsets skipped on resume: retention or compaction removed records the checkpoint had not read yet"
        );
    }
}

/// Reading the clock for every record cost 5% of the pipeline's CPU, so the
/// loop reads it every few records: ingestion times and barrier deadlines are
/// then late by at most `CLOCK_EVERY` records (well under a millisecond).
struct Clock {
    instant: Instant,
    ingest_micros: i64,
    records: u32,
}

const CLOCK_EVERY: u32 = 64;

impl Clock {
    fn new() -> Self {
        Clock {
            instant: Instant::now(),
            ingest_micros: now_micros(),
            records: 0,
        }
    }

    /// Called once per loop turn; re-reads the clock when the poll found
    /// nothing, or every `CLOCK_EVERY` records.
    fn tick(&mut self, idle: bool) {
        self.records += 1;
        if idle || self.records >= CLOCK_EVERY {
            self.records = 0;
            self.instant = Instant::now();
            self.ingest_micros = now_micros();
        }
    }
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
