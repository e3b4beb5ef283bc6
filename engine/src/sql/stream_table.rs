//! A layer's input as a table its SQL can name.
//!
//! Planning needs a table for every input (an upstream layer or a topic) with
//! its schema; scanning it yields a [`BatchSlot`] leaf, which the streaming
//! planner finds in the physical plan and feeds batch by batch.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::sql::batch_slot::BatchSlot;

/// An input stream of a layer, by name.
#[derive(Debug)]
pub struct StreamTable {
    name: String,
    schema: SchemaRef,
}

impl StreamTable {
    /// The input `name` with rows of `schema`.
    pub fn new(name: &str, schema: SchemaRef) -> Self {
        StreamTable {
            name: name.to_string(),
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for StreamTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(BatchSlot::new(
            &self.name,
            self.schema.clone(),
            projection.cloned(),
        )))
    }
}
