//! Sources over an in-memory log: per topic and partition, the records
//! "produced" so far. A source reads them as the Kafka source reads a
//! broker (the same decoding, event-time tracking and barriers), as a task
//! on the test's runtime, so a paused clock drives it.
//!
//! A partition can be held back (`hold`) to make inputs arrive skewed, and
//! records can be added while the dataflow runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::checkpoint::manifest::SourceCheckpoint;
use crate::dataflow::io::{SourceContext, SourceStarter, StartedSource};
use crate::dataflow::message::Message;
use crate::dataflow::spec::SourceSpec;
use crate::dataflow::watermark::PartitionWatermarks;
use crate::error::Result;
use crate::kafka::offsets::{SourceOffsets, TopicPartition};
use crate::ods::{RecordStage, SourceRecord};

/// Records read per partition per step, unless the log says otherwise.
const PER_STEP: usize = 16;
/// (Virtual) time a step with records takes, so a run spans epochs.
const STEP: Duration = Duration::from_millis(10);
/// How long a source waits when there is nothing to read.
const POLL: Duration = Duration::from_millis(50);

/// The log: records per partition, and partitions held back.
#[derive(Clone, Default)]
pub(crate) struct MemoryLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Default)]
struct LogState {
    partitions: BTreeMap<TopicPartition, Vec<Vec<u8>>>,
    held: HashMap<TopicPartition, bool>,
    /// Records a source reads per partition per step (0: [`PER_STEP`]).
    per_step: usize,
}

impl MemoryLog {
    /// A topic with `partitions` empty partitions.
    pub(crate) fn create(&self, topic: &str, partitions: i32) {
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for partition in 0..partitions {
            log.partitions
                .entry(TopicPartition {
                    topic: topic.into(),
                    partition,
                })
                .or_default();
        }
    }

    /// Appends a record to a partition.
    pub(crate) fn produce(&self, topic: &str, partition: i32, value: Vec<u8>) {
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        log.partitions
            .entry(TopicPartition {
                topic: topic.into(),
                partition,
            })
            .or_default()
            .push(value);
    }

    /// Holds a partition back (its records are not read) or lets it go.
    pub(crate) fn hold(&self, topic: &str, partition: i32, held: bool) {
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        log.held.insert(
            TopicPartition {
                topic: topic.into(),
                partition,
            },
            held,
        );
    }

    /// Sources read up to `n` records per partition per step (a fast
    /// source with a backlog sends large batches, as Kafka's does).
    pub(crate) fn read_per_step(&self, n: usize) {
        let mut log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        log.per_step = n;
    }

    fn per_step(&self) -> usize {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if log.per_step == 0 {
            PER_STEP
        } else {
            log.per_step
        }
    }

    fn partitions_of(&self, topics: &[String]) -> Vec<TopicPartition> {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        log.partitions
            .keys()
            .filter(|tp| topics.contains(&tp.topic))
            .cloned()
            .collect()
    }

    /// Up to `n` records of `tp` from `offset`, unless held back.
    fn read(&self, tp: &TopicPartition, offset: i64, n: usize) -> Vec<Vec<u8>> {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if log.held.get(tp).copied().unwrap_or(false) {
            return Vec::new();
        }
        log.partitions
            .get(tp)
            .map(|p| {
                p.iter()
                    .skip(offset.max(0) as usize)
                    .take(n)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn end(&self, tp: &TopicPartition) -> i64 {
        let log = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        log.partitions.get(tp).map_or(0, |p| p.len() as i64)
    }
}

/// Starts sources reading the log.
#[derive(Clone)]
pub(crate) struct MemorySources {
    pub(crate) log: MemoryLog,
}

impl SourceStarter for MemorySources {
    fn start(&self, spec: &SourceSpec, cx: SourceContext) -> Result<StartedSource> {
        let (committed, _) = std::sync::mpsc::channel();
        let stage = RecordStage::new(&spec.layer, &spec.schema)?;
        let source = MemorySource {
            log: self.log.clone(),
            partitions: self.log.partitions_of(&spec.topics),
            watermarks: PartitionWatermarks::new(spec.watermark),
            spec: spec.clone(),
            stage,
            cx,
        };
        Ok(StartedSource {
            committed,
            run: Box::pin(source.run()),
        })
    }
}

struct MemorySource {
    spec: SourceSpec,
    log: MemoryLog,
    partitions: Vec<TopicPartition>,
    stage: RecordStage,
    watermarks: PartitionWatermarks,
    cx: SourceContext,
}

impl MemorySource {
    async fn run(mut self) -> Result<()> {
        let cx = &self.cx;
        let now = tokio::time::Instant::now().into_std();
        let mut positions: SourceOffsets = cx.resume.offsets.clone();
        for tp in &self.partitions {
            positions.set_at_least(&tp.topic, tp.partition, 0);
            self.watermarks.assign(tp, now);
        }
        for time in &cx.resume.event_times {
            self.watermarks.restore(time, now);
        }
        let mut barrier_positions = positions.clone();
        let mut last_watermark = self.watermarks.watermark(now);
        let mut emitted = cx.emitted_epoch;
        let mut ended = false;
        if positions != cx.resume.offsets {
            cx.status.progress.store(true, Ordering::SeqCst);
        }
        loop {
            if cx.control.stop_now.load(Ordering::SeqCst) {
                return Ok(());
            }
            let now = tokio::time::Instant::now().into_std();
            let mut read = 0;
            let per_step = self.log.per_step();
            for tp in &self.partitions {
                let offset = positions.get(&tp.topic, tp.partition).unwrap_or(0);
                let values = self.log.read(tp, offset, per_step);
                let n = values.len() as i64;
                for (i, value) in values.into_iter().enumerate() {
                    let record = SourceRecord {
                        topic: &tp.topic,
                        partition: tp.partition,
                        offset: offset + i as i64,
                        timestamp_ms: None,
                        key: None,
                        payload: Some(&value),
                    };
                    self.stage.push(&record, 0);
                    positions.advance(&tp.topic, tp.partition, offset + i as i64);
                    read += 1;
                }
                // A partition with records left to read is not idle.
                if offset + n < self.log.end(tp) {
                    self.watermarks.keep_active(tp, now);
                }
            }
            let staged = self.stage.take(None)?;
            for (tp, time) in &staged.event_times {
                self.watermarks.observe(tp, *time, now);
            }
            if (staged.rows.is_some() || staged.dead_letters.is_some())
                && cx.out.send(Message::Source(staged)).await.is_err()
            {
                return Ok(());
            }
            if positions != barrier_positions {
                cx.status.progress.store(true, Ordering::SeqCst);
            }
            let watermark = self.watermarks.watermark(now);
            if watermark > last_watermark
                && let Some(w) = watermark
            {
                last_watermark = watermark;
                cx.status.progress.store(true, Ordering::SeqCst);
                if cx.out.send(Message::Watermark(w)).await.is_err() {
                    return Ok(());
                }
            }
            let requested = cx.control.requested.load(Ordering::SeqCst);
            if requested > emitted {
                let checkpoint = SourceCheckpoint {
                    id: self.spec.id.clone(),
                    offsets: positions.clone(),
                    event_times: self.watermarks.snapshot(),
                };
                emitted = requested;
                barrier_positions = positions.clone();
                if cx
                    .out
                    .send(Message::Barrier {
                        epoch: requested,
                        source: Some(checkpoint),
                    })
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                if cx.control.last_epoch.load(Ordering::SeqCst) == requested {
                    return Ok(());
                }
            }
            let caught_up = self
                .partitions
                .iter()
                .all(|tp| positions.get(&tp.topic, tp.partition).unwrap_or(0) >= self.log.end(tp));
            if cx.bounded && caught_up && !ended {
                ended = true;
                cx.status.done.store(true, Ordering::SeqCst);
            }
            if read == 0 {
                tokio::time::sleep(POLL).await;
            } else {
                tokio::time::sleep(STEP).await;
            }
        }
    }
}
