//! A stateless stretch of a layer's physical plan, run once per batch.
//!
//! See [`BatchSlot`]: the segment's leaves
//! are slots; running the segment fills them, executes the DataFusion plan
//! and collects what it produced. Because nothing in a segment keeps state
//! between runs, running it on each batch separately gives the same rows as
//! running it once on all of them.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::sql::batch_slot::BatchSlot;

/// A stateless plan and its input slots.
#[derive(Debug, Clone)]
pub struct Segment {
    plan: Arc<dyn ExecutionPlan>,
    slots: Vec<Arc<dyn ExecutionPlan>>,
}

impl Segment {
    /// A segment over `plan`, whose leaves are [`BatchSlot`]s.
    pub fn new(plan: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let mut slots = Vec::new();
        plan.apply(|node| {
            if node.downcast_ref::<BatchSlot>().is_some() {
                slots.push(node.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if slots.is_empty() {
            return Err(DataFusionError::Plan(
                "the query reads no input; name one of the layer's inputs in FROM".into(),
            ));
        }
        Ok(Segment { plan, slots })
    }

    /// The schema of the segment's output.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// The physical plan.
    pub fn plan(&self) -> &Arc<dyn ExecutionPlan> {
        &self.plan
    }

    /// The labels of the inputs the segment reads.
    pub fn inputs(&self) -> Vec<String> {
        self.slots
            .iter()
            .filter_map(|s| s.downcast_ref::<BatchSlot>())
            .map(|s| s.label().to_string())
            .collect()
    }

    /// Runs the segment with `batches` in the slot labelled `input` (other
    /// slots empty).
    pub async fn run(
        &self,
        input: &str,
        batches: Vec<RecordBatch>,
        ctx: &Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        self.run_slots(vec![(input, batches)], ctx).await
    }

    /// Runs the segment with each `(label, batches)` in its slots (slots not
    /// named stay empty). Every label must be a slot of the segment.
    pub async fn run_slots(
        &self,
        inputs: Vec<(&str, Vec<RecordBatch>)>,
        ctx: &Arc<TaskContext>,
    ) -> Result<Vec<RecordBatch>> {
        let slots: Vec<&BatchSlot> = self
            .slots
            .iter()
            .filter_map(|s| s.downcast_ref::<BatchSlot>())
            .collect();
        for slot in &slots {
            slot.fill(Vec::new());
        }
        for (input, batches) in inputs {
            let mut matched = false;
            // An input read twice (a self-union) gets the rows in each slot.
            for slot in slots.iter().filter(|s| s.label() == input) {
                slot.fill(batches.clone());
                matched = true;
            }
            if !matched {
                return Err(DataFusionError::Internal(format!(
                    "the query does not read input `{input}`"
                )));
            }
        }
        let plan = reset_plan_states(self.plan.clone())?;
        let out = collect(plan, ctx.clone()).await?;
        Ok(out.into_iter().filter(|b| b.num_rows() > 0).collect())
    }
}
