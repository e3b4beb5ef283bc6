//! Phase one of a Delta sink: the epoch's rows into Parquet files that are
//! not in the table's log yet.

use deltalake::DeltaTable;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};

use arrow::record_batch::RecordBatch;

use crate::checkpoint::manifest::PendingCommit;
use crate::error::{EngineError, Result};

/// Target size of one Parquet file before the writer starts another.
const TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// Writes an append table's files for one epoch at a time.
pub struct TableWriter {
    writer: RecordBatchWriter,
    url: String,
    app_id: String,
    rows: u64,
}

impl TableWriter {
    /// A writer for `table`, committing under the `txn` appId `app_id`.
    pub fn new(table: &DeltaTable, app_id: &str) -> Result<Self> {
        let url = table.table_url().to_string();
        let writer = RecordBatchWriter::for_table(table)
            .map_err(EngineError::delta(&url, "preparing the writer"))?
            .with_target_file_size(TARGET_FILE_SIZE);
        Ok(TableWriter {
            writer,
            url,
            app_id: app_id.to_string(),
            rows: 0,
        })
    }

    /// The table's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Streams `batch` into the epoch's files.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(EngineError::delta(&self.url, "writing rows"))
    }

    /// Finishes the epoch's files and returns them, uncommitted.
    pub async fn pre_commit(&mut self) -> Result<PendingCommit> {
        let adds = self
            .writer
            .flush()
            .await
            .map_err(EngineError::delta(&self.url, "finishing the epoch's files"))?;
        Ok(PendingCommit {
            table: self.url.clone(),
            app_id: self.app_id.clone(),
            adds,
            rows: std::mem::take(&mut self.rows),
            upsert: None,
        })
    }
}
