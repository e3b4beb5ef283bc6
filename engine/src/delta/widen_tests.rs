//! A widened column rewrites a real (local, partitioned) Delta table: same
//! rows in the wider type, the epochs' `txn` kept, the staging removed; a
//! table missing a file is refused untouched.

use std::sync::Arc;

use arrow::array::{Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::delta::table::{open_existing, open_or_create, read_existing};
use crate::delta::table_committer::TableCommitter;
use crate::delta::table_writer::TableWriter;
use crate::storage::{StorageRoot, TableLocation};

fn narrow() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("n", DataType::Int32, true),
        Field::new("day", DataType::Utf8, true),
    ]))
}

fn wide() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, false),
        Field::new("n", DataType::Int64, true),
        Field::new("day", DataType::Utf8, true),
        Field::new("agent", DataType::Utf8, true),
    ]))
}

fn rows(epoch: i32) -> RecordBatch {
    let ks: Vec<String> = (0..3).map(|i| format!("k{epoch}-{i}")).collect();
    let ns: Vec<Option<i32>> = vec![Some(i32::MAX - epoch), None, Some(-epoch)];
    let days: Vec<String> = (0..3).map(|i| format!("d{}", i % 2)).collect();
    RecordBatch::try_new(
        narrow(),
        vec![
            Arc::new(StringArray::from(ks)),
            Arc::new(Int32Array::from(ns)),
            Arc::new(StringArray::from(days)),
        ],
    )
    .unwrap()
}

async fn written(dir: &tempfile::TempDir) -> TableLocation {
    let url = url::Url::from_directory_path(dir.path()).unwrap();
    let root = StorageRoot::new(url.as_str(), Default::default()).unwrap();
    let location = root.table("ods", "t").unwrap();
    let table = open_or_create(&location, &narrow(), &["day"])
        .await
        .unwrap();
    let mut committer = TableCommitter::open(table.clone(), "layer").await.unwrap();
    for epoch in 1..=3 {
        let mut writer = TableWriter::new(&table, "layer").unwrap();
        writer.write(rows(epoch)).await.unwrap();
        let pending = writer.pre_commit().await.unwrap();
        committer.commit(epoch as u64, &pending).await.unwrap();
    }
    location
}

/// (k, n, day, agent) of every row, sorted; `n` as i64 whatever its type.
async fn contents(location: &TableLocation) -> Vec<(String, Option<i64>, String, Option<String>)> {
    let ctx = datafusion::prelude::SessionContext::new();
    let batches = read_existing(location, &ctx)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in &batches {
        let text = |name: &str, i: usize| -> Option<String> {
            let c = b.column_by_name(name)?;
            let c = arrow::compute::cast(c, &DataType::Utf8).unwrap();
            let c = c.as_any().downcast_ref::<StringArray>().unwrap();
            c.is_valid(i).then(|| c.value(i).to_string())
        };
        let n = arrow::compute::cast(b.column_by_name("n").unwrap(), &DataType::Int64).unwrap();
        let n = n.as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((
                text("k", i).unwrap(),
                n.is_valid(i).then(|| n.value(i)),
                text("day", i).unwrap(),
                text("agent", i),
            ));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_widened_column_rewrites_the_table_keeping_every_row_and_the_txn() {
    let dir = tempfile::tempdir().unwrap();
    let location = written(&dir).await;
    let before = contents(&location).await;
    assert_eq!(before.len(), 9);

    let table = open_or_create(&location, &wide(), &["day"]).await.unwrap();
    let schema = table.snapshot().unwrap().snapshot().arrow_schema();
    assert_eq!(
        schema.field_with_name("n").unwrap().data_type(),
        &DataType::Int64
    );
    assert!(schema.field_with_name("agent").is_ok());
    assert_eq!(
        table.snapshot().unwrap().metadata().partition_columns(),
        &["day".to_string()]
    );
    assert_eq!(contents(&location).await, before);
    let committer = TableCommitter::open(table, "layer").await.unwrap();
    assert_eq!(committer.committed_epoch(), Some(3));
    assert!(!dir.path().join("ods/t/_strata_widen").exists());
    // Opened again with the same schema: nothing to do.
    let version = open_existing(&location).await.unwrap().version();
    open_or_create(&location, &wide(), &["day"]).await.unwrap();
    assert_eq!(open_existing(&location).await.unwrap().version(), version);
}

#[tokio::test]
async fn a_table_missing_a_file_is_not_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let location = written(&dir).await;
    let table = open_existing(&location).await.unwrap();
    let version = table.version();
    let first = table
        .snapshot()
        .unwrap()
        .log_data()
        .iter()
        .next()
        .unwrap()
        .path()
        .to_string();
    std::fs::remove_file(dir.path().join("ods/t").join(first)).unwrap();

    let e = open_or_create(&location, &wide(), &["day"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not exist"), "{e}");
    let after = open_existing(&location).await.unwrap();
    assert_eq!(after.version(), version);
    assert_eq!(
        after
            .snapshot()
            .unwrap()
            .snapshot()
            .arrow_schema()
            .field_with_name("n")
            .unwrap()
            .data_type(),
        &DataType::Int32
    );
}
