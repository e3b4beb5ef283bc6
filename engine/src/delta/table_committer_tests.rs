//! The committer against real (local) Delta tables and other writers: a
//! `replaceWhere` swap that removed files the committer's snapshot had, a
//! second committer of the same layer, and upserts next to a swap.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::logical_expr::{col, lit};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;

use super::table::{open_existing, open_or_create};
use super::table_committer::{CommitOutcome, TableCommitter};
use super::table_writer::TableWriter;
use super::upsert_writer::UpsertWriter;
use crate::error::EngineError;
use crate::storage::{StorageRoot, TableLocation};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("v", DataType::Int64, false),
    ]))
}

fn rows(keys: &[&str], values: &[i64]) -> RecordBatch {
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(keys.to_vec())),
            Arc::new(Int64Array::from(values.to_vec())),
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

/// Commits `batch` as `epoch` through `committer`.
async fn append(
    committer: &mut TableCommitter,
    table: &DeltaTable,
    epoch: u64,
    batch: RecordBatch,
) -> Result<CommitOutcome, EngineError> {
    let mut writer = TableWriter::new(table, "layer").unwrap();
    writer.write(batch).await.unwrap();
    let pending = writer.pre_commit().await.unwrap();
    committer.commit(epoch, &pending).await
}

/// Another writer replaces the rows with `v < 100` by `replacement`.
async fn swap(location: &TableLocation, replacement: RecordBatch) {
    open_existing(location)
        .await
        .unwrap()
        .write(vec![replacement])
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(col("v").lt(lit(100i64)))
        .await
        .unwrap();
}

async fn contents(location: &TableLocation) -> Vec<(String, i64)> {
    let ctx = datafusion::prelude::SessionContext::new();
    let batches = super::table::read_existing(location, &ctx)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let k = arrow::compute::cast(b.column(0), &DataType::Utf8).unwrap();
        let k = k.as_any().downcast_ref::<StringArray>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((k.value(i).to_string(), v.value(i)));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn an_append_after_a_swap_removed_its_snapshots_files_commits() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let mut committer = TableCommitter::open(table.clone(), "layer").await.unwrap();
    let first = append(&mut committer, &table, 1, rows(&["a"], &[1])).await;
    assert!(
        matches!(first, Ok(CommitOutcome::Committed { .. })),
        "{first:?}"
    );
    // The swap removes epoch 1's file, which the committer's snapshot holds.
    swap(&location, rows(&["a"], &[2])).await;
    let second = append(&mut committer, &table, 2, rows(&["b"], &[200])).await;
    assert!(
        matches!(second, Ok(CommitOutcome::Committed { .. })),
        "{second:?}"
    );
    assert_eq!(
        contents(&location).await,
        [("a".into(), 2), ("b".into(), 200)]
    );
    // The table says epoch 2 is in, and the next epoch goes on.
    let third = append(&mut committer, &table, 3, rows(&["c"], &[300])).await;
    assert!(
        matches!(third, Ok(CommitOutcome::Committed { .. })),
        "{third:?}"
    );
    let reopened = TableCommitter::open(open_existing(&location).await.unwrap(), "layer")
        .await
        .unwrap();
    assert_eq!(reopened.committed_epoch(), Some(3));
}

/// A swap commits over the live appends that landed while it ran, when
/// they are outside its range; one inside (a straggler of a row-by-row
/// layer) makes it refuse rather than lose or keep the row unseen (the
/// tables are Serializable).
#[tokio::test]
async fn a_swap_commits_over_live_appends_outside_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let mut committer = TableCommitter::open(table.clone(), "layer").await.unwrap();
    append(&mut committer, &table, 1, rows(&["a"], &[1]))
        .await
        .unwrap();
    let replace = |stale: DeltaTable| {
        stale
            .write(vec![rows(&["a"], &[5])])
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(col("v").lt(lit(100i64)))
    };
    // The swap reads the table now, and commits after two live epochs.
    let stale = open_existing(&location).await.unwrap();
    append(&mut committer, &table, 2, rows(&["b"], &[200]))
        .await
        .unwrap();
    append(&mut committer, &table, 3, rows(&["c"], &[300]))
        .await
        .unwrap();
    replace(stale).await.unwrap();
    let swapped = [("a".into(), 5), ("b".into(), 200), ("c".into(), 300)];
    assert_eq!(contents(&location).await, swapped);

    let stale = open_existing(&location).await.unwrap();
    append(&mut committer, &table, 4, rows(&["d"], &[40]))
        .await
        .unwrap();
    assert!(replace(stale).await.is_err(), "a row landed in the range");
    assert_eq!(contents(&location).await.len(), 4);
}

#[tokio::test]
async fn an_epoch_another_process_committed_is_not_committed_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let mut ours = TableCommitter::open(table.clone(), "layer").await.unwrap();
    let mut theirs = TableCommitter::open(open_existing(&location).await.unwrap(), "layer")
        .await
        .unwrap();
    append(&mut theirs, &table, 1, rows(&["a"], &[1]))
        .await
        .unwrap();
    let same = append(&mut ours, &table, 1, rows(&["a"], &[1])).await;
    assert!(
        matches!(same, Ok(CommitOutcome::AlreadyCommitted)),
        "{same:?}"
    );
    assert_eq!(contents(&location).await, [("a".into(), 1)]);
}

#[tokio::test]
async fn a_second_process_committing_other_epochs_stops_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let mut ours = TableCommitter::open(table.clone(), "layer").await.unwrap();
    let mut theirs = TableCommitter::open(open_existing(&location).await.unwrap(), "layer")
        .await
        .unwrap();
    append(&mut theirs, &table, 1, rows(&["a"], &[1]))
        .await
        .unwrap();
    let refused = append(&mut ours, &table, 2, rows(&["b"], &[2])).await;
    let Err(EngineError::Pipeline { reason, .. }) = refused else {
        panic!("a second writer of the layer must stop it: {refused:?}");
    };
    assert!(reason.contains("two processes"), "{reason}");
    assert_eq!(contents(&location).await, [("a".into(), 1)]);
}

#[tokio::test]
async fn an_upsert_after_a_swap_merges_on_the_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let mut committer = TableCommitter::open(table.clone(), "layer").await.unwrap();
    let upsert = |batch: RecordBatch| {
        let table = table.clone();
        async move {
            let mut writer = UpsertWriter::new(&table, "layer", vec!["k".into()]);
            writer.write(batch);
            writer.pre_commit().await.unwrap()
        }
    };
    let pending = upsert(rows(&["a", "b"], &[1, 200])).await;
    committer.commit(1, &pending).await.unwrap();
    swap(&location, rows(&["a"], &[7])).await;
    let pending = upsert(rows(&["b", "c"], &[201, 300])).await;
    let merged = committer.commit(2, &pending).await;
    assert!(
        matches!(merged, Ok(CommitOutcome::Committed { .. })),
        "{merged:?}"
    );
    assert_eq!(
        contents(&location).await,
        [("a".into(), 7), ("b".into(), 201), ("c".into(), 300)]
    );
}

/// Appends are written at the version after the committer's last one,
/// without reading the table's file list (see `table_committer`'s doc);
/// the Delta checkpoint still comes every `delta.checkpointInterval`
/// versions, and the table reads back whole.
#[tokio::test]
async fn appends_checkpoint_on_the_interval_without_reloading_the_file_list() {
    let dir = tempfile::tempdir().unwrap();
    let (location, table) = table(&dir).await;
    let table = table
        .set_tbl_properties()
        .with_properties(std::collections::HashMap::from([(
            "delta.checkpointInterval".to_string(),
            "4".to_string(),
        )]))
        .await
        .unwrap();
    let opened_at = table.version().unwrap();
    let mut committer = TableCommitter::open(table.clone(), "layer").await.unwrap();
    let mut expected = Vec::new();
    for epoch in 1..=9u64 {
        let key = format!("k{epoch}");
        let outcome = append(
            &mut committer,
            &table,
            epoch,
            rows(&[&key], &[epoch as i64]),
        )
        .await;
        assert_eq!(
            outcome.ok(),
            Some(CommitOutcome::Committed {
                version: opened_at + epoch
            })
        );
        expected.push((key, epoch as i64));
    }
    expected.sort();
    assert_eq!(contents(&location).await, expected);
    let log = dir.path().join("dws/t/_delta_log");
    let checkpoints: Vec<u64> = (opened_at + 1..=opened_at + 9)
        .filter(|v| log.join(format!("{v:020}.checkpoint.parquet")).exists())
        .collect();
    let due: Vec<u64> = (opened_at + 1..=opened_at + 9)
        .filter(|v| (v + 1) % 4 == 0)
        .collect();
    assert_eq!(checkpoints, due);
    let reopened = TableCommitter::open(open_existing(&location).await.unwrap(), "layer")
        .await
        .unwrap();
    assert_eq!(reopened.committed_epoch(), Some(9));
}
