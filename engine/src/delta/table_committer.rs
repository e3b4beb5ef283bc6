//! Phase two of a Delta sink: one commit per epoch, made idempotent by the
//! Delta `txn` action.
//!
//! Every commit carries `txn {appId: layer, version: epoch}`, so the table
//! itself records the highest epoch it holds, and a commit for an epoch at
//! or below it is skipped. An epoch that adds nothing to a table is not
//! committed to it: the `txn` version is then the last epoch that added
//! rows, and, since epochs commit in order, every epoch above it that has
//! rows for the table is known not to be in it. That is what lets recovery replay the newest
//! manifest's commits blindly: if the crash came before the table commit,
//! the files are committed now; if after, the replay is a no-op. Files of an
//! epoch whose manifest never made it are never referenced by the log
//! (VACUUM removes them). The same `txn` makes a commit that lost a race
//! to another writer (a backfill swap, compaction) safe to make again on
//! the newest version ([`crate::delta::commit_race`]).
//!
//! An append is written to the log without bringing the table's state
//! (its file list) up to date first or after: delta-rs's commit would
//! re-read every file's statistics from the log after each commit (its
//! post-commit snapshot update re-parses them all, however few commits are
//! new): at 200 ms epochs a third of all `strata run` allocated in the soak
//! (some 190 MB a second for 500 events/s, jemalloc's heap profile). The committer
//! writes version `head + 1` with a create-only put; another writer's
//! commit there makes it a lost race, and only then, for a checkpoint (one
//! per `delta.checkpointInterval` commits) and before a MERGE, is the file
//! list read again.

use arrow::record_batch::RecordBatch;
use datafusion::prelude::{SessionContext, col};
use deltalake::DeltaTable;
use deltalake::DeltaTableError;
use deltalake::checkpoints::create_checkpoint;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TransactionError};
use deltalake::kernel::{Action, Add, StructType, Transaction};
use deltalake::logstore::LogStore;
use deltalake::protocol::{DeltaOperation, OutputMode};
use deltalake::table::config::TablePropertiesExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::checkpoint::manifest::PendingCommit;
use crate::delta::commit_race::{AfterRace, Next, after_race};
use crate::delta::merge_predicate::merge_predicate;
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
    /// The epoch added nothing to the table; nothing was written.
    Empty,
}

/// Commits epochs to one table.
pub struct TableCommitter {
    /// The table; its state (file list) may be older than `head`: appends
    /// do not read it (see the module's doc).
    table: DeltaTable,
    /// The newest version this committer knows of: its own last commit,
    /// or what the table's state last read.
    head: u64,
    app_id: String,
    url: String,
    committed_epoch: Option<u64>,
    /// The schema and partitioning the layer's files are written for.
    shape: Shape,
    /// The warehouse version (sha256 of its file) the epochs being
    /// committed ran: each commit's info names it (`strata.version`).
    version: Option<String>,
}

impl TableCommitter {
    /// A committer for `table`, under the `txn` appId `app_id`.
    pub async fn open(table: DeltaTable, app_id: &str) -> Result<Self> {
        let url = table.table_url().to_string();
        let committed_epoch = committed_epoch(&table, app_id, &url).await?;
        let shape = shape_of(&table, &url)?;
        let head = table.version().ok_or_else(|| EngineError::Pipeline {
            pipeline: app_id.to_string(),
            reason: format!("table {url} has no version to commit after"),
        })?;
        Ok(TableCommitter {
            table,
            head,
            app_id: app_id.to_string(),
            url,
            committed_epoch,
            shape,
            version: None,
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
        self.reload()
            .await
            .map_err(EngineError::delta(&self.url, "reloading the table"))?;
        crate::delta::epoch_rows::epoch_rows(&self.table, &self.app_id, epoch).await
    }

    /// The highest epoch the table holds for this layer.
    pub fn committed_epoch(&self) -> Option<u64> {
        self.committed_epoch
    }

    /// Commits `pending` as `epoch`, unless the table already has it. A
    /// commit that loses a race to another writer (a backfill swap,
    /// compaction) is made again on the newest version; see
    /// [`commit_race`](crate::delta::commit_race).
    pub async fn commit(&mut self, epoch: u64, pending: &PendingCommit) -> Result<CommitOutcome> {
        if self.committed_epoch.is_some_and(|c| c >= epoch) {
            debug!(table = %self.url, epoch, "epoch already in the table");
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        if pending.is_empty() {
            return Ok(CommitOutcome::Empty);
        }
        let txn = i64::try_from(epoch)
            .map_err(|_| EngineError::Config(format!("epoch {epoch} does not fit a Delta txn")))?;
        let staged = pending
            .upsert
            .as_ref()
            .and_then(|u| u.staging.as_ref().map(|s| (u, s)));
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match staged {
                Some((upsert, path)) => self.merge(txn, path, &upsert.keys).await,
                None => self.append(txn, &pending.adds).await,
            };
            let error = match result {
                Ok(version) => {
                    self.committed_epoch = Some(epoch);
                    return Ok(CommitOutcome::Committed { version });
                }
                Err(e) if lost_race(&e) => e,
                Err(e) => return Err(EngineError::delta(&self.url, "committing the epoch")(e)),
            };
            // Another writer committed first: the reloaded table decides.
            let known = self.committed_epoch;
            self.reload().await.map_err(EngineError::delta(
                &self.url,
                "reloading after a lost commit race",
            ))?;
            self.committed_epoch = committed_epoch(&self.table, &self.app_id, &self.url).await?;
            let race = AfterRace {
                epoch,
                known,
                now: self.committed_epoch,
                same_shape: self.shape == shape_of(&self.table, &self.url)?,
                attempt,
            };
            match after_race(race) {
                Next::AlreadyIn => return Ok(CommitOutcome::AlreadyCommitted),
                Next::Retry(pause) if attempt == 1 => {
                    // Compaction and backfill swaps commit beside the
                    // live epochs: one lost race is normal operation, not
                    // a warning.
                    info!(table = %self.url, epoch, version = self.table.version(),
                           reason = %race_text(&error), "another writer committed first; committing again on the newest version");
                    tokio::time::sleep(pause).await;
                }
                Next::Retry(pause) => {
                    warn!(table = %self.url, epoch, attempt, version = self.table.version(),
                          reason = %race_text(&error), "another writer committed first again; committing again on the newest version");
                    tokio::time::sleep(pause).await;
                }
                Next::Stop(reason) => {
                    return Err(EngineError::Pipeline {
                        pipeline: self.app_id.clone(),
                        reason: format!("table {}: {reason} ({})", self.url, race_text(&error)),
                    });
                }
            }
        }
    }

    /// Brings the table's state up to the newest version (reads the
    /// commits since, and the file list again).
    async fn reload(&mut self) -> Result<(), DeltaTableError> {
        self.table.update_state().await?;
        self.head = self.head.max(self.table.version().unwrap_or_default());
        Ok(())
    }

    /// Every epoch commit carries its `txn`. A MERGE writes a Delta
    /// checkpoint when the table's `delta.checkpointInterval` comes round
    /// (one file, bounded work), an append through
    /// [`Self::checkpoint_if_due`]; neither cleans up expired log entries:
    /// that lists the whole `_delta_log`, so it runs in maintenance
    /// (`crate::maintenance`), off the epoch path.
    fn properties(&self, txn: i64) -> CommitProperties {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(&self.app_id, txn))
            .with_create_checkpoint(true)
            .with_cleanup_expired_logs(Some(false))
            .with_metadata(self.commit_info(None))
    }

    /// The commit info Strata adds: the warehouse version, and `extra`.
    fn commit_info(&self, extra: Option<(&str, Value)>) -> Vec<(String, Value)> {
        let mut info: Vec<(String, Value)> = self
            .version
            .iter()
            .map(|v| ("strata.version".to_string(), Value::String(v.clone())))
            .collect();
        info.extend(extra.map(|(k, v)| (k.to_string(), v)));
        info
    }

    /// The warehouse version the next commits ran (see `crate::versions`).
    pub fn set_version(&mut self, version: Option<&str>) {
        self.version = version.map(str::to_string);
    }

    /// One attempt at an append: a blind append written create-only as
    /// the version after `head`. delta-rs would count every file of the
    /// snapshot as read, and fail the append on any removal since; so it is
    /// written once, and [`Self::commit`] rebuilds the commit on the
    /// newest version instead. delta-rs's commit is prepared (protocol
    /// checks, the log entry) but its post-commit step, which reloads the
    /// file list, is not run: see the module's doc.
    async fn append(&mut self, txn: i64, adds: &[Add]) -> Result<u64, DeltaTableError> {
        let actions: Vec<Action> = adds.iter().cloned().map(Action::Add).collect();
        let operation = DeltaOperation::StreamingUpdate {
            output_mode: OutputMode::Append,
            query_id: self.app_id.clone(),
            epoch_id: txn,
        };
        let properties = self
            .properties(txn)
            .with_metadata(self.commit_info(Some(("isBlindAppend", Value::Bool(true)))));
        let operation_id = Uuid::new_v4();
        let log_store = self.table.log_store();
        let prepared = CommitBuilder::from(properties)
            .with_actions(actions)
            .with_operation_id(operation_id)
            .build(Some(self.table.snapshot()?), log_store.clone(), operation)
            .into_prepared_commit_future()
            .await?;
        let entry = prepared.commit_or_bytes().clone();
        let version = self.head + 1;
        if let Err(e) = log_store
            .write_commit_entry(version, entry.clone(), operation_id)
            .await
        {
            // A store that stages the entry first (not the default) drops
            // it; the next attempt stages a new one.
            let _ = log_store
                .abort_commit_entry(version, entry, operation_id)
                .await;
            return Err(e.into());
        }
        self.head = version;
        self.checkpoint_if_due(version).await;
        Ok(version)
    }

    /// Writes a Delta checkpoint when `version` completes a
    /// `delta.checkpointInterval` (delta-rs's own rule), after reading the
    /// file list up to it. The epoch is committed either way: a checkpoint
    /// that fails is logged and left to the next interval.
    async fn checkpoint_if_due(&mut self, version: u64) {
        let interval = match self.table.snapshot() {
            Ok(state) => state.table_config().checkpoint_interval().get(),
            Err(_) => return,
        };
        if !(version + 1).is_multiple_of(interval) {
            return;
        }
        let written = match self.reload().await {
            Ok(()) => create_checkpoint(&self.table, None).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            warn!(table = %self.url, version, error = %e, "could not write the Delta checkpoint; the next interval writes one");
        }
    }

    /// One attempt at an upsert: a MERGE by the keys, whose commit names
    /// the keys it read (see [`merge_predicate`]), so delta-rs resolves
    /// races with writers of other keys by itself.
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
        let predicate = merge_predicate(&rows, keys, "source", "target")
            .ok_or_else(|| DeltaTableError::Generic("an upsert needs key columns".into()))?;
        if self.table.version() != Some(self.head) {
            self.reload().await?;
        }
        let source = SessionContext::new().read_batches(rows)?;
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
        self.head = self.head.max(version);
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

/// A table's schema and partition columns.
type Shape = (StructType, Vec<String>);

fn shape_of(table: &DeltaTable, url: &str) -> Result<Shape> {
    let snapshot = table
        .snapshot()
        .map_err(EngineError::delta(url, "reading the table state"))?;
    Ok((
        snapshot.schema().as_ref().clone(),
        snapshot.metadata().partition_columns().to_vec(),
    ))
}

/// Whether a commit failed because another writer committed first (as
/// opposed to failing by itself: storage, a bad file).
fn lost_race(error: &DeltaTableError) -> bool {
    matches!(
        error,
        DeltaTableError::VersionAlreadyExists(_)
            | DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// What a lost race was, for the log.
fn race_text(error: &DeltaTableError) -> String {
    match error {
        DeltaTableError::Transaction {
            source: TransactionError::CommitConflict(conflict),
        } => conflict.to_string(),
        _ => "the table has versions newer than the one this commit was built on".into(),
    }
}
