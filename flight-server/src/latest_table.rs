//! A Delta table that every query reads at its newest committed version.
//!
//! Pipelines and backfills commit to the tables while dashboards query
//! them. Each scan first brings the table's log up to date (incrementally:
//! only commits since the last scan are read) and then reads exactly one
//! version, so a query sees every row of a commit or none of them, never a
//! commit in progress.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// The newest commit [`schema_changed`](Self::schema_changed) has read
    /// (`u64::MAX`: none yet, the table had no version).
    checked: AtomicU64,
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
        let checked = AtomicU64::new(table.version().unwrap_or(u64::MAX));
        Ok(LatestDeltaTable {
            table: Mutex::new(table),
            schema,
            log_schema,
            checked,
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
    ///
    /// The catalog asks this of every table every second, on the query
    /// path. Bringing a table's state up to date replays its file list,
    /// which costs more the more files and commits it has, so it is not done
    /// for every table each second: only the commits since the last look are
    /// read (a few small JSON files), and the state is updated only when one
    /// of them carries a `metaData` action, the only action that changes a
    /// schema.
    pub async fn schema_changed(&self) -> Result<bool> {
        let store = self.table.lock().await.log_store();
        let mut next = self.checked.load(Ordering::Acquire).wrapping_add(1);
        let mut metadata = false;
        while let Some(commit) = store.read_commit_entry(next).await.map_err(delta_error)? {
            metadata |= commit
                .split(|b| *b == b'\n')
                .any(|line| line.starts_with(b"{\"metaData\""));
            next += 1;
        }
        self.checked.store(next.wrapping_sub(1), Ordering::Release);
        if !metadata {
            return Ok(false);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use deltalake::operations::write::SchemaMode;

    fn ids(from: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(from..from + 10))],
        )
        .unwrap()
    }

    fn ids_and_names(from: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(from..from + 10)),
                Arc::new(StringArray::from_iter_values(
                    (0..10).map(|i| format!("n{i}")),
                )),
            ],
        )
        .unwrap()
    }

    /// Appends by another writer are read as commits only (the served
    /// table's state stays where it was: no file list replayed); a commit
    /// that merges a column is noticed.
    #[tokio::test]
    async fn only_a_schema_commit_brings_the_state_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let created = DeltaTable::try_from_url(url.clone())
            .await
            .unwrap()
            .write(vec![ids(0)])
            .await
            .unwrap();
        let served = LatestDeltaTable::new(created).await.unwrap();
        for from in [10, 20] {
            deltalake::open_table(url.clone())
                .await
                .unwrap()
                .write(vec![ids(from)])
                .await
                .unwrap();
        }
        assert!(!served.schema_changed().await.unwrap());
        assert_eq!(served.table.lock().await.version(), Some(0));
        assert_eq!(served.checked.load(Ordering::Acquire), 2);

        deltalake::open_table(url.clone())
            .await
            .unwrap()
            .write(vec![ids_and_names(30)])
            .with_schema_mode(SchemaMode::Merge)
            .await
            .unwrap();
        assert!(served.schema_changed().await.unwrap());
        assert_eq!(served.table.lock().await.version(), Some(3));
    }
}
