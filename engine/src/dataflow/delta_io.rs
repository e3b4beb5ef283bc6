//! The real tables: Delta, written as Parquet files per epoch and committed
//! with a `txn` action (see `delta::table_committer`).

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;

use crate::checkpoint::manifest::PendingCommit;
use crate::dataflow::io::{OpenedTable, TableCommit, TableOpener, TableSink};
use crate::dataflow::plan::{TablePlan, TableWrite};
use crate::delta::table::open_or_create;
use crate::delta::table_committer::{CommitOutcome, TableCommitter};
use crate::delta::table_writer::TableWriter;
use crate::delta::upsert_writer::UpsertWriter;
use crate::error::Result;

/// Opens Delta tables where the plan says.
pub struct DeltaTables;

#[async_trait]
impl TableOpener for DeltaTables {
    async fn open(&self, table: &TablePlan, app_id: &str) -> Result<OpenedTable> {
        let partitions: Vec<&str> = table.partitions.iter().map(String::as_str).collect();
        let delta = open_or_create(&table.location, &table.schema, &partitions).await?;
        let sink: Box<dyn TableSink> = match &table.write {
            TableWrite::Upsert(keys) => Box::new(UpsertWriter::new(&delta, app_id, keys.clone())),
            TableWrite::Append => Box::new(TableWriter::new(&delta, app_id)?),
        };
        Ok(OpenedTable {
            sink,
            commit: Box::new(TableCommitter::open(delta, app_id).await?),
        })
    }
}

#[async_trait]
impl TableSink for TableWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        TableWriter::write(self, batch).await
    }

    async fn pre_commit(&mut self) -> Result<PendingCommit> {
        TableWriter::pre_commit(self).await
    }
}

#[async_trait]
impl TableSink for UpsertWriter {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        UpsertWriter::write(self, batch);
        Ok(())
    }

    async fn pre_commit(&mut self) -> Result<PendingCommit> {
        UpsertWriter::pre_commit(self).await
    }
}

#[async_trait]
impl TableCommit for TableCommitter {
    fn url(&self) -> &str {
        TableCommitter::url(self)
    }

    fn app_id(&self) -> &str {
        TableCommitter::app_id(self)
    }

    fn committed_epoch(&self) -> Option<u64> {
        TableCommitter::committed_epoch(self)
    }

    async fn commit(&mut self, epoch: u64, pending: &PendingCommit) -> Result<CommitOutcome> {
        TableCommitter::commit(self, epoch, pending).await
    }

    fn set_version(&mut self, version: Option<&str>) {
        TableCommitter::set_version(self, version);
    }

    async fn epoch_rows(&mut self, epoch: u64) -> Result<Vec<RecordBatch>> {
        TableCommitter::epoch_rows(self, epoch).await
    }
}
