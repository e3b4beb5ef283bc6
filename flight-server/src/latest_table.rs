//! A Delta table that every query reads at its newest committed version.
//!
//! Pipelines and backfills commit to the tables while dashboards query
//! them. Each scan first brings the table's log up to date (incrementally:
//! only commits since the last scan are read) and then reads exactly one
//! version, so a query sees every row of a commit or none of them, never a
//! commit in progress.

use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use deltalake::DeltaTable;
use tokio::sync::Mutex;

/// A [`TableProvider`] over the newest version of a Delta table.
pub struct LatestDeltaTable {
    table: Mutex<DeltaTable>,
    schema: SchemaRef,
    /// The table's schema as its log says, when it was opened: the
    /// catalog compares it with the newest to notice a merged schema.
    log_schema: SchemaRef,
    url: String,
}

impl fmt::Debug for LatestDeltaTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestDeltaTable")
            .field("url", &self.url)
            .finish()
    }
}

fn delta_error(e: deltalake::DeltaTableError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

impl LatestDeltaTable {
    /// Wraps a loaded table; its current schema is the provider's schema.
    pub async fn new(table: DeltaTable) -> Result<Self> {
        let url = table.table_url().to_string();
        let provider = table.table_provider().build().await?;
        let schema = provider.schema();
        let log_schema = table
            .snapshot()
            .map_err(delta_error)?
            .snapshot()
            .arrow_schema();
        Ok(LatestDeltaTable {
            table: Mutex::new(table),
            schema,
            log_schema,
            url,
        })
    }

    /// The table's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether the table's newest version has another schema than the one
    /// it was opened with (columns added while the server runs): the
    /// catalog then serves it anew.
    pub async fn schema_changed(&self) -> Result<bool> {
        let mut table = self.table.lock().await;
        table.update_state().await.map_err(delta_error)?;
        let newest = table
            .snapshot()
            .map_err(delta_error)?
            .snapshot()
            .arrow_schema();
        Ok(newest.fields() != self.log_schema.fields())
    }

    /// The committed version the next scan would read, after catching up.
    pub async fn latest_version(&self) -> Result<Option<u64>> {
        let mut table = self.table.lock().await;
        table.update_state().await.map_err(delta_error)?;
        Ok(table.version())
    }
}

#[async_trait]
impl TableProvider for LatestDeltaTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // The Delta scan skips files by their statistics; DataFusion still
        // applies the filters to the rows that remain.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let provider = {
            let mut table = self.table.lock().await;
            table.update_state().await.map_err(delta_error)?;
            table
                .update_datafusion_session(state)
                .map_err(delta_error)?;
            table.table_provider().build().await?
        };
        if provider.schema().fields() != self.schema.fields() {
            return Err(DataFusionError::Plan(format!(
                "the table at {} changed its schema while this query was planned; run it again",
                self.url
            )));
        }
        provider.scan(state, projection, filters, limit).await
    }
}
