//! The lookup join node: a stream joined with a dimension, batch by batch.
//!
//! DataFusion plans `JOIN agents ... ON d.agent_id = a.agent_id` as a hash
//! join of two tables. The streaming planner keeps that join, with its join
//! type, extra conditions and projection, but feeds it differently: the
//! stream side becomes a slot filled with one input batch, the dimension
//! side a slot filled with the dimension's rows for that batch's distinct
//! keys. So each batch costs one lookup (served by the cache where it can
//! be), and the join semantics are DataFusion's own.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, BinaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, new_null_array,
};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use tracing::warn;

use crate::lookup::{Dimension, LookupFailurePolicy};
use crate::ods::{KAFKA_OFFSET, KAFKA_PARTITION, KAFKA_TOPIC, dead_letter_schema};
use crate::sql::segment::Segment;

/// The slot the stream's batch is fed through, in the join segment.
pub const PROBE_SLOT: &str = "__strata_lookup_probe";

/// The slot label of dimension `name`'s rows.
pub fn dimension_slot(name: &str) -> String {
    format!("__strata_dimension_{name}")
}

/// A layer's lookup settings, shared by its lookup joins.
pub struct LookupHandling {
    /// The layer (dead-letter rows name it).
    pub layer: String,
    /// What a failed lookup does.
    pub policy: LookupFailurePolicy,
    /// Rows sent to the dead-letter table, in its schema, until the layer
    /// takes them.
    dead_letters: Mutex<Vec<RecordBatch>>,
}

impl LookupHandling {
    /// Settings of `layer`.
    pub fn new(layer: &str, policy: LookupFailurePolicy) -> Self {
        LookupHandling {
            layer: layer.to_string(),
            policy,
            dead_letters: Mutex::new(Vec::new()),
        }
    }

    /// The dead-letter rows produced since the last call.
    pub fn take_dead_letters(&self) -> Vec<RecordBatch> {
        std::mem::take(&mut *self.dead_letters.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn dead_letter(&self, rows: &RecordBatch, reason: &str) -> Result<()> {
        let batch = dead_letter_rows(&self.layer, rows, reason)?;
        self.dead_letters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(batch);
        Ok(())
    }
}

/// A stream joined with a dimension.
pub struct LookupJoinExec {
    probe: Arc<dyn ExecutionPlan>,
    join: Segment,
    probe_key: Arc<dyn PhysicalExpr>,
    dimension: Arc<Dimension>,
    handling: Arc<LookupHandling>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for LookupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LookupJoinExec({})", self.dimension.name())
    }
}

impl LookupJoinExec {
    /// Joins `probe`'s batches with `dimension` through `join` (the planned
    /// join, reading [`PROBE_SLOT`] and the dimension's slot), looking up
    /// the values of `probe_key`.
    pub fn new(
        probe: Arc<dyn ExecutionPlan>,
        join: Segment,
        probe_key: Arc<dyn PhysicalExpr>,
        dimension: Arc<Dimension>,
        handling: Arc<LookupHandling>,
    ) -> Self {
        let properties = Arc::new(join.plan().properties().as_ref().clone());
        LookupJoinExec {
            probe,
            join,
            probe_key,
            dimension,
            handling,
            properties,
        }
    }
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "LookupJoinExec: {}", self.dimension.name())
    }
}

struct Lookup {
    join: Segment,
    /// The dimension's slot in `join`.
    dimension_slot: String,
    probe_key: Arc<dyn PhysicalExpr>,
    dimension: Arc<Dimension>,
    handling: Arc<LookupHandling>,
    schema: SchemaRef,
}

impl Lookup {
    async fn join_batch(&self, batch: RecordBatch, ctx: Arc<TaskContext>) -> Result<RecordBatch> {
        if batch.num_rows() == 0 {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let keys = self
            .probe_key
            .evaluate(&batch)?
            .into_array(batch.num_rows())?;
        let keys = distinct_text(&keys)?;
        let dim_rows = if keys.is_empty() {
            RecordBatch::new_empty(self.dimension.schema())
        } else {
            let mut backoff = Duration::from_millis(100);
            let mut attempt = 1u32;
            loop {
                match self.dimension.lookup(&keys).await {
                    Ok(rows) => break rows,
                    Err(e) => match self.handling.policy {
                        LookupFailurePolicy::Retry if e.permanent => {
                            return Err(DataFusionError::Execution(format!(
                                "{e}; asking again cannot fix this: correct the dimension (or its schema in the warehouse file), or set `lookup_failure: nulls` or `dead_letter` on layer `{}`",
                                self.handling.layer
                            )));
                        }
                        LookupFailurePolicy::Retry => {
                            warn!(layer = %self.handling.layer, dimension = %self.dimension.name(), attempt, error = %e.message, "lookup failed; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            attempt += 1;
                        }
                        LookupFailurePolicy::Nulls => {
                            warn!(layer = %self.handling.layer, dimension = %self.dimension.name(), rows = batch.num_rows(), error = %e.message, "lookup failed; emitting rows with nulls");
                            // Keys the cache answered keep their rows.
                            break match e.partial {
                                Some((answered, unanswered)) => concat_batches(
                                    &answered.schema(),
                                    &[answered.clone(), null_rows(&self.dimension, &unanswered)?],
                                )?,
                                None => null_rows(&self.dimension, &keys)?,
                            };
                        }
                        LookupFailurePolicy::DeadLetter => {
                            warn!(layer = %self.handling.layer, dimension = %self.dimension.name(), rows = batch.num_rows(), error = %e.message, "lookup failed; rows to the dead-letter table");
                            self.handling.dead_letter(&batch, &e.to_string())?;
                            return Ok(RecordBatch::new_empty(self.schema.clone()));
                        }
                    },
                }
            }
        };
        let out = self
            .join
            .run_slots(
                vec![
                    (PROBE_SLOT, vec![batch]),
                    (self.dimension_slot.as_str(), vec![dim_rows]),
                ],
                &ctx,
            )
            .await?;
        Ok(concat_batches(&self.schema, &out)?)
    }
}

/// The distinct non-null values of `keys`, as text.
fn distinct_text(keys: &ArrayRef) -> Result<Vec<String>> {
    let text = cast(keys, &DataType::Utf8)?;
    let text = text
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("lookup keys are not text".into()))?;
    let mut seen = HashSet::with_capacity(text.len());
    let mut out = Vec::new();
    for k in text.iter().flatten() {
        if seen.insert(k) {
            out.push(k.to_string());
        }
    }
    Ok(out)
}

/// One row per key with the key set and every other column null: what a
/// failed lookup yields under the `nulls` policy.
fn null_rows(dimension: &Dimension, keys: &[String]) -> Result<RecordBatch> {
    let schema = dimension.schema();
    let key_text: ArrayRef = Arc::new(StringArray::from_iter_values(keys));
    let columns = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == dimension.key() {
                Ok(cast(&key_text, f.data_type())?)
            } else {
                Ok(new_null_array(f.data_type(), keys.len()))
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// `rows` in the dead-letter schema: each row as a JSON object, with its
/// Kafka position when the rows still carry it.
fn dead_letter_rows(layer: &str, rows: &RecordBatch, reason: &str) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let mut json = arrow::json::LineDelimitedWriter::new(Vec::new());
    json.write(rows)?;
    json.finish()?;
    let text = json.into_inner();
    let raw: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    if raw.len() != n {
        return Err(DataFusionError::Internal(format!(
            "{} JSON lines for {n} dead-letter rows",
            raw.len()
        )));
    }
    let column = |name: &str, data_type: &DataType, fallback: ArrayRef| -> Result<ArrayRef> {
        match rows.schema().index_of(name) {
            Ok(i) => Ok(cast(rows.column(i), data_type)?),
            Err(_) => Ok(fallback),
        }
    };
    let topic = column(
        KAFKA_TOPIC,
        &DataType::Utf8,
        Arc::new(StringArray::from(vec![""; n])),
    )?;
    let partition = column(
        KAFKA_PARTITION,
        &DataType::Int32,
        Arc::new(Int32Array::from(vec![-1; n])),
    )?;
    let offset = column(
        KAFKA_OFFSET,
        &DataType::Int64,
        Arc::new(Int64Array::from(vec![-1; n])),
    )?;
    let schema = dead_letter_schema();
    let now = chrono::Utc::now().timestamp_micros();
    let ts_type = schema.field(4).data_type().clone();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![layer; n])),
        topic,
        partition,
        offset,
        new_null_array(&ts_type, n),
        new_null_array(&DataType::Binary, n),
        Arc::new(BinaryArray::from(raw)),
        Arc::new(StringArray::from(vec![reason; n])),
        cast(
            &(Arc::new(TimestampMicrosecondArray::from(vec![now; n])) as ArrayRef),
            &ts_type,
        )?,
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.probe]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        f(&self.probe_key)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [probe] = <[_; 1]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("a lookup join has one input".into()))?;
        Ok(Arc::new(LookupJoinExec {
            probe,
            join: self.join.clone(),
            probe_key: self.probe_key.clone(),
            dimension: self.dimension.clone(),
            handling: self.handling.clone(),
            properties: self.properties.clone(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.probe.execute(partition, context.clone())?;
        let schema = self.properties.eq_properties.schema().clone();
        let lookup = Arc::new(Lookup {
            join: self.join.clone(),
            dimension_slot: dimension_slot(self.dimension.name()),
            probe_key: self.probe_key.clone(),
            dimension: self.dimension.clone(),
            handling: self.handling.clone(),
            schema: schema.clone(),
        });
        let stream = input.and_then(move |batch| {
            let lookup = lookup.clone();
            let ctx = context.clone();
            async move { lookup.join_batch(batch, ctx).await }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.boxed(),
        )))
    }
}
