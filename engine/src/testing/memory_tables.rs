//! Tables in memory, with a Delta table's contract: an epoch's rows are
//! staged in "files" at pre-commit (files of an epoch that never commits
//! stay orphans, as on disk), and committed once, under a `txn` per layer:
//! a commit of an epoch the table already holds is skipped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use deltalake::kernel::Add;

use crate::checkpoint::manifest::{PendingCommit, Upsert};
use crate::dataflow::io::{OpenedTable, TableCommit, TableOpener, TableSink};
use crate::dataflow::plan::{TablePlan, TableWrite};
use crate::delta::table_committer::CommitOutcome;
use crate::error::{EngineError, Result};

/// One table's durable state.
#[derive(Default)]
pub(crate) struct MemoryTable {
    /// Staged files, by name (what pre-commit wrote).
    files: HashMap<String, Vec<RecordBatch>>,
    /// Committed epochs, in commit order: (epoch, files).
    pub(crate) commits: Vec<(u64, Vec<String>)>,
    /// When each commit happened (tokio's clock: virtual in tests).
    pub(crate) commit_times: Vec<tokio::time::Instant>,
    /// The highest epoch committed, per layer (the `txn` action).
    txn: HashMap<String, u64>,
    /// Upserted tables: the columns that identify a row.
    keys: Option<Vec<String>>,
}

impl MemoryTable {
    /// Every committed row, in commit order (upserted tables: the rows as
    /// each epoch's changes left them, oldest first).
    pub(crate) fn rows(&self) -> Vec<RecordBatch> {
        self.commits
            .iter()
            .flat_map(|(_, files)| files.iter())
            .flat_map(|f| self.files.get(f).cloned().unwrap_or_default())
            .collect()
    }
}

/// All tables, by URL; shared by every run of a test (they are durable).
#[derive(Clone, Default)]
pub(crate) struct MemoryTables {
    tables: Arc<Mutex<HashMap<String, MemoryTable>>>,
    next_file: Arc<Mutex<u64>>,
    /// Tables whose writes take time, by name: (per row) what a slow layer
    /// spends on its rows.
    slow: Arc<Mutex<HashMap<String, Duration>>>,
}

impl MemoryTables {
    /// Runs `f` on the table named `name` (its URL ends `/<name>/`).
    pub(crate) fn with_table<T>(&self, name: &str, f: impl FnOnce(&MemoryTable) -> T) -> Option<T> {
        let tables = self.tables.lock().ok()?;
        let suffix = format!("/{name}/");
        tables
            .iter()
            .find(|(url, _)| url.ends_with(&suffix))
            .map(|(_, t)| f(t))
    }

    /// Writes to the table `name` take `per_row` for each row (on tokio's
    /// clock), which makes its layer slow.
    pub(crate) fn slow_writes(&self, name: &str, per_row: Duration) {
        let mut slow = self.slow.lock().unwrap_or_else(|e| e.into_inner());
        slow.insert(name.to_string(), per_row);
    }

    fn file_name(&self) -> String {
        let mut n = self.next_file.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        format!("part-{n:06}")
    }
}

#[async_trait]
impl TableOpener for MemoryTables {
    async fn open(&self, table: &TablePlan, app_id: &str) -> Result<OpenedTable> {
        let url = table.location.url.to_string();
        {
            let mut tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
            let t = tables.entry(url.clone()).or_default();
            if let TableWrite::Upsert(keys) = &table.write {
                t.keys = Some(keys.clone());
            }
        }
        let committed = self
            .with_table(&table.name, |t| t.txn.get(app_id).copied())
            .flatten();
        let per_row = {
            let slow = self.slow.lock().unwrap_or_else(|e| e.into_inner());
            slow.get(&table.name).copied().unwrap_or_default()
        };
        Ok(OpenedTable {
            sink: Box::new(MemorySink {
                tables: self.clone(),
                url: url.clone(),
                app_id: app_id.to_string(),
                rows: Vec::new(),
                upsert: matches!(table.write, TableWrite::Upsert(_)),
                per_row,
            }),
            commit: Box::new(MemoryCommit {
                tables: self.clone(),
                url,
                app_id: app_id.to_string(),
                committed,
            }),
        })
    }
}

struct MemorySink {
    tables: MemoryTables,
    url: String,
    app_id: String,
    rows: Vec<RecordBatch>,
    upsert: bool,
    per_row: Duration,
}

#[async_trait]
impl TableSink for MemorySink {
    async fn write(&mut self, batch: RecordBatch) -> Result<()> {
        if !self.per_row.is_zero() {
            tokio::time::sleep(self.per_row * batch.num_rows() as u32).await;
        }
        if batch.num_rows() > 0 {
            self.rows.push(batch);
        }
        Ok(())
    }

    async fn pre_commit(&mut self) -> Result<PendingCommit> {
        let rows = std::mem::take(&mut self.rows);
        let count = rows.iter().map(|b| b.num_rows() as u64).sum();
        let mut files = Vec::new();
        if !rows.is_empty() {
            let name = self.tables.file_name();
            let mut tables = self.tables.tables.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = tables.get_mut(&self.url) {
                t.files.insert(name.clone(), rows);
            }
            files.push(name);
        }
        let keys = self
            .tables
            .with_table_url(&self.url, |t| t.keys.clone())
            .flatten()
            .unwrap_or_default();
        Ok(PendingCommit {
            table: self.url.clone(),
            app_id: self.app_id.clone(),
            adds: if self.upsert {
                Vec::new()
            } else {
                files
                    .iter()
                    .map(|f| Add {
                        path: f.clone(),
                        ..Default::default()
                    })
                    .collect()
            },
            rows: count,
            upsert: self.upsert.then(|| Upsert {
                keys,
                staging: files.first().cloned(),
            }),
        })
    }
}

impl MemoryTables {
    fn with_table_url<T>(&self, url: &str, f: impl FnOnce(&MemoryTable) -> T) -> Option<T> {
        let tables = self.tables.lock().ok()?;
        tables.get(url).map(f)
    }
}

struct MemoryCommit {
    tables: MemoryTables,
    url: String,
    app_id: String,
    committed: Option<u64>,
}

#[async_trait]
impl TableCommit for MemoryCommit {
    fn url(&self) -> &str {
        &self.url
    }

    fn app_id(&self) -> &str {
        &self.app_id
    }

    fn committed_epoch(&self) -> Option<u64> {
        self.committed
    }

    async fn commit(&mut self, epoch: u64, pending: &PendingCommit) -> Result<CommitOutcome> {
        let mut tables = self.tables.tables.lock().unwrap_or_else(|e| e.into_inner());
        let table = tables
            .get_mut(&self.url)
            .ok_or_else(|| EngineError::Config(format!("no table {}", self.url)))?;
        if table.txn.get(&self.app_id).is_some_and(|c| *c >= epoch) {
            self.committed = table.txn.get(&self.app_id).copied();
            return Ok(CommitOutcome::AlreadyCommitted);
        }
        if pending.is_empty() {
            return Ok(CommitOutcome::Empty);
        }
        let mut files: Vec<String> = pending.adds.iter().map(|a| a.path.clone()).collect();
        files.extend(pending.upsert.iter().flat_map(|u| u.staging.clone()));
        for f in &files {
            if !table.files.contains_key(f) {
                return Err(EngineError::Config(format!(
                    "{}: the manifest names a file that was never written: {f}",
                    self.url
                )));
            }
        }
        table.commits.push((epoch, files));
        table.commit_times.push(tokio::time::Instant::now());
        table.txn.insert(self.app_id.clone(), epoch);
        self.committed = Some(epoch);
        Ok(CommitOutcome::Committed {
            version: table.commits.len() as u64,
        })
    }

    async fn epoch_rows(&mut self, epoch: u64) -> Result<Vec<RecordBatch>> {
        let tables = self.tables.tables.lock().unwrap_or_else(|e| e.into_inner());
        let Some(table) = tables.get(&self.url) else {
            return Ok(Vec::new());
        };
        Ok(table
            .commits
            .iter()
            .filter(|(e, _)| *e == epoch)
            .flat_map(|(_, files)| files.iter())
            .flat_map(|f| table.files.get(f).cloned().unwrap_or_default())
            .collect())
    }
}

impl MemoryTable {
    /// The rows of the epochs committed up to `epoch`.
    pub(crate) fn rows_through(&self, epoch: u64) -> Vec<RecordBatch> {
        self.commits
            .iter()
            .filter(|(e, _)| *e <= epoch)
            .flat_map(|(_, files)| files.iter())
            .flat_map(|f| self.files.get(f).cloned().unwrap_or_default())
            .collect()
    }
}
