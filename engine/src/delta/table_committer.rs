//! Phase two of a Delta sink: one commit per epoch, made idempotent by the
//! Delta `txn` action.
//!
//! Every commit carries `txn {appId: layer, version: epoch}`, so the table
//! itself records the highest epoch it holds, and a commit for an epoch at
//! or below it is skipped. That is what lets recovery replay the newest
//! manifest's commits blindly: if the crash came before the table commit,
//! the files are committed now; if after, the replay is a no-op. Files of an
//! epoch whose manifest never made it are never referenced by the log
//! (VACUUM removes them).

use arrow::record_batch::RecordBatch;
use datafusion::logical_expr::{Operator, binary_expr};
use datafusion::prelude::{Expr, SessionContext, col};
use deltalake::DeltaTable;
use deltalake::DeltaTableError;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, Transaction};
use deltalake::protocol::{DeltaOperation, OutputMode};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tracing::debug;

use crate::checkpoint::manifest::PendingCommit;
use crate::error::{EngineError, Result};

/// What [`TableCommitter::commit`] did.
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

/// Commits epochs to one table.
pub struct TableCommitter {
    table: DeltaTable,
    app_id: String,
    url: String,
    committed_epoch: Option<u64>,
}

impl TableCommitter {
    /// A committer for `table`, under the `txn` appId `app_id`.
    pub async fn open(table: DeltaTable, app_id: &str) -> Result<Self> {
        let url = table.table_url().to_string();
        let committed_epoch = committed_epoch(&table, app_id, &url).await?;
        Ok(TableCommitter {
            table,
            app_id: app_id.to_string(),
            url,
            committed_epoch,
        })
    }

    /// The table's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The layer committing (the `txn` appId).
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The rows `epoch` appended (read back from the table's log).
    pub async fn epoch_rows(&mut self, epoch: u64) -> Result<Vec<RecordBatch>> {
        self.table
            .update_state()
            .await
            .map_err(EngineError::delta(&self.url, "reloading the table"))?;
        crate::delta::epoch_rows::epoch_rows(&self.table, &self.app_id, epoch).await
    }

    /// The highest epoch the table holds for this layer.
    pub fn committed_epoch(&self) -> Option<u64> {
        self.committed_epoch
    }

    /// Commits `pending` as `epoch`, unless the table already has it.
    pub async fn commit(&mut self, epoch: u64, pending: &PendingCommit) -> Result<CommitOutcome> {
        if self.committed_epoch.is_some_and(|c| c >= epoch) {
            debug!(table = %self.url, epoch, "epoch already in the table");
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        let txn = i64::try_from(epoch)
            .map_err(|_| EngineError::Config(format!("epoch {epoch} does not fit a Delta txn")))?;
        let staged = pending
            .upsert
            .as_ref()
            .and_then(|u| u.staging.as_ref().map(|s| (u, s)));
        let result = match staged {
            Some((upsert, path)) => self.merge(txn, path, &upsert.keys).await,
            None => self.append(txn, &pending.adds).await,
        };
        let version = match result {
            Ok(v) => v,
            // Someone else committed meanwhile (another process on this
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
                return Err(EngineError::Pipeline {
                    pipeline: self.app_id.clone(),
                    reason: format!(
                        "table {} was changed by another writer during epoch {epoch}",
                        self.url
                    ),
                });
            }
            Err(e) => return Err(EngineError::delta(&self.url, "committing the epoch")(e)),
        };
        self.committed_epoch = Some(epoch);
        Ok(CommitOutcome::Committed { version })
    }

    fn properties(&self, txn: i64) -> CommitProperties {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(&self.app_id, txn))
    }

    async fn append(&mut self, txn: i64, adds: &[Add]) -> Result<u64, DeltaTableError> {
        let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        let operation = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: self.app_id.clone(),
            epoch_id: txn,
        };
        let snapshot = self.table.snapshot()?;
        let finalized = CommitBuilder::from(self.properties(txn))
            .with_actions(actions)
            .build(Some(snapshot), self.table.log_store(), operation)
            .await?;
        let version = finalized.version();
        self.table.state = Some(finalized.snapshot());
        Ok(version)
    }

    async fn merge(
        &mut self,
        txn: i64,
        staging: &str,
        keys: &[String],
    ) -> Result<u64, DeltaTableError> {
        let rows = self.read_staged(staging).await?;
        let Some(first) = rows.first() else {
            return self.append(txn, &[]).await;
        };
        let columns: Vec<String> = first
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let source = SessionContext::new().read_batches(rows)?;
        let predicate = keys
            .iter()
            .map(|k| {
                binary_expr(
                    col(format!("target.{k}")),
                    Operator::IsNotDistinctFrom,
                    col(format!("source.{k}")),
                )
            })
            .reduce(Expr::and)
            .ok_or_else(|| DeltaTableError::Generic("an upsert needs key columns".into()))?;
        let (table, _metrics) = self
            .table
            .clone()
            .merge(source, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            .when_matched_update(|u| {
                columns
                    .iter()
                    .fold(u, |u, c| u.update(c.as_str(), col(format!("source.{c}"))))
            })?
            .when_not_matched_insert(|i| {
                columns
                    .iter()
                    .fold(i, |i, c| i.set(c.as_str(), col(format!("source.{c}"))))
            })?
            .with_commit_properties(self.properties(txn))
            .await?;
        let version = table.version().unwrap_or_default();
        self.table = table;
        // The staged rows are in the table now.
        let _ = self.table.object_store().delete(&Path::from(staging)).await;
        Ok(version)
    }

    /// An epoch's changed rows are few (one per changed group): read whole.
    async fn read_staged(&self, staging: &str) -> Result<Vec<RecordBatch>, DeltaTableError> {
        let bad = |e: String| DeltaTableError::Generic(format!("staged upserts {staging}: {e}"));
        let bytes = self
            .table
            .object_store()
            .get(&Path::from(staging))
            .await?
            .bytes()
            .await?;
        ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))
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
