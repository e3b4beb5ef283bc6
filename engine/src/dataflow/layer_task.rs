//! A layer, running: rows in, its query, its tables, rows out.
//!
//! Per input batch: the layer's `filter:` (rejected rows to the rejected
//! table), then the query, which sets late rows aside by the rule of its
//! operator (they go to the late table); what the query produces goes to
//! the layer's table and to the layers downstream.
//!
//! Barriers are aligned as in Flink: once an input delivers the barrier of
//! epoch n the layer stops reading that input until every input has
//! delivered it, so the layer's state and files at the barrier hold exactly
//! the rows of epochs up to n. It then snapshots its state, finishes the
//! epoch's files, acks the coordinator and passes the barrier on.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::{filter_record_batch, not};
use arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;
use tokio::sync::mpsc;
use tracing::debug;

use crate::checkpoint::manifest::{LayerCheckpoint, PendingCommit, SourceCheckpoint};
use crate::checkpoint::store::CheckpointStore;
use crate::dataflow::edge::{EdgeReceiver, EdgeSender};
use crate::dataflow::io::TableSink;
use crate::dataflow::layer_state::{LayerState, SavedState};
use crate::dataflow::message::{Ack, Message};
use crate::dataflow::side_output::annotate;
use crate::dataflow::side_sink::SideSink;
use crate::delta::storable::conform;
use crate::error::{EngineError, Result};
use crate::evolution::LayerShape;
use crate::kafka::publisher::TopicPublisher;
use crate::operators::layer_query::LayerQuery;
use crate::predicate::null_is_false;

/// One input channel of a layer.
pub(crate) struct InputChannel {
    pub(crate) name: String,
    pub(crate) rx: EdgeReceiver,
    pub(crate) watermark: Option<i64>,
    pub(crate) aligned: bool,
    pub(crate) closed: bool,
}

impl InputChannel {
    pub(crate) fn new(name: &str, rx: EdgeReceiver) -> Self {
        InputChannel {
            name: name.to_string(),
            rx,
            watermark: None,
            aligned: false,
            closed: false,
        }
    }
}

/// A layer's tables.
pub(crate) struct LayerSinks {
    /// The layer's table (rows appended, or upserted by key).
    pub(crate) main: Box<dyn TableSink>,
    pub(crate) dead_letters: Option<SideSink>,
    pub(crate) future: Option<SideSink>,
    /// One per late-checked input.
    pub(crate) late: Vec<SideSink>,
    pub(crate) rejected: Option<SideSink>,
    /// The layer's Kafka topic, if it publishes one.
    pub(crate) publish: Option<TopicPublisher>,
}

impl LayerSinks {
    /// Pre-commits the epoch: every table's pending work, and the rows
    /// sent to each topic.
    async fn pre_commit(&mut self) -> Result<(Vec<PendingCommit>, BTreeMap<String, u64>)> {
        let mut published = BTreeMap::new();
        if let Some(p) = &mut self.publish {
            let rows = p.pre_commit().await?;
            published.insert(p.table().to_string(), rows);
        }
        let mut pending = vec![self.main.pre_commit().await?];
        for side in [&mut self.dead_letters, &mut self.future, &mut self.rejected]
            .into_iter()
            .flatten()
            .chain(self.late.iter_mut())
        {
            pending.push(side.pre_commit(&mut published).await?);
        }
        Ok((pending, published))
    }
}

/// The layer's `filter:` on its (single) input.
pub(crate) struct RowFilter {
    pub(crate) predicate: Arc<dyn PhysicalExpr>,
    pub(crate) text: String,
}

/// Where a late-checked input's late rows go.
pub(crate) struct LateSink {
    pub(crate) input: String,
    pub(crate) sink: usize,
}

pub(crate) struct LayerTask {
    pub(crate) name: String,
    pub(crate) inputs: Vec<InputChannel>,
    pub(crate) query: Option<LayerQuery>,
    /// The rows the layer emits (storable in Delta; see `delta::storable`).
    pub(crate) output_schema: SchemaRef,
    pub(crate) filter: Option<RowFilter>,
    pub(crate) late: Vec<LateSink>,
    pub(crate) delay_us: i64,
    pub(crate) watermark: Option<i64>,
    pub(crate) sinks: LayerSinks,
    pub(crate) downstream: Vec<EdgeSender>,
    pub(crate) store: Arc<CheckpointStore>,
    pub(crate) acks: mpsc::Sender<Ack>,
    pub(crate) sources: Vec<SourceCheckpoint>,
    pub(crate) rows_in_epoch: u64,
    /// Rows received in the epoch (for metrics).
    pub(crate) received_in_epoch: u64,
    /// Its SQL's hash and state layout, recorded in each manifest.
    pub(crate) shape: LayerShape,
    /// Where its operator state's parts are.
    pub(crate) state: LayerState,
}

impl LayerTask {
    /// Runs until every input has ended.
    pub(crate) async fn run(mut self) -> Result<()> {
        while let Some((input, message)) = self.next().await {
            match message {
                None => self.inputs[input].closed = true,
                Some(Message::Source(staged)) => {
                    let now = now_micros();
                    if let (Some(rows), Some(w)) =
                        (staged.dead_letters, &mut self.sinks.dead_letters)
                    {
                        w.write(rows).await?;
                    }
                    if let (Some(rows), Some(w)) = (staged.future, &mut self.sinks.future) {
                        w.write(annotate(
                            &rows,
                            "event time too far in the future",
                            now,
                            self.watermark,
                        )?)
                        .await?;
                    }
                    if let Some(rows) = staged.rows {
                        self.on_rows(input, rows).await?;
                    }
                }
                Some(Message::Rows(rows)) => self.on_rows(input, rows).await?,
                Some(Message::Watermark(w)) => {
                    let slot = &mut self.inputs[input].watermark;
                    *slot = Some(slot.map_or(w, |old| old.max(w)));
                    self.advance_watermark().await?;
                }
                Some(Message::Barrier { epoch, source }) => {
                    self.inputs[input].aligned = true;
                    self.sources.extend(source);
                    if self.inputs.iter().all(|i| i.aligned || i.closed) {
                        self.checkpoint(epoch).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The next message of an input that is neither aligned nor ended;
    /// `None` when there is none left.
    async fn next(&mut self) -> Option<(usize, Option<Message>)> {
        let waiting: Vec<(usize, &mut InputChannel)> = self
            .inputs
            .iter_mut()
            .enumerate()
            .filter(|(_, i)| !i.aligned && !i.closed)
            .collect();
        if waiting.is_empty() {
            return None;
        }
        let receives = waiting
            .into_iter()
            .map(|(index, input)| Box::pin(async move { (index, input.rx.recv().await) }));
        let (received, _, _) = futures::future::select_all(receives).await;
        Some(received)
    }

    async fn on_rows(&mut self, input: usize, rows: RecordBatch) -> Result<()> {
        let now = now_micros();
        self.received_in_epoch += rows.num_rows() as u64;
        let mut rows = rows;
        if let Some(filter) = &self.filter {
            let keep = filter
                .predicate
                .evaluate(&rows)
                .and_then(|v| v.into_array(rows.num_rows()))
                .map_err(EngineError::datafusion(
                    &self.name,
                    &format!("evaluating filter `{}`", filter.text),
                ))?;
            let keep = keep
                .as_any()
                .downcast_ref::<BooleanArray>()
                .map(null_is_false)
                .ok_or_else(|| {
                    EngineError::Config(format!("filter `{}` is not a condition", filter.text))
                })?;
            let rejected = split(&rows, &not(&keep).map_err(EngineError::arrow("filtering"))?)?;
            if let (Some(rejected), Some(w)) = (rejected, &mut self.sinks.rejected) {
                let reason = format!("rejected by filter: {}", filter.text);
                w.write(annotate(&rejected, &reason, now, self.watermark)?)
                    .await?;
            }
            match split(&rows, &keep)? {
                Some(kept) => rows = kept,
                None => return Ok(()),
            }
        }
        let name = self.inputs[input].name.clone();
        let out = match &mut self.query {
            None => vec![rows],
            Some(query) => {
                let emitted = query
                    .on_batch(&name, rows)
                    .await
                    .map_err(EngineError::datafusion(&self.name, "running the query"))?;
                for late in emitted.late {
                    let sink = self
                        .late
                        .iter()
                        .find(|l| l.input == late.input)
                        .and_then(|l| self.sinks.late.get_mut(l.sink));
                    match sink {
                        Some(w) => {
                            w.write(annotate(&late.rows, late.reason, now, self.watermark)?)
                                .await?
                        }
                        None => {
                            return Err(EngineError::Pipeline {
                                pipeline: self.name.clone(),
                                reason: format!(
                                    "rows of `{}` were late but the layer has no late table for it",
                                    late.input
                                ),
                            });
                        }
                    }
                }
                emitted.rows
            }
        };
        self.dead_letter_lookups().await?;
        self.output(out).await
    }

    /// Rows whose lookup failed under the `dead_letter` policy go to the
    /// dead-letter table, in the epoch that read them.
    async fn dead_letter_lookups(&mut self) -> Result<()> {
        let Some(query) = &self.query else {
            return Ok(());
        };
        for rows in query.take_dead_letters() {
            match &mut self.sinks.dead_letters {
                Some(w) => w.write(rows).await?,
                None => {
                    return Err(EngineError::Pipeline {
                        pipeline: self.name.clone(),
                        reason:
                            "lookup rows were dead-lettered but the layer has no dead-letter table"
                                .into(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn advance_watermark(&mut self) -> Result<()> {
        let open: Vec<Option<i64>> = self
            .inputs
            .iter()
            .filter(|i| !i.closed)
            .map(|i| i.watermark)
            .collect();
        if open.is_empty() || open.contains(&None) {
            return Ok(());
        }
        let Some(candidate) = open.into_iter().flatten().min() else {
            return Ok(());
        };
        let candidate = candidate.saturating_sub(self.delay_us);
        if self.watermark.is_some_and(|w| w >= candidate) {
            return Ok(());
        }
        self.watermark = Some(candidate);
        if let Some(query) = &mut self.query {
            let out = query
                .on_watermark(candidate)
                .await
                .map_err(EngineError::datafusion(&self.name, "closing windows"))?;
            self.dead_letter_lookups().await?;
            self.output(out).await?;
        }
        let downstream = match &self.query {
            Some(q) => q.output_watermark(candidate),
            None => candidate,
        };
        for tx in &self.downstream {
            tx.send(Message::Watermark(downstream))
                .await
                .map_err(|_| self.gone())?;
        }
        Ok(())
    }

    fn gone(&self) -> EngineError {
        EngineError::Stopped {
            pipeline: self.name.clone(),
            what: "a downstream layer".into(),
        }
    }

    async fn output(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        for batch in batches {
            if batch.num_rows() == 0 {
                continue;
            }
            self.rows_in_epoch += batch.num_rows() as u64;
            let batch = conform(batch, &self.output_schema)
                .map_err(EngineError::arrow("casting results to the table's types"))?;
            self.sinks.main.write(batch.clone()).await?;
            if let Some(p) = &mut self.sinks.publish {
                p.write(&batch).await?;
            }
            for tx in &self.downstream {
                tx.send(Message::Rows(batch.clone()))
                    .await
                    .map_err(|_| self.gone())?;
            }
        }
        Ok(())
    }

    async fn checkpoint(&mut self, epoch: u64) -> Result<()> {
        if let Some(query) = &mut self.query {
            let updated = query
                .on_checkpoint()
                .await
                .map_err(EngineError::datafusion(
                    &self.name,
                    "computing updated results",
                ))?;
            self.output(updated).await?;
        }
        let saved = match &mut self.query {
            Some(query) => {
                self.state
                    .checkpoint(query, &self.store, epoch, &self.name)
                    .await?
            }
            None => SavedState::default(),
        };
        let (sinks, published) = self.sinks.pre_commit().await?;
        let ack = Ack {
            epoch,
            layer: LayerCheckpoint {
                name: self.name.clone(),
                watermark: self.watermark,
                state: saved.whole,
                state_slices: saved.slices,
                published,
                lookups: self
                    .query
                    .as_ref()
                    .map(|q| q.lookup_stats())
                    .unwrap_or_default(),
                shape: Some(self.shape.clone()),
            },
            sources: std::mem::take(&mut self.sources),
            sinks,
            rows: std::mem::take(&mut self.rows_in_epoch),
            rows_in: std::mem::take(&mut self.received_in_epoch),
            state_bytes: saved.bytes,
            state_rows: saved.rows,
        };
        let in_flight: Vec<String> = self
            .inputs
            .iter()
            .map(|i| {
                let (bytes, target) = i.rx.budget();
                format!(
                    "{}: {} KiB / {} ms",
                    i.name,
                    bytes / 1024,
                    target.as_millis()
                )
            })
            .collect();
        debug!(layer = %self.name, epoch, ?in_flight, "barrier aligned");
        self.acks
            .send(ack)
            .await
            .map_err(|_| EngineError::Stopped {
                pipeline: self.name.clone(),
                what: "the checkpoint coordinator".into(),
            })?;
        for tx in &self.downstream {
            tx.send(Message::Barrier {
                epoch,
                source: None,
            })
            .await
            .map_err(|_| self.gone())?;
        }
        for input in &mut self.inputs {
            input.aligned = false;
        }
        Ok(())
    }
}

/// The rows of `batch` where `mask` is true, if any.
fn split(batch: &RecordBatch, mask: &BooleanArray) -> Result<Option<RecordBatch>> {
    if mask.true_count() == 0 {
        return Ok(None);
    }
    if mask.true_count() == batch.num_rows() {
        return Ok(Some(batch.clone()));
    }
    filter_record_batch(batch, mask)
        .map(Some)
        .map_err(EngineError::arrow("splitting rows"))
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
