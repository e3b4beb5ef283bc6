//! Publishing a layer's rows to a Kafka topic, one JSON object per row.
//!
//! `exactly_once` is a two-phase commit driven by the dataflow's epochs, the
//! protocol Flink's transactional Kafka sink follows:
//! 1. during an epoch, the rows are only kept (a Kafka transaction must not
//!    span the barrier, and the next epoch's rows arrive before this one
//!    commits);
//! 2. at the barrier, [`TopicPublisher::pre_commit`] opens the epoch's
//!    transaction, sends the rows and flushes: they are on the broker,
//!    invisible to `read_committed` readers;
//! 3. once the epoch's checkpoint manifest is durable, the coordinator calls
//!    [`PublishCommitter::commit`]: the transaction commits, and with it an
//!    offset commit of group `strata-publish-<dataflow>-<table>` whose offset
//!    is the epoch number. That offset is the sink's own record of the last
//!    epoch Kafka holds, and it is atomic with the rows.
//!
//! A crash before the manifest: the restarted producer's
//! `init_transactions` aborts the open transaction and the epoch is
//! recomputed from the source. A crash after it: the epoch's rows are in the
//! Delta table, so [`PublishCommitter::recover`] publishes them again from
//! there, unless the marker offset says the transaction had committed.
//!
//! `at_least_once` sends rows as they come and flushes at every barrier;
//! after a crash the rows since the last checkpoint are sent again.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::json::LineDelimitedWriter;
use arrow::record_batch::RecordBatch;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{info, warn};

use crate::dataflow::spec::{Delivery, PublishSpec};
use crate::error::{EngineError, Result};

/// How long a flush or transaction call may take before the epoch fails.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
/// Header naming the epoch a row was published in.
pub const EPOCH_HEADER: &str = "strata.epoch";
/// Header naming the process run that sent it (a restart sends an epoch
/// again under a new one).
pub const ATTEMPT_HEADER: &str = "strata.attempt";

/// Counts failed deliveries, which librdkafka reports asynchronously.
#[derive(Default)]
pub struct DeliveryCheck {
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryCheck {}

impl ProducerContext for DeliveryCheck {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
    }
}

type Client = ThreadedProducer<DeliveryCheck>;

/// The layer's side: collects or sends rows, and pre-commits each epoch.
pub struct TopicPublisher {
    producer: Arc<Client>,
    table: String,
    topic: String,
    delivery: Delivery,
    /// Rows of the current epoch, as JSON lines (exactly-once: not sent yet).
    pending: Vec<Vec<u8>>,
    rows: u64,
    epoch: u64,
    attempt: String,
}

/// The coordinator's side: commits an epoch's transaction, and repairs the
/// last one after a crash.
pub struct PublishCommitter {
    producer: Arc<Client>,
    table: String,
    topic: String,
    delivery: Delivery,
    /// Holds the marker group's metadata and reads its committed offset.
    marker: Arc<BaseConsumer>,
    attempt: String,
}

/// Opens the producer of a table's topic (fencing any earlier instance's
/// open transaction). `table` names the layer's table (or side table) the
/// rows also go to: it names the transactional id and marker group.
/// `first_epoch` is the epoch the run starts with.
pub async fn open_publisher(
    spec: &PublishSpec,
    dataflow: &str,
    table: &str,
    first_epoch: u64,
) -> Result<(TopicPublisher, PublishCommitter)> {
    let name = table;
    let table = table.to_string();
    let mut config = spec.kafka.producer();
    if spec.delivery == Delivery::ExactlyOnce {
        config.set("transactional.id", format!("strata-{dataflow}-{name}"));
    }
    let producer: Client = config
        .create_with_context(DeliveryCheck::default())
        .map_err(EngineError::kafka(format!(
            "creating the producer of `{name}`"
        )))?;
    let producer = Arc::new(producer);
    if spec.delivery == Delivery::ExactlyOnce {
        let p = producer.clone();
        blocking(move || p.init_transactions(KAFKA_TIMEOUT))
            .await?
            .map_err(EngineError::kafka(format!(
                "starting transactions for `{name}` (the broker must support them; or use delivery: at_least_once)"
            )))?;
    }
    let marker: BaseConsumer = spec
        .kafka
        .consumer(&format!("strata-publish-{dataflow}-{name}"))
        .create()
        .map_err(EngineError::kafka("creating the publish marker client"))?;
    let marker = Arc::new(marker);
    let attempt = chrono::Utc::now().timestamp_micros().to_string();
    Ok((
        TopicPublisher {
            producer: producer.clone(),
            table,
            topic: spec.topic.clone(),
            delivery: spec.delivery,
            pending: Vec::new(),
            rows: 0,
            epoch: first_epoch,
            attempt: attempt.clone(),
        },
        PublishCommitter {
            producer,
            table: name.to_string(),
            topic: spec.topic.clone(),
            delivery: spec.delivery,
            marker,
            attempt,
        },
    ))
}

impl TopicPublisher {
    /// The table whose rows it publishes (a layer's, or a side table's):
    /// what its published row counts are recorded under.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Takes the rows of `batch`: sent now (at-least-once) or at the
    /// barrier (exactly-once).
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let lines = json_lines(batch)?;
        self.rows += lines.len() as u64;
        match self.delivery {
            Delivery::ExactlyOnce => self.pending.extend(lines),
            Delivery::AtLeastOnce => {
                let (p, topic, epoch, attempt) = self.parts();
                blocking(move || send_all(&p, &topic, epoch, &attempt, &lines)).await??;
            }
        }
        Ok(())
    }

    /// At the barrier: every row of the epoch is on the broker (in the
    /// epoch's open transaction, for exactly-once). Returns the rows sent.
    pub async fn pre_commit(&mut self) -> Result<u64> {
        let lines = std::mem::take(&mut self.pending);
        let exactly_once = self.delivery == Delivery::ExactlyOnce;
        let (p, topic, epoch, attempt) = self.parts();
        blocking(move || {
            if exactly_once {
                p.begin_transaction()
                    .map_err(EngineError::kafka("beginning the epoch's transaction"))?;
                send_all(&p, &topic, epoch, &attempt, &lines)?;
            }
            flush(&p, &topic)
        })
        .await??;
        self.epoch += 1;
        Ok(std::mem::take(&mut self.rows))
    }

    fn parts(&self) -> (Arc<Client>, String, u64, String) {
        (
            self.producer.clone(),
            self.topic.clone(),
            self.epoch,
            self.attempt.clone(),
        )
    }
}

impl PublishCommitter {
    /// The table whose rows it publishes.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Commits `epoch`'s transaction, with the marker offset (exactly-once;
    /// nothing to do for at-least-once).
    pub async fn commit(&self, epoch: u64) -> Result<()> {
        if self.delivery != Delivery::ExactlyOnce {
            return Ok(());
        }
        let offsets = self.marker_offsets(Some(epoch))?;
        let metadata = self
            .marker
            .group_metadata()
            .ok_or_else(|| EngineError::Config("the publish marker client has no group".into()))?;
        let p = self.producer.clone();
        blocking(move || {
            p.send_offsets_to_transaction(&offsets, &metadata, KAFKA_TIMEOUT)
                .map_err(EngineError::kafka(
                    "adding the epoch marker to the transaction",
                ))?;
            p.commit_transaction(KAFKA_TIMEOUT)
                .map_err(EngineError::kafka("committing the epoch's transaction"))
        })
        .await?
    }

    /// After a restart from checkpoint `epoch`, whose manifest says this
    /// table published `published` rows in it: if Kafka does not hold that
    /// epoch, publishes `rows` (read back from the table) in a
    /// transaction of their own.
    pub async fn recover(
        &self,
        epoch: u64,
        published: Option<u64>,
        rows: impl AsyncFnOnce() -> Result<Vec<RecordBatch>>,
    ) -> Result<()> {
        if self.delivery != Delivery::ExactlyOnce || published.is_none() {
            return Ok(());
        }
        // The marker only moves after a manifest, so it is at most the
        // newest one's epoch; a higher one is left from checkpoints that
        // were removed, and says nothing about this epoch.
        let committed = self.committed_epoch().await?;
        if committed == Some(epoch) {
            return Ok(());
        }
        let batches = rows().await?;
        let mut lines = Vec::new();
        for batch in &batches {
            lines.extend(json_lines(batch)?);
        }
        if published.is_some_and(|n| n != lines.len() as u64) {
            return Err(EngineError::Config(format!(
                "table `{}`: checkpoint {epoch} published {} rows to `{}` but the table holds {} for that epoch; it was changed outside strata",
                self.table,
                published.unwrap_or(0),
                self.topic,
                lines.len()
            )));
        }
        warn!(table = %self.table, topic = %self.topic, epoch, rows = lines.len(), "the epoch's Kafka transaction did not commit before the crash; publishing its rows again from the table");
        let (p, topic, attempt) = (
            self.producer.clone(),
            self.topic.clone(),
            self.attempt.clone(),
        );
        blocking(move || {
            p.begin_transaction()
                .map_err(EngineError::kafka("beginning the repair transaction"))?;
            send_all(&p, &topic, epoch, &attempt, &lines)?;
            flush(&p, &topic)
        })
        .await??;
        self.commit(epoch).await?;
        info!(table = %self.table, epoch, "epoch published again");
        Ok(())
    }

    /// The last epoch whose transaction committed, from the marker group.
    pub async fn committed_epoch(&self) -> Result<Option<u64>> {
        let wanted = self.marker_offsets(None)?;
        let marker = self.marker.clone();
        let committed = blocking(move || marker.committed_offsets(wanted, KAFKA_TIMEOUT))
            .await?
            .map_err(EngineError::kafka("reading the publish marker"))?;
        Ok(committed.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        }))
    }

    fn marker_offsets(&self, epoch: Option<u64>) -> Result<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        let offset = match epoch {
            Some(e) => Offset::Offset(e as i64),
            None => Offset::Invalid,
        };
        tpl.add_partition_offset(&self.topic, 0, offset)
            .map_err(EngineError::kafka("naming the publish marker"))?;
        Ok(tpl)
    }
}

/// One JSON object per row, as `arrow_json` writes them.
fn json_lines(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    {
        let mut writer = LineDelimitedWriter::new(&mut out);
        writer
            .write(batch)
            .map_err(EngineError::arrow("encoding rows as JSON"))?;
        writer
            .finish()
            .map_err(EngineError::arrow("encoding rows as JSON"))?;
    }
    Ok(out
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn send_all(p: &Client, topic: &str, epoch: u64, attempt: &str, lines: &[Vec<u8>]) -> Result<()> {
    let epoch = epoch.to_string();
    for line in lines {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch.as_bytes()),
            })
            .insert(Header {
                key: ATTEMPT_HEADER,
                value: Some(attempt.as_bytes()),
            });
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .payload(line.as_slice())
            .headers(headers);
        loop {
            match p.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => {
                    return Err(EngineError::kafka(format!("publishing to `{topic}`"))(e));
                }
            }
        }
    }
    Ok(())
}

fn flush(p: &Client, topic: &str) -> Result<()> {
    p.flush(KAFKA_TIMEOUT)
        .map_err(EngineError::kafka(format!("flushing rows to `{topic}`")))?;
    let failed = p.context().failed.swap(0, Ordering::SeqCst);
    if failed > 0 {
        let last = p
            .context()
            .last_error
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_default();
        return Err(EngineError::Config(format!(
            "{failed} rows could not be published to `{topic}` (last error: {last}); the epoch fails and is retried from its checkpoint"
        )));
    }
    Ok(())
}

/// Runs a blocking Kafka call off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::internal("a Kafka call", e))
}
