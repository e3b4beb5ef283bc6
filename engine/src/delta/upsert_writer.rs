//! Phase one of an upserted table (a `GROUP BY` without windows): the
//! epoch's changed rows, staged in a Parquet file beside the table.
//!
//! The table itself changes only in phase two, when the committer MERGEs the
//! staged rows by their keys; the staged file is out of the table's log, so
//! readers never see it.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;

use crate::checkpoint::manifest::{PendingCommit, Upsert};
use crate::error::{EngineError, Result};

/// Where staged rows live, relative to the table root.
pub const STAGING_DIR: &str = "_strata_staging";

/// Collects an upserted table's changed rows for one epoch at a time.
pub struct UpsertWriter {
    store: Arc<dyn ObjectStore>,
    url: String,
    app_id: String,
    keys: Vec<String>,
    rows: Vec<RecordBatch>,
}

impl UpsertWriter {
    /// A writer for `table`, upserting by `keys`.
    pub fn new(table: &DeltaTable, app_id: &str, keys: Vec<String>) -> Self {
        UpsertWriter {
            store: table.object_store(),
            url: table.table_url().to_string(),
            app_id: app_id.to_string(),
            keys,
            rows: Vec::new(),
        }
    }

    /// The table's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds rows that replace the table's rows with the same keys.
    pub fn write(&mut self, batch: RecordBatch) {
        if batch.num_rows() > 0 {
            self.rows.push(batch);
        }
    }

    /// Stages the epoch's rows and returns the pending upsert.
    pub async fn pre_commit(&mut self) -> Result<PendingCommit> {
        let rows = std::mem::take(&mut self.rows);
        let count: usize = rows.iter().map(RecordBatch::num_rows).sum();
        let staging = match rows.first() {
            None => None,
            Some(first) => {
                let mut buffer = Vec::new();
                let arrow = |e: parquet::errors::ParquetError| {
                    EngineError::internal(format!("staging upserts for {}", self.url), e)
                };
                let mut writer =
                    ArrowWriter::try_new(&mut buffer, first.schema(), None).map_err(arrow)?;
                for batch in &rows {
                    writer.write(batch).map_err(arrow)?;
                }
                writer.close().map_err(arrow)?;
                let name = format!("{STAGING_DIR}/{}.parquet", uuid::Uuid::new_v4());
                self.store
                    .put(&Path::from(name.as_str()), buffer.into())
                    .await
                    .map_err(EngineError::object_store(&self.url, "staging upserts"))?;
                Some(name)
            }
        };
        Ok(PendingCommit {
            table: self.url.clone(),
            app_id: self.app_id.clone(),
            adds: Vec::new(),
            rows: count as u64,
            upsert: Some(Upsert {
                keys: self.keys.clone(),
                staging,
            }),
        })
    }
}
