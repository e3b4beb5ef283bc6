//! A Kafka source: a thread that polls, decodes, tracks event time and
//! injects the barriers the coordinator asks for.
//!
//! It is a plain thread, not a task, because librdkafka's poll blocks and
//! decoding is CPU work: the thread decodes straight from the message bytes
//! librdkafka owns, with no copy, while layers run on the async runtime.
//! Rows, watermarks and barriers go down one bounded channel in order, so
//! the barrier of epoch n follows exactly the rows of epoch n, and a slow
//! layer slows the poll loop instead of growing memory.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::topic_partition_list::TopicPartitionList;
use tracing::{info, warn};

use crate::checkpoint::manifest::SourceCheckpoint;
use crate::dataflow::edge::EdgeSender;
use crate::dataflow::io::SourceContext;
use crate::dataflow::message::Message;
use crate::dataflow::replay::{END_OF_INPUT, ReplayFrom, kept_rows};
use crate::dataflow::spec::SourceSpec;
use crate::dataflow::watermark::PartitionWatermarks;
use crate::error::{EngineError, Result};
use crate::kafka::offsets::{SourceOffsets, TopicPartition};
use crate::ods::{RecordStage, SourceRecord};

mod health;
pub(crate) use health::spawn_broker_probe;
mod partitions;

/// Rows per batch handed to the layer.
const BATCH_ROWS: usize = 8192;
/// How often staged rows and the watermark go out even when batches are
/// not full (Flink's default watermark interval).
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// Longest a poll waits, which bounds how late a barrier or a stop can be.
const POLL_TIMEOUT: Duration = Duration::from_millis(50);
/// Timeout of metadata and offset look-ups.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often topics are checked for added partitions.
const PARTITION_REFRESH: Duration = Duration::from_secs(30);
/// Reading the clock for every record costs ~5% of the CPU; once per this
/// many records (and whenever a poll finds nothing) is precise enough.
const CLOCK_EVERY: u32 = 64;

/// The coordinator's side of every source: which epoch to end, and when
/// to stop.
#[derive(Debug, Default)]
pub struct EpochControl {
    /// The newest epoch whose barrier sources must emit.
    pub requested: AtomicU64,
    /// Exit after emitting this epoch's barrier (0: keep running).
    pub last_epoch: AtomicU64,
    /// Exit now, without another barrier.
    pub stop_now: AtomicBool,
}

/// What a source tells the coordinator between barriers.
#[derive(Debug, Default)]
pub struct SourceStatus {
    /// Something changed (rows read, watermark moved) since the last barrier.
    pub progress: AtomicBool,
    /// Bounded runs: caught up with the end offsets as of the start.
    pub done: AtomicBool,
    /// When the broker last answered the source (Unix ms; 0: never).
    pub last_contact_ms: AtomicI64,
}

/// Everything a source thread needs.
pub(crate) struct SourceTask {
    spec: SourceSpec,
    consumer: BaseConsumer,
    stage: RecordStage,
    positions: SourceOffsets,
    barrier_positions: SourceOffsets,
    watermarks: PartitionWatermarks,
    last_watermark: Option<i64>,
    expected_first: HashMap<TopicPartition, i64>,
    partitions: HashSet<TopicPartition>,
    end_offsets: HashMap<TopicPartition, i64>,
    bounded: bool,
    /// A replay: the event-time column of the rows, and whether the
    /// end-of-input watermark went out.
    replay_time_column: Option<usize>,
    ended: bool,
    emitted_epoch: u64,
    out: EdgeSender,
    committed: std_mpsc::Receiver<SourceOffsets>,
    control: Arc<EpochControl>,
    status: Arc<SourceStatus>,
    health: health::SourceHealth,
}

impl SourceTask {
    /// The source `spec`, reading with `consumer`, started with `cx`;
    /// offsets made durable arrive on `committed`.
    pub(crate) fn new(
        spec: SourceSpec,
        consumer: BaseConsumer,
        cx: SourceContext,
        committed: std_mpsc::Receiver<SourceOffsets>,
    ) -> Result<Self> {
        let SourceContext {
            mut resume,
            emitted_epoch,
            bounded,
            out,
            control,
            status,
            metrics,
        } = cx;
        let stage = RecordStage::new(&spec.layer, &spec.schema)?;
        let now = Instant::now();
        let mut end_offsets = HashMap::new();
        let mut replay_time_column = None;
        if let Some(replay) = &spec.replay {
            let ReplayFrom::Kafka { ranges } = &replay.from else {
                return Err(EngineError::Config(format!(
                    "source `{}`: a table replay is not read from Kafka",
                    spec.id
                )));
            };
            for (tp, first, end) in ranges {
                resume.offsets.set_at_least(&tp.topic, tp.partition, *first);
                end_offsets.insert(tp.clone(), *end);
            }
            replay
                .progress
                .add_total(replay.from.records().unwrap_or(0));
            let time = spec.schema.event_time.as_deref().unwrap_or_default();
            replay_time_column = Some(stage.schema().index_of(time).map_err(|_| {
                EngineError::Config(format!(
                    "source `{}`: a replay needs the schema's event-time field",
                    spec.id
                ))
            })?);
        }
        let mut watermarks = PartitionWatermarks::new(spec.watermark);
        for time in &resume.event_times {
            watermarks.restore(time, now);
        }
        Ok(SourceTask {
            stage,
            consumer,
            barrier_positions: resume.offsets.clone(),
            positions: resume.offsets,
            last_watermark: watermarks.watermark(now),
            watermarks,
            expected_first: HashMap::new(),
            partitions: HashSet::new(),
            end_offsets,
            bounded: bounded || spec.replay.is_some(),
            replay_time_column,
            ended: false,
            emitted_epoch,
            out,
            committed,
            control,
            status,
            health: health::SourceHealth::new(metrics),
            spec,
        })
    }

    /// Runs until the coordinator says stop.
    pub(crate) fn run(mut self) -> Result<()> {
        if !self.assign_partitions()? {
            return Ok(());
        }
        let mut next_flush = Instant::now() + FLUSH_EVERY;
        let mut next_refresh = Instant::now() + PARTITION_REFRESH;
        let mut last_error_log: Option<Instant> = None;
        let mut clock = Clock::new();
        loop {
            if self.control.stop_now.load(Ordering::SeqCst) {
                return Ok(());
            }
            let idle = match self.consumer.poll(POLL_TIMEOUT) {
                Some(Ok(message)) if self.past_replay_end(&message) => false,
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
                    note_first(&mut self.expected_first, &self.spec.id, &record);
                    self.stage.push(&record, clock.ingest_micros);
                    self.positions
                        .advance(record.topic, record.partition, record.offset);
                    if let Some(replay) = &self.spec.replay {
                        replay.progress.add_read(1);
                    }
                    false
                }
                Some(Err(e)) => {
                    // librdkafka reconnects by itself; say so at most every 10 s.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        warn!(source = %self.spec.id, error = %e, "kafka consumer error; retrying");
                        last_error_log = Some(Instant::now());
                    }
                    true
                }
                None => true,
            };
            clock.tick(idle);
            let now = clock.instant;
            let full = self.stage.pending_rows() + self.stage.pending_dead_letters() >= BATCH_ROWS;
            if (full || now >= next_flush) && !self.flush(now)? {
                return Ok(());
            }
            if now >= next_flush {
                next_flush = now + FLUSH_EVERY;
            }
            let requested = self.control.requested.load(Ordering::SeqCst);
            if requested > self.emitted_epoch {
                if !self.barrier(requested, now)? {
                    return Ok(());
                }
                if self.control.last_epoch.load(Ordering::SeqCst) == requested {
                    return Ok(());
                }
            }
            self.commit_group_offsets();
            if now >= next_refresh {
                self.add_new_partitions();
                next_refresh = now + PARTITION_REFRESH;
            }
            if self.bounded && idle && !self.ended && self.caught_up() {
                if self.replay_time_column.is_some() && !self.end_of_input(now)? {
                    return Ok(());
                }
                // The records read since the last flush go out (and count as
                // progress) before `done`: else the coordinator can find
                // every source done and nothing to commit, and stop without
                // the epoch that holds them.
                if !self.flush(now)? {
                    return Ok(());
                }
                self.ended = true;
                self.status.done.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Sends staged rows and, if it moved, the watermark; `false` if the
    /// layer has gone away.
    fn flush(&mut self, now: Instant) -> Result<bool> {
        let skew_us = self.spec.future_skew.map(|skew| skew.as_micros() as i64);
        // A replay judges "future" by the Kafka timestamp (see `replay`).
        let cutoff = match self.replay_time_column {
            Some(_) => None,
            None => skew_us.map(|skew| now_micros().saturating_add(skew)),
        };
        let mut staged = self.stage.take(cutoff)?;
        for (tp, time) in &staged.event_times {
            self.watermarks.observe(tp, *time, now);
            self.health.newest_event(tp, *time);
        }
        self.mark_backlogged_active(now);
        if let (Some(column), Some(replay)) = (self.replay_time_column, &self.spec.replay)
            && let Some(rows) = staged.rows.take()
        {
            staged.rows = kept_rows(&rows, column, replay.start_us, replay.end_us, skew_us)?;
            replay
                .progress
                .note_reads(&self.spec.id, &rows, staged.rows.as_ref(), column)?;
        }
        let has_rows =
            staged.rows.is_some() || staged.dead_letters.is_some() || staged.future.is_some();
        if has_rows && self.out.blocking_send(Message::Source(staged)).is_err() {
            return Ok(false);
        }
        if self.positions != self.barrier_positions {
            self.status.progress.store(true, Ordering::SeqCst);
        }
        let watermark = self.watermarks.watermark(now);
        if watermark > self.last_watermark
            && let Some(w) = watermark
        {
            self.last_watermark = watermark;
            if let Some(replay) = &self.spec.replay {
                replay.progress.at(w);
            }
            self.status.progress.store(true, Ordering::SeqCst);
            if self.out.blocking_send(Message::Watermark(w)).is_err() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Ends `epoch`: flushes, then sends the barrier with the source's
    /// position; `false` if the layer has gone away.
    fn barrier(&mut self, epoch: u64, now: Instant) -> Result<bool> {
        if !self.flush(now)? {
            return Ok(false);
        }
        let checkpoint = SourceCheckpoint {
            id: self.spec.id.clone(),
            offsets: self.positions.clone(),
            event_times: self.watermarks.snapshot(),
        };
        self.emitted_epoch = epoch;
        self.barrier_positions = self.positions.clone();
        Ok(self
            .out
            .blocking_send(Message::Barrier {
                epoch,
                source: Some(checkpoint),
            })
            .is_ok())
    }

    /// A replay's input has ended: sends what is staged, then the watermark
    /// that closes every window; `false` if the layer has gone away.
    fn end_of_input(&mut self, now: Instant) -> Result<bool> {
        if !self.flush(now)? {
            return Ok(false);
        }
        let close = self.spec.replay.as_ref().is_none_or(|r| r.close_at_end);
        if let Some(replay) = &self.spec.replay {
            replay.progress.finished.store(true, Ordering::SeqCst);
        }
        self.status.progress.store(true, Ordering::SeqCst);
        if !close {
            info!(source = %self.spec.id, "replay read its whole range; open windows stay open");
            return Ok(true);
        }
        info!(source = %self.spec.id, "replay read its whole range; closing every window");
        Ok(self
            .out
            .blocking_send(Message::Watermark(END_OF_INPUT))
            .is_ok())
    }

    /// Whether `message` lies past its partition's replay range (it is
    /// skipped, and the partition paused: the rest of the log is not read).
    fn past_replay_end(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> bool {
        if self.replay_time_column.is_none() {
            return false;
        }
        let tp = TopicPartition {
            topic: message.topic().to_string(),
            partition: message.partition(),
        };
        let Some(end) = self.end_offsets.get(&tp) else {
            return false;
        };
        if message.offset() < *end {
            return false;
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&tp.topic, tp.partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            warn!(source = %self.spec.id, error = %e, "could not pause a replayed partition at its end; its later records are skipped");
        }
        true
    }

    /// Commits offsets the coordinator has made durable to the consumer
    /// group, so lag tools see progress and `start: group` works for a new
    /// layer. Strata itself resumes from its checkpoints, never from these.
    fn commit_group_offsets(&mut self) {
        let Some(offsets) = self.committed.try_iter().last() else {
            return;
        };
        // A replay is not the group's progress.
        if self.spec.replay.is_some() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (tp, next) in offsets.iter() {
            let _ = tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(next));
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            warn!(source = %self.spec.id, error = %e, "could not commit offsets to the consumer group (monitoring only)");
        }
    }
}

/// Logs when a partition resumes past where the checkpoint said: the
/// records in between were deleted by retention or compaction (or were
/// transaction markers, which take one offset each).
fn note_first(
    expected_first: &mut HashMap<TopicPartition, i64>,
    source: &str,
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
            source,
            topic = record.topic,
            partition = record.partition,
            expected,
            resumed_at = record.offset,
            "offsets skipped on resume: retention or compaction removed records the checkpoint had not read yet"
        );
    }
}

/// The loop's clock, read every [`CLOCK_EVERY`] records or when idle.
struct Clock {
    instant: Instant,
    ingest_micros: i64,
    records: u32,
}

impl Clock {
    fn new() -> Self {
        Clock {
            instant: Instant::now(),
            ingest_micros: now_micros(),
            records: 0,
        }
    }

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
