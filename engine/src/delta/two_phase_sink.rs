//! A Delta table as the sink of a two-phase commit.
//!
//! Phase one (`pre_commit`, on a checkpoint barrier) finishes the epoch's
//! Parquet files in the table directory without touching the log and hands
//! back their `add` actions, which go into the checkpoint manifest. Phase two
//! (`commit`, once the manifest is durable) writes one Delta commit holding
//! those adds and a `txn` action `{appId: pipeline, version: epoch}`.
//!
//! Phase two is idempotent: the table itself records the highest epoch it
//! holds, so a commit for an epoch at or below it is skipped. That is what
//! lets recovery simply replay the newest manifest's commit: if the crash
//! came before the table commit, the files are committed now; if after, the
//! replay is a no-op. Files written for an epoch whose manifest never made it
//! are never referenced by the log (VACUUM removes them).

use std::sync::Arc;

use arrow::datatypes::{DataType, SchemaRef};
use arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTableBuilder, DeltaTableError, TableProperty};
use tracing::{debug, info};

use crate::checkpoint::manifest::PendingCommit;
use crate::error::{EngineError, Result};
use crate::storage::TableLocation;

/// Target size of one Parquet file before the writer starts another.
const TARGET_FILE_SIZE: u64 = 128 * 1024 * 1024;

/// What [`DeltaSink::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// A new table version was written.
    Committed {
        /// The table version.
        version: u64,
    },
    /// The table already held this epoch; nothing was written.
    AlreadyCommitted,
}

/// A two-phase Delta sink for one table and one pipeline.
pub struct DeltaSink {
    table: DeltaTable,
    writer: RecordBatchWriter,
    app_id: String,
    url: String,
    /// The highest epoch the table holds for `app_id`.
    committed_epoch: Option<u64>,
    rows_since_flush: u64,
}

impl DeltaSink {
    /// Opens the table at `location`, creating it with `schema` and
    /// `partition_columns` if it does not exist yet.
    pub async fn open(
        location: &TableLocation,
        schema: SchemaRef,
        partition_columns: &[&str],
        app_id: &str,
    ) -> Result<Self> {
        let url = location.url.to_string();
        if location.url.scheme() == "file"
            && let Ok(dir) = location.url.to_file_path()
        {
            std::fs::create_dir_all(&dir).map_err(|e| {
                EngineError::Config(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut table = DeltaTableBuilder::from_url(location.url.clone())
            .map_err(EngineError::delta(&url, "resolving the table location"))?
            .with_storage_options(location.options.clone())
            .build()
            .map_err(EngineError::delta(&url, "opening the table"))?;
        match table.load().await {
            Ok(()) => check_schema(&table, &schema, &url)?,
            Err(DeltaTableError::NotATable(_)) => {
                let kernel_schema: StructType = schema
                    .as_ref()
                    .try_into_kernel()
                    .map_err(|e| EngineError::delta(&url, "converting the schema")(e.into()))?;
                // Min/max statistics of raw bytes skip no file and make the
                // writer warn on every commit: collect them for the rest.
                let stats_columns: Vec<&str> = schema
                    .fields()
                    .iter()
                    .filter(|f| !matches!(f.data_type(), DataType::Binary | DataType::LargeBinary))
                    .map(|f| f.name().as_str())
                    .collect();
                table = table
                    .create()
                    .with_columns(kernel_schema.fields().cloned())
                    .with_partition_columns(partition_columns.iter().copied())
                    .with_configuration_property(
                        TableProperty::DataSkippingStatsColumns,
                        Some(stats_columns.join(",")),
                    )
                    .await
                    .map_err(EngineError::delta(&url, "creating the table"))?;
                info!(table = %url, "created delta table");
            }
            Err(e) => return Err(EngineError::delta(&url, "loading the table")(e)),
        }
        let committed_epoch = committed_epoch(&table, app_id, &url).await?;
        let writer = RecordBatchWriter::for_table(&table)
            .map_err(EngineError::delta(&url, "preparing the writer"))?
            .with_target_file_size(TARGET_FILE_SIZE);
        Ok(DeltaSink {
            table,
            writer,
            app_id: app_id.to_string(),
            url,
            committed_epoch,
            rows_since_flush: 0,
        })
    }

    /// The table's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The highest epoch the table holds for this pipeline.
    pub fn committed_epoch(&self) -> Option<u64> {
        self.committed_epoch
    }

    /// Streams `batch` into the epoch's files.
    pub async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows_since_flush += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(EngineError::delta(&self.url, "writing rows"))
    }

    /// Phase one: finishes the epoch's files and returns them, uncommitted.
    pub async fn pre_commit(&mut self) -> Result<PendingCommit> {
        let adds = self
            .writer
            .flush()
            .await
            .map_err(EngineError::delta(&self.url, "finishing the epoch's files"))?;
        let rows = std::mem::take(&mut self.rows_since_flush);
        Ok(PendingCommit {
            table: self.url.clone(),
            app_id: self.app_id.clone(),
            adds,
            rows,
        })
    }

    /// Phase two: commits `pending` as `epoch`, unless the table already has it.
    pub async fn commit(&mut self, epoch: u64, pending: &PendingCommit) -> Result<CommitOutcome> {
        if self.committed_epoch.is_some_and(|c| c >= epoch) {
            debug!(table = %self.url, epoch, "epoch already in the table");
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        let version = i64::try_from(epoch)
            .map_err(|_| EngineError::Config(format!("epoch {epoch} does not fit a Delta txn")))?;
        let result = self.try_commit(version, &pending.adds).await;
        let version = match result {
            Ok(v) => v,
            // Someone else committed meanwhile (a second process on the same
            // layer, or an earlier attempt of ours that did land): the table
            // decides whether our epoch is already in.
            Err(DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_),
            }) => {
                self.table
                    .update_state()
                    .await
                    .map_err(EngineError::delta(&self.url, "reloading after a conflict"))?;
                self.committed_epoch =
                    committed_epoch(&self.table, &self.app_id, &self.url).await?;
                if self.committed_epoch.is_some_and(|c| c >= epoch) {
                    return Ok(CommitOutcome::AlreadyCommitted);
                }
                self.try_commit(version, &pending.adds)
                    .await
                    .map_err(EngineError::delta(&self.url, "committing the epoch"))?
            }
            Err(e) => return Err(EngineError::delta(&self.url, "committing the epoch")(e)),
        };
        self.committed_epoch = Some(epoch);
        Ok(CommitOutcome::Committed { version })
    }

    async fn try_commit(&mut self, epoch: i64, adds: &[Add]) -> Result<u64, DeltaTableError> {
        let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        let properties = CommitProperties::default()
            .with_application_transaction(Transaction::new(&self.app_id, epoch));
        let operation = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: self.app_id.clone(),
            epoch_id: epoch,
        };
        let snapshot = self.table.snapshot()?;
        let finalized = CommitBuilder::from(properties)
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await?;
        let version = finalized.version();
        self.table.state = Some(finalized.snapshot());
        Ok(version)
    }
}

async fn committed_epoch(table: &DeltaTable, app_id: &str, url: &str) -> Result<Option<u64>> {
    let version = table
        .snapshot()
        .map_err(EngineError::delta(url, "reading the table state"))?
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(EngineError::delta(url, "reading the txn version"))?;
    Ok(version.and_then(|v| u64::try_from(v).ok()))
}

/// An existing table must have the columns the pipeline writes; otherwise
/// every write would fail later with a less helpful message.
fn check_schema(table: &DeltaTable, expected: &SchemaRef, url: &str) -> Result<()> {
    let snapshot = table
        .snapshot()
        .map_err(EngineError::delta(url, "reading the table state"))?;
    let actual: Arc<arrow::datatypes::Schema> = snapshot.snapshot().arrow_schema();
    let missing: Vec<&str> = expected
        .fields()
        .iter()
        .filter(|f| actual.field_with_name(f.name()).is_err())
        .map(|f| f.name().as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(EngineError::Config(format!(
            "table {url} exists without column(s) {}; the schema changed since the table was created. Move the table aside to rebuild it from the topic, or restore the old schema",
            missing.join(", ")
        )))
    }
}
