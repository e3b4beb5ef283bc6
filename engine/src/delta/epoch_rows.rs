//! The rows one epoch appended to a table, read back from its log.
//!
//! An append commit carries a `txn` action (appId = the layer, version =
//! the epoch) next to the `add` actions of the files it wrote, so an epoch's
//! rows are exactly those files. The transactional Kafka sink needs them
//! when a crash fell between the epoch's checkpoint and its Kafka commit:
//! the rows are in the table, and must be published again from there.

use arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Version;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::error::{EngineError, Result};

/// What one commit of a table's log says about an epoch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CommitEntry {
    /// The commit is epoch `epoch` of `app_id`.
    pub is_epoch: bool,
    /// The commit is an earlier epoch of `app_id`: the epoch wanted, if
    /// the table holds it, is newer (epochs commit in order).
    pub is_earlier: bool,
    /// Files it added (paths relative to the table, URL-encoded).
    pub added: Vec<String>,
}

/// Reads a commit's newline-delimited JSON actions (pure: no I/O).
///
/// ```
/// use strata_engine::delta::epoch_rows::parse_commit;
///
/// let log = br#"{"txn":{"appId":"dws_gmv","version":7}}
/// {"add":{"path":"part-1.parquet","size":10}}
/// {"commitInfo":{}}"#;
/// let entry = parse_commit(log, "dws_gmv", 7);
/// assert!(entry.is_epoch);
/// assert_eq!(entry.added, vec!["part-1.parquet"]);
/// assert!(!parse_commit(log, "dws_gmv", 8).is_epoch);
/// assert!(parse_commit(log, "dws_gmv", 8).is_earlier);
/// ```
pub fn parse_commit(bytes: &[u8], app_id: &str, epoch: u64) -> CommitEntry {
    let mut entry = CommitEntry::default();
    for line in bytes.split(|b| *b == b'\n') {
        let Ok(action) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        if let Some(txn) = action.get("txn")
            && txn.get("appId").and_then(Value::as_str) == Some(app_id)
            && let Some(version) = txn.get("version").and_then(Value::as_u64)
        {
            entry.is_epoch = version == epoch;
            entry.is_earlier = version < epoch;
        }
        if let Some(path) = action
            .get("add")
            .and_then(|a| a.get("path"))
            .and_then(Value::as_str)
        {
            entry.added.push(path.to_string());
        }
    }
    entry
}

/// The rows epoch `epoch` of `app_id` appended to `table` (none if the
/// epoch committed nothing: an epoch that adds no rows to a table makes no
/// commit). Commits are searched newest first, down to the first commit of
/// an earlier epoch (or the oldest entry log cleanup left): the epoch wanted
/// is the last one committed.
pub async fn epoch_rows(table: &DeltaTable, app_id: &str, epoch: u64) -> Result<Vec<RecordBatch>> {
    let url = table.table_url().to_string();
    let Some(latest) = table.version() else {
        return Ok(Vec::new());
    };
    let log = table.log_store();
    let mut version: Version = latest;
    loop {
        let bytes = log
            .read_commit_entry(version)
            .await
            .map_err(EngineError::delta(&url, "reading the log"))?;
        let Some(bytes) = bytes else {
            return Ok(Vec::new());
        };
        let entry = parse_commit(&bytes, app_id, epoch);
        if entry.is_epoch {
            return read_files(table, &url, &entry.added).await;
        }
        if entry.is_earlier {
            return Ok(Vec::new());
        }
        if version == 0 {
            return Ok(Vec::new());
        }
        version -= 1;
    }
}

async fn read_files(table: &DeltaTable, url: &str, paths: &[String]) -> Result<Vec<RecordBatch>> {
    let store = table.log_store().object_store(None);
    let mut batches = Vec::new();
    for path in paths {
        let location = Path::from_url_path(path).map_err(|e| {
            EngineError::Config(format!(
                "table {url}: the log names a file `{path}` that is not a valid path: {e}"
            ))
        })?;
        // An epoch's files are the size of one checkpoint interval's output.
        let unreadable =
            |e| EngineError::object_store(format!("{url}{path}"), "reading an epoch's file")(e);
        let got = store.get(&location).await.map_err(unreadable)?;
        let bytes = got.bytes().await.map_err(unreadable)?;
        let failed = |e: parquet::errors::ParquetError| {
            EngineError::delta(url, format!("reading {path}"))(e.into())
        };
        let read = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(failed)?
            .collect::<std::result::Result<Vec<RecordBatch>, _>>()
            .map_err(|e| EngineError::arrow(format!("decoding {url}{path}"))(e))?;
        batches.extend(read);
    }
    Ok(batches)
}
