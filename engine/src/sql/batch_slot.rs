//! A leaf of a DataFusion plan whose rows are handed to it before each run.
//!
//! The stateless parts of a layer's query (projections, filters, scalar
//! functions, `unnest`) run as DataFusion physical plans, once per batch:
//! the batch goes into the slot at the plan's leaf, the plan is executed,
//! and its output collected. That reuses every DataFusion operator and
//! function unchanged, and keeps Strata's streaming operators to the parts
//! DataFusion cannot do on a stream (windows, state, watermarks).

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

/// The leaf: holds the batches for the next run of the plan above it.
pub struct BatchSlot {
    /// What the slot stands for (an input's name, or a stateful operator's
    /// output), for plan displays and errors.
    label: String,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    batches: Arc<Mutex<Vec<RecordBatch>>>,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for BatchSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BatchSlot({})", self.label)
    }
}

impl BatchSlot {
    /// A slot producing batches of `schema` (projected by `projection`, as
    /// table scans are).
    pub fn new(label: &str, schema: SchemaRef, projection: Option<Vec<usize>>) -> Self {
        let output = match &projection {
            Some(p) => Arc::new(
                schema
                    .project(p)
                    .unwrap_or_else(|_| schema.as_ref().clone()),
            ),
            None => schema.clone(),
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(output),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        BatchSlot {
            label: label.to_string(),
            schema,
            projection,
            batches: Arc::new(Mutex::new(Vec::new())),
            properties,
        }
    }

    /// What the slot stands for.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The unprojected schema of what is put in.
    pub fn input_schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Sets the batches the next run reads.
    pub fn fill(&self, batches: Vec<RecordBatch>) {
        let mut slot = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        *slot = batches;
    }
}

impl DisplayAs for BatchSlot {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "BatchSlot: {}", self.label)
    }
}

impl ExecutionPlan for BatchSlot {
    fn name(&self) -> &str {
        "BatchSlot"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batches = {
            let mut slot = self.batches.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *slot)
        };
        let batches = match &self.projection {
            Some(p) => batches
                .iter()
                .map(|b| b.project(p))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => batches,
        };
        let schema = self.properties.eq_properties.schema().clone();
        Ok(Box::pin(MemoryStream::try_new(batches, schema, None)?))
    }
}
