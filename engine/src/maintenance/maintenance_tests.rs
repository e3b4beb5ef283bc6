//! Maintenance against real (local) Delta tables: compaction racing an
//! epoch commit, VACUUM of a crashed epoch's file, and refusals.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;

use crate::delta::proof::active_files;
use crate::delta::table::{open_existing, open_or_create, read_existing};
use crate::delta::table_committer::{CommitOutcome, TableCommitter};
use crate::delta::table_writer::TableWriter;
use crate::maintenance::{MaintainOptions, MaintenanceSpec, compact, vacuum};
use crate::storage::{StorageRoot, TableLocation};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn row(i: i64) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![format!("k{i}")])),
            Arc::new(Int64Array::from(vec![i])),
        ],
    )
    .unwrap()
}

async fn table(dir: &tempfile::TempDir) -> (TableLocation, DeltaTable) {
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let root = StorageRoot::new(url.as_str(), Default::default()).unwrap();
    let location = root.table("dws", "t").unwrap();
    let table = open_or_create(&location, &schema(), &[]).await.unwrap();
    (location, table)
}

/// Epoch `epoch`'s one row, written (phase one) but not committed.
async fn pre_commit(table: &DeltaTable, epoch: u64) -> crate::checkpoint::manifest::PendingCommit {
    let mut writer = TableWriter::new(table, "layer").unwrap();
    writer.write(row(epoch as i64)).await.unwrap();
    writer.pre_commit().await.unwrap()
}

async fn values(location: &TableLocation) -> Vec<i64> {
    let ctx = datafusion::prelude::SessionContext::new();
    let batches = read_existing(location, &ctx)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out: Vec<i64> = batches
        .iter()
        .flat_map(|b| {
            let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
            v.values().to_vec()
        })
        .collect();
    out.sort();
    out
}

/// A committer of `table` that has committed epochs `1..=epochs`, one row
/// (and file) each.
async fn committed(table: &DeltaTable, epochs: u64) -> TableCommitter {
    let mut committer = TableCommitter::open(table.clone(), "layer").await.unwrap();
    for epoch in 1..=epochs {
        let pending = pre_commit(table, epoch).await;
        committer.commit(epoch, &pending).await.unwrap();
    }
    committer
}

/// VACUUM (`dry_run`: only listing) with a 30 s retention floor.
fn vacuuming(dry_run: bool) -> MaintainOptions {
    MaintainOptions {
        vacuum: true,
        dry_run,
        min_retention: Duration::from_secs(30),
        ..Default::default()
    }
}

fn spec() -> MaintenanceSpec {
    MaintenanceSpec {
        min_small_files: 4,
        ..Default::default()
    }
}

#[tokio::test]
async fn an_epoch_commit_that_races_a_compaction_still_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let mut committer = committed(&table, 10).await;
    // Epoch 11 is written on the committer's snapshot; compaction commits
    // first, removing every file of that snapshot.
    let pending = pre_commit(&table, 11).await;
    let report = compact(&location, &spec(), false).await.unwrap();
    assert_eq!(
        (report.files_before, report.files_after),
        (10, 1),
        "{report:?}"
    );
    let outcome = committer.commit(11, &pending).await;
    assert!(
        matches!(outcome, Ok(CommitOutcome::Committed { .. })),
        "{outcome:?}"
    );
    assert_eq!(values(&location).await, (1..=11).collect::<Vec<_>>());
    // Too few small files: nothing to do.
    let again = compact(&location, &spec(), false).await.unwrap();
    assert_eq!(again.compacted, (0, 0));
}

fn age(path: &std::path::Path, by: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - by).unwrap();
}

fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect()
}

#[tokio::test]
async fn vacuum_removes_a_crashed_epochs_file_and_keeps_what_recent_versions_need() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    committed(&table, 6).await;
    // Epoch 7's file is written, then the process dies before its manifest.
    let crashed = pre_commit(&table, 7).await;
    let orphan = dir.path().join("dws/t").join(&crashed.adds[0].path);
    assert!(orphan.exists());
    age(&orphan, Duration::from_secs(7200));
    compact(&location, &spec(), false).await.unwrap();
    let compacted = open_existing(&location).await.unwrap();
    let before_compaction = compacted.version().unwrap() - 1;

    let hour = Duration::from_secs(3600);
    let options = vacuuming(true);
    let would = vacuum(&location, hour, options).await.unwrap();
    assert_eq!(would, vec![crashed.adds[0].path.clone()]);
    assert!(orphan.exists(), "a dry run removed a file");
    let options = MaintainOptions {
        dry_run: false,
        ..options
    };
    let removed = vacuum(&location, hour, options).await.unwrap();
    assert_eq!(removed, vec![crashed.adds[0].path.clone()]);
    assert!(!orphan.exists());
    // The version before the compaction reads whole: its replaced files
    // were removed less than the retention ago.
    let mut old = open_existing(&location).await.unwrap();
    old.load_version(before_compaction).await.unwrap();
    let files = active_files(&old, "old").unwrap();
    assert_eq!(files.len(), 6);
    for (path, _) in files {
        assert!(
            dir.path().join("dws/t").join(path.as_ref()).exists(),
            "{path}"
        );
    }
    assert_eq!(values(&location).await, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn maintenance_refuses_a_damaged_table_and_a_too_short_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    committed(&table, 5).await;
    let options = vacuuming(false);
    let short = vacuum(&location, Duration::from_secs(1), options).await;
    assert!(
        short.is_err_and(|e| e.to_string().contains("Nothing was removed")),
        "a 1 s retention was accepted"
    );
    let files = parquet_files(&dir.path().join("dws/t"));
    std::fs::remove_file(&files[0]).unwrap();
    let before = parquet_files(&dir.path().join("dws/t"));
    for (i, f) in before.iter().enumerate() {
        age(f, Duration::from_secs(7200 + i as u64));
    }
    let err = vacuum(&location, Duration::from_secs(60), options)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not exist"), "{err}");
    let err = compact(&location, &spec(), false)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not exist"), "{err}");
    assert_eq!(parquet_files(&dir.path().join("dws/t")).len(), before.len());
}

fn commit_file(dir: &std::path::Path, version: u64) -> std::path::PathBuf {
    dir.join(format!("_delta_log/{version:020}.json"))
}

#[tokio::test]
async fn vacuum_keeps_old_files_the_version_at_the_retentions_edge_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let root = dir.path().join("dws/t");
    committed(&table, 6).await;
    // Epochs 1-6 were written and committed three hours ago (versions 0-6,
    // in order); compaction replaces their files now (version 7).
    let three_hours = Duration::from_secs(3 * 3600);
    for version in 0..=6u64 {
        age(
            &commit_file(&root, version),
            three_hours - Duration::from_secs(version),
        );
    }
    let epoch_files = parquet_files(&root);
    assert_eq!(epoch_files.len(), 6);
    for f in &epoch_files {
        age(f, three_hours);
    }
    compact(&location, &spec(), false).await.unwrap();
    assert_eq!(open_existing(&location).await.unwrap().version(), Some(7));

    // Retention 1 hour: a reader at its edge sees version 6, which reads
    // the six old files, replaced just now.
    let hour = Duration::from_secs(3600);
    let options = vacuuming(false);
    let removed = vacuum(&location, hour, options).await.unwrap();
    assert_eq!(removed, Vec::<String>::new());
    let mut edge = open_existing(&location).await.unwrap();
    edge.load_version(6).await.unwrap();
    for (path, _) in active_files(&edge, "edge").unwrap() {
        assert!(root.join(path.as_ref()).exists(), "{path}");
    }

    // Two hours later (the compaction committed two hours ago), version 7
    // is the edge: the six files are needed by no version within the hour.
    age(&commit_file(&root, 7), Duration::from_secs(2 * 3600));
    let mut removed = vacuum(&location, hour, options).await.unwrap();
    removed.sort();
    let mut expected: Vec<String> = epoch_files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(parquet_files(&root).len(), 1);
    assert_eq!(values(&location).await, (1..=6).collect::<Vec<_>>());
}

#[tokio::test]
async fn tables_keep_removes_in_checkpoints_briefly_old_ones_too() {
    use crate::delta::table::REMOVES_KEPT_FOR;
    let kept = |t: &DeltaTable| {
        t.snapshot()
            .unwrap()
            .table_config()
            .deleted_file_retention_duration
    };
    let five_minutes = Some(Duration::from_secs(300));
    assert_eq!(REMOVES_KEPT_FOR, "interval 5 minutes");
    let dir = tempfile::tempdir().unwrap();
    let (_, created) = table(&dir).await;
    assert_eq!(kept(&created), five_minutes);

    // A table created before Strata set it (Delta's 7 days) gets it when
    // Strata opens it, and keeps its rows.
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let root = StorageRoot::new(url.as_str(), Default::default()).unwrap();
    let location = root.table("dws", "old").unwrap();
    std::fs::create_dir_all(dir.path().join("dws/old")).unwrap();
    let kernel: deltalake::kernel::StructType =
        deltalake::kernel::engine::arrow_conversion::TryIntoKernel::try_into_kernel(
            schema().as_ref(),
        )
        .unwrap();
    let old = deltalake::DeltaTableBuilder::from_url(location.url.clone())
        .unwrap()
        .build()
        .unwrap()
        .create()
        .with_columns(kernel.fields().cloned())
        .await
        .unwrap();
    assert_eq!(kept(&old), None);
    let mut committer = TableCommitter::open(old.clone(), "layer").await.unwrap();
    let pending = pre_commit(&old, 1).await;
    committer.commit(1, &pending).await.unwrap();
    let reopened = open_or_create(&location, &schema(), &[]).await.unwrap();
    assert_eq!(kept(&reopened), five_minutes);
    assert_eq!(kept(&open_existing(&location).await.unwrap()), five_minutes);
    assert_eq!(values(&location).await, vec![1]);
}

/// Why one compactor per warehouse (`MaintainOptions::compaction_elsewhere`):
/// delta-rs lets two compactions of the same files both commit (two
/// `dataChange=false` removes of one file do not conflict), so each adds
/// the rows of the files both replaced. If delta-rs starts refusing the
/// second commit, this test fails, and the rule could be relaxed.
#[tokio::test]
async fn two_racing_compactions_would_read_every_row_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    committed(&table, 4).await;
    let first = open_existing(&location).await.unwrap();
    let second = open_existing(&location).await.unwrap();
    first.optimize().await.unwrap();
    let raced = second.optimize().await;
    assert!(
        raced.is_ok(),
        "delta-rs refused the second compaction: {raced:?}"
    );
    assert_eq!(values(&location).await, vec![1, 1, 2, 2, 3, 3, 4, 4]);
}

#[tokio::test]
async fn vacuum_removes_staged_upserts_of_crashed_epochs_older_than_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    committed(&table, 2).await;
    let staging = dir
        .path()
        .join("dws/t")
        .join(crate::delta::upsert_writer::STAGING_DIR);
    std::fs::create_dir_all(&staging).unwrap();
    let (old, new) = (staging.join("old.parquet"), staging.join("new.parquet"));
    std::fs::write(&old, b"staged").unwrap();
    std::fs::write(&new, b"staged").unwrap();
    age(&old, Duration::from_secs(2 * 3600));
    let removed = vacuum(&location, Duration::from_secs(3600), vacuuming(false))
        .await
        .unwrap();
    assert_eq!(removed, vec!["_strata_staging/old.parquet".to_string()]);
    assert!(!old.exists() && new.exists());
}
